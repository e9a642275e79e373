// The KV view caches bucket settings in memory, set by kv.bucket entries as it applies them. A
// batch whose commit LMDB aborts (util/aborted-commit.ts) runs again: the cache must not keep what
// the aborted attempt set, or the puts before a kv.bucket entry see the new setting and the view
// differs from every other replica's.
import * as path from 'node:path';
import type { LogEntry } from '../../../src/eventlog';
import { KvProjection, ProjectionRunner, ViewStore, encodeMutation } from '../../../src/projections';
import { silentLogger } from '../../../src/util';
import { abortCommits } from '../../support/aborted-commits';
import { makeTempDir, removeDir } from '../../support/tmp';

function log(): LogEntry[] {
  const out: LogEntry[] = [];
  const entry = (type: string, input: unknown): void => {
    const index = out.length + 1;
    out.push({ index, term: 1, type, data: encodeMutation(type as 'kv.put', input).data, ts: 1_000 + index });
  };
  entry('kv.bucket', { bucket: 'b', history: 1 });
  entry('kv.put', { v: 1, bucket: 'b', key: 'k', value: Buffer.from('one') });
  // One batch: a put, then the bucket starts keeping 3 revisions, then another put.
  entry('kv.put', { v: 1, bucket: 'b', key: 'k', value: Buffer.from('two') });
  entry('kv.bucket', { bucket: 'b', history: 3 });
  entry('kv.put', { v: 1, bucket: 'b', key: 'k', value: Buffer.from('three') });
  return out;
}

function run(dir: string, abortSecondBatch: boolean): Array<[string, string, string]> {
  const store = new ViewStore(dir);
  // Transactions: the runner's setup, the first batch, the second batch (aborted once).
  if (abortSecondBatch) abortCommits(store, (commit) => commit === 3);
  const runner = new ProjectionRunner(new KvProjection(store), store, silentLogger());
  const entries = log();
  runner.apply(entries.slice(0, 2));
  runner.apply(entries.slice(2));
  const dump = [...store.dump()].map(([db, key, value]): [string, string, string] => [db, key.toString('hex'), value.toString('hex')]);
  void store.close();
  return dump;
}

describe('the KV view applying a batch again after LMDB aborted its commit', () => {
  let dir: string;
  beforeEach(() => (dir = makeTempDir()));
  afterEach(() => removeDir(dir));

  it('ends byte for byte as a replica whose commit was not aborted', () => {
    const clean = run(path.join(dir, 'clean'), false);
    const retried = run(path.join(dir, 'retried'), true);
    expect(clean.filter(([db]) => db === 'kv-history')).toHaveLength(1);
    expect(retried).toEqual(clean);
  });
});
