// The seam between the core and consensus. The core proposes entries; a Replicator makes them
// durable and decides when they are committed. A single node commits what it has fsynced; the Raft
// replicator (replication issue) commits what a quorum has, behind the same interface.

import type { LogEntry, LogStore, SnapshotMeta } from '../eventlog';
import type { SnapshotAssembly } from '../eventlog/raft';
import type { ViewSnapshot } from './snapshots';
import { LoomError } from '../util';

export interface ProposedEntry {
  type: string;
  data: Uint8Array;
  meta?: Record<string, unknown>;
}

export interface Replicator {
  /**
   * Assigns the entries their indexes at once and starts replicating them; `committed` resolves
   * once they are committed. Invalid entries throw synchronously, taking no index.
   */
  propose(entries: ProposedEntry[]): { indexes: number[]; committed: Promise<void> };
  /**
   * True when the replicator keeps no reference to a proposed entry's data once `committed` has
   * resolved (whatever the log keeps is the log's to say). Absent: it may (Raft keeps entries in
   * memory for its followers).
   */
  readonly dropsEntryDataOnCommit?: boolean;
  commitIndex(): number;
  /** Called with the new commit index whenever it advances. */
  onCommit(listener: (commitIndex: number) => void): void;
  isLeader(): boolean;
  /**
   * ReadIndex: an index such that once this node has applied it, a read reflects every write
   * acknowledged before the call. Absent on a single voter, whose commit index already is that.
   */
  readIndex?(): Promise<number>;
  /** Role, leader and membership; absent on a single voter. */
  status?(): ReplicationStatus;
  /** Membership changes and leadership transfer (docs/replication.md); absent on a single voter. */
  membership?: ClusterMembership;
  /** Membership as of a log index, stored with snapshots and the compacted log; absent on a single voter. */
  confAt?(index: number): SnapshotMeta['conf'];
  /**
   * The node's snapshots: the newest to send a follower behind the compacted log, and the installer
   * of one received from the leader (docs/snapshots.md). Absent on a single voter.
   */
  useSnapshots?(snapshots: SnapshotHandler): void;
  close(): Promise<void>;
}

export interface SnapshotHandler {
  latest(): ViewSnapshot | undefined;
  /** Where a snapshot arriving from the leader is gathered (a file; in memory when absent). */
  assemble?(): SnapshotAssembly;
  /** Stores the snapshot, restarts the log after it and replaces the views; resolves when done. */
  install(snapshot: ViewSnapshot): Promise<void>;
}

/** A member to add: its Raft id and the address its raft port listens on. */
export interface NewMember {
  nodeId: number;
  host: string;
  raftPort: number;
  /** Stay a learner (receives the log, does not vote) instead of being promoted once caught up. */
  learner?: boolean;
}

/**
 * Runtime membership of a replicated group, leader only (a follower throws NOT_LEADER naming the
 * leader). Each call resolves once its change is committed and applied on this node.
 */
export interface ClusterMembership {
  /** Adds a learner, waits until it has caught up, then promotes it to voter (unless `learner`). */
  add(member: NewMember): Promise<ReplicationStatus>;
  remove(nodeId: number): Promise<ReplicationStatus>;
  /** Hands leadership to voter `to`; resolves once this node has seen `to` lead. */
  transferLeader(to: number): Promise<ReplicationStatus>;
}

export interface ClusterMember {
  id: number;
  role: 'voter' | 'learner';
  /** The member's client addresses (host:port per door), when known. */
  addresses?: { nats?: string; grpc?: string; http?: string };
}

export interface ReplicationStatus {
  nodeId: number;
  role: 'leader' | 'follower' | 'candidate' | 'learner';
  leader: number | null;
  term: number;
  members: ClusterMember[];
}

export interface SingleNodeReplicatorOptions {
  log: LogStore;
  /** Milliseconds since the epoch: the timestamp the leader stamps on each entry. */
  now: () => number;
}

/** A one-voter group: an entry is committed as soon as it is durable in the local log. */
export class SingleNodeReplicator implements Replicator {
  /** It hands each entry to the log and keeps nothing of it. */
  readonly dropsEntryDataOnCommit = true;
  private readonly log: LogStore;
  private readonly now: () => number;
  private readonly term: number;
  private commit: number;
  private readonly listeners: Array<(commitIndex: number) => void> = [];
  private closed = false;

  constructor(options: SingleNodeReplicatorOptions) {
    this.log = options.log;
    this.now = options.now;
    // A single voter is always its own leader; its term only has to be stable and at least 1.
    this.term = Math.max(1, options.log.hardState().term, options.log.term(options.log.lastIndex()));
    // Everything in the log of a single voter was durable before it was acknowledged, so it is committed.
    this.commit = options.log.lastIndex();
  }

  async start(): Promise<void> {
    const hard = this.log.hardState();
    if (hard.term !== this.term || hard.commit !== this.commit) {
      await this.log.setHardState({ term: this.term, vote: hard.vote, commit: this.commit });
    }
  }

  propose(proposed: ProposedEntry[]): { indexes: number[]; committed: Promise<void> } {
    if (this.closed) throw new LoomError('UNAVAILABLE', 'the node is closing');
    const first = this.log.lastIndex() + 1;
    const ts = this.now();
    const entries: LogEntry[] = proposed.map((p, i) => {
      const entry: LogEntry = { index: first + i, term: this.term, type: p.type, data: p.data, ts };
      if (p.meta !== undefined) entry.meta = p.meta;
      return entry;
    });
    const last = first + entries.length - 1;
    const committed = this.log.append(entries).then(() => {
      // Group commits resolve in log order, and an fsync covers every earlier transaction too.
      if (last > this.commit) {
        this.commit = last;
        for (const listener of this.listeners) listener(last);
      }
    });
    return { indexes: entries.map((e) => e.index), committed };
  }

  commitIndex(): number {
    return this.commit;
  }

  onCommit(listener: (commitIndex: number) => void): void {
    this.listeners.push(listener);
  }

  isLeader(): boolean {
    return true;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
