import { Core, type EntryConsumer } from '../../src/core';
import { LmdbLog, MemoryLog, type LogEntry } from '../../src/eventlog';
import { LoomError, silentLogger } from '../../src/util';
import { makeTempDir, removeDir } from '../support/tmp';

/** A consumer that records what it is given and keeps its checkpoint in memory. */
function recorder(name = 'recorder', checkpoint = 0): EntryConsumer & { seen: number[] } {
  const seen: number[] = [];
  let applied = checkpoint;
  return {
    name,
    seen,
    appliedIndex: () => applied,
    apply(entries: LogEntry[]) {
      for (const e of entries) seen.push(e.index);
      applied = entries[entries.length - 1].index;
      return entries.map((e) => `ok:${e.index}`);
    },
  };
}

const put = (s: string) => ({ type: 'test.put', data: Buffer.from(s) });

describe('core on a single node', () => {
  it('resolves a proposal with its seq and outcome once it is applied', async () => {
    const consumer = recorder();
    const core = await Core.open({ log: new MemoryLog(), logger: silentLogger(), consumers: [consumer] });
    const results = await Promise.all([core.propose(put('a')), core.propose(put('b')), core.propose(put('c'))]);
    expect(results).toEqual([
      { seq: 1, outcome: 'ok:1' },
      { seq: 2, outcome: 'ok:2' },
      { seq: 3, outcome: 'ok:3' },
    ]);
    expect(consumer.seen).toEqual([1, 2, 3]);
    expect(core.status()).toMatchObject({ lastIndex: 3, commitIndex: 3, appliedIndex: 3, leader: true });
    await core.close();
  });

  it('feeds consumers every entry exactly once, in order, under many concurrent proposers', async () => {
    const consumer = recorder();
    const core = await Core.open({ log: new MemoryLog(), logger: silentLogger(), consumers: [consumer] });
    await Promise.all(Array.from({ length: 500 }, (_, i) => core.propose(put(`v${i}`))));
    expect(consumer.seen).toEqual(Array.from({ length: 500 }, (_, i) => i + 1));
    await core.close();
  });

  it('resumes each consumer from its own checkpoint after a restart', async () => {
    const dir = makeTempDir();
    try {
      let log = LmdbLog.open({ path: dir });
      let core = await Core.open({ log, logger: silentLogger() });
      for (let i = 0; i < 5; i++) await core.propose(put(`v${i}`));
      await core.close();
      await log.close();

      log = LmdbLog.open({ path: dir });
      const behind = recorder('behind', 2);
      const fresh = recorder('fresh', 0);
      core = await Core.open({ log, logger: silentLogger(), consumers: [behind, fresh] });
      await core.idle();
      expect(behind.seen).toEqual([3, 4, 5]);
      expect(fresh.seen).toEqual([1, 2, 3, 4, 5]);
      expect(core.ready()).toBe(true);
      const next = await core.propose(put('after'));
      expect(next.seq).toBe(6);
      await core.close();
      await log.close();
    } finally {
      removeDir(dir);
    }
  });

  it('refuses an oversized entry with TOO_LARGE and appends nothing', async () => {
    const log = new MemoryLog();
    const core = await Core.open({ log, logger: silentLogger() });
    await expect(core.propose({ type: 'test.put', data: Buffer.alloc(2 * 1024 * 1024) })).rejects.toMatchObject({ code: 'TOO_LARGE' });
    expect(log.lastIndex()).toBe(0);
    expect((await core.propose(put('small'))).seq).toBe(1);
    await core.close();
  });

  it('waits for an index to be applied, and times out naming where it is', async () => {
    const core = await Core.open({ log: new MemoryLog(), logger: silentLogger() });
    await core.propose(put('a'));
    await expect(core.waitApplied(1)).resolves.toBeUndefined();
    const err = await core.waitApplied(5, 50).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LoomError);
    expect((err as LoomError).code).toBe('TIMEOUT');
    expect((err as LoomError).message).toMatch(/applied up to 1, not 5/);
    await core.close();
  });

  it('stops loudly when a consumer throws, never skipping the entry', async () => {
    const seen: number[] = [];
    const failing: EntryConsumer = {
      name: 'failing',
      appliedIndex: () => seen.length,
      apply(entries) {
        for (const e of entries) {
          if (Buffer.from(e.data).toString() === 'boom') throw new Error('cannot apply boom');
          seen.push(e.index);
        }
      },
    };
    const core = await Core.open({ log: new MemoryLog(), logger: silentLogger(), consumers: [failing] });
    await core.propose(put('fine'));
    await expect(core.propose(put('boom'))).rejects.toThrow(/cannot apply boom/);
    expect(core.ready()).toBe(false);
    expect(core.status().failed).toMatch(/boom/);
    expect(core.status().appliedIndex).toBe(1);
    await core.close();
  });

  it('refuses proposals after close with UNAVAILABLE', async () => {
    const core = await Core.open({ log: new MemoryLog(), logger: silentLogger() });
    await core.close();
    await expect(core.propose(put('late'))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});
