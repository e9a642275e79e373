// The database's operations, shared by every door and by embedders: propose a mutation and wait
// until it is applied, wait for an index (read-your-writes), report status. Owns the applier.

import type { LogEntry, LogStore } from '../eventlog';
import { LoomError, type Logger } from '../util';
import { Applier, type EntryConsumer } from './applier';
import { SingleNodeReplicator, type ProposedEntry, type ReplicationStatus, type Replicator } from './replicator';

export interface CoreOptions {
  log: LogStore;
  logger: Logger;
  /** Wall clock for entry timestamps, read only by the proposer (the leader). */
  now?: () => number;
  consumers?: EntryConsumer[];
  /** Longest a read may wait for `atLeast(seq)` before TIMEOUT. */
  waitTimeoutMsMax?: number;
  /** Consensus in front of the log (Raft in a cluster); a single voter when absent. */
  replicator?: Replicator;
}

export interface Proposed {
  seq: number;
  outcome: unknown;
}

export interface CoreStatus {
  term: number;
  lastIndex: number;
  commitIndex: number;
  appliedIndex: number;
  leader: boolean;
  /** Role, leader and members when the node is part of a replicated group. */
  cluster?: ReplicationStatus;
  failed?: string;
}

export class Core {
  readonly log: LogStore;
  private readonly logger: Logger;
  private readonly replicator: Replicator;
  private readonly applier: Applier;
  private readonly waitTimeoutMsMax: number;
  private closed = false;

  private constructor(options: CoreOptions, replicator: Replicator) {
    this.log = options.log;
    this.logger = options.logger;
    this.replicator = replicator;
    this.waitTimeoutMsMax = options.waitTimeoutMsMax ?? 30_000;
    this.applier = new Applier({ log: options.log, logger: options.logger });
    for (const consumer of options.consumers ?? []) this.applier.addConsumer(consumer);
    replicator.onCommit((commit) => this.applier.advance(commit));
  }

  /** Opens a core over `log` (single voter unless a replicator is given) and starts applying what the log already holds. */
  static async open(options: CoreOptions): Promise<Core> {
    let replicator = options.replicator;
    if (replicator === undefined) {
      const single = new SingleNodeReplicator({ log: options.log, now: options.now ?? Date.now });
      await single.start();
      replicator = single;
    }
    const core = new Core(options, replicator);
    core.applier.start(replicator.commitIndex());
    return core;
  }

  /** Proposes one entry; resolves once it is committed and applied on this node. */
  async propose(entry: ProposedEntry): Promise<Proposed> {
    this.checkOpen();
    const { indexes, committed } = this.replicator.propose([entry]);
    const seq = indexes[0];
    // Wait before the commit can land, so the proposer is sure to receive its entry's outcome.
    const applied = this.applier.waitApplied(seq);
    // If the applier fails while the commit is still awaited, the rejection is handled below.
    applied.promise.catch(() => undefined);
    try {
      await committed;
    } catch (err) {
      applied.cancel(err as Error);
      throw err;
    }
    return { seq, outcome: await applied.promise };
  }

  /**
   * Proposes one entry and resolves with its seq once it is committed (durable on a quorum), without
   * waiting for this node to apply it. For entries whose outcome cannot fail and that a later entry
   * depends on (an upload's chunks before its commit): log order already puts them first.
   */
  async proposeCommitted(entry: ProposedEntry): Promise<number> {
    this.checkOpen();
    const { indexes, committed } = this.replicator.propose([entry]);
    await committed;
    return indexes[0];
  }

  /**
   * Lets the proposer of the entry at `index` overwrite the buffer it passed as the entry's data, if
   * that is safe: once the entry is applied (every consumer and applied-listener has taken it), the
   * log is asked to drop the entry from memory, so that any later read copies it from the file.
   * False while something may still read the buffer, and always in a replicated group (Raft keeps
   * entries for its followers) or over a log that keeps entries in memory.
   */
  releaseEntryData(index: number): boolean {
    return this.releasesEntryData() && index <= this.applier.appliedIndex() && this.log.releaseEntryData?.(index) === true;
  }

  /** Whether releaseEntryData can be true here: an open single voter over a log that can let go. */
  releasesEntryData(): boolean {
    return !this.closed && this.replicator.dropsEntryDataOnCommit === true && this.log.releaseEntryData !== undefined;
  }

  /**
   * The index a linearizable read must wait for: ReadIndex through the leader in a cluster, the
   * local commit index on a single voter (where everything committed is known locally).
   */
  async readIndex(): Promise<number> {
    this.checkOpen();
    return this.replicator.readIndex ? this.replicator.readIndex() : this.replicator.commitIndex();
  }

  /** Waits until this node has applied `seq` (read-your-writes), or fails with TIMEOUT. */
  async waitApplied(seq: number, timeoutMs = this.waitTimeoutMsMax): Promise<void> {
    this.checkOpen();
    if (seq <= this.applier.appliedIndex()) return;
    const wait = Math.min(timeoutMs, this.waitTimeoutMsMax);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new LoomError('TIMEOUT', `this node has applied up to ${this.applier.appliedIndex()}, not ${seq}, after ${wait} ms`, { seq, applied: this.applier.appliedIndex() })),
        wait,
      );
    });
    const applied = this.applier.waitApplied(seq);
    try {
      await Promise.race([applied.promise, timeout]);
    } catch (err) {
      // A read that gave up must not stay registered until the index is applied.
      applied.promise.catch(() => undefined);
      applied.cancel(err as Error);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Listens to every applied batch, after all consumers (projections) have taken it; entries' data is valid only during the call. */
  onApplied(listener: (entries: LogEntry[], outcomes: unknown[]) => void): void {
    this.applier.onApplied(listener);
  }

  /** Ready once everything committed at start has been applied and the applier has not failed. */
  ready(): boolean {
    return !this.closed && this.applier.failed() === undefined && this.applier.appliedIndex() >= this.applier.commitIndex();
  }

  status(): CoreStatus {
    const status: CoreStatus = {
      term: this.log.hardState().term,
      lastIndex: this.log.lastIndex(),
      commitIndex: this.replicator.commitIndex(),
      appliedIndex: this.applier.appliedIndex(),
      leader: this.replicator.isLeader(),
    };
    if (this.replicator.status) status.cluster = this.replicator.status();
    const failure = this.applier.failed();
    if (failure) status.failed = failure.message;
    return status;
  }

  /** Stops applying (a snapshot is replacing the views); resolves once no batch is in flight. */
  pauseApplier(): Promise<void> {
    return this.applier.pause();
  }

  /** Resumes applying into new views that hold everything up to `applied`. */
  resumeApplier(consumers: EntryConsumer[], applied: number): void {
    this.applier.resume(consumers, applied);
  }

  /** Resolves once everything committed so far is applied. */
  idle(): Promise<void> {
    return this.applier.idle();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.replicator.close();
    await this.applier.idle().catch((err) => this.logger.warn({ err }, 'applier had failed before close'));
  }

  private checkOpen(): void {
    if (this.closed) throw new LoomError('UNAVAILABLE', 'the node is closed');
  }
}
