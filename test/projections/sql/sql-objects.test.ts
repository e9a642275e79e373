// The SQL view's `objects` table: one row per visible object, decided exactly as the blob view
// decides (a commit whose chunks are not all stored is a CONFLICT and shows nothing).

import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BlobProjection, BlobStore } from '../../../src/projections/blob';
import { ViewStore } from '../../../src/projections/kv/kv-view';
import { ProjectionRunner } from '../../../src/projections/projection';
import { SqlProjection, SqlStore } from '../../../src/projections/sql';
import { silentLogger } from '../../../src/util';
import { LogBuilder, baseTs, tempDir } from './log-builder';

const logger = silentLogger();
const chunkBytes = 4096;
let dir: string;

beforeEach(() => {
  dir = tempDir('sql-objects');
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const sha = (bytes: Uint8Array): Buffer => createHash('sha256').update(bytes).digest();

/** Appends chunk entries (all of them, or only those `store` picks) and the commit of `bytes`. */
function upload(log: LogBuilder, bucket: string, name: string, bytes: Buffer, extra: { contentType?: string; metadata?: Record<string, string>; store?: (i: number) => boolean } = {}): LogBuilder {
  const digests: Buffer[] = [];
  for (let at = 0, i = 0; at < bytes.length; at += chunkBytes, i++) {
    const chunk = bytes.subarray(at, at + chunkBytes);
    digests.push(sha(chunk));
    if (extra.store?.(i) ?? true) log.add('blob.chunk', { sha256: sha(chunk), bytes: chunk });
  }
  return log.add('blob.commit', {
    bucket,
    name,
    size: bytes.length,
    sha256: sha(bytes),
    chunkBytes,
    chunks: Buffer.concat(digests),
    ...(extra.contentType ? { contentType: extra.contentType } : {}),
    ...(extra.metadata ? { metadata: extra.metadata } : {}),
  });
}

function objectsLog(a = randomBytes(3 * chunkBytes + 10)): LogBuilder {
  const b = randomBytes(2 * chunkBytes);
  const log = new LogBuilder();
  upload(log, 'photos', 'cat.jpg', a, { contentType: 'image/jpeg', metadata: { camera: 'x100' } });
  upload(log, 'photos', 'dog.jpg', b);
  // A commit whose second chunk was never stored: CONFLICT, not visible.
  upload(log, 'photos', 'broken', randomBytes(2 * chunkBytes), { store: (i) => i !== 1 });
  upload(log, 'docs', 'a/b.txt', Buffer.from('hello'), { contentType: 'text/plain' });
  // Overwrite dog.jpg with a's bytes (shared chunks), delete cat.jpg, then collect what nothing references.
  upload(log, 'photos', 'dog.jpg', a, { store: () => false });
  log.add('blob.del', { bucket: 'photos', name: 'cat.jpg' });
  log.add('blob.del', { bucket: 'photos', name: 'missing' });
  log.add('blob.gc', { beforeTs: baseTs + 10_000_000, limit: 1000 });
  // dog.jpg's first version's chunks are gone now; a commit naming them again conflicts.
  upload(log, 'photos', 'again', b, { store: () => false });
  return log;
}

describe('SQL view of objects', () => {
  it('keeps one row per visible object with its size, sha256, content type, JSON metadata and time', () => {
    const a = randomBytes(3 * chunkBytes + 10);
    const log = objectsLog(a);
    const store = new SqlStore(path.join(dir, 'view.sqlite'));
    try {
      const runner = new ProjectionRunner(new SqlProjection(), store, logger);
      for (const batch of log.batches(4)) runner.apply(batch);
      const rows = store.db.prepare(`SELECT bucket, name, size, sha256, content_type, json_extract(metadata, '$.camera') AS camera, updated_at FROM objects ORDER BY bucket, name`).all();
      const dogCommit = log.entries.filter((e) => e.type === 'blob.commit')[4];
      expect(rows).toEqual([
        { bucket: 'docs', name: 'a/b.txt', size: 5, sha256: sha(Buffer.from('hello')).toString('hex'), content_type: 'text/plain', camera: null, updated_at: expect.any(Number) },
        { bucket: 'photos', name: 'dog.jpg', size: 3 * chunkBytes + 10, sha256: sha(a).toString('hex'), content_type: 'application/octet-stream', camera: null, updated_at: dogCommit.ts },
      ]);
      expect(store.db.prepare(`SELECT count(*) FROM objects WHERE size > 100`).pluck().get()).toBe(1);
    } finally {
      store.close();
    }
  });

  it('decides every blob outcome exactly like the blob view, whatever the batch size', async () => {
    const log = objectsLog();
    const views = new ViewStore(path.join(dir, 'lmdb'));
    const store = new SqlStore(path.join(dir, 'view.sqlite'));
    try {
      const blobRunner = new ProjectionRunner(new BlobProjection(new BlobStore(views)), views, logger);
      const blobOutcomes = log.batches(5).flatMap((batch) => blobRunner.apply(batch));
      const sqlRunner = new ProjectionRunner(new SqlProjection(), store, logger);
      const sqlOutcomes = log.batches(3).flatMap((batch) => sqlRunner.apply(batch));
      expect(sqlOutcomes).toEqual(blobOutcomes);
      expect(blobOutcomes.filter((o) => o && !o.ok).map((o) => (o as { code?: string }).code)).toEqual(['CONFLICT', 'CONFLICT']);
      const conflicts = store.db.prepare(`SELECT seq FROM _loom_conflicts ORDER BY seq`).pluck().all();
      expect(conflicts).toEqual(blobOutcomes.filter((o) => o && !o.ok).map((o) => o?.seq));
    } finally {
      store.close();
      await views.close();
    }
  });
});
