// RawNode: the driver's handle on Raft (after etcd's rawnode.go). Inputs go in through tick, step
// and the proposal calls; ready() gathers the work they produced; advance() says it is done.

import { assert } from '../../util';
import type { HardState, LogStore } from '../types';
import { Raft } from './raft';
import type { ConfChange, ConfState, Message, RaftConfig, Ready, Role, SoftState } from './types';

/** Messages that only a leader sends and that vouch for nothing but its (already durable) term. */
const sendNowTypes = new Set<Message['type']>(['app', 'heartbeat', 'snap', 'timeoutNow', 'readIndexResp']);

export interface RaftStatus {
  id: number;
  term: number;
  vote: number;
  commit: number;
  applied: number;
  lastIndex: number;
  role: Role;
  leader: number;
  conf: ConfState;
}

export class RawNode {
  /** The state machine itself, exposed read-only for status and tests; drive it through RawNode. */
  readonly raft: Raft;
  /** The hard state handed out by the last Ready: durable once that Ready was advanced. */
  private durableHardState: HardState;
  private lastSoftState: SoftState;
  private readyInFlight: Ready | undefined;

  constructor(config: RaftConfig, store: LogStore) {
    this.raft = new Raft(config, store);
    this.durableHardState = store.hardState();
    this.lastSoftState = { leader: this.raft.leader, role: this.raft.role };
  }

  tick(): void {
    this.raft.tick();
  }

  step(message: Message): void {
    this.raft.step(message);
  }

  campaign(): void {
    this.raft.campaign();
  }

  forgetLeader(): void {
    this.raft.forgetLeader();
  }

  /** Proposes an application entry (`ts` is set once, by the proposer); returns its log index. */
  propose(type: string, data: Uint8Array, ts: number): number {
    return this.raft.propose(type, data, ts);
  }

  proposeConfChange(change: ConfChange, ts = 0): number {
    return this.raft.proposeConfChange(change, ts);
  }

  readIndex(context: string): void {
    this.raft.readIndex(context);
  }

  transferLeadership(to: number): void {
    this.raft.transferLeadership(to);
  }

  hasReady(): boolean {
    if (this.readyInFlight !== undefined) return false;
    const r = this.raft;
    if (r.leader !== this.lastSoftState.leader || r.role !== this.lastSoftState.role) return true;
    if (!sameHardState(this.currentHardState(), this.durableHardState)) return true;
    return (
      r.msgs.length > 0 ||
      r.readStates.length > 0 ||
      r.log.unstable().length > 0 ||
      r.log.pendingSnapshot() !== undefined ||
      r.log.hasNextCommittedEntries()
    );
  }

  /** The work to do now. Call advance() after doing it, before the next ready(). */
  ready(): Ready {
    assert(this.readyInFlight === undefined, 'ready() called again before advance()');
    const r = this.raft;
    const rd: Ready = {
      entries: [...r.log.unstable()],
      committedEntries: r.log.nextCommittedEntries(r.committedEntriesBytesMax()),
      messages: [],
      messagesAfterPersist: [],
      readStates: r.readStates,
    };
    const soft: SoftState = { leader: r.leader, role: r.role };
    if (soft.leader !== this.lastSoftState.leader || soft.role !== this.lastSoftState.role) {
      rd.softState = soft;
      this.lastSoftState = soft;
    }
    const hard = this.currentHardState();
    if (!sameHardState(hard, this.durableHardState)) rd.hardState = hard;
    const snapshot = r.log.pendingSnapshot();
    if (snapshot !== undefined) rd.snapshot = snapshot;
    for (const m of r.msgs) {
      // A message from a term this node has left since is dropped (the network may always drop):
      // it could vouch for a vote or entries that the newer state being persisted no longer holds
      // (simulator seed 21258: a vote granted in term 4, superseded by a vote in term 5).
      if (m.term < r.term) continue;
      // A message may leave before this Ready is durable only if it vouches for nothing in it.
      const early = (sendNowTypes.has(m.type) || (r.mutation === 'ackBeforePersist' && m.type === 'appResp')) && m.term <= this.durableHardState.term;
      if (early) rd.messages.push(m);
      else rd.messagesAfterPersist.push(m);
    }
    r.msgs = [];
    r.readStates = [];
    this.readyInFlight = rd;
    return rd;
  }

  /** The last Ready is persisted, its messages sent and its committed entries applied. */
  advance(): void {
    const rd = this.readyInFlight;
    assert(rd !== undefined, 'advance() without a ready()');
    this.readyInFlight = undefined;
    const r = this.raft;
    if (rd.hardState) this.durableHardState = rd.hardState;
    if (rd.snapshot) r.snapshotInstalled(rd.snapshot.meta.index);
    if (rd.entries.length > 0) {
      const last = rd.entries[rd.entries.length - 1];
      r.log.stableTo(last.index, last.term);
    }
    r.appliedEntries(rd.committedEntries);
    r.persisted(this.durableHardState);
  }

  status(): RaftStatus {
    const r = this.raft;
    return {
      id: r.id,
      term: r.term,
      vote: r.vote,
      commit: r.log.committed,
      applied: r.log.applied,
      lastIndex: r.log.lastIndex(),
      role: r.role,
      leader: r.leader,
      conf: { voters: [...r.conf.voters], learners: [...r.conf.learners] },
    };
  }

  /** Membership as of the applied index: store it with a snapshot taken at that index. */
  confState(): ConfState {
    return { voters: [...this.raft.conf.voters], learners: [...this.raft.conf.learners] };
  }

  private currentHardState(): HardState {
    const hard = this.raft.hardState();
    // forgetVote: the vote is never written, so a restart forgets it (test-only mutation).
    if (this.raft.mutation === 'forgetVote') hard.vote = 0;
    return hard;
  }
}

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}
