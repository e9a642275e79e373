// Commits that fail as lmdb-js's free-space bug fails them (src/util/aborted-commit.ts): the
// transaction runs, its writes are rolled back whole, and MDB_BAD_TXN is thrown.

import { ABORT } from 'lmdb';
import type { ViewStore } from '../../src/projections';
import { mdbBadTxn } from '../../src/util';

/**
 * From now on, the view store's write transactions that `abort` picks (by number: 1, 2, … in the
 * order they run) fail at their commit. Every projection transaction and chunk copy goes through
 * `env.transactionSync`, so this reaches them all. Returns how many transactions have run.
 */
export function abortCommits(store: ViewStore, abort: (commit: number) => boolean): () => number {
  const transactionSync = store.env.transactionSync.bind(store.env);
  let commits = 0;
  store.env.transactionSync = (<T>(fn: () => T): T => {
    if (!abort(++commits)) return transactionSync(fn);
    transactionSync(() => {
      fn();
      return ABORT;
    });
    throw Object.assign(new Error('MDB_BAD_TXN: Transaction must abort, has a child, or is invalid: reserved freelist had a data entry with zero-size, last id 1'), { code: mdbBadTxn });
  }) as typeof store.env.transactionSync;
  return () => commits;
}
