import { LmdbLog } from '../../src/eventlog';
import type { LogEntry, LogStore } from '../../src/eventlog';
import { makeTempDir, removeDir } from '../support/tmp';
import { logContract } from './log-contract';

logContract('LmdbLog', () => {
  const dir = makeTempDir();
  return {
    open: () => LmdbLog.open({ path: dir }),
    reopen: async (log: LogStore) => {
      await log.close();
      return LmdbLog.open({ path: dir });
    },
    cleanup: () => removeDir(dir),
  };
});

describe('LmdbLog under concurrent group commits', () => {
  it('reads every acknowledged entry while later group commits are still in flight', async () => {
    const dir = makeTempDir();
    const log = LmdbLog.open({ path: dir });
    try {
      const appender = async (): Promise<void> => {
        for (let n = 0; n < 40; n++) {
          const index = log.lastIndex() + 1;
          await log.append([{ index, term: 1, type: 't', data: Buffer.from(`v${index}`), ts: index }]);
          // Everything up to the entry just acknowledged must be readable, whatever is pending.
          const lo = Math.max(1, index - 50);
          const read = log.entries(lo, index + 1);
          expect(read.map((e) => e.index)).toEqual(Array.from({ length: index - lo + 1 }, (_, i) => lo + i));
        }
      };
      await Promise.all(Array.from({ length: 32 }, appender));
      expect(log.lastIndex()).toBe(1280);
    } finally {
      await log.close();
      removeDir(dir);
    }
  });
});

describe('LmdbLog.visitEntries', () => {
  it('visits the same entries as entries(), in order, pending ones included, within the byte budget', async () => {
    const dir = makeTempDir();
    const log = LmdbLog.open({ path: dir });
    try {
      const make = (index: number) => ({ index, term: 1, type: index % 2 ? 'kv.put' : 'event.append', data: Buffer.from(`value ${index} `.repeat(index % 7)), ts: index });
      await log.append(Array.from({ length: 200 }, (_, i) => make(i + 1)));
      // Not awaited: entries 201-210 may still be pending while they are read.
      const pending = log.append(Array.from({ length: 10 }, (_, i) => make(201 + i)));
      const copies = (lo: number, hi: number, bytesMax?: number) => {
        const seen: Array<{ index: number; type: string; data: Buffer; ts: number }> = [];
        const count = log.visitEntries(lo, hi, (e) => seen.push({ index: e.index, type: e.type, data: Buffer.from(e.data), ts: e.ts }), bytesMax);
        expect(count).toBe(seen.length);
        return seen;
      };
      const plain = (entries: Array<{ index: number; type: string; data: Uint8Array; ts: number }>) =>
        entries.map((e) => ({ index: e.index, type: e.type, data: Buffer.from(e.data), ts: e.ts }));
      expect(copies(1, 211)).toEqual(plain(log.entries(1, 211)));
      expect(copies(150, 205)).toEqual(plain(log.entries(150, 205)));
      expect(copies(5, 200, 300)).toEqual(plain(log.entries(5, 200, 300)));
      expect(copies(5, 200, 1)).toHaveLength(1);
      await pending;
      expect(copies(1, 211)).toEqual(plain(Array.from({ length: 210 }, (_, i) => make(i + 1))));
    } finally {
      await log.close();
      removeDir(dir);
    }
  });
});

describe('LmdbLog recent entries', () => {
  it('reads entries just made durable, past the in-memory budget and after a truncation, as they are on disk', async () => {
    const dir = makeTempDir();
    let log = LmdbLog.open({ path: dir });
    try {
      // 48 entries of 256 KiB: more than recentBytesMax, so reads mix memory and disk.
      const data = (index: number, term: number): Buffer => Buffer.alloc(256 * 1024, (index * 7 + term) & 0xff);
      for (let index = 1; index <= 48; index++) await log.append([{ index, term: 1, type: 't', data: data(index, 1), ts: index }]);
      await log.setHardState({ term: 1, vote: 0, commit: 40 });
      await log.truncateSuffix(45);
      for (let index = 45; index <= 48; index++) await log.append([{ index, term: 2, type: 't', data: data(index, 2), ts: index }]);
      const live = log.entries(1, 49, Infinity);
      log = await (async () => {
        await log.close();
        return LmdbLog.open({ path: dir });
      })();
      const stored = log.entries(1, 49, Infinity);
      expect(live.map((e) => [e.index, e.term])).toEqual(stored.map((e) => [e.index, e.term]));
      for (let i = 0; i < 48; i++) expect(Buffer.from(live[i].data).equals(Buffer.from(stored[i].data))).toBe(true);
      expect(stored.slice(44).every((e) => e.term === 2 && e.data[0] === ((e.index * 7 + 2) & 0xff))).toBe(true);
    } finally {
      await log.close();
      removeDir(dir);
    }
  });
});

describe('LmdbLog group commit', () => {
  const entry = (index: number, term = 1): LogEntry => ({ index, term, type: 't', data: Buffer.from(`v${index}`), ts: index });

  it('makes the appends of one event-loop turn durable with one fsync, and those of the next turn with a second one', async () => {
    const dir = makeTempDir();
    let syncs = 0;
    let appended = 0;
    const log = LmdbLog.open({ path: dir, observer: { appended: (n) => (appended += n), synced: () => syncs++ } });
    try {
      const first = Array.from({ length: 100 }, (_, i) => log.append([entry(i + 1)]));
      // One turn later the first group is committing; everything issued now goes as the second group.
      await new Promise((resolve) => setImmediate(resolve));
      const second = Array.from({ length: 100 }, (_, i) => log.append([entry(101 + i)]));
      await Promise.all([...first, ...second]);
      expect(syncs).toBe(2);
      expect(appended).toBe(200);
      expect(log.entries(1, 201).map((e) => e.index)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    } finally {
      await log.close();
      removeDir(dir);
    }
  });

  it('commits an append larger than lmdb-js starts writing early at as one transaction with one fsync', async () => {
    const dir = makeTempDir();
    let syncs = 0;
    const log = LmdbLog.open({ path: dir, observer: { appended: () => undefined, synced: () => syncs++ } });
    try {
      await log.append(Array.from({ length: 3000 }, (_, i) => entry(i + 1)));
      expect(syncs).toBe(1);
      expect(log.verify()).toMatchObject({ ok: true, checked: 3000 });
    } finally {
      await log.close();
      removeDir(dir);
    }
  });

  it('splits a turn of many appends into two group commits, acknowledged in order', async () => {
    const dir = makeTempDir();
    let syncs = 0;
    let log = LmdbLog.open({ path: dir, observer: { appended: () => undefined, synced: () => syncs++ } });
    try {
      const acknowledged: number[] = [];
      const writes = Array.from({ length: 300 }, (_, i) => log.append([entry(i + 1)]).then(() => {
          acknowledged.push(i + 1);
        }),
      );
      // A truncation issued behind them waits its turn too, and still runs after every append before it.
      writes.push(log.truncateSuffix(300), log.append([entry(300, 2)]));
      await Promise.all(writes);
      // The first 128 appends form the first group; the rest of the turn, the second.
      expect(syncs).toBe(2);
      expect(acknowledged).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
      log = await reopen(log, dir);
      expect(log.verify()).toMatchObject({ ok: true, checked: 300 });
      expect(log.term(300)).toBe(2);
    } finally {
      await log.close();
      removeDir(dir);
    }
  });

  it('commits large and small entries of one turn together, in order, with one fsync', async () => {
    const dir = makeTempDir();
    let syncs = 0;
    let log = LmdbLog.open({ path: dir, observer: { appended: () => undefined, synced: () => syncs++ } });
    try {
      const big = (index: number): LogEntry => ({ index, term: 1, type: 'blob.chunk', data: Buffer.alloc(256 * 1024, index), ts: index });
      const writes = [log.append([entry(1), big(2)]), log.append([big(3)]), log.append([entry(4), entry(5), big(6)])];
      await Promise.all(writes);
      expect(syncs).toBe(1);
      log = await reopen(log, dir);
      expect(log.verify()).toMatchObject({ ok: true, checked: 6 });
      const read = log.entries(1, 7, Number.MAX_SAFE_INTEGER);
      expect(read.map((e) => [e.index, e.data.byteLength])).toEqual([[1, 2], [2, 262144], [3, 262144], [4, 2], [5, 2], [6, 262144]]);
      expect(Buffer.from(read[5].data).equals(Buffer.alloc(256 * 1024, 6))).toBe(true);
    } finally {
      await log.close();
      removeDir(dir);
    }
  });

  it('refuses writes when opened read-only, writing nothing', async () => {
    const dir = makeTempDir();
    const writer = LmdbLog.open({ path: dir });
    await writer.append([entry(1)]);
    await writer.close();
    const log = LmdbLog.open({ path: dir, readOnly: true });
    try {
      expect(() => log.append([entry(2)])).toThrow(expect.objectContaining({ code: 'UNAVAILABLE' }));
      expect(log.lastIndex()).toBe(1);
      expect(log.entries(1, 2)[0].index).toBe(1);
    } finally {
      await log.close();
      removeDir(dir);
    }
  });

  it('applies a truncation issued in the same turn as appends after them, in issue order', async () => {
    const dir = makeTempDir();
    let log = LmdbLog.open({ path: dir });
    try {
      const writes = [log.append([1, 2, 3, 4, 5].map((i) => entry(i)))];
      writes.push(log.truncateSuffix(4));
      writes.push(log.append([entry(4, 2)]));
      await Promise.all(writes);
      log = await reopen(log, dir);
      expect(log.entries(1, 5).map((e) => [e.index, e.term])).toEqual([[1, 1], [2, 1], [3, 1], [4, 2]]);
      expect(log.lastIndex()).toBe(4);
    } finally {
      await log.close();
      removeDir(dir);
    }
  });

  it('finishes the writes it accepted before closing', async () => {
    const dir = makeTempDir();
    let log = LmdbLog.open({ path: dir });
    try {
      const first = log.append([entry(1)]);
      await new Promise((resolve) => setImmediate(resolve));
      const second = log.append([entry(2)]);
      await log.close();
      await Promise.all([first, second]);
      log = LmdbLog.open({ path: dir });
      expect(log.verify()).toMatchObject({ ok: true, checked: 2 });
    } finally {
      await log.close();
      removeDir(dir);
    }
  });
});

async function reopen(log: LmdbLog, dir: string): Promise<LmdbLog> {
  await log.close();
  return LmdbLog.open({ path: dir });
}
