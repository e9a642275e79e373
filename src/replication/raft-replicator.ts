// The Raft driver behind the core's Replicator seam: ticks Raft from a timer, persists each Ready
// before sending what depends on it, hands committed indexes to the applier, then advances.

import type { ClusterMember, ClusterMembership, NewMember, ProposedEntry, ReplicationStatus, Replicator, SnapshotHandler } from '../core';
import { checkEntrySize, entryBytesMaxDefault, type LogEntry, type LogStore, type SnapshotMeta } from '../eventlog';
import { randomInt } from 'node:crypto';
import { RawNode, applyConfChange, memorySnapshotAssembly, decodeConfChange, entryTypeConfChange, seededRandom, type ConfChange, type ConfState, type Message, type RaftSnapshot, type Ready, type Role } from '../eventlog/raft';
import { LoomError, assert, isLoomError, type Logger } from '../util';
import type { NodeAddresses } from './frames';
import { earlyCampaignSlotDivisor, releaseBatchBytesMax, electionTimeoutMsDefault, heartbeatMsDefault, learnerCatchUpMsMax, readIndexTimeoutMsDefault } from './limits';

/** What the driver needs from the network; the TCP transport in production, anything in tests. */
export interface RaftNetwork {
  send(messages: Message[]): void;
  onMessages(handler: (from: number, messages: Message[]) => void): void;
  infoOf(id: number): NodeAddresses | undefined;
  /** A member was added with this raft address: start dialling it (kept if already known). */
  addPeer?(peer: { id: number; host: string; port: number }): void;
  /** A member was removed: stop dialling it. */
  removePeer?(id: number): void;
  /** Called with a peer's id when its connection to this node closes (its process may be gone). */
  onPeerDown?(handler: (id: number) => void): void;
  /** Called with the raft address a peer this node does not dial announced for itself. */
  onRaftAddress?(handler: (peer: { id: number; host: string; port: number }) => void): void;
}

export interface RaftReplicatorOptions {
  nodeId: number;
  /** Genesis membership (every node of the group is started with the same list). */
  voters: number[];
  log: LogStore;
  network: RaftNetwork;
  logger: Logger;
  /** Wall clock for entry timestamps, read only when this node proposes as leader. */
  now?: () => number;
  heartbeatMs?: number;
  electionTimeoutMs?: number;
  readIndexTimeoutMs?: number;
  /** Longest `membership.add` waits for a new learner to catch up before promoting it. */
  learnerCatchUpMs?: number;
  /**
   * The log's entry limit: a proposal over it is refused here, TOO_LARGE, before Raft takes it (the
   * log would refuse it only when persisting, after Raft had sent it to the followers).
   */
  entryBytesMax?: number;
}


export interface LeaderChange {
  leader: number;
  term: number;
  addresses: NodeAddresses | undefined;
}

interface PendingProposal {
  term: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

interface ReadBatch {
  context: string;
  waiters: Array<{ resolve: (index: number) => void; reject: (err: Error) => void }>;
  timer?: NodeJS.Timeout;
}

export class RaftReplicator implements Replicator {
  private readonly raw: RawNode;
  private readonly log: LogStore;
  private readonly logger: Logger;
  private readonly network: RaftNetwork;
  private readonly now: () => number;
  private readonly nodeId: number;
  private readonly readIndexTimeoutMs: number;
  private readonly heartbeatMs: number;
  private readonly electionTimeoutMs: number;
  private readonly learnerCatchUpMs: number;
  private commit: number;
  /** Highest index whose entry is durable in the local log: committed entries up to it may be applied at once. */
  private durableIndex: number;
  private readonly commitListeners: Array<(commitIndex: number) => void> = [];
  private readonly leaderListeners: Array<(change: LeaderChange) => void> = [];
  /** Proposals of this node not yet committed, by index, with the term they were proposed in. */
  private readonly pending = new Map<number, PendingProposal>();
  /** Committed membership changes of this node waiting for Raft to apply them. */
  private readonly confChangesCommitted: Array<{ index: number; resolve: () => void; reject: (err: Error) => void }> = [];
  private readBatch: ReadBatch | undefined;
  private readonly reads = new Map<string, ReadBatch>();
  private readSeq = 0;
  private role: Role = 'follower';
  private leader = 0;
  /** A Ready is being made durable; the next one waits (Raft hands out one at a time). */
  private persisting: Promise<void> | undefined;
  private pumpScheduled = false;
  private ticker: NodeJS.Timeout | undefined;
  private earlyCampaign: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly genesis: ConfState;
  private snapshots: SnapshotHandler | undefined;
  private failure: Error | undefined;
  private readonly entryBytesMax: number;
  /** Raft addresses peers announced that this node did not dial yet (they may become members later). */
  private readonly announced = new Map<number, { id: number; host: string; port: number }>();

  constructor(options: RaftReplicatorOptions) {
    this.nodeId = options.nodeId;
    this.log = options.log;
    this.entryBytesMax = options.entryBytesMax ?? entryBytesMaxDefault;
    this.logger = options.logger;
    this.network = options.network;
    this.now = options.now ?? Date.now;
    this.heartbeatMs = options.heartbeatMs ?? heartbeatMsDefault;
    const electionTimeoutMs = options.electionTimeoutMs ?? electionTimeoutMsDefault;
    assert(electionTimeoutMs >= 2 * this.heartbeatMs, 'the election timeout must span at least two heartbeats');
    this.electionTimeoutMs = electionTimeoutMs;
    this.learnerCatchUpMs = options.learnerCatchUpMs ?? learnerCatchUpMsMax;
    this.readIndexTimeoutMs = options.readIndexTimeoutMs ?? Math.max(readIndexTimeoutMsDefault, 2 * electionTimeoutMs);
    const hard = options.log.hardState();
    this.commit = hard.commit;
    this.durableIndex = options.log.lastIndex();
    this.genesis = { voters: [...options.voters].sort((a, b) => a - b), learners: [] };
    this.raw = new RawNode(
      {
        id: options.nodeId,
        voters: options.voters,
        // The applier restarts from the views' checkpoints on its own; Raft needs only hand out
        // what commits after the durable commit index.
        applied: hard.commit,
        electionTimeoutTicks: Math.round(electionTimeoutMs / this.heartbeatMs),
        heartbeatTimeoutTicks: 1,
        preVote: true,
        checkQuorum: true,
        // Election timeouts must differ between nodes and between runs of the same node; the
        // seed is the only randomness, so a logged seed replays a node's timeouts.
        random: seededRandom(randomInt(2 ** 31)),
        snapshotSource: () => this.snapshotToSend(),
        assembleSnapshot: () => this.snapshots?.assemble?.() ?? memorySnapshotAssembly(),
      },
      options.log,
    );
    this.network.onMessages((_from, messages) => this.receive(messages));
    this.network.onPeerDown?.((id) => this.peerDown(id));
    // Members added at runtime are in no --peers list: after a restart (or a snapshot install)
    // this node learns where they are when they connect and say so. Only members are dialled.
    this.network.onRaftAddress?.((peer) => {
      this.announced.set(peer.id, peer);
      this.dialAnnouncedMembers();
    });
  }

  start(): void {
    this.ticker = setInterval(() => {
      this.raw.tick();
      this.pump();
    }, this.heartbeatMs);
    this.pump();
  }

  propose(proposed: ProposedEntry[]): { indexes: number[]; committed: Promise<void> } {
    this.checkUsable();
    if (this.raw.raft.role !== 'leader') throw this.notLeader();
    const ts = this.now();
    const term = this.raw.raft.term;
    const indexes: number[] = [];
    const commits: Array<Promise<void>> = [];
    // All or none: a batch with one entry over the limit takes no index.
    for (const p of proposed) checkEntrySize({ index: 0, term, type: p.type, data: p.data, ts }, this.entryBytesMax);
    for (const p of proposed) {
      assert(p.meta === undefined, 'entry meta is not replicated by Raft');
      let index: number;
      try {
        index = this.raw.propose(p.type, p.data, ts);
      } catch (err) {
        if (isLoomError(err, 'NOT_LEADER')) throw this.notLeader();
        throw err;
      }
      indexes.push(index);
      commits.push(new Promise<void>((resolve, reject) => this.pending.set(index, { term, resolve, reject })));
    }
    this.schedulePump();
    return { indexes, committed: commits.length === 1 ? commits[0] : Promise.all(commits).then(() => undefined) };
  }

  /**
   * ReadIndex: resolves with an index such that once this node has applied it, a read reflects
   * every write acknowledged before the call. Reads arriving in one event-loop turn share a round.
   */
  readIndex(): Promise<number> {
    this.checkUsable();
    return new Promise<number>((resolve, reject) => {
      if (this.readBatch === undefined) {
        const batch: ReadBatch = { context: `${this.nodeId}.${++this.readSeq}`, waiters: [] };
        this.readBatch = batch;
        setImmediate(() => this.startRead(batch));
      }
      this.readBatch.waiters.push({ resolve, reject });
    });
  }

  commitIndex(): number {
    return this.commit;
  }

  useSnapshots(snapshots: SnapshotHandler): void {
    this.snapshots = snapshots;
  }

  /**
   * Membership as of `index` (at or after the log's compaction point): the conf stored with the
   * compacted log (or the genesis), then every membership change entry up to `index`.
   */
  confAt(index: number): ConfState {
    const snap = this.log.snapshotMeta();
    assert(index >= snap.index, `membership at ${index} is below the compacted log (${snap.index})`);
    let conf: ConfState = snap.conf ? { voters: [...snap.conf.voters], learners: [...snap.conf.learners] } : { voters: [...this.genesis.voters], learners: [] };
    for (let i = snap.index + 1; i <= index; ) {
      const batch = this.log.entries(i, index + 1, 4 * 1024 * 1024);
      for (const e of batch) if (e.type === entryTypeConfChange) conf = applyConfChange(conf, decodeConfChange(e.data));
      i += batch.length;
    }
    return conf;
  }

  onCommit(listener: (commitIndex: number) => void): void {
    this.commitListeners.push(listener);
  }

  onLeaderChange(listener: (change: LeaderChange) => void): void {
    this.leaderListeners.push(listener);
  }

  isLeader(): boolean {
    return !this.closed && this.raw.raft.role === 'leader';
  }

  status(): ReplicationStatus {
    const s = this.raw.status();
    // A node not (yet) among the voters — a learner, or a joining node not added yet — votes in nothing.
    const learner = !s.conf.voters.includes(this.nodeId);
    const role = s.role === 'leader' ? 'leader' : learner ? 'learner' : s.role === 'follower' ? 'follower' : 'candidate';
    const member = (id: number, r: 'voter' | 'learner'): ClusterMember => {
      const addresses = this.network.infoOf(id);
      return addresses ? { id, role: r, addresses } : { id, role: r };
    };
    return {
      nodeId: this.nodeId,
      role,
      leader: s.leader > 0 ? s.leader : null,
      term: s.term,
      members: [...s.conf.voters.map((id) => member(id, 'voter')), ...s.conf.learners.map((id) => member(id, 'learner'))],
    };
  }

  transferLeadership(to: number): void {
    this.checkUsable();
    this.raw.transferLeadership(to);
    this.schedulePump();
  }

  /**
   * Before a graceful stop, a leader hands leadership to its most caught-up live voter and waits, at
   * most one election timeout, until that voter leads: the group goes on taking writes at once
   * instead of after an election timeout (etcd does the same when it stops). Resolves with the new
   * leader, or undefined when this node does not lead, has no live voter to hand to, or the
   * transfer did not finish in time (the stop goes ahead either way).
   */
  async handOffLeadership(): Promise<number | undefined> {
    if (this.closed || this.raw.raft.role !== 'leader') return undefined;
    let to = 0;
    let best = -1;
    for (const id of this.raw.confState().voters) {
      const progress = this.raw.raft.progress.get(id);
      if (id === this.nodeId || progress === undefined || !progress.recentActive || progress.match <= best) continue;
      to = id;
      best = progress.match;
    }
    if (to === 0) return undefined;
    this.logger.info({ to, match: best }, 'stopping: handing leadership over');
    this.raw.transferLeadership(to);
    this.schedulePump();
    const deadline = Date.now() + this.electionTimeoutMs;
    while (!this.closed && Date.now() < deadline) {
      await sleep(Math.max(1, this.heartbeatMs / 4));
      if (this.raw.raft.leader === to) return to;
    }
    this.logger.warn({ to }, 'stopping: leadership hand-over did not finish; the group elects a leader after its election timeout');
    return undefined;
  }

  readonly membership: ClusterMembership = {
    add: (member) => this.addMember(member),
    remove: (nodeId) => this.removeMember(nodeId),
    transferLeader: (to) => this.transferLeaderTo(to),
  };

  // ---- membership ----------------------------------------------------------------------------

  private async addMember(member: NewMember): Promise<ReplicationStatus> {
    this.checkLeader();
    const context = `${member.host}:${member.raftPort}`;
    const conf = this.raw.confState();
    if (conf.voters.includes(member.nodeId)) return this.status();
    // Single-server changes (docs/raft.md): the newcomer first receives the log as a learner, so
    // the quorum never waits on a node that is still catching up.
    if (!conf.learners.includes(member.nodeId)) await this.proposeConfChange({ type: 'addLearner', nodeId: member.nodeId, context });
    if (member.learner) return this.status();
    await this.waitCaughtUp(member.nodeId);
    await this.proposeConfChange({ type: 'addVoter', nodeId: member.nodeId, context });
    return this.status();
  }

  private async removeMember(nodeId: number): Promise<ReplicationStatus> {
    this.checkLeader();
    const conf = this.raw.confState();
    if (!conf.voters.includes(nodeId) && !conf.learners.includes(nodeId)) {
      throw new LoomError('NOT_FOUND', `node ${nodeId} is not a member of this group`, { nodeId });
    }
    await this.proposeConfChange({ type: 'removeNode', nodeId });
    return this.status();
  }

  private async transferLeaderTo(to: number): Promise<ReplicationStatus> {
    this.checkLeader();
    if (to === this.nodeId) return this.status();
    if (!this.raw.confState().voters.includes(to)) throw new LoomError('INVALID_ARGUMENT', `node ${to} is not a voter of this group`, { field: 'to' });
    this.raw.transferLeadership(to);
    this.schedulePump();
    // Raft abandons a transfer after one election timeout; give it two before saying so.
    const deadline = Date.now() + 2 * this.electionTimeoutMs + this.heartbeatMs;
    while (Date.now() < deadline) {
      await sleep(this.heartbeatMs);
      this.checkUsable();
      if (this.raw.raft.leader === to) return this.status();
    }
    throw new LoomError('UNAVAILABLE', `node ${to} did not take over leadership within ${2 * this.electionTimeoutMs} ms (not caught up or unreachable); retry`, { to });
  }

  /** Proposes one membership change; resolves once it is committed and applied by Raft here. */
  private proposeConfChange(change: ConfChange): Promise<void> {
    this.checkLeader();
    const term = this.raw.raft.term;
    let index: number;
    try {
      index = this.raw.proposeConfChange(change, this.now());
    } catch (err) {
      if (isLoomError(err, 'NOT_LEADER')) throw this.notLeader();
      throw err;
    }
    this.logger.info({ change, index }, 'membership change proposed');
    const committed = new Promise<void>((resolve, reject) => this.pending.set(index, { term, resolve, reject }));
    this.schedulePump();
    return committed;
  }

  /**
   * A learner is caught up once it holds everything the leader had when we started waiting; from
   * then on it receives the log in the pipeline like any follower.
   */
  private async waitCaughtUp(nodeId: number): Promise<void> {
    const target = this.raw.raft.log.lastIndex();
    const deadline = Date.now() + this.learnerCatchUpMs;
    for (;;) {
      this.checkLeader();
      const match = this.raw.raft.progress.get(nodeId)?.match ?? 0;
      if (match >= target) return;
      if (Date.now() >= deadline) {
        throw new LoomError('UNAVAILABLE', `node ${nodeId} was added as a learner but has not caught up (at ${match} of ${target}) within ${this.learnerCatchUpMs} ms; it stays a learner — run add again to promote it`, {
          nodeId,
          match,
          target,
        });
      }
      await sleep(this.heartbeatMs);
    }
  }

  private checkLeader(): void {
    this.checkUsable();
    if (this.raw.raft.role !== 'leader') throw this.notLeader();
  }

  /** Committed membership changes tell the transport whom to dial (the address is the change's context). */
  private learnPeers(change: ConfChange): void {
    if (change.nodeId === this.nodeId) return;
    if (change.type === 'removeNode') {
      this.network.removePeer?.(change.nodeId);
      return;
    }
    const match = change.context === undefined ? null : /^(.+):(\d{1,5})$/.exec(change.context);
    if (match) this.network.addPeer?.({ id: change.nodeId, host: match[1], port: Number(match[2]) });
    else this.dialAnnouncedMembers();
  }

  /** Dials the members among the peers that announced their raft address. */
  private dialAnnouncedMembers(): void {
    const conf = this.raw.confState();
    for (const [id, peer] of this.announced) {
      if (!conf.voters.includes(id) && !conf.learners.includes(id)) continue;
      this.announced.delete(id);
      this.network.addPeer?.(peer);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.ticker) clearInterval(this.ticker);
    clearTimeout(this.earlyCampaign);
    this.failAll(new LoomError('UNAVAILABLE', 'the node is closing; the outcome of this write is unknown'));
    // The log closes after us: let the write in flight finish first.
    await this.persisting?.catch(() => undefined);
  }

  /** The NOT_LEADER error every door answers with: the leader's id and its client addresses. */
  notLeader(): LoomError {
    const leader = this.raw.raft.leader;
    if (leader <= 0 || leader === this.nodeId) {
      return new LoomError('NOT_LEADER', `node ${this.nodeId} is not the leader and no leader is known right now (election in progress); retry shortly`, { leader: null });
    }
    const { raft: _raft, ...doors } = this.network.infoOf(leader) ?? {};
    const where = doors.nats ? ` (nats ${doors.nats})` : '';
    return new LoomError('NOT_LEADER', `node ${this.nodeId} is not the leader; send writes to node ${leader}${where}`, { leader, ...doors });
  }

  // ---- the loop ------------------------------------------------------------------------------

  /**
   * The leader's connection to us closed — a killed process closes it at once. Stop honouring its
   * lease (so we grant votes) and campaign after a short random delay instead of waiting out a
   * whole election timeout. PreVote keeps this harmless when the leader is in fact alive: a
   * follower that still hears it refuses, and its next heartbeat brings us back.
   */
  private peerDown(id: number): void {
    if (this.closed || this.failure || this.raw.raft.role !== 'follower' || this.raw.raft.leader !== id) return;
    this.raw.forgetLeader();
    this.schedulePump();
    // Survivors take turns by id (each turn a quarter of the election timeout, jittered within a
    // tenth), so two of them rarely split the vote by campaigning at the same moment.
    const rank = this.raw.confState().voters.filter((v) => v !== id && v < this.nodeId).length;
    const slotMs = Math.floor(this.electionTimeoutMs / earlyCampaignSlotDivisor);
    const delayMs = rank * slotMs + randomInt(Math.max(1, Math.floor(this.electionTimeoutMs / 10)));
    clearTimeout(this.earlyCampaign);
    this.earlyCampaign = setTimeout(() => {
      this.earlyCampaign = undefined;
      if (this.closed || this.failure || this.raw.raft.role !== 'follower' || this.raw.raft.leader !== 0) return;
      this.logger.info({ lost: id }, 'campaigning early: the leader closed its connection');
      this.raw.campaign();
      this.schedulePump();
    }, delayMs);
  }

  private receive(messages: Message[]): void {
    if (this.closed || this.failure) return;
    for (const m of messages) this.raw.step(m);
    if (this.raw.raft.role === 'leader') this.releaseLeaderCommits();
    this.schedulePump();
  }

  /**
   * A leader's log only grows, so entries a quorum acknowledged that are durable here can be
   * applied as the acknowledgements arrive, without waiting for the Ready being persisted to finish.
   */
  private releaseLeaderCommits(): void {
    const upTo = Math.min(this.raw.raft.log.committed, this.durableIndex);
    while (this.commit < upTo) this.releaseCommitted(this.log.entries(this.commit + 1, upTo + 1, releaseBatchBytesMax));
  }

  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    // setImmediate runs after the current I/O phase: everything proposed or received in it
    // becomes one Ready, one fsync and one frame per peer.
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    if (this.closed || this.failure) return;
    while (this.persisting === undefined && this.raw.hasReady()) {
      const rd = this.raw.ready();
      if (rd.softState) this.changedRole(rd.softState.role, rd.softState.leader);
      this.network.send(rd.messages);
      for (const rs of rd.readStates) this.finishRead(rs.context, rs.index);
      // Entries this Ready writes over are not durable until it is.
      if (rd.entries.length > 0) this.durableIndex = Math.min(this.durableIndex, rd.entries[0].index - 1);
      // Committed entries already durable here go to the applier now rather than after this Ready's
      // fsync, which would add a whole disk write to every write's latency (the leader commits
      // entries of the previous Ready while persisting the next one).
      let early = 0;
      while (early < rd.committedEntries.length && rd.committedEntries[early].index <= this.durableIndex) early++;
      if (early > 0) this.releaseCommitted(rd.committedEntries.slice(0, early));
      let writes: Array<Promise<void>>;
      try {
        writes = this.persist(rd);
      } catch (err) {
        // The log refused the Ready (a leader's entry over this node's entryBytesMax, say): this
        // node cannot follow the log, so it stops taking part rather than ending the process.
        this.fail(err as Error);
        return;
      }
      if (writes.length === 0) {
        this.complete(rd, early);
        continue;
      }
      this.persisting = Promise.all(writes).then(
        () => {
          this.persisting = undefined;
          this.complete(rd, early);
          this.pump();
        },
        (err: unknown) => this.fail(err as Error),
      );
    }
  }

  /** The newest snapshot of the views, for Raft to send a follower behind the compacted log. */
  private snapshotToSend(): RaftSnapshot | undefined {
    const latest = this.snapshots?.latest();
    if (!latest) return undefined;
    assert(latest.meta.conf !== undefined, 'a replicated node stores the membership with its snapshots');
    return { meta: { index: latest.meta.index, term: latest.meta.term, conf: latest.meta.conf }, data: latest.data };
  }

  /**
   * Queues the Ready's snapshot, entries and hard state. Entries and hard state share one
   * transaction and fsync; a snapshot is installed first (views replaced, log restarted after it).
   */
  private persist(rd: Ready): Array<Promise<void>> {
    const snapshot = rd.snapshot;
    if (snapshot === undefined) return this.persistLog(rd);
    const snapshots = this.snapshots;
    assert(snapshots !== undefined, 'a snapshot arrived but this node has no snapshot installer');
    this.logger.info({ index: snapshot.meta.index, term: snapshot.meta.term, bytes: snapshot.data.byteLength }, 'installing a snapshot from the leader');
    const meta: SnapshotMeta = { index: snapshot.meta.index, term: snapshot.meta.term, conf: snapshot.meta.conf };
    return [snapshots.install({ meta, data: snapshot.data }).then(() => Promise.all(this.persistLog(rd)).then(() => undefined))];
  }

  private persistLog(rd: Ready): Array<Promise<void>> {
    const writes: Array<Promise<void>> = [];
    if (rd.entries.length > 0) {
      const first = rd.entries[0].index;
      if (first <= this.log.lastIndex()) writes.push(this.log.truncateSuffix(first));
      for (const e of rd.entries) {
        const p = this.pending.get(e.index);
        // Another leader's entry replaces ours at this index: ours will never commit.
        if (p && p.term !== e.term) this.settleProposal(e.index, this.outcomeUnknown());
      }
      writes.push(this.log.append(rd.entries));
    }
    if (rd.hardState) {
      const durable = this.log.hardState();
      const write = this.log.setHardState(rd.hardState);
      // Like etcd's MustSync: a change of the commit index alone need not be waited for. Raft
      // never relies on a durable commit index (it is re-learnt from the leader), and waiting
      // would put one more fsync on every write's path.
      if (rd.entries.length > 0 || rd.snapshot || rd.hardState.term !== durable.term || rd.hardState.vote !== durable.vote) writes.push(write);
      else write.catch((err: unknown) => this.fail(err as Error));
    }
    return writes;
  }

  /** The Ready is durable: send what vouched for it, move the commit index, advance. */
  private complete(rd: Ready, released: number): void {
    if (rd.snapshot) this.durableIndex = rd.snapshot.meta.index;
    if (rd.entries.length > 0) this.durableIndex = rd.entries[rd.entries.length - 1].index;
    this.network.send(rd.messagesAfterPersist);
    if (rd.snapshot && rd.snapshot.meta.index > this.commit) {
      this.commit = rd.snapshot.meta.index;
      for (const listener of this.commitListeners) listener(this.commit);
    }
    // An installed snapshot may bring members this node has never heard of by change entry.
    if (rd.snapshot) this.dialAnnouncedMembers();
    if (released < rd.committedEntries.length) this.releaseCommitted(rd.committedEntries.slice(released));
    this.raw.advance();
    const applied = this.raw.raft.log.applied;
    while (this.confChangesCommitted.length > 0 && this.confChangesCommitted[0].index <= applied) this.confChangesCommitted.shift()?.resolve();
  }

  /** Committed entries, durable here: answer their proposers, learn peers, move the applier. */
  private releaseCommitted(entries: LogEntry[]): void {
    const released = this.commit;
    for (const e of entries) {
      // Released already, as the leader's acknowledgements arrived (releaseLeaderCommits).
      if (e.index <= released) continue;
      if (e.type === entryTypeConfChange) this.learnPeers(decodeConfChange(e.data));
      const p = this.pending.get(e.index);
      if (!p) continue;
      // The proposer learns the outcome of its own entry only: same index AND same term.
      if (p.term === e.term) {
        this.pending.delete(e.index);
        // A membership change answers once Raft itself has applied it (at advance), so the
        // status its caller reads back shows the new membership.
        if (e.type === entryTypeConfChange) this.confChangesCommitted.push({ index: e.index, resolve: p.resolve, reject: p.reject });
        else p.resolve();
      } else this.settleProposal(e.index, this.outcomeUnknown());
    }
    const last = entries[entries.length - 1].index;
    if (last > this.commit) {
      this.commit = last;
      for (const listener of this.commitListeners) listener(last);
    }
  }

  private changedRole(role: Role, leader: number): void {
    const wasLeader = this.role === 'leader';
    const leaderChanged = leader !== this.leader;
    this.role = role;
    this.leader = leader;
    if (wasLeader && role !== 'leader') {
      // A deposed leader cannot know whether its uncommitted entries will survive.
      for (const index of [...this.pending.keys()]) this.settleProposal(index, this.outcomeUnknown());
    }
    if (leaderChanged) {
      this.logger.info({ leader, term: this.raw.raft.term, role }, leader > 0 ? 'raft leader changed' : 'raft leader lost');
      // A forwarded ReadIndex dies with the leader that was to answer it.
      for (const batch of [...this.reads.values()]) this.failRead(batch, new LoomError('UNAVAILABLE', 'the leader changed during a linearizable read; retry'));
      if (leader > 0) {
        const change: LeaderChange = { leader, term: this.raw.raft.term, addresses: this.network.infoOf(leader) };
        for (const listener of this.leaderListeners) listener(change);
      }
    }
  }

  private startRead(batch: ReadBatch): void {
    if (this.readBatch === batch) this.readBatch = undefined;
    if (this.closed || this.failure) return this.failRead(batch, new LoomError('UNAVAILABLE', 'the node is closing'));
    try {
      this.raw.readIndex(batch.context);
    } catch (err) {
      // Raft refuses a read only while no leader is known: any node may serve it once one is, so
      // the read is unavailable for now (docs/replication.md), not sent elsewhere as a write is.
      if (isLoomError(err, 'NOT_LEADER')) {
        return this.failRead(batch, new LoomError('UNAVAILABLE', `node ${this.nodeId} knows no leader right now (election in progress) to confirm a linearizable read; retry shortly`, { leader: null }));
      }
      return this.failRead(batch, err as Error);
    }
    this.reads.set(batch.context, batch);
    batch.timer = setTimeout(
      () => this.failRead(batch, new LoomError('UNAVAILABLE', `no quorum confirmed the leader within ${this.readIndexTimeoutMs} ms for a linearizable read`)),
      this.readIndexTimeoutMs,
    );
    this.schedulePump();
  }

  private finishRead(context: string, index: number): void {
    const batch = this.reads.get(context);
    if (!batch) return;
    this.reads.delete(context);
    clearTimeout(batch.timer);
    for (const w of batch.waiters) w.resolve(index);
  }

  private failRead(batch: ReadBatch, err: Error): void {
    this.reads.delete(batch.context);
    clearTimeout(batch.timer);
    for (const w of batch.waiters) w.reject(err);
    batch.waiters = [];
  }

  private settleProposal(index: number, err: Error): void {
    const p = this.pending.get(index);
    if (!p) return;
    this.pending.delete(index);
    p.reject(err);
  }

  private outcomeUnknown(): LoomError {
    return new LoomError('UNAVAILABLE', 'leadership was lost before this write committed; its outcome is unknown (it may or may not be applied)', { outcome: 'unknown' });
  }

  private failAll(err: Error): void {
    for (const index of [...this.pending.keys()]) this.settleProposal(index, err);
    for (const change of this.confChangesCommitted.splice(0)) change.reject(err);
    for (const batch of [...this.reads.values()]) this.failRead(batch, err);
    if (this.readBatch) this.failRead(this.readBatch, err);
    this.readBatch = undefined;
  }

  /** A failed write to the log leaves Raft's view of the disk unknown: stop taking part. */
  private fail(err: Error): void {
    this.failure = err;
    this.logger.error({ err }, 'raft driver stopped: the log could not be written');
    if (this.ticker) clearInterval(this.ticker);
    this.failAll(new LoomError('UNAVAILABLE', `this node stopped replicating: ${err.message}`));
  }

  private checkUsable(): void {
    if (this.closed) throw new LoomError('UNAVAILABLE', 'the node is closing');
    if (this.failure) throw new LoomError('UNAVAILABLE', `this node stopped replicating: ${this.failure.message}`);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
