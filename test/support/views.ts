// Helpers to compare views between replicas: fill a log with mutations, and dump the built-in
// LMDB views in key order as hex so two replicas can be compared byte for byte.

import { createHash } from 'node:crypto';
import * as path from 'node:path';
import { LmdbLog, type LogEntry } from '../../src/eventlog';
import { BlobStore, ViewStore, encodeMutation, logChunkReader } from '../../src/projections';
import { seededRandom } from './seeded';

/**
 * Appends `count` seeded mutations (puts, CAS conflicts, deletes, events) to a log at `logDir`, then
 * `objects` seeded object operations (uploads sharing chunks, commits missing a chunk, deletes, and
 * chunk collections).
 */
export async function writeMutations(logDir: string, count: number, seed: number, options: { objects?: number } = {}): Promise<void> {
  const random = seededRandom(seed);
  const log = LmdbLog.open({ path: logDir, sync: 'none' });
  const batch: LogEntry[] = [];
  let index = log.lastIndex();
  const ts = 1_800_000_000_000;
  const push = (type: string, body: unknown): void => {
    const { data } = encodeMutation(type as 'kv.put', body);
    index++;
    batch.push({ index, term: 1, type, data, ts: ts + index });
  };
  for (let i = 0; i < count; i++) {
    const r = random();
    const key = `k${Math.floor(random() * 500)}`;
    if (r < 0.6) push('kv.put', { bucket: 'b1', key, value: Buffer.from(JSON.stringify({ i, n: Math.floor(random() * 1000) })) });
    else if (r < 0.7) push('kv.put', { bucket: 'b2', key, value: Buffer.from([i & 255, 0, 255]), expectRev: Math.floor(random() * index) });
    else if (r < 0.75) push('kv.put', { bucket: 'b2', key, value: Buffer.from('c'), create: true });
    else if (r < 0.85) push('kv.del', { bucket: 'b1', key });
    else push('event.append', { stream: `s${Math.floor(random() * 20)}`, type: 'thing.happened', data: { i }, ...(random() < 0.3 ? { expectVersion: Math.floor(random() * 5) } : {}) });
    if (batch.length === 1000) await log.append(batch.splice(0));
  }
  for (let i = 0; i < (options.objects ?? 0); i++) {
    const r = random();
    const name = `dir/o${Math.floor(random() * 30)}`;
    if (r < 0.7) {
      // Chunks from a pool of ten contents, so objects share them; now and then one is not stored.
      const chunkBytes = 4096;
      const count = 1 + Math.floor(random() * 3);
      const pieces = Array.from({ length: count }, (_, j) => {
        const pool = Math.floor(random() * 10);
        return Buffer.alloc(j === count - 1 ? 1 + pool * 100 : chunkBytes, pool);
      });
      const skip = random() < 0.1 ? 0 : -1;
      pieces.forEach((bytes, j) => {
        if (j !== skip) push('blob.chunk', { sha256: createHash('sha256').update(bytes).digest(), bytes });
      });
      const whole = Buffer.concat(pieces);
      push('blob.commit', {
        bucket: 'files',
        name,
        size: whole.length,
        sha256: createHash('sha256').update(whole).digest(),
        chunkBytes,
        chunks: Buffer.concat(pieces.map((bytes) => createHash('sha256').update(bytes).digest())),
        metadata: { i: String(i) },
      });
    } else if (r < 0.85) push('blob.del', { bucket: 'files', name });
    else push('blob.gc', { beforeTs: ts + index - 20, limit: 5 });
    if (batch.length >= 1000) await log.append(batch.splice(0));
  }
  if (batch.length > 0) await log.append(batch.splice(0));
  await log.close();
}

/**
 * A digest of every key/value of the built-in LMDB views under `dataDir`; chunks still in the log
 * are read from `dataDir`/log, so where a replica keeps a chunk's bytes does not matter.
 */
export async function viewDigest(dataDir: string): Promise<{ digest: string; records: number; blobRecords: number }> {
  const store = new ViewStore(path.join(dataDir, 'views', 'lmdb'));
  const log = LmdbLog.open({ path: path.join(dataDir, 'log'), readOnly: true });
  const hash = createHash('sha256');
  let records = 0;
  let blobRecords = 0;
  try {
    for (const [db, key, value] of [...store.dump(), ...new BlobStore(store, logChunkReader(log)).dump()]) {
      hash.update(db).update('\0').update(key).update('\0').update(value).update('\n');
      records++;
      if (db.startsWith('blob-')) blobRecords++;
    }
  } finally {
    await log.close();
    await store.close();
  }
  return { digest: hash.digest('hex'), records, blobRecords };
}
