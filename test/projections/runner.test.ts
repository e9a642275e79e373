import * as path from 'node:path';
import type { LogEntry } from '../../src/eventlog';
import { ProjectionRunner, ViewStore, type Projection } from '../../src/projections';
import { LoomError, abortedCommitRetriesMax, silentLogger } from '../../src/util';
import { abortCommits } from '../support/aborted-commits';
import { makeTempDir, removeDir } from '../support/tmp';

function entries(from: number, to: number, type = 'count.me'): LogEntry[] {
  const out: LogEntry[] = [];
  for (let i = from; i <= to; i++) out.push({ index: i, term: 1, type, data: Buffer.from(String(i)), ts: i });
  return out;
}

/** A projection that sums entry payloads into one LMDB key of the view store. */
function summing(store: ViewStore, version: number, failOn?: number): Projection<void> {
  const db = store.env.openDB<number, string>({ name: 'sum', encoding: 'msgpack' });
  return {
    name: 'sum',
    version,
    handles: ['count.me'],
    reset: () => db.clearSync(),
    apply(batch) {
      for (const e of batch) {
        if (e.index === failOn) throw new Error(`cannot count ${e.index}`);
        db.putSync('total', (db.get('total') ?? 0) + Number(Buffer.from(e.data).toString()));
      }
    },
  };
}

describe('the projection runner', () => {
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
  const total = (): number | undefined => store.env.openDB<number, string>({ name: 'sum', encoding: 'msgpack' }).get('total');

  it('moves its checkpoint with the view, over entries it does not handle too', () => {
    const runner = new ProjectionRunner(summing(store, 1), store, silentLogger());
    runner.apply([...entries(1, 3), ...entries(4, 5, 'other.type')]);
    expect(total()).toBe(6);
    expect(runner.appliedIndex()).toBe(5);
    expect(store.readCheckpoint('sum')).toEqual({ index: 5, version: 1 });
    const resumed = new ProjectionRunner(summing(store, 1), store, silentLogger());
    expect(resumed.appliedIndex()).toBe(5);
  });

  it('rebuilds from scratch when the version changes', () => {
    new ProjectionRunner(summing(store, 1), store, silentLogger()).apply(entries(1, 4));
    const rebuilt = new ProjectionRunner(summing(store, 2), store, silentLogger());
    expect(rebuilt.appliedIndex()).toBe(0);
    expect(rebuilt.status().state).toBe('REBUILDING');
    expect(total()).toBeUndefined();
    rebuilt.apply(entries(1, 4));
    expect(total()).toBe(10);
    expect(rebuilt.status().state).toBe('RUNNING');
  });

  it('stops FAILED at the entry that threw, keeping the view as it was before the batch', () => {
    const runner = new ProjectionRunner(summing(store, 1, 7), store, silentLogger());
    runner.apply(entries(1, 4));
    expect(() => runner.apply(entries(5, 9))).toThrow(/projection sum failed at entry 7: cannot count 7/);
    expect(runner.status()).toMatchObject({ state: 'FAILED', failedIndex: 7, appliedIndex: 4 });
    expect(total()).toBe(10);
    expect(store.readCheckpoint('sum')?.index).toBe(4);
    const again = (() => {
      try {
        runner.apply(entries(5, 6));
      } catch (err) {
        return err as LoomError;
      }
    })();
    expect(again?.message).toMatch(/FAILED at entry 7/);
  });

  it('applies a batch again when LMDB aborts its commit (MDB_BAD_TXN), and stops FAILED only if it keeps aborting', () => {
    // LMDB's free-space bug fails a commit after the batch ran: its writes are rolled back whole.
    let aborts = 0;
    abortCommits(store, () => aborts > 0 && aborts-- > 0);
    const warnings: string[] = [];
    const logger = silentLogger();
    logger.warn = ((_fields: unknown, message: string) => void warnings.push(message)) as typeof logger.warn;
    const runner = new ProjectionRunner(summing(store, 1), store, logger);
    aborts = 1;
    runner.apply(entries(1, 3));
    expect([total(), runner.appliedIndex(), runner.status().state, store.readCheckpoint('sum')?.index]).toEqual([6, 3, 'RUNNING', 3]);
    expect(warnings).toEqual([expect.stringMatching(/LMDB aborted the commit of a projection transaction \(batch up to 3\)/)]);
    // Aborted on every try: FAILED, the view as it was before the batch.
    aborts = abortedCommitRetriesMax + 1;
    expect(() => runner.apply(entries(4, 5))).toThrow(/MDB_BAD_TXN/);
    expect([total(), runner.status().state, store.readCheckpoint('sum')?.index]).toEqual([6, 'FAILED', 3]);
    expect(warnings).toHaveLength(1 + abortedCommitRetriesMax);
  });
});
