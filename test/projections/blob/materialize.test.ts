// Copying chunks from the log into the blob view (before the log is compacted below them), when
// LMDB aborts a batch's commit (util/aborted-commit.ts): the batch runs again, and counts once.

import { createHash, randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { BlobStore, ViewStore, type LogChunkReader } from '../../../src/projections';
import { abortCommits } from '../../support/aborted-commits';
import { makeTempDir, removeDir } from '../../support/tmp';

describe('the blob view copying chunks out of the log', () => {
  let dir: string;
  let store: ViewStore;
  beforeEach(() => {
    dir = makeTempDir();
    store = new ViewStore(path.join(dir, 'views'));
  });
  afterEach(async () => {
    await store.close();
    removeDir(dir);
  });

  it('runs a batch again when LMDB aborts its commit, and reports each chunk once', async () => {
    // 100 chunks in log entries 1..100: two batches of copying.
    const log = new Map<number, Buffer>();
    for (let index = 1; index <= 100; index++) log.set(index, randomBytes(1000 + index));
    const reader: LogChunkReader = { read: (index, take) => (log.has(index) ? take(log.get(index) as Buffer) : undefined), firstIndex: () => 1 };
    const blob = new BlobStore(store, reader);
    const sha = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');
    for (const [index, bytes] of log) blob.chunksInLog.putSync(sha(bytes), { index, length: bytes.length });

    // The second batch's first commit is aborted after its writes, as LMDB's free-space bug does.
    const commits = abortCommits(store, (commit) => commit === 2);
    const retries: number[] = [];

    const copied = await blob.materializeUpTo(100, undefined, (_err, attempt) => retries.push(attempt));
    expect(copied).toEqual({ chunks: 100, bytes: [...log.values()].reduce((n, b) => n + b.length, 0) });
    expect(retries).toEqual([1]);
    expect(commits()).toBe(3);
    // Every chunk is in the view now, byte for byte, and none is left pointing at the log.
    const chunks = [...log.values()];
    log.clear();
    for (const bytes of chunks) expect(blob.readChunk(sha(bytes), (stored) => Buffer.from(stored))?.equals(bytes)).toBe(true);
    expect([...blob.chunksInLog.getKeys({})]).toEqual([]);
  });
});
