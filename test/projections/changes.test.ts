// changeOf reads most kv.put entries in place; the change must be the one the decoded put gives,
// and must keep nothing of the entry's bytes (a replay hands it bytes that are reused).

import { Packr } from 'msgpackr';
import type { LogEntry } from '../../src/eventlog';
import { changeOf, encodeMutation } from '../../src/projections';

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

describe('the change of an object entry', () => {
  const entry = (index: number, type: 'blob.commit' | 'blob.del', body: Record<string, unknown>): LogEntry => ({ index, term: 1, type, data: encodeMutation(type, body).data, ts: 9_000 });

  it('is none for a delete that found no object, and a DEL for one that did', () => {
    const del = entry(7, 'blob.del', { bucket: 'b', name: 'o' });
    expect(changeOf(del, { ok: true, seq: 7, rev: 7, deleted: false })).toBeUndefined();
    expect(changeOf(del, { ok: true, seq: 7, rev: 7, deleted: true })).toMatchObject({ kind: 'object', op: 'DEL', info: { bucket: 'b', name: 'o', rev: 7, deleted: true } });
  });

  it('carries the object info of a put, chunkBytes and chunkCount included, in ObjectInfo field order', () => {
    const commit = entry(8, 'blob.commit', { bucket: 'b', name: 'o', size: 5000, sha256: Buffer.alloc(32, 1), chunkBytes: 4096, chunks: Buffer.alloc(64), contentType: 'text/plain', metadata: { k: 'v' } });
    const change = changeOf(commit, { ok: true, seq: 8, rev: 8 });
    expect(change?.kind === 'object' && JSON.stringify(change.info)).toBe(
      JSON.stringify({ bucket: 'b', name: 'o', size: 5000, sha256: '01'.repeat(32), contentType: 'text/plain', metadata: { k: 'v' }, rev: 8, updatedAt: 9_000, chunkBytes: 4096, chunkCount: 2 }),
    );
  });
});
