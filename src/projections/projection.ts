// The projection contract and its runner. A projection turns committed entries into a view; the
// runner feeds it in order, stores its checkpoint in the same transaction as its view writes,
// rebuilds it when its version changes, runs a transaction again when LMDB aborts its commit
// (util/aborted-commit.ts), and stops it loudly (FAILED, with the index) if it throws.

import type { LogEntry } from '../eventlog';
import { LoomError, retryAbortedCommit, type Logger } from '../util';
import type { Outcome } from './decide';

export interface Projection<Tx> {
  /** Stable id: names its checkpoint (and its tables or sub-databases). */
  name: string;
  /** Bump to drop the view and rebuild it from the log. */
  version: number;
  /** Entry types it consumes; default all. Entries it does not handle still move its checkpoint. */
  handles?: string[];
  /** Creates what the view needs (tables, sub-databases); runs inside a transaction. */
  setup?(tx: Tx): void;
  /** Drops everything the view holds, before a rebuild; runs inside a transaction. */
  reset?(tx: Tx): void;
  /** Deterministic, no I/O beyond `tx`: applies a batch and may return one outcome per entry. */
  apply(entries: LogEntry[], tx: Tx): Array<Outcome | undefined> | void;
  /**
   * A transaction it ran in rolled back (its writes are gone): it drops whatever it keeps in memory
   * from them (a cache of what it wrote) before the runner runs a transaction again.
   */
  rolledBack?(): void;
}

/** Where a family of projections keeps views and checkpoints (one LMDB env, one SQLite file). */
export interface ProjectionStore<Tx> {
  /** Runs `fn` in one atomic write transaction. */
  transaction<T>(fn: (tx: Tx) => T): T;
  readCheckpoint(name: string): { index: number; version: number } | undefined;
  writeCheckpoint(tx: Tx, name: string, index: number, version: number): void;
}

export type ProjectionState = 'RUNNING' | 'REBUILDING' | 'FAILED';

export interface ProjectionStatus {
  name: string;
  version: number;
  state: ProjectionState;
  appliedIndex: number;
  /** Set when FAILED: the entry it could not apply and why. */
  failedIndex?: number;
  error?: string;
}

/** Adapts a projection to the core's applier (an entry consumer with a checkpoint). */
export class ProjectionRunner<Tx> {
  readonly name: string;
  private applied: number;
  private state: ProjectionState = 'RUNNING';
  private failure: { index: number; error: string } | undefined;
  private readonly handles: Set<string> | undefined;

  constructor(
    private readonly projection: Projection<Tx>,
    private readonly store: ProjectionStore<Tx>,
    private readonly logger: Logger,
  ) {
    this.name = projection.name;
    this.handles = projection.handles ? new Set(projection.handles) : undefined;
    const checkpoint = store.readCheckpoint(projection.name);
    if (checkpoint && checkpoint.version === projection.version) {
      this.applied = checkpoint.index;
      this.transact((tx) => projection.setup?.(tx), 'setup');
    } else {
      if (checkpoint) {
        logger.info({ projection: projection.name, from: checkpoint.version, to: projection.version }, 'projection version changed: rebuilding from the log');
        this.state = 'REBUILDING';
      }
      this.applied = 0;
      this.transact((tx) => {
        projection.reset?.(tx);
        projection.setup?.(tx);
        store.writeCheckpoint(tx, projection.name, 0, projection.version);
      }, 'reset');
    }
  }

  appliedIndex(): number {
    return this.applied;
  }

  apply(entries: LogEntry[]): Array<Outcome | undefined> {
    if (this.failure) {
      throw new LoomError('UNAVAILABLE', `projection ${this.name} is FAILED at entry ${this.failure.index}: ${this.failure.error}`, {
        projection: this.name,
        index: this.failure.index,
      });
    }
    const relevant = this.handledOf(entries);
    const last = entries[entries.length - 1].index;
    let outcomes: Array<Outcome | undefined> | void;
    try {
      outcomes = this.transact((tx) => {
        const result = relevant.length > 0 ? this.projection.apply(relevant, tx) : undefined;
        this.store.writeCheckpoint(tx, this.name, last, this.projection.version);
        return result;
      }, `batch up to ${last}`);
    } catch (err) {
      // The transaction rolled back: the view still ends at `applied`. Find the entry to name it.
      this.projection.rolledBack?.();
      const index = this.findFailingIndex(relevant, err);
      this.state = 'FAILED';
      this.failure = { index, error: (err as Error).message };
      this.logger.error({ projection: this.name, index, err }, 'projection FAILED: it stops here and skips nothing');
      throw new LoomError('INTERNAL', `projection ${this.name} failed at entry ${index}: ${(err as Error).message}`, {
        projection: this.name,
        index,
      });
    }
    this.applied = last;
    if (this.state === 'REBUILDING') this.state = 'RUNNING';
    if (!outcomes) return [];
    if (relevant === entries) return outcomes;
    // Spread the outcomes of the handled entries back over the whole batch (both are in log order).
    const spread: Array<Outcome | undefined> = new Array(entries.length);
    for (let i = 0, j = 0; i < entries.length; i++) spread[i] = entries[i] === relevant[j] ? outcomes[j++] : undefined;
    return spread;
  }

  /** The entries of the batch this projection handles: the batch itself when it handles them all. */
  private handledOf(entries: LogEntry[]): LogEntry[] {
    const handles = this.handles;
    if (!handles) return entries;
    let first = 0;
    while (first < entries.length && handles.has(entries[first].type)) first++;
    if (first === entries.length) return entries;
    const relevant = entries.slice(0, first);
    for (let i = first + 1; i < entries.length; i++) if (handles.has(entries[i].type)) relevant.push(entries[i]);
    return relevant;
  }

  status(): ProjectionStatus {
    const status: ProjectionStatus = { name: this.name, version: this.projection.version, state: this.state, appliedIndex: this.applied };
    if (this.failure) {
      status.failedIndex = this.failure.index;
      status.error = this.failure.error;
    }
    return status;
  }

  /** One transaction of the store, run again while LMDB aborts its commit (util/aborted-commit.ts). */
  private transact<T>(fn: (tx: Tx) => T, what: string): T {
    return retryAbortedCommit(
      () => this.store.transaction(fn),
      (err, attempt) => {
        this.logger.warn({ attempt, err }, `LMDB aborted the commit of a projection transaction (${what}), an lmdb-js free-space bug: running it again`);
        this.projection.rolledBack?.();
      },
    );
  }

  /** Re-applies the batch one entry at a time in throwaway transactions to find the failing entry. */
  private findFailingIndex(entries: LogEntry[], original: unknown): number {
    const carried = (original as { details?: { index?: unknown } }).details?.index;
    if (typeof carried === 'number') return carried;
    for (let i = 0; i < entries.length; i++) {
      try {
        this.store.transaction((tx) => {
          this.projection.apply(entries.slice(0, i + 1), tx);
          throw rollback;
        });
      } catch (err) {
        this.projection.rolledBack?.();
        if (err !== rollback) return entries[i].index;
      }
    }
    return entries[0]?.index ?? this.applied + 1;
  }
}

const rollback = new Error('rollback');
