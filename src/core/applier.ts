// Hands committed entries to the registered consumers, strictly in log order and exactly once per
// node, in batches. Consumers (projections) keep their own checkpoints; the applier starts each
// from where it left off and never moves `applied` past an entry every consumer has taken.

import type { LogEntry, LogStore } from '../eventlog';
import { LoomError, assert, type Logger } from '../util';

export interface EntryConsumer {
  name: string;
  /** The last index this consumer has durably applied (its checkpoint); 0 if none. */
  appliedIndex(): number;
  /**
   * Applies a batch of committed entries, all with index > appliedIndex(), in order. May return
   * one outcome per entry (same order); the first consumer to return outcomes for an entry wins.
   * An entry's data is valid until the call returns (or its promise settles): an upload fills a
   * chunk's buffer again once the chunk is applied. A consumer copies what it keeps.
   */
  apply(entries: LogEntry[]): Promise<unknown[] | void> | unknown[] | void;
}

export interface ApplierOptions {
  log: LogStore;
  logger: Logger;
  /** Most entries handed to consumers in one batch. */
  batchEntriesMax?: number;
  /** Byte budget of one batch read from the log. */
  batchBytesMax?: number;
}

interface Waiter {
  index: number;
  resolve: (outcome: unknown) => void;
  reject: (err: Error) => void;
}

export class Applier {
  private readonly log: LogStore;
  private readonly logger: Logger;
  private readonly consumers: EntryConsumer[] = [];
  private readonly batchEntriesMax: number;
  private readonly batchBytesMax: number;
  private applied = 0;
  private commit = 0;
  private running: Promise<void> | undefined;
  private failure: Error | undefined;
  /** Set while a snapshot replaces the views: no batch is handed out. */
  private paused = false;
  private readonly waiters: Waiter[] = [];
  private readonly appliedListeners: Array<(entries: LogEntry[], outcomes: unknown[]) => void> = [];

  constructor(options: ApplierOptions) {
    this.log = options.log;
    this.logger = options.logger;
    this.batchEntriesMax = options.batchEntriesMax ?? 1024;
    this.batchBytesMax = options.batchBytesMax ?? 8 * 1024 * 1024;
  }

  /** Registers a consumer before start; the applier begins at the lowest checkpoint of them all. */
  addConsumer(consumer: EntryConsumer): void {
    assert(this.running === undefined && this.commit === 0, 'consumers are added before the applier starts');
    this.consumers.push(consumer);
  }

  /**
   * Listeners hear about every applied batch, with each entry's outcome, after all consumers have
   * taken it and before the next batch: they are called synchronously right after `applied` moves.
   * As for consumers, an entry's data is valid only during the call.
   */
  onApplied(listener: (entries: LogEntry[], outcomes: unknown[]) => void): void {
    this.appliedListeners.push(listener);
  }

  start(commitIndex: number): void {
    const checkpoints = this.consumers.map((c) => c.appliedIndex());
    this.applied = checkpoints.length > 0 ? Math.min(...checkpoints) : Math.max(0, this.log.firstIndex() - 1);
    // Entries a consumer needs may have been compacted away only if a snapshot restored it.
    this.applied = Math.max(this.applied, this.log.firstIndex() - 1);
    this.advance(commitIndex);
  }

  appliedIndex(): number {
    return this.applied;
  }

  commitIndex(): number {
    return this.commit;
  }

  /** The commit index moved: apply up to it in the background. */
  advance(commitIndex: number): void {
    if (commitIndex <= this.commit) return;
    this.commit = commitIndex;
    if (this.running === undefined && !this.paused) {
      this.running = this.run().finally(() => {
        this.running = undefined;
      });
    }
  }

  /**
   * Resolves once `index` has been applied, with the entry's outcome when the wait began before
   * the entry was applied (the proposer's case); a late waiter gets undefined. `cancel` rejects
   * and forgets this one wait (a failed proposal, a read that timed out) and no other.
   */
  waitApplied(index: number): { promise: Promise<unknown>; cancel(reason: Error): void } {
    if (this.failure) return { promise: Promise.reject(this.failure), cancel: () => undefined };
    if (index <= this.applied) return { promise: Promise.resolve(undefined), cancel: () => undefined };
    let waiter!: Waiter;
    const promise = new Promise<unknown>((resolve, reject) => {
      waiter = { index, resolve, reject };
      this.waiters.push(waiter);
    });
    return {
      promise,
      cancel: (reason) => {
        const at = this.waiters.indexOf(waiter);
        if (at < 0) return;
        this.waiters.splice(at, 1);
        waiter.reject(reason);
      },
    };
  }

  /** Stops handing out batches (the views are being replaced); resolves once none is in flight. */
  async pause(): Promise<void> {
    this.paused = true;
    while (this.running) await this.running;
  }

  /**
   * Resumes over new consumers — views installed from a snapshot — that hold everything up to
   * `applied`. Waits for indexes up to it resolve (those entries were never applied here).
   */
  resume(consumers: EntryConsumer[], applied: number): void {
    assert(this.paused && this.running === undefined, 'resume() follows pause()');
    assert(applied >= this.applied, `a snapshot at ${applied} would move the applier back from ${this.applied}`);
    this.consumers.splice(0, this.consumers.length, ...consumers);
    this.applied = applied;
    this.settle([], []);
    this.paused = false;
    // advance() starts a run only when the commit index moves past what it knew.
    const commit = Math.max(this.commit, applied);
    this.commit = applied;
    this.advance(commit);
  }

  /** Resolves once everything committed so far has been applied. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
    if (this.failure) throw this.failure;
  }

  failed(): Error | undefined {
    return this.failure;
  }

  private async run(): Promise<void> {
    try {
      while (this.applied < this.commit && !this.failure && !this.paused) {
        const hi = Math.min(this.commit, this.applied + this.batchEntriesMax) + 1;
        const lo = this.applied + 1;
        const batch = this.log.entriesToApply ? this.log.entriesToApply(lo, hi, this.batchBytesMax) : this.log.entries(lo, hi, this.batchBytesMax);
        assert(batch.length > 0 && batch[0].index === this.applied + 1, `applier read a batch not starting at ${this.applied + 1}`);
        const outcomes: unknown[] = new Array(batch.length);
        for (const consumer of this.consumers) {
          const from = consumer.appliedIndex();
          const fresh = from >= batch[0].index ? batch.filter((e) => e.index > from) : batch;
          if (fresh.length === 0) continue;
          const result = await consumer.apply(fresh);
          if (!result) continue;
          const offset = batch.length - fresh.length;
          for (let i = 0; i < result.length; i++) if (outcomes[offset + i] === undefined) outcomes[offset + i] = result[i];
        }
        this.applied = batch[batch.length - 1].index;
        this.settle(batch, outcomes);
        for (const listener of this.appliedListeners) listener(batch, outcomes);
        // Consumers apply synchronously; yield to the event loop between batches so that a long
        // catch-up (start-up, a rebuild) never stops the node from serving.
        if (this.applied < this.commit && !this.paused) await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } catch (err) {
      this.failure = err instanceof LoomError ? err : new LoomError('INTERNAL', `applying entry ${this.applied + 1} failed: ${(err as Error).message}`, { index: this.applied + 1 });
      this.logger.error({ err, index: this.applied + 1 }, 'applier stopped: an entry could not be applied');
      for (const waiter of this.waiters.splice(0)) waiter.reject(this.failure);
    }
  }

  private settle(batch: LogEntry[], outcomes: unknown[]): void {
    const waiting = this.waiters.length;
    if (waiting === 0) return;
    const byIndex = new Map<number, unknown>();
    batch.forEach((e, i) => byIndex.set(e.index, outcomes[i]));
    let kept = 0;
    for (let i = 0; i < waiting; i++) {
      const waiter = this.waiters[i];
      if (waiter.index <= this.applied) waiter.resolve(byIndex.get(waiter.index));
      else this.waiters[kept++] = waiter;
    }
    this.waiters.length = kept;
  }
}
