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
