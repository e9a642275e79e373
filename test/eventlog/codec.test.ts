import fc from 'fast-check';
import { decodeEntryValue, decodeIndexKey, encodeEntryValue, encodeIndexKey } from '../../src/eventlog/codec';

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
