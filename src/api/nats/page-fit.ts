// Replies that must fit in one NATS message: the bus carries no message over maxPayloadBytes. A
// listing page or an event read too big for one is cut after its last whole item, and a client
// reading on (by cursor, by version) still reaches every item, as with JetStream KV listings and
// batched fetches; a reply that cannot be cut, or one item too big alone, answers TOO_LARGE.

import type { EventRecord, SqlResult } from '../../core';
import { nameCursor, type NamePage } from '../../projections';
import { LoomError, assert } from '../../util';

// `{"items":[` + `],"cursor":"` + `"}`: the JSON around the items and cursor of a cut page.
const cutPageFrameBytes = Buffer.byteLength('{"items":[],"cursor":""}');
// `{"events":[` + `]}`: the JSON around the events of a read.
const eventsFrameBytes = Buffer.byteLength('{"events":[]}');

/**
 * `page` as JSON if it fits in `payloadBytesMax`; otherwise its longest first part that fits with
 * a cursor after that part's last item (`nameOf` says an item's name). TOO_LARGE if not even one
 * item fits.
 */
export function encodePageToFit<T>(page: NamePage<T>, nameOf: (item: T) => string, payloadBytesMax: number, what: string): Buffer {
  const whole = Buffer.from(JSON.stringify(page));
  if (whole.length <= payloadBytesMax) return whole;
  const count = countThatFits(page.items, payloadBytesMax, (last) => cutPageFrameBytes + nameCursor(nameOf(last)).length);
  if (count === 0) throw replyTooLarge(`one ${what} does not fit in a reply of maxPayloadBytes ${payloadBytesMax}; list it over HTTP or gRPC`, payloadBytesMax);
  assert(count < page.items.length, 'a page too big as a whole fits whole once cut');
  const items = page.items.slice(0, count);
  const cut = Buffer.from(JSON.stringify({ items, cursor: nameCursor(nameOf(items[count - 1])) }));
  assert(cut.length <= payloadBytesMax, `a cut page of ${cut.length} bytes fits in ${payloadBytesMax}`);
  return cut;
}

/**
 * An EV.READ result as JSON if it fits in `payloadBytesMax`; otherwise its longest first part that
 * fits. The read needs no cursor: the client reads on from the last version it got + 1, as it does
 * after any page. TOO_LARGE if not even the first event fits.
 */
export function encodeEventsToFit(read: { events: EventRecord[] }, payloadBytesMax: number): Buffer {
  const whole = Buffer.from(JSON.stringify(read));
  if (whole.length <= payloadBytesMax) return whole;
  const count = countThatFits(read.events, payloadBytesMax, () => eventsFrameBytes);
  if (count === 0) {
    const first = read.events[0];
    throw replyTooLarge(
      `event version ${first.version} of stream ${first.stream} does not fit in a reply of maxPayloadBytes ${payloadBytesMax}; read it over HTTP or gRPC`,
      payloadBytesMax,
    );
  }
  assert(count < read.events.length, 'a read too big as a whole fits whole once cut');
  const cut = Buffer.from(JSON.stringify({ events: read.events.slice(0, count) }));
  assert(cut.length <= payloadBytesMax, `a cut read of ${cut.length} bytes fits in ${payloadBytesMax}`);
  return cut;
}

/**
 * An SQL.QUERY result as JSON if it fits in `payloadBytesMax`; TOO_LARGE otherwise. Rows are not cut
 * here as a listing is: an SQL cursor is an offset, which skips or repeats rows unless the query
 * orders them totally (docs/projections.md), so the door does not add pages the client did not ask
 * for. The client chooses fewer rows per page, a LIMIT, or a door with no such limit.
 */
export function encodeSqlResultToFit(result: SqlResult, payloadBytesMax: number): Buffer {
  return encodeWholeToFit(result, payloadBytesMax, 'the SQL result', 'ask for fewer rows (a smaller limit, following the cursor, or a LIMIT in the SQL) or query over HTTP or gRPC');
}

/**
 * `value` as JSON if it fits in `payloadBytesMax`; TOO_LARGE otherwise, for a reply that has no
 * part to cut (one object's info, the cluster status). `what` names the reply, `instead` what the
 * client can do; `details` go into the error's (`done: true` when the request took effect).
 */
export function encodeWholeToFit(value: unknown, payloadBytesMax: number, what: string, instead: string, details: Record<string, unknown> = {}): Buffer {
  const whole = Buffer.from(JSON.stringify(value));
  checkReplyFits(whole.length, payloadBytesMax, what, instead, details);
  return whole;
}

/** TOO_LARGE if a reply of `replyBytes` (payload and headers) is over `payloadBytesMax`. */
export function checkReplyFits(replyBytes: number, payloadBytesMax: number, what: string, instead: string, details: Record<string, unknown> = {}): void {
  if (replyBytes <= payloadBytesMax) return;
  throw replyTooLarge(`${what} is ${replyBytes} bytes, larger than a NATS reply may be (maxPayloadBytes ${payloadBytesMax}); ${instead}`, payloadBytesMax, details);
}

/**
 * How many of `items`, from the first, fit in `bytesMax` as a JSON array inside a frame of
 * `frameBytes(last item)` bytes. Sizes add up exactly: items are JSON-encoded the same inside the
 * array as alone, joined by commas.
 */
function countThatFits<T>(items: readonly T[], bytesMax: number, frameBytes: (last: T) => number): number {
  let itemsBytes = 0;
  let count = 0;
  for (const item of items) {
    const itemBytes = Buffer.byteLength(JSON.stringify(item)) + (count === 0 ? 0 : 1);
    if (frameBytes(item) + itemsBytes + itemBytes > bytesMax) break;
    itemsBytes += itemBytes;
    count++;
  }
  return count;
}

function replyTooLarge(message: string, payloadBytesMax: number, details: Record<string, unknown> = {}): LoomError {
  return new LoomError('TOO_LARGE', message, { limit: 'maxPayloadBytes', max: payloadBytesMax, ...details });
}
