// The Raft state machine: elections (with PreVote and CheckQuorum), replication with flow control,
// commit, ReadIndex, leadership transfer, membership change and snapshots. No clock, no I/O: it
// reacts to tick(), step() and proposals, and queues messages that RawNode hands to the driver.

import { LoomError, assert } from '../../util';
import { entrySizeBytes } from '../validate';
import type { HardState, LogEntry, LogStore } from '../types';
import { applyConfChange, checkConfChange, copyConf, decodeConfChange, encodeConfChange } from './conf-change';
import * as limits from './limits';
import { Progress } from './progress';
import { RaftLog } from './raft-log';
import { ReadOnly } from './read-only';
import { seededRandom } from './random';
import { entryTypeConfChange, entryTypeNoop } from './types';
import type { ConfChange, ConfState, Message, RaftConfig, RaftMutation, RaftSnapshot, RaftSnapshotMeta, ReadState, Role, SnapshotAssembly } from './types';

/** Marks a vote request sent because of a leadership transfer: it overrides leader leases. */
const contextTransfer = 'transfer';

type Limits = Required<
  Pick<
    RaftConfig,
    | 'electionTimeoutTicks'
    | 'heartbeatTimeoutTicks'
    | 'preVote'
    | 'checkQuorum'
    | 'appendEntriesBytesMax'
    | 'inflightMessagesMax'
    | 'inflightBytesMax'
    | 'uncommittedBytesMax'
    | 'committedEntriesBytesMax'
    | 'snapshotChunkBytesMax'
    | 'pendingReadIndexMax'
  >
>;

/** A snapshot arriving in chunks, gathered by the driver's assembly until complete. */
interface IncomingSnapshot {
  meta: RaftSnapshotMeta;
  totalBytes: number;
  assembly: SnapshotAssembly;
  receivedBytes: number;
}

/** The default assembly: the chunks in memory, joined once complete. */
export function memorySnapshotAssembly(): SnapshotAssembly {
  const chunks: Uint8Array[] = [];
  return {
    append: (chunk) => chunks.push(chunk),
    finish: () => new Uint8Array(Buffer.concat(chunks)),
    discard: () => {
      chunks.length = 0;
    },
  };
}

export function emptyMessage(type: Message['type'], from: number, to: number, term: number): Message {
  return { type, from, to, term, logTerm: 0, index: 0, entries: [], commit: 0, reject: false, rejectHint: 0, context: '' };
}

export class Raft {
  readonly id: number;
  /** Persistent (via Ready.hardState): current term and the vote cast in it (0 = none). */
  term = 0;
  vote = 0;
  role: Role = 'follower';
  /** The leader of `term` as far as we know; 0 = unknown. */
  leader = 0;
  readonly log: RaftLog;
  conf: ConfState;
  /** Index of the last membership change applied to `conf`. */
  confIndex = 0;
  /** Leader only: one Progress per voter and learner, including itself. */
  readonly progress = new Map<number, Progress>();
  /** Candidate/preCandidate: the answers received in this campaign. */
  private readonly votes = new Map<number, boolean>();
  /** Outgoing messages, drained by RawNode.ready(). */
  msgs: Message[] = [];
  readStates: ReadState[] = [];
  electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  /** Leader: the voter leadership is being handed to (0 = none); proposals wait meanwhile. */
  leadTransferee = 0;
  /** Leader: index of the latest membership change proposed; a new one waits until it is applied. */
  private pendingConfIndex = 0;
  /** Leader: bytes proposed in this term and not yet committed (bounded by uncommittedBytesMax). */
  private uncommittedBytes = 0;
  /** Leader: (index, bytes) of each such proposal, oldest first, to release bytes as they commit. */
  private uncommitted: { index: number; bytes: number }[] = [];
  private readonly readOnly = new ReadOnly();
  /** Leader: ReadIndex requests held until the leader commits an entry of its own term. */
  private pendingReadIndex: { from: number; context: string }[] = [];
  private incomingSnapshot: IncomingSnapshot | undefined;
  private readonly limits: Limits;
  private readonly random: () => number;
  private readonly snapshotSource: () => RaftSnapshot | undefined;
  private readonly assembleSnapshot: (meta: RaftSnapshotMeta, totalBytes: number) => SnapshotAssembly;
  readonly mutation: RaftMutation | undefined;

  constructor(config: RaftConfig, store: LogStore) {
    assert(Number.isSafeInteger(config.id) && config.id > 0, `raft id ${config.id} must be a positive integer`);
    this.id = config.id;
    this.limits = {
      electionTimeoutTicks: config.electionTimeoutTicks ?? limits.electionTimeoutTicksDefault,
      heartbeatTimeoutTicks: config.heartbeatTimeoutTicks ?? limits.heartbeatTimeoutTicksDefault,
      preVote: config.preVote ?? true,
      checkQuorum: config.checkQuorum ?? true,
      appendEntriesBytesMax: config.appendEntriesBytesMax ?? limits.appendEntriesBytesMaxDefault,
      inflightMessagesMax: config.inflightMessagesMax ?? limits.inflightMessagesMaxDefault,
      inflightBytesMax: config.inflightBytesMax ?? limits.inflightBytesMaxDefault,
      uncommittedBytesMax: config.uncommittedBytesMax ?? limits.uncommittedBytesMaxDefault,
      committedEntriesBytesMax: config.committedEntriesBytesMax ?? limits.committedEntriesBytesMaxDefault,
      snapshotChunkBytesMax: config.snapshotChunkBytesMax ?? limits.snapshotChunkBytesMaxDefault,
      pendingReadIndexMax: config.pendingReadIndexMax ?? limits.pendingReadIndexMaxDefault,
    };
    assert(this.limits.heartbeatTimeoutTicks < this.limits.electionTimeoutTicks, 'heartbeat timeout must be below election timeout');
    this.random = config.random ?? seededRandom(config.id);
    this.snapshotSource = config.snapshotSource ?? (() => undefined);
    this.assembleSnapshot = config.assembleSnapshot ?? memorySnapshotAssembly;
    this.mutation = config.mutation;

    const hard = store.hardState();
    const snapMeta = store.snapshotMeta() as Partial<RaftSnapshotMeta> & { index: number; term: number };
    if (snapMeta.index > 0) {
      const conf = snapMeta.conf ?? config.snapshotConf;
      assert(conf !== undefined, 'the store has a snapshot but neither it nor the config carries its membership');
      this.conf = copyConf(conf);
      this.confIndex = snapMeta.index;
    } else {
      this.conf = { voters: [...(config.voters ?? [])].sort((a, b) => a - b), learners: [...(config.learners ?? [])].sort((a, b) => a - b) };
    }
    const committed = Math.max(hard.commit, snapMeta.index);
    const applied = Math.max(config.applied ?? snapMeta.index, snapMeta.index);
    this.log = new RaftLog(store, Math.min(applied, committed), committed);
    if (this.mutation === 'applyBeforeCommit') this.log.applyCeiling = () => this.log.lastIndex();
    this.replayConfChanges(committed);
    // A torn write can leave entries of a term whose hard state never reached the disk; holding
    // them proves we were in that term (without a vote in it, or the vote would be durable).
    const lastTerm = this.log.lastTerm();
    this.term = Math.max(hard.term, lastTerm);
    this.vote = lastTerm > hard.term ? 0 : hard.vote;
    this.becomeFollower(this.term, 0);
  }

  // ---- inputs ------------------------------------------------------------------------------

  tick(): void {
    if (this.role === 'leader') this.tickHeartbeat();
    else this.tickElection();
  }

  /** Starts an election now (as if the election timeout elapsed). */
  campaign(): void {
    this.hup(false);
  }

  /**
   * etcd's ForgetLeader: a follower told by its driver that the leader is gone (its connection
   * closed) stops honouring the leader's lease, so it grants (pre-)votes at once instead of after an
   * election timeout. It does not campaign by itself, and a heartbeat from a live leader restores it.
   */
  forgetLeader(): void {
    if (this.role !== 'follower' || this.leader === 0) return;
    this.leader = 0;
  }

  step(m: Message): void {
    assert(m.to === this.id, `message for ${m.to} stepped into ${this.id}`);
    if (m.term > this.term) {
      if (m.type === 'vote' || m.type === 'preVote') {
        const force = m.context === contextTransfer;
        // Leader lease: while we hear from a live leader, ignore candidates that were merely cut
        // off (CheckQuorum makes this safe: a leader that lost its quorum steps down itself).
        const inLease = this.limits.checkQuorum && this.leader !== 0 && this.electionElapsed < this.limits.electionTimeoutTicks;
        if (!force && inLease) return;
      }
      if (m.type === 'preVote') {
        // A PreVote never changes our term.
      } else if (m.type === 'preVoteResp' && !m.reject) {
        // The term moves when the real election starts.
      } else if (m.type === 'app' || m.type === 'heartbeat' || m.type === 'snap') {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, 0);
      }
    } else if (m.term < this.term) {
      if ((this.limits.checkQuorum || this.limits.preVote) && (m.type === 'heartbeat' || m.type === 'app')) {
        // A leader cut off from us may not know it was replaced; tell it our term so it steps
        // down (otherwise, with PreVote, it could never learn it).
        this.send({ ...emptyMessage('appResp', this.id, m.from, this.term) });
      } else if (m.type === 'preVote') {
        this.send({ ...emptyMessage('preVoteResp', this.id, m.from, this.term), reject: true });
      }
      return;
    }

    if (m.type === 'vote' || m.type === 'preVote') {
      this.handleVoteRequest(m);
      return;
    }
    if (this.role === 'leader') this.stepLeader(m);
    else if (this.role === 'follower') this.stepFollower(m);
    else this.stepCandidate(m);
  }

  /** Appends an application entry; returns its index. Throws NOT_LEADER on a non-leader. */
  propose(type: string, data: Uint8Array, ts: number): number {
    if (type === entryTypeNoop || type === entryTypeConfChange) {
      throw new LoomError('INVALID_ARGUMENT', `entry type ${type} is reserved for Raft`, { field: 'type' });
    }
    this.checkCanPropose();
    return this.appendProposal(type, data, ts);
  }

  proposeConfChange(change: ConfChange, ts: number): number {
    checkConfChange(change);
    this.checkCanPropose();
    // One change at a time: the next waits until the previous one is applied here. pendingConfIndex
    // starts at the leader's last index, so a new leader first commits an entry of its own term
    // (the fix to the single-server change bug in Ongaro's dissertation errata).
    if (this.pendingConfIndex > this.log.applied) {
      throw new LoomError('UNAVAILABLE', 'a membership change is still being applied; retry once it is', {
        pendingConfIndex: this.pendingConfIndex,
      });
    }
    const next = applyConfChange(this.conf, change);
    if (next.voters.length === 0) throw new LoomError('INVALID_ARGUMENT', 'a membership change may not remove the last voter');
    const index = this.appendProposal(entryTypeConfChange, encodeConfChange(change), ts);
    this.pendingConfIndex = index;
    return index;
  }

  /** Asks for a linearizable read point; the answer arrives as a ReadState with this context. */
  readIndex(context: string): void {
    if (this.role === 'leader') {
      this.handleReadIndex(this.id, context);
      return;
    }
    if (this.leader === 0) throw new LoomError('NOT_LEADER', 'no leader is known; retry the read later', { leader: 0 });
    this.send({ ...emptyMessage('readIndex', this.id, this.leader, this.term), context });
  }

  transferLeadership(to: number): void {
    if (this.role === 'leader') {
      this.handleTransfer(to);
      return;
    }
    if (this.leader === 0) throw new LoomError('NOT_LEADER', 'no leader is known to transfer leadership from', { leader: 0 });
    this.send({ ...emptyMessage('transferLeader', this.id, this.leader, this.term), index: to });
  }

  /** The driver applied these committed entries; membership changes among them take effect now. */
  appliedEntries(entries: LogEntry[]): void {
    if (entries.length === 0) return;
    for (const entry of entries) {
      if (entry.type === entryTypeConfChange && entry.index > this.confIndex) {
        this.applyConf(applyConfChange(this.conf, decodeConfChange(entry.data)), entry.index);
      }
    }
    this.log.appliedTo(entries[entries.length - 1].index);
  }

  /**
   * The driver made a Ready durable (`durable` is the hard state now on disk): a candidate now
   * counts its own vote, a leader its own entries towards the commit.
   */
  persisted(durable: HardState): void {
    const ownVoteDurable = durable.term === this.term && (durable.vote === this.id || this.mutation === 'forgetVote');
    if (this.role === 'candidate' && ownVoteDurable && !this.votes.has(this.id)) {
      if (this.poll(this.id, true) === 'won') this.becomeLeader();
    }
    if (this.role === 'leader') this.countSelf();
  }

  private countSelf(): void {
    const self = this.progress.get(this.id);
    if (self === undefined) return;
    if (self.maybeUpdate(this.selfAckIndex()) && this.maybeCommit()) this.bcastAppend();
  }

  /** The driver persisted and applied the snapshot at `index`: it is now the log's start. */
  snapshotInstalled(index: number): void {
    this.log.stableSnapshotTo(index);
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  committedEntriesBytesMax(): number {
    return this.limits.committedEntriesBytesMax;
  }

  isVoter(id: number): boolean {
    return this.conf.voters.includes(id);
  }

  // ---- elections ---------------------------------------------------------------------------

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup(false);
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.limits.electionTimeoutTicks) {
      this.electionElapsed = 0;
      if (this.limits.checkQuorum) {
        if (!this.quorumActive()) {
          this.becomeFollower(this.term, 0);
          return;
        }
        for (const [id, pr] of this.progress) if (id !== this.id) pr.recentActive = false;
      }
      // A transfer that did not finish within an election timeout is abandoned.
      if (this.leadTransferee !== 0) this.leadTransferee = 0;
      this.handOverIfRemoved();
    }
    if (this.heartbeatElapsed >= this.limits.heartbeatTimeoutTicks) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat(this.readOnly.lastContext() ?? '');
    }
  }

  private hup(transfer: boolean): void {
    if (this.role === 'leader') return;
    if (!this.promotable()) return;
    // A committed membership change we have not applied may change who votes; wait for it.
    if (this.hasUnappliedConfChanges()) return;
    if (this.limits.preVote && !transfer) this.startCampaign('preVote', false);
    else this.startCampaign('vote', transfer);
  }

  private startCampaign(kind: 'preVote' | 'vote', transfer: boolean): void {
    let term: number;
    if (kind === 'preVote') {
      this.becomePreCandidate();
      term = this.term + 1;
    } else {
      this.becomeCandidate();
      term = this.term;
    }
    // A pre-vote for oneself promises nothing and counts at once. A real vote for oneself counts
    // only once it is durable (persisted()): a single voter that won on an unwritten vote could
    // crash, restart in the old term, vote for another node and let it lead the same term.
    if (kind === 'preVote' && this.poll(this.id, true) === 'won') {
      this.startCampaign('vote', transfer);
      return;
    }
    for (const voter of this.conf.voters) {
      if (voter === this.id) continue;
      this.send({
        ...emptyMessage(kind, this.id, voter, term),
        index: this.log.lastIndex(),
        logTerm: this.log.lastTerm(),
        context: transfer ? contextTransfer : '',
      });
    }
  }

  private poll(from: number, granted: boolean): 'won' | 'lost' | 'pending' {
    if (!this.votes.has(from)) this.votes.set(from, granted);
    let yes = 0;
    let no = 0;
    for (const voter of this.conf.voters) {
      const v = this.votes.get(voter);
      if (v === true) yes++;
      if (v === false) no++;
    }
    const quorum = this.quorum();
    if (yes >= quorum) return 'won';
    if (no > this.conf.voters.length - quorum) return 'lost';
    return 'pending';
  }

  private handleVoteRequest(m: Message): void {
    const voteTwice = this.mutation === 'voteTwiceInTerm' && m.type === 'vote';
    const canVote =
      this.vote === m.from || (this.vote === 0 && this.leader === 0) || (m.type === 'preVote' && m.term > this.term) || voteTwice;
    const upToDate = this.mutation === 'voteForStaleLog' || this.log.isUpToDate(m.index, m.logTerm);
    const respType = m.type === 'vote' ? 'voteResp' : 'preVoteResp';
    if (canVote && upToDate) {
      // The answer carries the candidate's term so it counts; for PreVote ours has not moved.
      this.send({ ...emptyMessage(respType, this.id, m.from, m.term) });
      if (m.type === 'vote') {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      this.send({ ...emptyMessage(respType, this.id, m.from, this.term), reject: true });
    }
  }

  private stepCandidate(m: Message): void {
    const respType = this.role === 'preCandidate' ? 'preVoteResp' : 'voteResp';
    switch (m.type) {
      case 'app':
      case 'heartbeat':
      case 'snap':
        // Someone won this term (m.term === term): follow it.
        this.becomeFollower(m.term, m.from);
        this.stepFollower(m);
        return;
      case respType: {
        const result = this.poll(m.from, !m.reject);
        if (result === 'won') {
          if (this.role === 'preCandidate') this.startCampaign('vote', false);
          else {
            this.becomeLeader();
          }
        } else if (result === 'lost') {
          this.becomeFollower(this.term, 0);
        }
        return;
      }
      default:
        return;
    }
  }

  // ---- role changes ------------------------------------------------------------------------

  becomeFollower(term: number, leader: number): void {
    this.reset(term);
    this.role = 'follower';
    this.leader = leader;
  }

  private becomePreCandidate(): void {
    assert(this.role !== 'leader', 'a leader cannot become a pre-candidate');
    this.dropIncomingSnapshot();
    // Neither term nor vote changes: a PreVote campaign that fails leaves no trace.
    this.votes.clear();
    this.role = 'preCandidate';
    this.leader = 0;
  }

  private becomeCandidate(): void {
    assert(this.role !== 'leader', 'a leader cannot become a candidate');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = 'candidate';
  }

  private becomeLeader(): void {
    assert(this.role === 'candidate', `only a candidate becomes leader (was ${this.role})`);
    this.reset(this.term);
    this.role = 'leader';
    this.leader = this.id;
    this.progress.get(this.id)?.becomeReplicate();
    // Conf changes in the log we cannot yet see as applied must be applied before a new one.
    this.pendingConfIndex = this.log.lastIndex();
    // The no-op lets the new leader commit (and so learn the commit point of) earlier terms.
    this.appendEntries([{ index: 0, term: 0, type: entryTypeNoop, data: new Uint8Array(0), ts: 0 }]);
    this.bcastAppend();
  }

  private reset(term: number): void {
    if (term !== this.term) {
      this.term = term;
      this.vote = 0;
      // A snapshot arriving from the old term's leader will not be finished by it.
      this.dropIncomingSnapshot();
    }
    this.leader = 0;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTimeout = this.limits.electionTimeoutTicks + Math.floor(this.random() * this.limits.electionTimeoutTicks);
    this.leadTransferee = 0;
    this.votes.clear();
    this.pendingConfIndex = 0;
    this.uncommittedBytes = 0;
    this.uncommitted = [];
    this.readOnly.reset();
    this.pendingReadIndex = [];
    this.rebuildProgress();
  }

  private rebuildProgress(): void {
    this.progress.clear();
    for (const id of this.conf.voters) this.progress.set(id, this.newProgress(id));
    for (const id of this.conf.learners) this.progress.set(id, this.newProgress(id));
  }

  private newProgress(id: number): Progress {
    const pr = new Progress(this.log.lastIndex() + 1, this.limits.inflightMessagesMax, this.limits.inflightBytesMax);
    if (id === this.id) pr.match = this.selfAckIndex();
    // Followers count as active at the start of a term so CheckQuorum gives them one timeout.
    pr.recentActive = true;
    return pr;
  }

  private selfAckIndex(): number {
    // ackBeforePersist counts the leader's own entries before they are durable (a real bug).
    return this.mutation === 'ackBeforePersist' ? this.log.lastIndex() : this.log.persistedLastIndex();
  }

  private promotable(): boolean {
    if (this.conf.voters.includes(this.id)) return true;
    // A node removed from the group may hold entries that the remaining voters, still counting
    // it under the previous membership, need: going from two voters to one, the survivor cannot
    // win without the removed node's vote, which it refuses while its log is longer. So a removed
    // node with uncommitted entries may still campaign (counting votes of the new membership),
    // lead long enough to spread the commit point, and hand over (handOverIfRemoved).
    return !this.conf.learners.includes(this.id) && this.confIndex > 0 && this.log.lastIndex() > this.log.committed;
  }

  private quorum(): number {
    return Math.floor(this.conf.voters.length / 2) + 1;
  }

  private quorumActive(): boolean {
    let active = 0;
    for (const voter of this.conf.voters) {
      if (voter === this.id || this.progress.get(voter)?.recentActive) active++;
    }
    return active >= this.quorum();
  }

  private hasUnappliedConfChanges(): boolean {
    if (this.log.committed <= this.log.applied) return false;
    const lo = Math.max(this.log.applied + 1, this.log.firstIndex());
    let i = lo;
    while (i <= this.log.committed) {
      const entries = this.log.slice(i, this.log.committed + 1, this.limits.committedEntriesBytesMax);
      for (const entry of entries) if (entry.type === entryTypeConfChange) return true;
      i += entries.length;
    }
    return false;
  }

  // ---- leader ------------------------------------------------------------------------------

  private checkCanPropose(): void {
    if (this.role !== 'leader') {
      throw new LoomError('NOT_LEADER', 'this node is not the leader', { leader: this.leader });
    }
    if (this.leadTransferee !== 0) {
      throw new LoomError('UNAVAILABLE', `leadership is being transferred to ${this.leadTransferee}`, { leader: this.leadTransferee });
    }
  }

  private appendProposal(type: string, data: Uint8Array, ts: number): number {
    const entry: LogEntry = { index: 0, term: 0, type, data, ts };
    const size = entrySizeBytes(entry);
    if (this.uncommittedBytes > 0 && this.uncommittedBytes + size > this.limits.uncommittedBytesMax) {
      throw new LoomError('UNAVAILABLE', 'too many proposals are waiting to commit; retry later', {
        limit: 'uncommittedBytesMax',
        max: this.limits.uncommittedBytesMax,
      });
    }
    this.appendEntries([entry]);
    this.bcastAppend();
    return this.log.lastIndex();
  }

  private appendEntries(entries: LogEntry[]): void {
    let index = this.log.lastIndex();
    const stamped = entries.map((e) => {
      index++;
      const bytes = entrySizeBytes(e);
      this.uncommittedBytes += bytes;
      this.uncommitted.push({ index, bytes });
      return { ...e, index, term: this.term };
    });
    this.log.append(stamped);
    // The leader counts itself only once the driver made these durable (persisted()).
    if (this.mutation === 'ackBeforePersist') this.countSelf();
  }

  /** Advances commit to the highest index stored on a quorum, if it is of the current term. */
  private maybeCommit(): boolean {
    const matches = this.conf.voters.map((id) => this.progress.get(id)?.match ?? 0).sort((a, b) => b - a);
    const candidate = matches[this.quorum() - 1];
    if (candidate <= this.log.committed) return false;
    // Raft §5.4.2 / figure 8: an entry of an earlier term is committed only indirectly, by
    // committing one of the current term after it; counting its replicas is not enough.
    if (this.mutation !== 'commitWithoutTermCheck' && this.log.term(candidate) !== this.term) return false;
    const before = this.log.committed;
    this.log.commitTo(candidate);
    while (this.uncommitted.length > 0 && this.uncommitted[0].index <= candidate) {
      this.uncommittedBytes -= this.uncommitted[0].bytes;
      this.uncommitted.shift();
    }
    if (this.log.term(before) !== this.term && this.log.term(candidate) === this.term) this.releasePendingReadIndex();
    return true;
  }

  private bcastAppend(): void {
    for (const id of this.progress.keys()) if (id !== this.id) this.sendAppend(id, true);
  }

  private bcastHeartbeat(context: string): void {
    for (const [id, pr] of this.progress) {
      if (id === this.id) continue;
      // A follower may not have the entries up to our commit; never tell it more than it matches.
      const commit = Math.min(pr.match, this.log.committed);
      this.send({ ...emptyMessage('heartbeat', this.id, id, this.term), commit, context });
    }
  }

  /** Sends the next AppendEntries (or snapshot chunk) to `to` if flow control allows; true if sent. */
  private sendAppend(to: number, sendIfEmpty: boolean): boolean {
    const pr = this.progress.get(to);
    if (pr === undefined || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.term(prevIndex);
    if (prevTerm === undefined || pr.next < this.log.firstIndex()) return this.startSnapshot(to, pr);
    const last = this.log.lastIndex();
    const entries = pr.next <= last ? this.log.slice(pr.next, last + 1, this.limits.appendEntriesBytesMax) : [];
    if (entries.length === 0 && !sendIfEmpty) return false;
    let bytes = 0;
    for (const entry of entries) bytes += entrySizeBytes(entry);
    this.send({
      ...emptyMessage('app', this.id, to, this.term),
      index: prevIndex,
      logTerm: prevTerm,
      entries,
      commit: this.log.committed,
    });
    if (entries.length > 0) pr.sentEntries(entries[entries.length - 1].index, bytes);
    else if (pr.state === 'probe') pr.probeSent = true;
    return true;
  }

  private startSnapshot(to: number, pr: Progress): boolean {
    const snapshot = this.snapshotSource();
    assert(snapshot !== undefined, `follower ${to} needs entries before ${this.log.firstIndex()} but no snapshot is available`);
    assert(snapshot.meta.index >= this.log.firstIndex() - 1, 'the snapshot source is older than the compacted log');
    pr.becomeSnapshot(snapshot.meta.index);
    this.sendSnapshotChunk(to, pr);
    return true;
  }

  private sendSnapshotChunk(to: number, pr: Progress): void {
    const snapshot = this.snapshotSource();
    assert(snapshot !== undefined, 'snapshot vanished while being sent');
    if (snapshot.meta.index !== pr.pendingSnapshotIndex) {
      // A newer snapshot was taken meanwhile; start sending that one.
      pr.becomeSnapshot(snapshot.meta.index);
    }
    const offset = pr.snapshotOffset;
    const data = snapshot.data.subarray(offset, offset + this.limits.snapshotChunkBytesMax);
    pr.snapshotSentTo = offset + data.byteLength;
    this.send({
      ...emptyMessage('snap', this.id, to, this.term),
      snapshot: { meta: snapshot.meta, offset, totalBytes: snapshot.data.byteLength, data },
    });
  }

  private stepLeader(m: Message): void {
    if (m.type === 'readIndex') {
      this.handleReadIndex(m.from, m.context);
      return;
    }
    if (m.type === 'transferLeader') {
      this.handleTransfer(m.index);
      return;
    }
    const pr = this.progress.get(m.from);
    if (pr === undefined) return;
    switch (m.type) {
      case 'appResp':
        pr.recentActive = true;
        if (m.reject) this.handleAppendRejected(m, pr);
        else this.handleAppendAccepted(m, pr);
        return;
      case 'heartbeatResp':
        pr.recentActive = true;
        pr.probeSent = false;
        // If the whole window was lost, no acknowledgement will ever free it: let one more
        // message out per heartbeat; a gap it reveals is rejected and sends us back to probing.
        if (pr.state === 'replicate' && pr.inflights.full()) pr.inflights.freeFirstOne();
        if (pr.state === 'snapshot') this.sendSnapshotChunk(m.from, pr);
        else if (pr.match < this.log.lastIndex()) this.sendAppend(m.from, true);
        if (m.context !== '' && this.isVoter(m.from)) {
          const released = this.readOnly.ack(m.context, m.from, (acks) => this.hasQuorum(acks));
          for (const request of released) this.answerRead(request.from, request.index, request.context);
        }
        return;
      case 'snapResp':
        pr.recentActive = true;
        this.handleSnapshotResponse(m, pr);
        return;
      default:
        return;
    }
  }

  /** The follower says how many bytes of the snapshot it has (rejectHint): send the next chunk. */
  private handleSnapshotResponse(m: Message, pr: Progress): void {
    if (pr.state !== 'snapshot' || m.index !== pr.pendingSnapshotIndex) return;
    // One chunk is on its way at a time. An answer that has what the follower had, but not that
    // chunk, is to a copy sent before (a heartbeat resends the chunk in flight): the chunk it asks
    // for is already on its way, and sending it again would start one more stream of chunks with
    // every heartbeat. Less than it had means it lost them (a restart): start again from there.
    const duplicate = m.rejectHint >= pr.snapshotOffset && m.rejectHint < pr.snapshotSentTo;
    pr.snapshotOffset = m.rejectHint;
    if (duplicate) return;
    if (m.reject || pr.snapshotOffset < (this.snapshotSource()?.data.byteLength ?? 0)) this.sendSnapshotChunk(m.from, pr);
  }

  private handleAppendRejected(m: Message, pr: Progress): void {
    // The follower says where its log could match; skip back over a whole term of ours at once.
    let hint = m.rejectHint;
    if (m.logTerm > 0) hint = this.log.findConflictByTerm(m.rejectHint, m.logTerm).index;
    if (pr.maybeDecrTo(m.index, hint)) {
      if (pr.state === 'replicate') pr.becomeProbe();
      this.sendAppend(m.from, true);
    }
  }

  private handleAppendAccepted(m: Message, pr: Progress): void {
    const wasPaused = pr.isPaused();
    if (!pr.maybeUpdate(m.index)) {
      if (pr.state === 'snapshot' && pr.match >= pr.pendingSnapshotIndex) pr.becomeProbe();
      return;
    }
    if (pr.state === 'probe') pr.becomeReplicate();
    else if (pr.state === 'snapshot') {
      if (pr.match >= pr.pendingSnapshotIndex) {
        pr.becomeProbe();
        pr.becomeReplicate();
      }
    } else pr.inflights.freeLE(m.index);

    if (this.maybeCommit()) this.bcastAppend();
    else if (wasPaused) this.sendAppend(m.from, true);
    // Pipelining: keep the window full while there is more to send.
    while (this.sendAppend(m.from, false)) {
      // each iteration sends one more message
    }
    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
      this.send(emptyMessage('timeoutNow', this.id, m.from, this.term));
    }
  }

  private hasQuorum(acks: Set<number>): boolean {
    let n = this.isVoter(this.id) ? 1 : 0;
    for (const id of acks) if (id !== this.id && this.isVoter(id)) n++;
    return n >= this.quorum();
  }

  private handleReadIndex(from: number, context: string): void {
    if (this.conf.voters.length === 1 && this.isVoter(this.id)) {
      this.answerRead(from, this.log.committed, context);
      return;
    }
    // Until an entry of this term commits, our commit index may lag the real one (§6.4).
    if (this.log.term(this.log.committed) !== this.term) {
      if (this.pendingReadIndex.length < this.limits.pendingReadIndexMax) this.pendingReadIndex.push({ from, context });
      return;
    }
    if (this.readOnly.add(context, this.log.committed, from) === undefined) return;
    this.bcastHeartbeat(context);
  }

  private releasePendingReadIndex(): void {
    const pending = this.pendingReadIndex;
    this.pendingReadIndex = [];
    for (const request of pending) this.handleReadIndex(request.from, request.context);
  }

  private answerRead(from: number, index: number, context: string): void {
    if (from === this.id) this.readStates.push({ index, context });
    else this.send({ ...emptyMessage('readIndexResp', this.id, from, this.term), index, context });
  }

  private handleTransfer(to: number): void {
    if (to === this.id || !this.isVoter(to)) return;
    if (this.leadTransferee === to) return;
    this.leadTransferee = to;
    // The transfer must finish within one election timeout or it is abandoned.
    this.electionElapsed = 0;
    const pr = this.progress.get(to);
    if (pr === undefined) return;
    if (pr.match === this.log.lastIndex()) this.send(emptyMessage('timeoutNow', this.id, to, this.term));
    else this.sendAppend(to, true);
  }

  // ---- follower ----------------------------------------------------------------------------

  private stepFollower(m: Message): void {
    switch (m.type) {
      case 'app':
        this.electionElapsed = 0;
        this.leader = m.from;
        this.handleAppend(m);
        return;
      case 'heartbeat':
        this.electionElapsed = 0;
        this.leader = m.from;
        this.log.commitTo(m.commit);
        this.send({ ...emptyMessage('heartbeatResp', this.id, m.from, this.term), context: m.context });
        return;
      case 'snap':
        this.electionElapsed = 0;
        this.leader = m.from;
        this.handleSnapshotChunk(m);
        return;
      case 'timeoutNow':
        this.hup(true);
        return;
      case 'readIndexResp':
        this.readStates.push({ index: m.index, context: m.context });
        return;
      case 'transferLeader':
        if (this.leader !== 0) this.send({ ...emptyMessage('transferLeader', this.id, this.leader, this.term), index: m.index });
        return;
      default:
        return;
    }
  }

  private handleAppend(m: Message): void {
    if (m.index < this.log.committed) {
      this.send({ ...emptyMessage('appResp', this.id, m.from, this.term), index: this.log.committed });
      return;
    }
    const checkPrevTerm = this.mutation !== 'acceptMismatchedPrevTerm';
    const lastNew = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries, checkPrevTerm);
    if (lastNew !== undefined) {
      this.send({ ...emptyMessage('appResp', this.id, m.from, this.term), index: lastNew });
      return;
    }
    const hint = this.log.findConflictByTerm(Math.min(m.index, this.log.lastIndex()), m.logTerm);
    this.send({
      ...emptyMessage('appResp', this.id, m.from, this.term),
      index: m.index,
      reject: true,
      rejectHint: hint.index,
      logTerm: hint.term,
    });
  }

  /** Drops a snapshot being assembled (its file, when the driver writes one). */
  private dropIncomingSnapshot(): void {
    const incoming = this.incomingSnapshot;
    this.incomingSnapshot = undefined;
    incoming?.assembly.discard();
  }

  private handleSnapshotChunk(m: Message): void {
    const chunk = m.snapshot;
    assert(chunk !== undefined, 'snap message without a chunk');
    if (chunk.meta.index <= this.log.committed) {
      // Our log already has it (installed, or caught up since): nothing to gather. Say how far
      // we are committed, as etcd answers a snapshot it does not need.
      if (this.incomingSnapshot?.meta.index === chunk.meta.index) this.dropIncomingSnapshot();
      this.send({ ...emptyMessage('appResp', this.id, m.from, this.term), index: this.log.committed });
      return;
    }
    if (chunk.offset === 0) {
      this.dropIncomingSnapshot();
      this.incomingSnapshot = { meta: chunk.meta, totalBytes: chunk.totalBytes, assembly: this.assembleSnapshot(chunk.meta, chunk.totalBytes), receivedBytes: 0 };
    }
    const incoming = this.incomingSnapshot;
    const resp = { ...emptyMessage('snapResp', this.id, m.from, this.term), index: chunk.meta.index };
    const same = incoming !== undefined && incoming.meta.index === chunk.meta.index && incoming.meta.term === chunk.meta.term;
    if (!same || chunk.offset !== incoming.receivedBytes) {
      // Out of order or from a snapshot we are not assembling: say where we are.
      this.send({ ...resp, reject: true, rejectHint: same ? incoming.receivedBytes : 0 });
      return;
    }
    incoming.assembly.append(chunk.data);
    incoming.receivedBytes += chunk.data.byteLength;
    if (incoming.receivedBytes < incoming.totalBytes) {
      this.send({ ...resp, rejectHint: incoming.receivedBytes });
      return;
    }
    this.incomingSnapshot = undefined;
    const data = incoming.assembly.finish();
    if (this.restore({ meta: incoming.meta, data })) {
      this.send({ ...emptyMessage('appResp', this.id, m.from, this.term), index: this.log.lastIndex() });
    } else {
      data.release?.();
      this.send({ ...emptyMessage('appResp', this.id, m.from, this.term), index: this.log.committed });
    }
  }

  /** Installs a snapshot unless our log already has it; true if the log was replaced. */
  private restore(snapshot: RaftSnapshot): boolean {
    const meta = snapshot.meta;
    if (meta.index <= this.log.committed) return false;
    if (this.log.matchTerm(meta.index, meta.term)) {
      // We hold the snapshot's last entry, hence (log matching) everything before it: just commit.
      this.log.commitTo(meta.index);
      return false;
    }
    this.log.restore(snapshot);
    this.conf = copyConf(meta.conf);
    this.confIndex = meta.index;
    this.rebuildProgress();
    return true;
  }

  // ---- membership --------------------------------------------------------------------------

  private replayConfChanges(committed: number): void {
    let i = Math.max(this.log.firstIndex(), this.confIndex + 1);
    while (i <= committed) {
      const entries = this.log.slice(i, committed + 1, this.limits.committedEntriesBytesMax);
      for (const entry of entries) {
        if (entry.type === entryTypeConfChange) this.conf = applyConfChange(this.conf, decodeConfChange(entry.data));
      }
      i += entries.length;
    }
    this.confIndex = Math.max(this.confIndex, committed);
  }

  private applyConf(conf: ConfState, index: number): void {
    this.conf = conf;
    this.confIndex = index;
    if (this.role !== 'leader') {
      if (!this.promotable() && (this.role === 'candidate' || this.role === 'preCandidate')) this.becomeFollower(this.term, 0);
      return;
    }
    for (const id of [...this.progress.keys()]) {
      if (!this.isVoter(id) && !conf.learners.includes(id)) this.progress.delete(id);
    }
    for (const id of [...conf.voters, ...conf.learners]) {
      if (!this.progress.has(id)) this.progress.set(id, this.newProgress(id));
    }
    if (this.leadTransferee !== 0 && !this.isVoter(this.leadTransferee)) this.leadTransferee = 0;
    // The quorum changed: the commit point may move, and new members need the log.
    this.maybeCommit();
    this.bcastAppend();
    this.handOverIfRemoved();
  }

  /**
   * A leader removed from the voters keeps replicating (without counting itself) so the others
   * learn the commit point, and hands leadership to the most up-to-date voter. Stepping down at
   * once could strand the group: its log may be the only one holding the latest entries, and as a
   * non-voter it may not campaign, so no voter could win an election.
   */
  private handOverIfRemoved(): void {
    if (this.role !== 'leader' || this.isVoter(this.id) || this.leadTransferee !== 0) return;
    let best = 0;
    let bestMatch = -1;
    for (const voter of this.conf.voters) {
      const match = this.progress.get(voter)?.match ?? 0;
      if (match > bestMatch) {
        best = voter;
        bestMatch = match;
      }
    }
    if (best !== 0) this.handleTransfer(best);
  }

  private send(m: Message): void {
    assert(m.to !== this.id, `raft ${this.id} sends a message to itself`);
    this.msgs.push(m);
  }
}
