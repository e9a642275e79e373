// Named limits of the SQL view and its query service, unit last (STYLE.md rule 4). Adapters and
// tests import them rather than repeating the numbers.

/** Rows in one page of a query result when the caller names no limit. */
export const queryLimitDefault = 1_000;
/** Most rows a caller may ask for in one page. */
export const queryLimitMax = 10_000;
/** A query still running after this long is stopped (its process is killed). */
export const queryTimeoutMsDefault = 5_000;
/** Budget for one page of results, counted as the cells' encoded size; a page ends early to stay under it. */
export const queryResultBytesMaxDefault = 4 * 1024 * 1024;
/** Longest SQL text accepted. */
export const querySqlBytesMax = 64 * 1024;
/** Most bound parameters in one query. */
export const queryParamsMax = 1_000;
/** Query processes of a node: queries run side by side, and a slow one holds up only one process. */
export const queryProcessesDefault = 2;
/** Most query processes (each is a Node process of some 40 MiB). */
export const queryProcessesMax = 16;
/** Queries waiting for a query process; more are refused with UNAVAILABLE rather than queued without bound. */
export const queryQueueLengthMax = 256;
/** SQLite heap of the query process; a query that needs more fails with TOO_LARGE instead of exhausting memory. */
export const queryHeapBytesMax = 256 * 1024 * 1024;
/** A developer projection's table or view name (unquoted SQL identifier). */
export const tableNamePattern = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
/** A developer projection's name: also its checkpoint's name. */
export const projectionNamePattern = /^[A-Za-z0-9_-]{1,64}$/;
/** SQLite page cache of the write connection: batches touch pages all over the b-trees, and a cache
 * smaller than the hot part of the tables turns every upsert into page reads (measured: ~1.3x apply rate). */
export const storeCacheBytesMax = 64 * 1024 * 1024;
/** WAL pages written before SQLite checkpoints them into the database file (each checkpoint fsyncs). */
export const storeWalCheckpointPages = 10_000;
/** Size the WAL file is truncated back to after a checkpoint, so a burst does not leave it huge. */
export const storeWalBytesMax = 64 * 1024 * 1024;
