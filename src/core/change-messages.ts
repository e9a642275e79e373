// Changes as bus messages that always fit the bus: a payload (a KV value, an object's info, an
// event's data) too large for the bus's maxPayloadBytes with its headers is left out, and its size
// given in header Loom-Omitted-Bytes, so a subscriber still hears of every change, in order, and
// reads what was left out through the API. Letting the bus refuse it stopped the node's applier
// (every later write failed) and ended every NATS watch at that change, each time it resumed.

import { MsgHeaders } from '../bus';
import { changeMessage, type Change } from '../projections';

/** Header of a change message whose payload was left out: the payload's size in bytes. */
export const omittedBytesHeader = 'Loom-Omitted-Bytes';

export interface ChangeBusMessage {
  subject: string;
  payload: Uint8Array;
  headers: MsgHeaders;
}

/**
 * `change` as a bus message of at most `payloadBytesMax` bytes (payload and header block), with
 * `extraHeaders` too; undefined only if not even its headers fit (a bus under 1 KiB).
 */
export function changeBusMessage(change: Change, payloadBytesMax: number, extraHeaders: Record<string, string> = {}): ChangeBusMessage | undefined {
  const message = changeMessage(change);
  const headers = MsgHeaders.fromRecord({ ...message.headers, ...extraHeaders });
  if (headers.encodedBytes() + message.payload.length <= payloadBytesMax) return { subject: message.subject, payload: message.payload, headers };
  const omitted = MsgHeaders.fromRecord({ ...message.headers, ...extraHeaders, [omittedBytesHeader]: String(message.payload.length) });
  if (omitted.encodedBytes() > payloadBytesMax) return undefined;
  return { subject: message.subject, payload: new Uint8Array(0), headers: omitted };
}
