// Conditional object writes (docs/decisions.md §21): `expectRev` on a put or a delete, 0 meaning
// "only if it does not exist", checked before the first byte is read and decided for good when the
// commit or delete is applied, on every replica alike.

import { Readable } from 'node:stream';
import { openNode } from '../../src';
import { openDatabase, type OpenDatabase } from '../../src/core';
import { LmdbLog, type LogStore } from '../../src/eventlog';
import { decodeMutation, encodeMutation } from '../../src/projections';
import { LoomError, silentLogger } from '../../src/util';
import { makeTempDir, removeDir } from '../support/tmp';

async function failure(promise: Promise<unknown>): Promise<LoomError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LoomError);
  return err as LoomError;
}

/** A source that records whether anything read it. */
function watchedSource(bytes: Buffer): { source: Readable; read: () => boolean } {
  let pulled = false;
  const source = new Readable({
    read() {
      pulled = true;
      this.push(bytes);
      this.push(null);
    },
  });
  return { source, read: () => pulled };
}

/** `pieces` pieces of `bytes` bytes each, 5 ms apart: an upload still going when another starts. */
function slowSource(tag: string, pieces: number, bytes: number): Readable {
  return Readable.from(
    (async function* () {
      for (let i = 0; i < pieces; i++) {
        await new Promise((resolve) => setTimeout(resolve, 5));
        yield Buffer.alloc(bytes, `${tag}${i}`);
      }
    })(),
  );
}

describe('conditional object writes', () => {
  let dir: string;
  let log: LogStore;
  let opened: OpenDatabase;

  beforeEach(async () => {
    dir = makeTempDir();
    log = LmdbLog.open({ path: `${dir}/log`, sync: 'none' });
    opened = await openDatabase({ log, viewsDir: `${dir}/views`, logger: silentLogger(), objects: { chunkBytes: 4096 }, chunkGcIntervalMs: 3_600_000 });
  });
  afterEach(async () => {
    await opened.close();
    await log.close();
    removeDir(dir);
  });

  it('creates only what does not exist (expectRev 0), refusing before reading a byte', async () => {
    const objects = opened.db.objects;
    const first = await objects.put('b', 'photo.jpg', Buffer.from('one'), { expectRev: 0 });
    const again = watchedSource(Buffer.from('two'));
    const refused = await failure(objects.put('b', 'photo.jpg', again.source, { expectRev: 0 }));
    expect(refused.code).toBe('CONFLICT');
    expect(refused.message).toContain('already exists');
    expect(refused.details).toMatchObject({ bucket: 'b', name: 'photo.jpg', currentRev: first.rev });
    expect(again.read()).toBe(false);
    expect((await objects.stat('b', 'photo.jpg')).rev).toBe(first.rev);
  });

  it('replaces and deletes only at the expected rev', async () => {
    const objects = opened.db.objects;
    const first = await objects.put('b', 'doc', Buffer.from('v1'));
    const second = await objects.put('b', 'doc', Buffer.from('v2'), { expectRev: first.rev });
    const stale = await failure(objects.put('b', 'doc', Buffer.from('v3'), { expectRev: first.rev }));
    expect(stale.code).toBe('CONFLICT');
    expect(stale.details).toMatchObject({ currentRev: second.rev });
    expect((await failure(objects.delete('b', 'doc', { expectRev: first.rev }))).code).toBe('CONFLICT');
    expect((await objects.stat('b', 'doc')).sha256).toBe(second.sha256);
    expect(await objects.delete('b', 'doc', { expectRev: second.rev })).toMatchObject({ deleted: true });
    expect((await failure(objects.stat('b', 'doc'))).code).toBe('NOT_FOUND');
    // Deleting what is already gone "only if it does not exist" holds; at a rev it does not.
    expect(await objects.delete('b', 'doc', { expectRev: 0 })).toMatchObject({ deleted: false });
    expect((await failure(objects.delete('b', 'doc', { expectRev: second.rev }))).message).toContain('does not exist');
  });

  it('decides two racing creates when they are applied: exactly one object, the other CONFLICT', async () => {
    const objects = opened.db.objects;
    // Both pass the check before their first byte (nothing exists yet); their commits race.
    const results = await Promise.allSettled([objects.put('b', 'race', slowSource('a', 8, 4096), { expectRev: 0 }), objects.put('b', 'race', slowSource('b', 8, 4096), { expectRev: 0 })]);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    expect((lost[0].reason as LoomError).code).toBe('CONFLICT');
    const info = await objects.stat('b', 'race');
    expect(info.rev).toBe((won[0] as PromiseFulfilledResult<{ rev: number }>).value.rev);
  });

  it('refuses an expectRev that is not a rev, storing nothing', async () => {
    for (const expectRev of [-1, 1.5, Number.NaN]) {
      const refused = await failure(opened.db.objects.put('b', 'x', Buffer.from('x'), { expectRev }));
      expect(refused).toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'expectRev' } });
      expect((await failure(opened.db.objects.delete('b', 'x', { expectRev }))).code).toBe('INVALID_ARGUMENT');
    }
    expect((await opened.db.objects.list('b')).items).toEqual([]);
  });

  it('writes a conditional entry as version 2, and an unconditional one as before', () => {
    const conditional = encodeMutation('blob.del', { bucket: 'b', name: 'n', expectRev: 7 });
    const plain = encodeMutation('blob.del', { bucket: 'b', name: 'n' });
    expect(decodeMutation({ index: 1, term: 1, type: 'blob.del', data: conditional.data, ts: 0 } as never)?.body).toMatchObject({ v: 2, expectRev: 7 });
    expect(decodeMutation({ index: 1, term: 1, type: 'blob.del', data: plain.data, ts: 0 } as never)?.body).toEqual({ v: 1, bucket: 'b', name: 'n' });
  });
});

it('the SQL view decides a conditional write as the blob view does', async () => {
  const dir = makeTempDir();
  const node = await openNode({ data: dir, sync: 'none' });
  try {
    const objects = node.db.objects;
    // Two creates that both pass the early check: the loser's commit reaches the log, and each
    // view must refuse it there.
    const results = await Promise.allSettled([objects.put('b', 'doc', slowSource('a', 4, 1000), { expectRev: 0 }), objects.put('b', 'doc', slowSource('b', 4, 1000), { expectRev: 0 })]);
    const lost = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect((lost?.reason as LoomError).details.seq).toBeGreaterThan(0); // decided in the log, not before it
    const info = await objects.stat('b', 'doc');
    const rows = await node.db.sqlQuery({ sql: `SELECT name, rev, sha256 FROM objects WHERE bucket = 'b'` }, { atLeast: node.db.core.status().appliedIndex });
    expect(rows.rows).toEqual([['doc', info.rev, info.sha256]]);
  } finally {
    await node.close();
    removeDir(dir);
  }
});
