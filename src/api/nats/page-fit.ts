// A listing page as one NATS reply: the bus carries no message over maxPayloadBytes, so a page too
// big for one is cut short, with a cursor after its last item, and a client following cursors still
// reaches every name (as JetStream KV and S3 listings do).

import { nameCursor, type NamePage } from '../../projections';
import { LoomError, assert } from '../../util';

// `{"items":[` + `],"cursor":"` + `"}`: the JSON around the items and cursor of a cut page.
const cutPageFrameBytes = Buffer.byteLength('{"items":[],"cursor":""}');

/**
 * `page` as JSON if it fits in `payloadBytesMax`; otherwise its longest first part that fits with
 * a cursor after that part's last item (`nameOf` says an item's name). TOO_LARGE if not even one
 * item fits.
 */
export function encodePageToFit<T>(page: NamePage<T>, nameOf: (item: T) => string, payloadBytesMax: number, what: string): Buffer {
  const whole = Buffer.from(JSON.stringify(page));
  if (whole.length <= payloadBytesMax) return whole;
  // Sizes add up exactly: items are JSON-encoded the same inside the array, joined by commas.
  let itemsBytes = 0;
  let count = 0;
  for (const item of page.items) {
    const itemBytes = Buffer.byteLength(JSON.stringify(item)) + (count === 0 ? 0 : 1);
    const cursorBytes = nameCursor(nameOf(item)).length;
    if (cutPageFrameBytes + itemsBytes + itemBytes + cursorBytes > payloadBytesMax) break;
    itemsBytes += itemBytes;
    count++;
  }
  if (count === 0) {
    throw new LoomError('TOO_LARGE', `one ${what} does not fit in a reply of maxPayloadBytes ${payloadBytesMax}; list it over HTTP or gRPC`, {
      limit: 'maxPayloadBytes',
      max: payloadBytesMax,
    });
  }
  assert(count < page.items.length, 'a page too big as a whole fits whole once cut');
  const items = page.items.slice(0, count);
  const cut = Buffer.from(JSON.stringify({ items, cursor: nameCursor(nameOf(items[count - 1])) }));
  assert(cut.length <= payloadBytesMax, `a cut page of ${cut.length} bytes fits in ${payloadBytesMax}`);
  return cut;
}
