import { LmdbLog } from '../../src/eventlog';
import type { LogStore } from '../../src/eventlog';
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
