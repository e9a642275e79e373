// The durable log's contract: what Raft and the core read and write. Two implementations keep it
// (LMDB on disk, in memory for tests and simulation) and one contract suite checks both.

/** One log entry. `index` is dense and 1-based; it is the entry's seq/rev everywhere in the API. */
export interface LogEntry {
  index: number;
  term: number;
  /** Entry type, e.g. `kv.put`, `event.append`, `raft.noop`, `conf.change`. */
  type: string;
  /** The entry's payload, already encoded by whoever proposed it. */
  data: Uint8Array;
  /** Milliseconds since the epoch, set once by the proposer (the leader): never read from a clock on apply. */
  ts: number;
  meta?: Record<string, unknown>;
}

/** Raft's hard state: persisted before any message that depends on it is sent. `vote` 0 = none. */
export interface HardState {
  term: number;
  vote: number;
  commit: number;
}

/** Where the log begins after compaction: the entry at `index` (with `term`) is in a snapshot. */
export interface SnapshotMeta {
  index: number;
  term: number;
  /** Raft membership as of `index`, kept by a replicated log so a restart knows its group. */
  conf?: { voters: number[]; learners: number[] };
}

export interface LogStats {
  firstIndex: number;
  lastIndex: number;
  lastTerm: number;
  sizeBytes: number;
}

/**
 * Reads are synchronous (LMDB reads are memory-mapped); writes resolve once they are durable.
 * Invariants: indexes in [firstIndex, lastIndex] are all present; firstIndex = snapshot.index + 1;
 * an empty log has lastIndex = firstIndex - 1.
 */
export interface LogStore {
  /**
   * Appends entries whose indexes continue lastIndex() densely; resolves once durable. Invalid
   * input (gap, term going back, over a limit) and a closed log throw synchronously, writing
   * nothing, so a caller knows at once that no index was taken. lastIndex() moves at once.
   */
  append(entries: LogEntry[]): Promise<void>;
  /**
   * Entries with lo <= index < hi, stopping early once bytesMax is passed (at least one entry is
   * returned). Their data stays as it is for as long as the caller keeps them.
   */
  entries(lo: number, hi: number, bytesMax?: number): LogEntry[];
  /**
   * The same, for the applier alone: an entry whose data its proposer will reuse
   * (markEntryDataReused) comes as appended, not copied, and its data is valid only until the entry
   * is released (releaseEntryData). Optional: callers fall back to `entries`.
   */
  entriesToApply?(lo: number, hi: number, bytesMax?: number): LogEntry[];
  /**
   * Calls `visit` with each entry with lo <= index < hi, in order, stopping once bytesMax is passed
   * (at least one entry is visited); returns how many it visited. Unlike `entries`, an entry's
   * `data` may point into a buffer that is reused once `visit` returns: a scan that keeps nothing of
   * the bytes saves a copy of each. Entries of `uncheckedTypes` are read without their CRC check:
   * the caller ignores their data or checks it itself. Optional: callers fall back to `entries`.
   */
  visitEntries?(lo: number, hi: number, visit: (entry: LogEntry) => void, bytesMax?: number, uncheckedTypes?: ReadonlySet<string>): number;
  /**
   * Calls `visit` with the entry at `index` read in place with its CRC not checked, for a caller
   * that checks the entry's data itself with something stronger (a chunk against its sha256);
   * false if the log does not hold it. As in `visitEntries`, the data is valid only during `visit`.
   * Optional: callers fall back to `visitEntries`.
   */
  visitEntryUnchecked?(index: number, visit: (entry: LogEntry) => void): boolean;
  /**
   * Stops keeping the entry at `index` in memory as appended (its `data` the very buffer its
   * proposer passed) once it is durable: later reads copy it from the file. True once the log holds
   * no reference to that buffer; false while the entry is still being written. Optional: absent, a
   * caller assumes the log keeps every entry's data.
   */
  releaseEntryData?(index: number): boolean;
  /** The term of entry i; for i = snapshot index, the snapshot's term; 0 for index 0. */
  term(i: number): number;
  firstIndex(): number;
  lastIndex(): number;
  /** Removes every entry with index >= i (Raft log conflicts). Durable when it resolves. */
  truncateSuffix(i: number): Promise<void>;
  /**
   * Removes every entry with index <= i, remembering i, its term and (for a replicated log) the
   * membership as of i as the snapshot point.
   */
  compactPrefix(i: number, conf?: SnapshotMeta['conf']): Promise<void>;
  hardState(): HardState;
  setHardState(state: HardState): Promise<void>;
  snapshotMeta(): SnapshotMeta;
  /** Replaces the whole log with an empty one starting after `meta` (installing a snapshot). */
  resetToSnapshot(meta: SnapshotMeta): Promise<void>;
  stats(): LogStats;
  close(): Promise<void>;
}
