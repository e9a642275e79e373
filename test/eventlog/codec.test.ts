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
});
