// One contract suite for every LogStore implementation (STYLE.md convention 9): the LMDB log and
// the in-memory log must behave identically through the interface Raft and the core drive.

import { entryBytesMaxDefault, type LogEntry, type LogStore } from '../../src/eventlog';
import { LoomError } from '../../src/util';

export interface LogFactory {
  open(): LogStore;
  /** Closes and reopens the same log, for implementations that persist; undefined otherwise. */
  reopen?(log: LogStore): Promise<LogStore>;
  cleanup(): void;
}

export function entry(index: number, term = 1, data = `v${index}`): LogEntry {
  return { index, term, type: 'test.put', data: Buffer.from(data), ts: 1_700_000_000_000 + index };
}

function range(lo: number, hi: number, term = 1): LogEntry[] {
  const out: LogEntry[] = [];
  for (let i = lo; i <= hi; i++) out.push(entry(i, term));
  return out;
}

async function expectLoomError(promise: Promise<unknown> | (() => unknown), code: string): Promise<LoomError> {
  try {
    if (typeof promise === 'function') await promise();
    else await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(LoomError);
    expect((err as LoomError).code).toBe(code);
    return err as LoomError;
  }
  throw new Error(`expected a LoomError ${code}`);
}

export function logContract(name: string, makeFactory: () => LogFactory): void {
  describe(`LogStore contract: ${name}`, () => {
    let factory: LogFactory;
    let log: LogStore;

    beforeEach(() => {
      factory = makeFactory();
      log = factory.open();
    });
    afterEach(async () => {
      await log.close();
      factory.cleanup();
    });

    it('starts empty, with first index 1 and last index 0', () => {
      expect(log.firstIndex()).toBe(1);
      expect(log.lastIndex()).toBe(0);
      expect(log.term(0)).toBe(0);
      expect(log.hardState()).toEqual({ term: 0, vote: 0, commit: 0 });
    });

    it('returns appended entries intact and in order', async () => {
      await log.append(range(1, 5));
      expect(log.lastIndex()).toBe(5);
      const read = log.entries(1, 6);
      expect(read.map((e) => e.index)).toEqual([1, 2, 3, 4, 5]);
      expect(Buffer.from(read[2].data).toString()).toBe('v3');
      expect(read[2]).toMatchObject({ index: 3, term: 1, type: 'test.put', ts: 1_700_000_000_003 });
    });

    it('keeps entry meta', async () => {
      await log.append([{ ...entry(1), meta: { proposer: 'n1', n: 2 } }]);
      expect(log.entries(1, 2)[0].meta).toEqual({ proposer: 'n1', n: 2 });
    });

    it('stops a read at bytesMax but always returns at least one entry', async () => {
      await log.append(range(1, 10));
      expect(log.entries(1, 11, 1)).toHaveLength(1);
      const some = log.entries(1, 11, 200);
      expect(some.length).toBeGreaterThan(1);
      expect(some.length).toBeLessThan(10);
    });

    it('serves appends issued in the same turn densely and in order', async () => {
      await Promise.all([log.append([entry(1)]), log.append([entry(2), entry(3)]), log.append([entry(4)])]);
      expect(log.entries(1, 5).map((e) => e.index)).toEqual([1, 2, 3, 4]);
    });

    it('refuses an append that leaves a gap, and writes nothing', async () => {
      await log.append(range(1, 2));
      await expectLoomError(() => log.append([entry(4)]), 'INVALID_ARGUMENT');
      await expectLoomError(() => log.append([entry(3), entry(5)]), 'INVALID_ARGUMENT');
      expect(log.lastIndex()).toBe(2);
    });

    it('refuses an entry whose term goes backwards', async () => {
      await log.append([entry(1, 3)]);
      await expectLoomError(() => log.append([entry(2, 2)]), 'INVALID_ARGUMENT');
      expect(log.lastIndex()).toBe(1);
    });

    it('refuses an entry over entryBytesMax with TOO_LARGE, writing nothing of the batch', async () => {
      const big = { ...entry(2), data: Buffer.alloc(entryBytesMaxDefault + 1) };
      const err = await expectLoomError(() => log.append([entry(1), big]), 'TOO_LARGE');
      expect(err.message).toMatch(/entryBytesMax/);
      expect(log.lastIndex()).toBe(0);
    });

    it('reads terms, including the term of the snapshot point', async () => {
      await log.append([entry(1, 1), entry(2, 2), entry(3, 2)]);
      expect([log.term(1), log.term(2), log.term(3)]).toEqual([1, 2, 2]);
      await expectLoomError(() => log.term(4), 'NOT_FOUND');
    });

    it('truncates a conflicting suffix and accepts a new one in its place', async () => {
      await log.append(range(1, 5, 1));
      await log.truncateSuffix(3);
      expect(log.lastIndex()).toBe(2);
      await log.append([entry(3, 2, 'new3')]);
      expect(Buffer.from(log.entries(3, 4)[0].data).toString()).toBe('new3');
      expect(log.term(3)).toBe(2);
    });

    it('truncates behind appends that are still in flight', async () => {
      const inflight = log.append(range(1, 5, 1));
      const truncated = log.truncateSuffix(4);
      const replaced = log.append([entry(4, 2, 'x')]);
      await Promise.all([inflight, truncated, replaced]);
      expect(log.lastIndex()).toBe(4);
      expect(log.entries(1, 5).map((e) => `${e.index}:${e.term}`)).toEqual(['1:1', '2:1', '3:1', '4:2']);
    });

    it('compacts a prefix, remembering the snapshot point', async () => {
      await log.append([entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)]);
      await log.compactPrefix(3);
      expect(log.firstIndex()).toBe(4);
      expect(log.snapshotMeta()).toEqual({ index: 3, term: 2 });
      expect(log.term(3)).toBe(2);
      await expectLoomError(() => log.entries(2, 4), 'NOT_FOUND');
      expect(log.entries(4, 5)[0].index).toBe(4);
      await log.append([entry(5, 2)]);
      expect(log.lastIndex()).toBe(5);
    });

    it('resets to a snapshot, dropping every entry', async () => {
      await log.append(range(1, 3));
      await log.resetToSnapshot({ index: 10, term: 4 });
      expect(log.firstIndex()).toBe(11);
      expect(log.lastIndex()).toBe(10);
      expect(log.term(10)).toBe(4);
      await log.append([entry(11, 4)]);
      expect(log.entries(11, 12)).toHaveLength(1);
    });

    it('keeps the hard state', async () => {
      await log.setHardState({ term: 3, vote: 2, commit: 0 });
      expect(log.hardState()).toEqual({ term: 3, vote: 2, commit: 0 });
    });

    it('refuses every operation after close with UNAVAILABLE', async () => {
      await log.close();
      await expectLoomError(() => log.append([entry(1)]), 'UNAVAILABLE');
      await expectLoomError(() => log.entries(1, 1), 'UNAVAILABLE');
    });

    it('survives a reopen with everything it acknowledged', async () => {
      if (!factory.reopen) return;
      await log.append([entry(1, 1), entry(2, 1), entry(3, 2)]);
      await log.setHardState({ term: 2, vote: 1, commit: 2 });
      await log.compactPrefix(1, { voters: [1, 2, 3], learners: [4] });
      log = await factory.reopen(log);
      expect(log.snapshotMeta()).toEqual({ index: 1, term: 1, conf: { voters: [1, 2, 3], learners: [4] } });
      expect(log.firstIndex()).toBe(2);
      expect(log.lastIndex()).toBe(3);
      expect(log.term(3)).toBe(2);
      expect(log.hardState()).toEqual({ term: 2, vote: 1, commit: 2 });
      await log.append([entry(4, 2)]);
      expect(log.entries(2, 5).map((e) => e.index)).toEqual([2, 3, 4]);
    });
  });
}
