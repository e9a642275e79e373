import fc from 'fast-check';
import { crc32c } from '@node-rs/crc32';
import { Packr } from 'msgpackr';
import { crc32cOf } from '../../src/eventlog/crc32c';
import { allocEntryData, decodeEntryFrame, decodeEntryValue, decodeIndexKey, encodeEntryValue, encodeIndexKey, indexKeyEncoder, reuseEntryData } from '../../src/eventlog/codec';

describe('the entry codec', () => {
  it('encodes indexes as fixed-width big-endian keys whose byte order is numeric order', () => {
    const indexes = [1, 2, 255, 256, 65_535, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 17, Number.MAX_SAFE_INTEGER];
    const keys = indexes.map(encodeIndexKey);
    expect(keys.every((k) => k.length === 8)).toBe(true);
    expect(keys.map((k) => decodeIndexKey(k))).toEqual(indexes);
    const sorted = [...keys].sort(Buffer.compare).map((k) => decodeIndexKey(k));
    expect(sorted).toEqual(indexes);
    expect(encodeIndexKey(2 ** 32 + 5).toString('hex')).toBe('0000000100000005');
  });

  it('round-trips an entry and rejects any single flipped bit', () => {
    const entry = { index: 42, term: 3, type: 'kv.put', data: Buffer.from('hello'), ts: 1_800_000_000_000, meta: { a: 1 } };
    const value = encodeEntryValue(entry);
    expect(decodeEntryValue(value, 42, 'f')).toEqual(entry);
    for (let bit = 0; bit < value.length * 8; bit += 7) {
      const damaged = Buffer.from(value);
      damaged[bit >> 3] ^= 1 << (bit & 7);
      expect(() => decodeEntryValue(damaged, 42, 'f')).toThrow(/log entry 42 in f is corrupt/);
    }
    expect(() => decodeEntryValue(value, 43, 'f')).toThrow(/records index 42/);
  });

  it('frames a large entry byte for byte as packing the whole record would', () => {
    const { Packr } = require('msgpackr') as typeof import('msgpackr');
    const { crc32c } = require('@node-rs/crc32') as typeof import('@node-rs/crc32');
    const packr = new Packr({ useRecords: false, moreTypes: false });
    for (const size of [16 * 1024, 65_535, 65_536, 256 * 1024 + 3]) {
      for (const meta of [undefined, { leader: 1, note: 'x' }]) {
        const data = Buffer.alloc(size, size & 0xff);
        const entry = { index: 2 ** 33 + size, term: 7, type: 'blob.chunk', data, ts: 1_800_000_000_123, ...(meta ? { meta } : {}) };
        const body = packr.pack(meta ? [entry.index, entry.term, entry.type, data, entry.ts, meta] : [entry.index, entry.term, entry.type, data, entry.ts]);
        const expected = Buffer.concat([Buffer.alloc(4), body]);
        expected.writeUInt32BE(crc32c(body), 0);
        const value = encodeEntryValue(entry);
        expect(value.equals(expected)).toBe(true);
        expect(decodeEntryValue(value, entry.index, 'f')).toEqual(entry);
      }
    }
  });

  it('computes the same CRC32C as the native code for every length and offset', () => {
    const bytes = Buffer.alloc(2100);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 13;
    for (let length = 0; length <= 300; length++) {
      for (const start of [0, 1, 3, 8]) expect(crc32cOf(bytes, start, start + length)).toBe(crc32c(bytes.subarray(start, start + length)));
    }
    for (const length of [1000, 2048]) expect(crc32cOf(bytes, 5, 5 + length)).toBe(crc32c(bytes.subarray(5, 5 + length)));
  });

  it('decodes an entry from a reused buffer without keeping a reference to it', () => {
    const entries = [
      { index: 7, term: 2, type: 'kv.put', data: Buffer.from('first'), ts: 1_800_000_000_000 },
      { index: 2 ** 32 + 9, term: 70_000, type: 'event.append', data: Buffer.alloc(300, 1), ts: 5 },
      { index: 8, term: 1, type: 'x'.repeat(40), data: Buffer.alloc(0), ts: 0.5 },
    ];
    const shared = Buffer.alloc(4096, 0xee);
    for (const entry of entries) {
      const value = encodeEntryValue(entry);
      value.copy(shared);
      const decoded = decodeEntryFrame(shared, value.length, entry.index, 'f');
      shared.fill(0xee);
      expect(decoded).toEqual(entry);
      expect(Buffer.isBuffer(decoded.data)).toBe(true);
    }
  });

  it('decodes the layouts msgpackr may choose that the direct reader does not take', () => {
    const packr = new Packr({ useRecords: false, moreTypes: false });
    const frame = (fields: unknown[]): Buffer => {
      const body = packr.pack(fields);
      const value = Buffer.concat([Buffer.alloc(4), body]);
      value.writeUInt32BE(crc32c(body), 0);
      return value;
    };
    const data = Buffer.from('d');
    expect(decodeEntryValue(frame([3, 1, 't', data, -5]), 3, 'f')).toEqual({ index: 3, term: 1, type: 't', data, ts: -5 });
    expect(decodeEntryValue(frame([3, 1, 't', data, 5, { m: 1 }]), 3, 'f')).toEqual({ index: 3, term: 1, type: 't', data, ts: 5, meta: { m: 1 } });
    expect(() => decodeEntryValue(frame([3, 1, 't', data]), 3, 'f')).toThrow(/not an entry record/);
    expect(() => decodeEntryValue(frame([4, 1, 't', data, 5]), 3, 'f')).toThrow(/records index 4/);
  });

  it('reads and writes lmdb keys as numbers in the same layout as encodeIndexKey', () => {
    const target = Buffer.alloc(20);
    for (const index of [0, 1, 255, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 17, Number.MAX_SAFE_INTEGER]) {
      expect(indexKeyEncoder.writeKey(index, target, 3)).toBe(11);
      expect(target.subarray(3, 11).equals(encodeIndexKey(index))).toBe(true);
      expect(indexKeyEncoder.readKey(target, 3, 11)).toBe(index);
    }
  });

  it('frames an entry around data from allocEntryData with the same bytes, once, leaving the data as it was', () => {
    const longType = 't'.repeat(64);
    for (const [size, type, index] of [[16 * 1024, 'blob.chunk', 7], [256 * 1024 + 3, longType, Number.MAX_SAFE_INTEGER], [70_000, 'blob.chunk', 2 ** 32 + 1]] as const) {
      const area = allocEntryData(size + 100);
      // The data need not start or end at the area's edges (a chunk body after its msgpack header);
      // the longest type, index and term need all the room in front.
      const offset = type === longType ? 0 : 37;
      const data = area.subarray(offset, offset + size);
      for (let i = 0; i < size; i++) data[i] = (i * 31) & 0xff;
      const before = Buffer.from(data);
      const entry = { index, term: 2 ** 40, type, data, ts: Number.MAX_SAFE_INTEGER - 1 };
      const copied = encodeEntryValue({ ...entry, data: before });
      const value = encodeEntryValue(entry);
      expect(value.equals(copied)).toBe(true);
      expect(value.buffer).toBe(data.buffer);
      expect(data.equals(before)).toBe(true);
      expect(decodeEntryValue(value, index, 'f')).toEqual({ ...entry, data: before });
      // The room is used once: a second encoding copies, so the first value stays intact.
      const again = encodeEntryValue({ ...entry, index: index - 1 });
      expect(again.buffer).not.toBe(data.buffer);
      expect(value.equals(copied)).toBe(true);
    }
  });

  it('frames in place again once its owner reuses the buffer for another entry', () => {
    const area = allocEntryData(4096);
    const first = encodeEntryValue({ index: 1, term: 1, type: 'blob.chunk', data: area.subarray(10, 4000), ts: 5 });
    expect(first.buffer).toBe(area.buffer);
    area.fill(9);
    const next = { index: 2, term: 1, type: 'blob.chunk', data: reuseEntryData(area).subarray(0, 4096), ts: 6 };
    const value = encodeEntryValue(next);
    expect(value.buffer).toBe(area.buffer);
    expect(decodeEntryValue(value, 2, 'f')).toEqual({ ...next, data: Buffer.alloc(4096, 9) });
    // Only buffers allocEntryData made can be reused so.
    expect(() => reuseEntryData(Buffer.alloc(4096))).toThrow();
  });

  it('frames any entry byte for byte as packing the whole record with msgpackr would', () => {
    const { Packr } = require('msgpackr') as typeof import('msgpackr');
    const { crc32c } = require('@node-rs/crc32') as typeof import('@node-rs/crc32');
    const packr = new Packr({ useRecords: false, moreTypes: false });
    // Edges of every msgpack integer width, beside arbitrary values.
    const edges = [0, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER];
    const safeNat = fc.oneof(fc.constantFrom(...edges), fc.nat(), fc.maxSafeNat());
    const ts = fc.oneof(
      safeNat,
      fc.constantFrom(-1, -0x20, -0x21, -0x80, -0x81, -0x8000, -0x8001, -(2 ** 31), -(2 ** 31) - 1, -0, 1.5, 1_800_000_000_123),
      fc.integer(),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
    );
    const type = fc.oneof(fc.constantFrom('kv.put', 'x', 'a'.repeat(31), 'b'.repeat(32), 'c'.repeat(64)), fc.string({ minLength: 1, maxLength: 64, unit: 'binary' }));
    const data = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      fc.constantFrom(255, 256, 65_535, 65_536).map((n) => new Uint8Array(n).fill(n & 0xff)),
      fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
    );
    const meta = fc.option(fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.integer(), fc.string(), fc.boolean())), { nil: undefined });
    fc.assert(
      fc.property(safeNat, safeNat, type, data, ts, meta, (index, term, type, data, ts, meta) => {
        const entry = { index, term, type, data, ts, ...(meta === undefined ? {} : { meta }) };
        const body = packr.pack(meta === undefined ? [index, term, type, data, ts] : [index, term, type, data, ts, meta]);
        const expected = Buffer.concat([Buffer.alloc(4), body]);
        expected.writeUInt32BE(crc32c(body), 0);
        expect(encodeEntryValue(entry).toString('hex')).toBe(expected.toString('hex'));
      }),
      { seed: 20261127, numRuns: 2000 },
    );
  });
});
