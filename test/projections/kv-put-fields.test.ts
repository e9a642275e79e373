// readKvPutFields reads a kv.put body in place; for every body it accepts it must agree with
// msgpackr field for field, and it must refuse (so that msgpackr decodes) every other layout.

import { Packr } from 'msgpackr';
import { encodeMutation } from '../../src/projections';
import { asciiString, readKvPutFields } from '../../src/projections/entries';
import { seededRandom } from '../support/seeded';

const packr = new Packr({ useRecords: false, moreTypes: false });
const nameChars = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=';

function randomName(random: () => number, chars: string, length: number): string {
  let s = '';
  for (let i = 0; i < length; i++) s += chars[Math.floor(random() * chars.length)];
  return s;
}

describe('a kv.put body read in place', () => {
  it('gives the same fields as msgpackr for every body encodeMutation accepts', () => {
    const random = seededRandom(42);
    const lengths = [1, 2, 31, 32, 63, 64, 255, 256, 1024];
    const valueLengths = [0, 1, 64, 65, 255, 256, 65_535, 65_536];
    for (let i = 0; i < 400; i++) {
      const body: Record<string, unknown> = {
        bucket: randomName(random, nameChars.replace(/[./=]/g, ''), 1 + Math.floor(random() * 64)),
        // Dots only inside, never two in a row: what checkKey accepts.
        key: randomName(random, nameChars, lengths[i % lengths.length]).replace(/\.+/g, '_').replace(/_$/, '-'),
        value: Buffer.alloc(valueLengths[i % valueLengths.length], i),
      };
      if (random() < 0.3) body.expectRev = [0, 1, 127, 128, 255, 256, 65_536, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 3][i % 10];
      if (random() < 0.2) body.create = random() < 0.5;
      if (body.create === true) delete body.expectRev;
      if (random() < 0.2) body.ttlMs = 1 + Math.floor(random() * 1e9);
      const { data } = encodeMutation('kv.put', body);
      const decoded = packr.unpack(Buffer.from(data)) as Record<string, unknown>;
      const fields = readKvPutFields(data);
      expect(fields).toBeDefined();
      if (!fields) return;
      expect(asciiString(data, fields.bucketStart, fields.bucketEnd)).toBe(decoded.bucket);
      expect(asciiString(data, fields.keyStart, fields.keyEnd)).toBe(decoded.key);
      expect(Buffer.from(data.subarray(fields.valueStart, fields.valueEnd)).equals(decoded.value as Buffer)).toBe(true);
      expect(fields.expectRev).toBe(decoded.expectRev);
      expect(fields.create).toBe(decoded.create);
      expect(fields.ttlMs).toBe(decoded.ttlMs);
    }
  });

  it('accepts every printable ASCII name, the space and tilde included', () => {
    const key = ' !"#$%&\'()*+,-./0123456789:;<=>?@AZ[\\]^_`az{|}~';
    const data = packr.pack({ v: 1, bucket: 'b', key, value: Buffer.from('x') });
    const fields = readKvPutFields(data);
    expect(fields && asciiString(data, fields.keyStart, fields.keyEnd)).toBe(key);
  });

  it('refuses any other layout, which msgpackr then decodes', () => {
    const value = Buffer.from('x');
    const refused: Array<[string, Uint8Array]> = [
      ['a name beyond ASCII', packr.pack({ v: 1, bucket: 'b', key: 'schlüssel', value })],
      ['a control character in a name', packr.pack({ v: 1, bucket: 'b', key: 'a\u0001b', value })],
      ['an empty key', packr.pack({ v: 1, bucket: 'b', key: '', value })],
      ['an unknown field', packr.pack({ v: 1, bucket: 'b', key: 'k', value, extra: 1 })],
      ['another version', packr.pack({ v: 2, bucket: 'b', key: 'k', value })],
      ['no value', packr.pack({ v: 1, bucket: 'b', key: 'k' })],
      ['no version', packr.pack({ bucket: 'b', key: 'k', value })],
      ['a string value', packr.pack({ v: 1, bucket: 'b', key: 'k', value: 'x' })],
      ['a negative expectRev', packr.pack({ v: 1, bucket: 'b', key: 'k', value, expectRev: -1 })],
      ['a fractional expectRev', packr.pack({ v: 1, bucket: 'b', key: 'k', value, expectRev: 1.5 })],
      ['a create that is not a boolean', packr.pack({ v: 1, bucket: 'b', key: 'k', value, create: 1 })],
      ['an array', packr.pack([1, 'b', 'k', value])],
      ['trailing bytes', Buffer.concat([packr.pack({ v: 1, bucket: 'b', key: 'k', value }), Buffer.from([0])])],
      ['a truncated body', packr.pack({ v: 1, bucket: 'b', key: 'k', value }).subarray(0, 12)],
      ['nothing', new Uint8Array(0)],
    ];
    // The same field twice: map16(5) v 1, bucket "b", key "k", key "j", value bin8(1).
    const twice = Buffer.from(packr.pack({ v: 1, bucket: 'b', key: 'k', value }));
    const at = twice.indexOf(Buffer.from([0xa5, ...Buffer.from('value')]));
    refused.push(['a field twice', Buffer.concat([Buffer.from([0xde, 0x00, 0x05]), twice.subarray(3, at), Buffer.from([0xa3, ...Buffer.from('key'), 0xa1, 0x6a]), twice.subarray(at)])]);
    for (const [why, data] of refused) {
      expect([why, readKvPutFields(data)]).toEqual([why, undefined]);
    }
  });
});
