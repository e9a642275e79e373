// An exclusive lock on a data directory, so two loom processes never open the same files. LMDB
// itself allows several processes on one environment; loom's single-writer design does not.

import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { LoomError } from './errors';

const lockFileName = 'LOCK';
const heldInThisProcess = new Set<string>();

export interface DirLock {
  readonly file: string;
  release(): void;
}

/** Takes the lock or throws UNAVAILABLE naming the process that holds it. A dead holder's lock is taken over. */
export function lockDir(dir: string): DirLock {
  const file = path.resolve(dir, lockFileName);
  if (heldInThisProcess.has(file)) {
    throw new LoomError('UNAVAILABLE', `data directory ${dir} is already open in this process (lock ${file})`, { file });
  }
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx');
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      heldInThisProcess.add(file);
      return {
        file,
        release: () => {
          if (!heldInThisProcess.delete(file)) return;
          try {
            unlinkSync(file);
          } catch {
            // Already gone: nothing to release.
          }
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = readHolder(file);
      if (holder !== undefined && isAlive(holder)) {
        throw new LoomError(
          'UNAVAILABLE',
          `data directory ${dir} is in use by another loom process (pid ${holder}); stop it first or use another --data (lock ${file})`,
          { file, pid: holder },
        );
      }
      // The holder died without releasing (e.g. SIGKILL): the lock is stale.
      try {
        unlinkSync(file);
      } catch {
        // Another process removed it first; the next attempt decides.
      }
    }
  }
  throw new LoomError('UNAVAILABLE', `could not take the lock on data directory ${dir} (lock ${file})`, { file });
}

/** The pid holding the lock on `dir`, if a live process holds it. */
export function dirLockHolder(dir: string): number | undefined {
  const holder = readHolder(path.resolve(dir, lockFileName));
  return holder !== undefined && isAlive(holder) ? holder : undefined;
}

function readHolder(file: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(file, 'utf8').trim(), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
