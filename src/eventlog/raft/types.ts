// The values Raft exchanges with its driver: messages on the wire, the Ready batch of work, the
// configuration and the cluster membership. Plain data only, so a driver can encode it any way.

import type { HardState, LogEntry, SnapshotMeta } from '../types';

/** Entry type of the empty entry a new leader appends to commit entries of earlier terms. */
export const entryTypeNoop = 'raft.noop';
/** Entry type of a membership change; its data is an encoded ConfChange (see conf-change.ts). */
export const entryTypeConfChange = 'conf.change';

export type MessageType =
  | 'app' // AppendEntries: entries after (index, logTerm), plus the leader's commit
  | 'appResp' // answer to app; reject carries a hint (rejectHint, logTerm) to skip a whole term
  | 'heartbeat' // keeps followers from campaigning; carries commit and a ReadIndex context
  | 'heartbeatResp'
  | 'preVote' // "would you vote for me at term+1?"; changes nobody's term
  | 'preVoteResp'
  | 'vote' // RequestVote
  | 'voteResp'
  | 'snap' // InstallSnapshot: one chunk of a snapshot
  | 'snapResp' // acknowledges the bytes received so far (offset) or rejects the chunk
  | 'timeoutNow' // leadership transfer: "campaign now, skipping PreVote and leases"
  | 'readIndex' // a follower forwards a ReadIndex request to the leader
  | 'readIndexResp' // the leader answers the forwarded request
  | 'transferLeader'; // a follower forwards a leadership transfer request to the leader

/** One chunk of a snapshot in flight. `offset` is where `data` starts within the whole snapshot. */
export interface SnapshotChunk {
  meta: RaftSnapshotMeta;
  offset: number;
  totalBytes: number;
  data: Uint8Array;
}

/**
 * One Raft message. Fields not meaningful for a type are 0 / empty; `term` is always the sender's
 * term (for preVote it is the term the sender would campaign at).
 */
export interface Message {
  type: MessageType;
  from: number;
  to: number;
  term: number;
  /** app: term of the entry before `entries`; vote/preVote: term of the candidate's last entry;
   *  appResp reject: term of the follower's entry at rejectHint. */
  logTerm: number;
  /** app: index of the entry before `entries`; vote/preVote: candidate's last index;
   *  appResp: last index now matching (or, rejected, the index that did not match);
   *  snapResp/readIndexResp: snapshot index / read index. */
  index: number;
  entries: LogEntry[];
  commit: number;
  reject: boolean;
  rejectHint: number;
  /** ReadIndex request id (heartbeat, readIndex, readIndexResp); 'transfer' on a forced vote. */
  context: string;
  snapshot?: SnapshotChunk;
}

/** Who votes and who only listens. Node ids are positive integers. */
export interface ConfState {
  voters: number[];
  learners: number[];
}

export type ConfChangeType = 'addVoter' | 'addLearner' | 'removeNode';

export interface ConfChange {
  type: ConfChangeType;
  nodeId: number;
  /**
   * Opaque to Raft (etcd's ConfChange.Context): carried in the entry so every member learns it
   * when the change applies. loom's node puts the added member's raft address here.
   */
  context?: string;
}

export interface RaftSnapshotMeta extends SnapshotMeta {
  conf: ConfState;
}

/**
 * The application's opaque snapshot bytes, read a chunk at a time: a Uint8Array is one, and so is
 * a file the driver reads at an offset, so a snapshot need not fit in memory.
 */
export interface SnapshotBytes {
  readonly byteLength: number;
  /** Bytes [begin, end), clipped at byteLength; the caller may keep them. */
  subarray(begin: number, end: number): Uint8Array;
  /** Called when Raft drops bytes it assembled without installing them (its log already held them). */
  release?(): void;
}

/** Where a follower gathers a snapshot that arrives in chunks, in order. */
export interface SnapshotAssembly {
  append(chunk: Uint8Array): void;
  /** Every byte arrived: the snapshot's bytes. */
  finish(): SnapshotBytes;
  /** Dropped unfinished (another snapshot started arriving). */
  discard(): void;
}

/** A snapshot as Raft hands it over: metadata plus the application's opaque bytes. */
export interface RaftSnapshot {
  meta: RaftSnapshotMeta;
  data: SnapshotBytes;
}

/** The answer to readIndex(context): reads may be served once the state machine applied `index`. */
export interface ReadState {
  index: number;
  context: string;
}

export type Role = 'follower' | 'preCandidate' | 'candidate' | 'leader';

/** Volatile state a driver may want to report (not persisted). */
export interface SoftState {
  leader: number;
  role: Role;
}

/**
 * Work for the driver. Order: send `messages`; persist `snapshot`, then `entries` (truncating the
 * store's suffix from entries[0].index first), then `hardState`; make it durable; only then send
 * `messagesAfterPersist` and apply `snapshot` and `committedEntries`; then call advance().
 */
export interface Ready {
  softState?: SoftState;
  /** Present only when it changed since the last Ready. */
  hardState?: HardState;
  /** Entries to persist; they may overwrite a suffix of the stored log. */
  entries: LogEntry[];
  /** Entries to apply, in order; already persisted or in `entries` of this Ready. */
  committedEntries: LogEntry[];
  /** Leader replication messages that depend on no unpersisted local state: send now. */
  messages: Message[];
  /** Messages that vouch for this Ready's hard state or entries (votes, acks): send after persisting. */
  messagesAfterPersist: Message[];
  /** A snapshot to install (store.resetToSnapshot + restore the application state). */
  snapshot?: RaftSnapshot;
  readStates: ReadState[];
}

/**
 * Deliberate bugs for the mutation check (docs/raft-mutations.md). Test-only: production never
 * sets `RaftConfig.mutation`; each one names the safety rule it breaks.
 */
export type RaftMutation =
  | 'commitWithoutTermCheck' // commit an older-term entry by counting replicas (Raft fig. 8)
  | 'voteTwiceInTerm' // grant a second vote in the same term
  | 'forgetVote' // never persist the vote
  | 'acceptMismatchedPrevTerm' // append without checking the previous entry's term
  | 'applyBeforeCommit' // hand out entries for apply before they are committed
  | 'voteForStaleLog' // grant votes without the "log at least as up to date" check
  | 'ackBeforePersist'; // acknowledge appended entries before they are durable

export interface RaftConfig {
  /** This node's id (positive integer). */
  id: number;
  /** Bootstrap membership, used only when the log is empty; otherwise the stored conf wins. */
  voters?: number[];
  learners?: number[];
  /** Conf at the stored snapshot, for stores that cannot keep it with the snapshot metadata. */
  snapshotConf?: ConfState;
  /** Index the application has applied up to (its checkpoint); entries after it are re-delivered. */
  applied?: number;
  electionTimeoutTicks?: number;
  heartbeatTimeoutTicks?: number;
  preVote?: boolean;
  checkQuorum?: boolean;
  /** Bytes of entries in one AppendEntries message. */
  appendEntriesBytesMax?: number;
  /** AppendEntries messages in flight to one follower before it must acknowledge. */
  inflightMessagesMax?: number;
  /** Entry bytes in flight to one follower before it must acknowledge. */
  inflightBytesMax?: number;
  /** Bytes of proposed but uncommitted entries a leader accepts before refusing proposals. */
  uncommittedBytesMax?: number;
  /** Bytes of committed entries handed out in one Ready. */
  committedEntriesBytesMax?: number;
  /** Bytes of snapshot data in one InstallSnapshot chunk. */
  snapshotChunkBytesMax?: number;
  /** ReadIndex requests a leader queues while it has not yet committed an entry of its term. */
  pendingReadIndexMax?: number;
  /** Returns a number in [0, 1): randomizes election timeouts. Seeded, so runs replay exactly. */
  random?: () => number;
  /** The latest snapshot, to send followers that fall behind the compacted log. */
  snapshotSource?: () => RaftSnapshot | undefined;
  /**
   * Where a snapshot arriving from the leader is gathered (default: in memory). The driver may
   * write it to a file; Raft calls it synchronously from step().
   */
  assembleSnapshot?: (meta: RaftSnapshotMeta, totalBytes: number) => SnapshotAssembly;
  /** Test-only deliberate bug (see RaftMutation). Never set in production. */
  mutation?: RaftMutation;
}
