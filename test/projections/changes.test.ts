// changeOf reads most kv.put entries in place; the change must be the one the decoded put gives,
// and must keep nothing of the entry's bytes (a replay hands it bytes that are reused).

import { Packr } from 'msgpackr';
import type { LogEntry } from '../../src/eventlog';
import { changeOf } from '../../src/projections';

const packr = new Packr({ useRecords: false, moreTypes: false });

function putEntry(index: number, body: Record<string, unknown>): LogEntry {
  return { index, term: 1, type: 'kv.put', data: packr.pack({ v: 1, ...body }), ts: 5_000 + index };
}

describe('the change of a kv.put', () => {
  it('is the same whether the put is read in place or decoded', () => {
    const bodies = [
      { bucket: 'b', key: 'k', value: Buffer.from('v') },
      { bucket: 'b', key: 'k/2', value: Buffer.alloc(0) },
      { bucket: 'other', key: 'x'.repeat(300), value: Buffer.alloc(70_000, 7), expectRev: 3 },
      { bucket: 'other', key: ' ~!', value: Buffer.from('{"a":1}'), create: true, ttlMs: 10 },
    ];
    bodies.forEach((body, i) => {
      const inPlace = changeOf(putEntry(i + 1, body), { ok: true, seq: i + 1 });
      // A field changeOf does not know sends the put through msgpackr.
      const decoded = changeOf(putEntry(i + 1, { ...body, ignored: 1 }), { ok: true, seq: i + 1 });
      expect(inPlace).toEqual(decoded);
      expect(inPlace).toMatchObject({ kind: 'kv', op: 'PUT', subject: `$KV.${body.bucket}.${body.key}`, ts: 5_001 + i });
    });
  });

  it('copies the value out of the entry', () => {
    const entry = putEntry(1, { bucket: 'b', key: 'k', value: Buffer.from('before') });
    const change = changeOf(entry, { ok: true, seq: 1 });
    entry.data.fill(0);
    expect(change?.kind === 'kv' && Buffer.from(change.value).toString()).toBe('before');
  });
});
