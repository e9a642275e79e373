// The byte-fed Put parser (put-parser.ts), with no socket: any split of the input gives the same
// data and fields, which protobufjs decodes as it decodes the whole message; bad bytes are refused.

import { createHash, randomBytes } from 'node:crypto';
import { loadLoomProto } from '../../../src/api/grpc';
import { PutMessageParser, PutMessageTooLarge, type PutEvent } from '../../../src/api/grpc/put-parser';
import { LoomError } from '../../../src/util';
import { frame } from './raw-http2';

const put = (loadLoomProto()['loom.v1.Buckets'] as unknown as Record<string, { requestSerialize(m: object): Buffer; requestDeserialize(b: Buffer): Record<string, unknown> }>).Put;
const messageBytesMax = 4 * 1024 * 1024;

/** A seeded generator (mulberry32), so a failing split can be replayed. */
function seeded(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The input cut at `cuts`, fed piece by piece; returns every event. */
function feedSplit(input: Buffer, cuts: number[]): PutEvent[] {
  const parser = new PutMessageParser(messageBytesMax);
  const events: PutEvent[] = [];
  let at = 0;
  for (const cut of [...cuts, input.length]) {
    events.push(...parser.feed(input.subarray(at, cut)));
    at = cut;
  }
  parser.end();
  return events;
}

/** Per message: its data joined, and its fields decoded by protobufjs. */
function messagesOf(events: PutEvent[]): Array<{ data: Buffer; fields: Record<string, unknown> }> {
  const out: Array<{ data: Buffer; fields: Record<string, unknown> }> = [];
  let data: Buffer[] = [];
  let fields: Buffer[] = [];
  for (const event of events) {
    if (event.kind === 'data') {
      data.push(event.bytes);
      continue;
    }
    fields.push(event.bytes);
    if (event.end) {
      out.push({ data: Buffer.concat(data), fields: put.requestDeserialize(Buffer.concat(fields)) });
      data = [];
      fields = [];
    }
  }
  return out;
}

function digestsOf(messages: Array<{ data: Buffer; fields: Record<string, unknown> }>): Array<{ data: string; fields: Record<string, unknown> }> {
  return messages.map((m) => ({ data: createHash('sha256').update(m.data).digest('hex'), fields: m.fields }));
}

function expectRefused(input: Buffer, reason: RegExp): void {
  const parser = new PutMessageParser(messageBytesMax);
  let error: unknown;
  try {
    parser.feed(input);
    parser.end();
  } catch (err) {
    error = err;
  }
  expect(error).toBeInstanceOf(LoomError);
  expect(error).toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'body' } });
  expect((error as Error).message).toMatch(reason);
}

describe('PutMessageParser', () => {
  const header = { bucket: 'b', name: 'o', content_type: 'image/png', metadata: { a: '1', b: '2' }, sha256: 'ab'.repeat(32), size: 70_000 };
  const bodies = [randomBytes(70_000 - 300), randomBytes(0), randomBytes(300)];
  const input = Buffer.concat([
    frame(put.requestSerialize({ header, data: bodies[0] })),
    frame(put.requestSerialize({ data: bodies[1] })),
    frame(put.requestSerialize({ data: bodies[2] })),
    frame(Buffer.alloc(0)),
  ]);

  it('gives the data as slices of the input and the other fields as protobufjs decodes them', () => {
    const messages = messagesOf(feedSplit(input, []));
    expect(messages).toHaveLength(4);
    expect(messages[0].fields.header).toEqual(put.requestDeserialize(put.requestSerialize({ header })).header);
    expect(messages.map((m) => m.data.length)).toEqual([bodies[0].length, 0, 300, 0]);
    expect(Buffer.concat(messages.map((m) => m.data)).equals(Buffer.concat(bodies))).toBe(true);
    const events = new PutMessageParser(messageBytesMax).feed(input);
    const first = events.find((e) => e.kind === 'data') as { bytes: Buffer };
    expect(first.bytes.buffer).toBe(input.buffer);
  });

  it('sends the fields before the data as soon as the data starts, and the rest at the end', () => {
    const events = new PutMessageParser(messageBytesMax).feed(input.subarray(0, 200));
    expect(events.map((e) => e.kind)).toEqual(['fields', 'data']);
    expect(put.requestDeserialize((events[0] as { bytes: Buffer }).bytes).header).toMatchObject({ bucket: 'b', name: 'o' });
    expect((events[0] as { end: boolean }).end).toBe(false);
  });

  it('gives the same messages for every split, byte by byte and at 500 seeded random cuts', () => {
    const whole = messagesOf(feedSplit(input, []));
    const small = Buffer.concat([frame(put.requestSerialize({ header, data: randomBytes(40) })), frame(put.requestSerialize({ data: randomBytes(3) }))]);
    expect(messagesOf(feedSplit(small, Array.from({ length: small.length - 1 }, (_, i) => i + 1)))).toEqual(messagesOf(feedSplit(small, [])));
    for (let seed = 1; seed <= 500; seed++) {
      const random = seeded(seed);
      const cuts = Array.from({ length: 1 + Math.floor(random() * 12) }, () => Math.floor(random() * input.length)).sort((a, b) => a - b);
      // Compared as digests: jest compares Buffers byte by byte, slowly.
      expect({ seed, messages: digestsOf(messagesOf(feedSplit(input, cuts))) }).toEqual({ seed, messages: digestsOf(whole) });
    }
  });

  it('collects fields after the data and unknown fields of every wire type, for protobufjs to decode', () => {
    const data = randomBytes(100);
    // data (field 2) first, then the header (field 1), then unknown fields 9 (varint), 10 (fixed64),
    // 11 (bytes) and 12 (fixed32): valid protobuf in an order no encoder writes.
    const headerBytes = put.requestSerialize({ header });
    const message = Buffer.concat([
      Buffer.from([0x12, 100]),
      data,
      headerBytes,
      Buffer.from([9 << 3, 0x96, 0x01]),
      Buffer.from([(10 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8]),
      Buffer.from([(11 << 3) | 2, 3, 7, 7, 7]),
      Buffer.from([(12 << 3) | 5, 1, 2, 3, 4]),
    ]);
    const [decoded] = messagesOf(feedSplit(frame(message), [3, 9, 120, 140]));
    expect(decoded.data.equals(data)).toBe(true);
    expect(decoded.fields).toEqual(put.requestDeserialize(headerBytes));
  });

  it('collects groups whole, a field 2 inside one included, as protobufjs skips them', () => {
    const data = randomBytes(50);
    const headerBytes = put.requestSerialize({ header });
    // Field 5 opens a group holding field 2 (length-delimited) and a nested group 6, then closes.
    const group = Buffer.from([(5 << 3) | 3, 0x12, 2, 0xaa, 0xbb, (6 << 3) | 3, 0x08, 1, (6 << 3) | 4, (5 << 3) | 4]);
    const message = Buffer.concat([headerBytes, group, Buffer.from([0x12, 50]), data]);
    const [decoded] = messagesOf(feedSplit(frame(message), [4, 40, 41, 42, 43]));
    expect(decoded.data.equals(data)).toBe(true);
    expect(decoded.fields).toEqual(put.requestDeserialize(Buffer.concat([headerBytes, group])));
    expectRefused(frame(Buffer.from([(5 << 3) | 3, 0x08, 1])), /group runs past the end/);
    expectRefused(frame(Buffer.from([(5 << 3) | 4])), /ends a group that was not started/);
  });

  it('refuses a message over the limit before reading it, as grpc-js does', () => {
    const parser = new PutMessageParser(1000);
    expect(() => parser.feed(frame(Buffer.alloc(1001)).subarray(0, 5))).toThrow(new PutMessageTooLarge(1001, 1000));
    expect(new PutMessageTooLarge(1001, 1000).message).toBe('Received message larger than max (1001 vs 1000)');
  });

  it('refuses malformed bytes, two data fields, and a stream that ends inside a message', () => {
    expectRefused(frame(Buffer.from([0x12, 5, 1, 2])), /runs past the end of its message/);
    expectRefused(frame(Buffer.from([0x0a, 0xff])), /runs past the end of its message/);
    expectRefused(frame(Buffer.from([0x12, 1, 9, 0x12, 1, 9])), /data field once/);
    expectRefused(frame(Buffer.from([0x10, 1])), /wire type 0, not length-delimited/);
    expectRefused(frame(Buffer.from([0x0e])), /wire type 6/);
    expectRefused(frame(Buffer.from([0x02, 1])), /number 0/);
    // Tag 18 + 2^32: protobufjs reads 32 bits of it, field 2 (data); it is no valid field number.
    expectRefused(frame(Buffer.from([0x92, 0x80, 0x80, 0x80, 0x10, 3, 0x41, 0x42, 0x43])), /number 536870914/);
    expectRefused(frame(Buffer.from([0x48, ...Array(10).fill(0xff), 1])), /longer than 10 bytes/);
    expectRefused(frame(Buffer.from([0x12, 3, 1, 2, 3])).subarray(0, 7), /ended inside a message/);
    expectRefused(Buffer.from([0, 0, 0]), /ended inside a message/);
  });
});
