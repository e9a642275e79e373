// Commits that LMDB aborts by itself, which the same transaction run again gets through.
//
// lmdb-js builds its own patched LMDB, whose free-space bookkeeping (mdb_freelist_save) now and then
// fails a commit with MDB_BAD_TXN: "reserved freelist had a data entry with zero-size". It is an
// upstream bug (other lmdb-js users report the same message and retry). Here it stopped the KV
// projection twice in about 16 GiB of 100 MiB uploads, which left the node refusing every write
// until a restart. Such a commit is aborted whole, and lmdb-js reads the free-space list from disk
// again in the next transaction, so running the same transaction again is safe: a projection
// writes only through its transaction, and drops what it caches in memory from a transaction that
// rolled back (Projection.rolledBack) before the next one runs.

/** LMDB's MDB_BAD_TXN: the transaction must abort. */
export const mdbBadTxn = -30782;

/** Times a transaction is run again after LMDB aborted its commit. */
export const abortedCommitRetriesMax = 3;

export function isAbortedCommit(err: unknown): boolean {
  return err instanceof Error && (err as { code?: unknown }).code === mdbBadTxn;
}

/**
 * Runs a synchronous write transaction, and runs it again (up to abortedCommitRetriesMax times)
 * while LMDB aborts it with MDB_BAD_TXN; `onRetry` hears of each. Any other error is thrown at once.
 */
export function retryAbortedCommit<T>(transaction: () => T, onRetry: (err: Error, attempt: number) => void): T {
  for (let attempt = 1; ; attempt++) {
    try {
      return transaction();
    } catch (err) {
      if (!isAbortedCommit(err) || attempt > abortedCommitRetriesMax) throw err;
      onRetry(err as Error, attempt);
    }
  }
}
