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
