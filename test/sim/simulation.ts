// A whole Raft cluster in one process under a seeded scheduler: simulated network (loss,
// duplication, reordering, delay, partitions), simulated disks (unflushed writes lost on crash,
// torn writes), crashes and restarts, membership changes and leadership transfers, KV clients.
// Invariants are checked after every event; the first violation stops the run.

import { LoomError, isLoomError } from '../../src/util';
import { RawNode } from '../../src/eventlog/raft';
import type { ConfChange, Message, RaftMutation, Ready } from '../../src/eventlog/raft';
import type { LogEntry } from '../../src/eventlog';
import { checkOperations, kvModel } from '../support/linearizability';
import type { KvInput, KvOutput, Operation } from '../support/linearizability';
import { EventQueue } from './event-queue';
import { KvApp, encodePut, entryTypePut, fingerprint } from './kv-app';
import { Rng } from './rng';
import { SimStore } from './sim-store';

export interface SimOptions {
  seed: number;
  mutation?: RaftMutation;
  /** Check "hard state / entries durable before a message depends on them" at every send. */
  checkDurability?: boolean;
  /** Record a trace of events (slower); printed with a violation. */
  trace?: boolean;
}

export interface SimResult {
  seed: number;
  ok: boolean;
  violation?: string;
  events: number;
  time: number;
  elections: number;
  committed: number;
  crashes: number;
  confChanges: number;
  snapshotsSent: number;
  historyOps: number;
  trace: string[];
}

class Violation extends Error {}

/** Events kept for --trace: enough to see a few election timeouts before a violation. */
const traceLinesMax = 3000;

type SimEvent =
  | { kind: 'tick'; node: number; incarnation: number }
  | { kind: 'deliver'; msg: Message }
  | { kind: 'fsync'; node: number; incarnation: number }
  | { kind: 'restart'; node: number }
  | { kind: 'nemesis' }
  | { kind: 'client'; client: number }
  | { kind: 'clientTimeout'; client: number; op: number }
  | { kind: 'leaderFault'; node: number; term: number }
  | { kind: 'rejoin'; node: number }
  | { kind: 'flapLeader' }
  | { kind: 'heal' }
  | { kind: 'liveness' };

interface PendingRead {
  context: string;
  client: number;
  op: number;
  key: string;
  index: number; // -1 until the ReadState arrives
}

class SimNode {
  readonly store = new SimStore();
  raw: RawNode | undefined;
  incarnation = 0;
  app = new KvApp();
  inflight: Ready | undefined;
  /** put op key `client:op` → client, for puts proposed through this node. */
  pendingPuts = new Map<string, number>();
  pendingReads: PendingRead[] = [];
  lastCommit = 0;
  recordedCommit = 0;
  constructor(readonly id: number) {}
}

interface ClientOp {
  op: number;
  node: number;
  historyIndex: number;
  kind: 'put' | 'get';
}

interface Client {
  id: number;
  nextOp: number;
  current: ClientOp | undefined;
  leaderGuess: number;
}

/** Per-seed knobs, drawn from the seed so that seeds explore different fault mixes. */
interface Knobs {
  nodeCount: number;
  initialVoters: number[];
  tickUnits: number;
  electionTimeoutTicks: number;
  heartbeatTimeoutTicks: number;
  faultUnits: number;
  livenessUnitsMax: number;
  latencyMin: number;
  latencyMax: number;
  reorderChance: number;
  dupChance: number;
  lossChanceMax: number;
  diskLatencyMax: number;
  tornWriteChance: number;
  nemesisIntervalMax: number;
  /** Chance that a newly elected leader is crashed or cut off within a few message delays. */
  newLeaderFaultChance: number;
  /** If not 0: about this often, cut the current leader off for a while (leaders flapping). */
  flapLeaderUnits: number;
  snapshotIntervalEntries: number;
  snapshotChunkBytesMax: number;
  appendEntriesBytesMax: number;
  inflightMessagesMax: number;
  clients: number;
  keys: string[];
  opTimeoutUnits: number;
}

function drawKnobs(rng: Rng): Knobs {
  const nodeCount = 5;
  const voters = rng.pick([1, 3, 3, 3, 5]);
  return {
    nodeCount,
    initialVoters: Array.from({ length: voters }, (_, i) => i + 1),
    tickUnits: 10,
    electionTimeoutTicks: 10,
    heartbeatTimeoutTicks: rng.pick([1, 2, 3]),
    faultUnits: rng.int(1500, 3000),
    livenessUnitsMax: 4000,
    latencyMin: 1,
    latencyMax: rng.int(3, 20),
    reorderChance: rng.pick([0, 0.05, 0.2]),
    dupChance: rng.pick([0, 0.02, 0.1]),
    lossChanceMax: rng.pick([0, 0.1, 0.3]),
    diskLatencyMax: rng.int(1, 10),
    tornWriteChance: rng.pick([0, 0.5]),
    nemesisIntervalMax: rng.pick([40, 80, 150, 400]),
    newLeaderFaultChance: rng.pick([0, 0.3, 0.9]),
    flapLeaderUnits: rng.pick([0, 0, 10, 30]),
    snapshotIntervalEntries: rng.pick([5, 10, 30, 1000]),
    snapshotChunkBytesMax: rng.pick([16, 64, 1024]),
    appendEntriesBytesMax: rng.pick([64, 64, 256, 4096]),
    inflightMessagesMax: rng.pick([1, 1, 4, 64]),
    clients: 3,
    keys: ['a', 'b', 'c'],
    opTimeoutUnits: 400,
  };
}

export class Simulation {
  private readonly rng: Rng;
  private readonly netRng: Rng;
  private readonly diskRng: Rng;
  private readonly k: Knobs;
  private readonly queue = new EventQueue<SimEvent>();
  private readonly nodes = new Map<number, SimNode>();
  private readonly clients: Client[] = [];
  private now = 0;
  private events = 0;
  /** Directed links that drop everything: "a>b". */
  private readonly cut = new Set<string>();
  private lossChance = 0;
  private faultsOver = false;
  // Invariant registries.
  private readonly leaderOfTerm = new Map<number, number>();
  private readonly entryAt = new Map<string, { fp: string; prevTerm: number | undefined }>();
  /**
   * Committed entries by index: their fingerprint and the lowest term any node was in when it
   * learned of the commit (never below the term of the leader that committed it).
   */
  private readonly committedAt = new Map<number, { fp: string; term: number }>();
  private committedMax = 0;
  // Client history for the linearizability check.
  private readonly history: Operation<KvInput, KvOutput>[] = [];
  private historyClock = 0;
  private readonly droppedHistory = new Set<number>();
  // Liveness probe.
  private probe: { node: number; index: number; term: number } | undefined;
  private probeSeq = 0;
  private done = false;
  private readonly stats = { elections: 0, crashes: 0, confChanges: 0, snapshotsSent: 0 };
  private readonly traceLines: string[] = [];

  constructor(private readonly options: SimOptions) {
    this.rng = new Rng(options.seed);
    this.k = drawKnobs(this.rng);
    this.netRng = this.rng.fork();
    this.diskRng = this.rng.fork();
  }

  run(): SimResult {
    let violation: string | undefined;
    try {
      this.start();
      while (!this.done) {
        const next = this.queue.pop();
        if (next === undefined) throw new Violation('event queue ran dry');
        this.now = next.time;
        this.events++;
        this.handle(next.event);
        this.checkInvariants();
        if (this.now > this.k.faultUnits + this.k.livenessUnitsMax) {
          throw new Violation(
            `liveness: no leader committed a proposal on every member within ${this.k.livenessUnitsMax} units after faults stopped\n${this.statusDump()}`,
          );
        }
      }
      this.checkLinearizable();
    } catch (err) {
      if (err instanceof Violation) violation = err.message;
      else violation = `crash: ${(err as Error).stack ?? String(err)}`;
    }
    return {
      seed: this.options.seed,
      ok: violation === undefined,
      violation,
      events: this.events,
      time: this.now,
      elections: this.stats.elections,
      committed: this.committedMax,
      crashes: this.stats.crashes,
      confChanges: this.stats.confChanges,
      snapshotsSent: this.stats.snapshotsSent,
      historyOps: this.history.length - this.droppedHistory.size,
      trace: this.traceLines,
    };
  }

  // ---- setup -------------------------------------------------------------------------------

  private start(): void {
    for (let id = 1; id <= this.k.nodeCount; id++) {
      const node = new SimNode(id);
      this.nodes.set(id, node);
      this.boot(node);
    }
    for (let c = 1; c <= this.k.clients; c++) {
      this.clients.push({ id: c, nextOp: 1, current: undefined, leaderGuess: this.rng.int(1, this.k.nodeCount) });
      this.queue.push(this.rng.int(0, 100), { kind: 'client', client: c });
    }
    this.queue.push(this.rng.int(50, this.k.nemesisIntervalMax), { kind: 'nemesis' });
    this.queue.push(this.k.faultUnits, { kind: 'heal' });
    if (this.k.flapLeaderUnits > 0) this.queue.push(this.k.flapLeaderUnits, { kind: 'flapLeader' });
  }

  private boot(node: SimNode): void {
    node.incarnation++;
    const store = node.store;
    const electionRng = this.rng.fork();
    node.raw = new RawNode(
      {
        id: node.id,
        // Every node knows the genesis membership (like etcd's --initial-cluster); nodes outside it
        // stay passive until a membership change adds them.
        voters: this.k.initialVoters,
        electionTimeoutTicks: this.k.electionTimeoutTicks,
        heartbeatTimeoutTicks: this.k.heartbeatTimeoutTicks,
        appendEntriesBytesMax: this.k.appendEntriesBytesMax,
        inflightMessagesMax: this.k.inflightMessagesMax,
        snapshotChunkBytesMax: this.k.snapshotChunkBytesMax,
        random: () => electionRng.float(),
        snapshotSource: () => {
          const snap = store.latestSnapshot();
          return snap.meta.index > 0 ? snap : undefined;
        },
        mutation: this.options.mutation,
      },
      store,
    );
    const snap = store.latestSnapshot();
    node.app = new KvApp();
    node.app.restore(snap.data.subarray(0, snap.data.byteLength), snap.meta.index);
    node.inflight = undefined;
    node.pendingPuts.clear();
    node.pendingReads = [];
    node.lastCommit = node.raw.status().commit;
    node.recordedCommit = Math.max(node.recordedCommit, 0);
    this.queue.push(this.now + this.rng.int(1, this.k.tickUnits), { kind: 'tick', node: node.id, incarnation: node.incarnation });
  }

  // ---- events ------------------------------------------------------------------------------

  private handle(ev: SimEvent): void {
    switch (ev.kind) {
      case 'tick': {
        const node = this.nodes.get(ev.node)!;
        if (node.raw === undefined || node.incarnation !== ev.incarnation) return;
        this.trace(`t${this.now} tick n${node.id}`);
        node.raw.tick();
        this.pump(node);
        this.queue.push(this.now + this.k.tickUnits, ev);
        return;
      }
      case 'deliver': {
        const m = ev.msg;
        const node = this.nodes.get(m.to)!;
        if (node.raw === undefined || this.cut.has(`${m.from}>${m.to}`)) return;
        this.trace(`t${this.now} ${describe(m)}`);
        node.raw.step(m);
        this.pump(node);
        return;
      }
      case 'fsync': {
        const node = this.nodes.get(ev.node)!;
        if (node.raw === undefined || node.incarnation !== ev.incarnation || node.inflight === undefined) return;
        node.store.fsync();
        const rd = node.inflight;
        node.inflight = undefined;
        this.complete(node, rd);
        this.pump(node);
        return;
      }
      case 'restart': {
        const node = this.nodes.get(ev.node)!;
        if (node.raw !== undefined) return;
        this.trace(`t${this.now} restart n${node.id}`);
        this.boot(node);
        return;
      }
      case 'nemesis':
        if (this.faultsOver) return;
        this.nemesis();
        this.queue.push(this.now + this.rng.int(20, this.k.nemesisIntervalMax), { kind: 'nemesis' });
        return;
      case 'client':
        this.clientAct(this.clients[ev.client - 1]);
        return;
      case 'clientTimeout':
        this.clientTimeout(this.clients[ev.client - 1], ev.op);
        return;
      case 'heal':
        this.heal();
        return;
      case 'liveness':
        this.livenessProbe();
        return;
      case 'leaderFault': {
        const node = this.nodes.get(ev.node)!;
        if (this.faultsOver || node.raw === undefined || node.raw.raft.role !== 'leader' || node.raw.raft.term !== ev.term) return;
        this.trace(`t${this.now} leaderFault n${node.id}`);
        if (this.rng.chance(0.25)) this.crash(node);
        else {
          for (const b of this.nodes.keys()) if (b !== node.id) this.cut.add(`${node.id}>${b}`).add(`${b}>${node.id}`);
          this.queue.push(this.now + this.rng.int(20, 300), { kind: 'rejoin', node: node.id });
        }
        return;
      }
      case 'flapLeader': {
        if (this.faultsOver) return;
        this.queue.push(this.now + this.rng.int(1, 2 * this.k.flapLeaderUnits), { kind: 'flapLeader' });
        const leader = this.currentLeader();
        if (leader === undefined || this.rng.chance(0.5)) return;
        this.trace(`t${this.now} flap: cut off n${leader.id}`);
        for (const b of this.nodes.keys()) if (b !== leader.id) this.cut.add(`${leader.id}>${b}`).add(`${b}>${leader.id}`);
        this.queue.push(this.now + this.rng.int(20, 200), { kind: 'rejoin', node: leader.id });
        return;
      }
      case 'rejoin':
        this.trace(`t${this.now} rejoin n${ev.node}`);
        for (const b of this.nodes.keys()) {
          this.cut.delete(`${ev.node}>${b}`);
          this.cut.delete(`${b}>${ev.node}`);
        }
        return;
    }
  }

  // ---- the driver: what loom's node does with a Ready, with simulated I/O ---------------------

  private pump(node: SimNode): void {
    const raw = node.raw;
    if (raw === undefined) return;
    while (node.inflight === undefined && raw.hasReady()) {
      const rd = raw.ready();
      this.checkReady(node, rd);
      for (const m of rd.messages) this.send(node, m);
      for (const rs of rd.readStates) {
        const read = node.pendingReads.find((r) => r.context === rs.context);
        if (read) read.index = rs.index;
      }
      if (rd.snapshot) node.store.write({ kind: 'reset', snapshot: rd.snapshot });
      if (rd.entries.length > 0) {
        if (rd.entries[0].index <= node.store.lastIndex()) node.store.write({ kind: 'truncate', index: rd.entries[0].index });
        node.store.write({ kind: 'append', entries: rd.entries });
      }
      if (rd.hardState) node.store.write({ kind: 'hard', hard: rd.hardState });
      if (node.store.hasUnflushed()) {
        node.inflight = rd;
        this.queue.push(this.now + this.rng.int(1, this.k.diskLatencyMax), { kind: 'fsync', node: node.id, incarnation: node.incarnation });
        return;
      }
      this.complete(node, rd);
    }
  }

  /** The Ready is durable: send what waited for it, apply, advance. */
  private complete(node: SimNode, rd: Ready): void {
    const raw = node.raw!;
    for (const m of rd.messagesAfterPersist) this.send(node, m);
    if (rd.snapshot) node.app.restore(rd.snapshot.data.subarray(0, rd.snapshot.data.byteLength), rd.snapshot.meta.index);
    for (const entry of rd.committedEntries) this.applyEntry(node, entry);
    raw.advance();
    const status = raw.status();
    if (node.app.applied > status.commit) {
      throw new Violation(`n${node.id} applied ${node.app.applied} beyond its commit ${status.commit}`);
    }
    this.serveReads(node);
    this.maybeSnapshot(node);
  }

  private applyEntry(node: SimNode, entry: LogEntry): void {
    const fp = fingerprint(entry);
    const known = this.committedAt.get(entry.index);
    if (known !== undefined && known.fp !== fp) {
      throw new Violation(`state machine safety: n${node.id} applies ${fp} at ${entry.index}, another node applied ${known.fp}`);
    }
    this.recordCommitted(entry.index, fp, node.id, node.raw!.raft.term);
    const put = node.app.apply(entry);
    if (put === undefined) return;
    const key = `${put.client}:${put.op}`;
    const client = node.pendingPuts.get(key);
    if (client === undefined) return;
    node.pendingPuts.delete(key);
    const c = this.clients[client - 1];
    if (c.current && c.current.op === put.op && c.current.kind === 'put') this.finishOp(c, null);
  }

  private maybeSnapshot(node: SimNode): void {
    const snap = node.store.latestSnapshot();
    const applied = node.app.applied;
    if (applied - snap.meta.index < this.k.snapshotIntervalEntries) return;
    const term = node.raw!.raft.log.term(applied);
    if (term === undefined) return;
    node.store.write({
      kind: 'compact',
      snapshot: { meta: { index: applied, term, conf: node.raw!.confState() }, data: node.app.snapshot() },
    });
  }

  private serveReads(node: SimNode): void {
    const ready = node.pendingReads.filter((r) => r.index >= 0 && r.index <= node.app.applied);
    if (ready.length === 0) return;
    node.pendingReads = node.pendingReads.filter((r) => !(r.index >= 0 && r.index <= node.app.applied));
    for (const read of ready) {
      const c = this.clients[read.client - 1];
      if (c.current && c.current.op === read.op && c.current.kind === 'get') this.finishOp(c, node.app.data.get(read.key) ?? null);
    }
  }

  // ---- network -----------------------------------------------------------------------------

  private send(node: SimNode, m: Message): void {
    if (this.options.checkDurability !== false) this.checkDurable(node, m);
    if (m.type === 'snap' && m.snapshot?.offset === 0) this.stats.snapshotsSent++;
    if (this.cut.has(`${m.from}>${m.to}`)) return;
    if (this.netRng.chance(this.lossChance)) return;
    const copies = this.netRng.chance(this.k.dupChance) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      let delay = this.netRng.int(this.k.latencyMin, this.k.latencyMax);
      if (this.netRng.chance(this.k.reorderChance)) delay += this.netRng.int(0, 100);
      this.queue.push(this.now + delay, { kind: 'deliver', msg: m });
    }
  }

  // ---- faults ------------------------------------------------------------------------------

  private nemesis(): void {
    const ids = [...this.nodes.keys()];
    const action = this.rng.pick([
      'partition',
      'asymmetric',
      'isolateLeader',
      'heal',
      'heal',
      'crash',
      'crash',
      'crashLeader',
      'crashLeader',
      'loss',
      'confChange',
      'confChange',
      'transfer',
    ] as const);
    this.trace(`t${this.now} nemesis ${action}`);
    switch (action) {
      case 'partition': {
        this.cut.clear();
        const side = new Set(ids.filter(() => this.rng.chance(0.5)));
        for (const a of ids) for (const b of ids) if (side.has(a) !== side.has(b)) this.cut.add(`${a}>${b}`);
        return;
      }
      case 'asymmetric':
        for (let i = 0; i < 3; i++) {
          const a = this.rng.pick(ids);
          const b = this.rng.pick(ids);
          if (a !== b) this.cut.add(`${a}>${b}`);
        }
        return;
      case 'isolateLeader': {
        const leader = this.currentLeader();
        if (leader === undefined) return;
        for (const b of ids) {
          if (b === leader.id) continue;
          this.cut.add(`${leader.id}>${b}`);
          this.cut.add(`${b}>${leader.id}`);
        }
        return;
      }
      case 'heal':
        this.cut.clear();
        return;
      case 'crash': {
        const up = [...this.nodes.values()].filter((n) => n.raw !== undefined);
        if (up.length === 0) return;
        this.crash(this.rng.pick(up));
        return;
      }
      case 'crashLeader': {
        // Leaders that die right after being elected, with entries half replicated, are where
        // commit rules go wrong (figure 8); aim at them.
        const leader = this.currentLeader();
        if (leader !== undefined) this.crash(leader);
        return;
      }
      case 'loss':
        this.lossChance = this.rng.float() * this.k.lossChanceMax;
        return;
      case 'confChange':
        this.randomConfChange();
        return;
      case 'transfer': {
        const leader = this.currentLeader();
        if (leader === undefined) return;
        const voters = leader.raw!.status().conf.voters.filter((v) => v !== leader.id);
        if (voters.length === 0) return;
        leader.raw!.transferLeadership(this.rng.pick(voters));
        this.pump(leader);
        return;
      }
    }
  }

  private crash(node: SimNode): void {
    this.trace(`t${this.now} crash n${node.id}`);
    this.stats.crashes++;
    node.raw = undefined;
    node.inflight = undefined;
    node.store.crash(this.diskRng, this.k.tornWriteChance);
    node.pendingPuts.clear();
    node.pendingReads = [];
    node.recordedCommit = 0;
    this.queue.push(this.now + this.rng.int(10, this.k.nemesisIntervalMax * 2), { kind: 'restart', node: node.id });
  }

  private randomConfChange(): void {
    const leader = this.currentLeader();
    if (leader === undefined) return;
    const conf = leader.raw!.status().conf;
    const ids = [...this.nodes.keys()];
    const outsiders = ids.filter((id) => !conf.voters.includes(id) && !conf.learners.includes(id));
    const options: ConfChange[] = [];
    for (const id of outsiders) options.push({ type: 'addLearner', nodeId: id }, { type: 'addVoter', nodeId: id });
    for (const id of conf.learners) options.push({ type: 'addVoter', nodeId: id }, { type: 'removeNode', nodeId: id });
    if (conf.voters.length > 1) for (const id of conf.voters) options.push({ type: 'removeNode', nodeId: id });
    if (options.length === 0) return;
    const change = this.rng.pick(options);
    try {
      leader.raw!.proposeConfChange(change, this.now);
      this.stats.confChanges++;
      this.trace(`t${this.now} propose ${change.type} ${change.nodeId} at n${leader.id}`);
    } catch (err) {
      if (!isLoomError(err)) throw err;
    }
    this.pump(leader);
  }

  private heal(): void {
    this.trace(`t${this.now} heal: faults stop`);
    this.faultsOver = true;
    this.cut.clear();
    this.lossChance = 0;
    for (const node of this.nodes.values()) if (node.raw === undefined) this.queue.push(this.now + 1, { kind: 'restart', node: node.id });
    this.queue.push(this.now + 10, { kind: 'liveness' });
  }

  /** After faults stop: a leader must emerge and a fresh proposal must reach every member. */
  private livenessProbe(): void {
    this.queue.push(this.now + 50, { kind: 'liveness' });
    const leader = this.currentLeader();
    if (leader === undefined) return;
    const raw = leader.raw!;
    const status = raw.status();
    if (this.probe === undefined || this.probe.term !== status.term || this.probe.node !== leader.id) {
      try {
        const index = raw.propose(entryTypePut, encodePut({ client: 0, op: ++this.probeSeq, key: '__probe', value: '' }), this.now);
        this.probe = { node: leader.id, index, term: status.term };
        this.pump(leader);
      } catch (err) {
        if (!isLoomError(err)) throw err;
      }
      return;
    }
    const members = [...status.conf.voters, ...status.conf.learners];
    const reached = members.every((id) => {
      const n = this.nodes.get(id)!;
      return n.raw !== undefined && n.app.applied >= this.probe!.index;
    });
    if (reached) this.done = true;
  }

  private currentLeader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const node of this.nodes.values()) {
      const s = node.raw?.status();
      if (s?.role === 'leader' && (best === undefined || s.term > best.raw!.status().term)) best = node;
    }
    return best;
  }

  // ---- clients -----------------------------------------------------------------------------

  private clientAct(c: Client): void {
    if (c.current !== undefined || this.done) return;
    const node = this.nodes.get(c.leaderGuess)!;
    const retry = () => {
      c.leaderGuess = this.rng.int(1, this.k.nodeCount);
      this.queue.push(this.now + this.rng.int(5, 30), { kind: 'client', client: c.id });
    };
    if (node.raw === undefined) return retry();
    const op = c.nextOp++;
    const key = this.rng.pick(this.k.keys);
    if (this.rng.chance(0.55)) {
      const value = `${c.id}.${op}`;
      try {
        node.raw.propose(entryTypePut, encodePut({ client: c.id, op, key, value }), this.now);
      } catch (err) {
        if (!(err instanceof LoomError)) throw err;
        const hint = err.details.leader;
        if (typeof hint === 'number' && hint > 0) {
          c.leaderGuess = hint;
          this.queue.push(this.now + 1, { kind: 'client', client: c.id });
          return;
        }
        return retry();
      }
      node.pendingPuts.set(`${c.id}:${op}`, c.id);
      this.startOp(c, { op, node: node.id, kind: 'put', historyIndex: this.invoke(c.id, { kind: 'put', key, value }) });
    } else {
      const context = `${c.id}:${op}`;
      try {
        node.raw.readIndex(context);
      } catch (err) {
        if (!(err instanceof LoomError)) throw err;
        return retry();
      }
      node.pendingReads.push({ context, client: c.id, op, key, index: -1 });
      this.startOp(c, { op, node: node.id, kind: 'get', historyIndex: this.invoke(c.id, { kind: 'get', key }) });
    }
    this.pump(node);
  }

  private invoke(clientId: number, input: KvInput): number {
    this.history.push({ clientId, input, output: null, call: ++this.historyClock, ret: Infinity });
    return this.history.length - 1;
  }

  private startOp(c: Client, op: ClientOp): void {
    c.current = op;
    this.queue.push(this.now + this.k.opTimeoutUnits, { kind: 'clientTimeout', client: c.id, op: op.op });
  }

  private finishOp(c: Client, output: KvOutput): void {
    const op = c.current!;
    const h = this.history[op.historyIndex];
    h.output = output;
    h.ret = ++this.historyClock;
    c.current = undefined;
    this.queue.push(this.now + this.rng.int(1, 40), { kind: 'client', client: c.id });
  }

  private clientTimeout(c: Client, op: number): void {
    if (c.current === undefined || c.current.op !== op) return;
    // A put that timed out may still take effect later: it stays in the history with no return.
    // A read that timed out had no effect: it leaves the history.
    if (c.current.kind === 'get') this.droppedHistory.add(c.current.historyIndex);
    const node = this.nodes.get(c.current.node)!;
    node.pendingPuts.delete(`${c.id}:${op}`);
    node.pendingReads = node.pendingReads.filter((r) => !(r.client === c.id && r.op === op));
    c.current = undefined;
    c.leaderGuess = this.rng.int(1, this.k.nodeCount);
    this.queue.push(this.now + this.rng.int(1, 40), { kind: 'client', client: c.id });
  }

  private checkLinearizable(): void {
    // Reads still waiting when the run ends had no effect; unfinished puts may have had one.
    const ops = this.history.filter((op, i) => !this.droppedHistory.has(i) && !(op.input.kind === 'get' && op.ret === Infinity));
    const result = checkOperations(kvModel, ops);
    if (!result.ok) {
      const part = kvModel.partition!(ops)[result.failedPartition!];
      if (this.options.trace) {
        for (const op of part) this.traceLines.push(`history c${op.clientId} ${JSON.stringify(op.input)} -> ${JSON.stringify(op.output)} [${op.call}, ${op.ret}]`);
      }
      throw new Violation(`linearizability: the KV history of key ${part[0].input.key} (${part.length} ops) is not linearizable`);
    }
  }

  // ---- invariants --------------------------------------------------------------------------

  private checkReady(node: SimNode, rd: Ready): void {
    const raw = node.raw!;
    // Log matching: one entry per (index, term), and it always follows the same previous term.
    let prevTerm = raw.raft.log.term(rd.entries.length > 0 ? rd.entries[0].index - 1 : 0);
    for (const entry of rd.entries) {
      const key = `${entry.index}:${entry.term}`;
      const fp = fingerprint(entry);
      const known = this.entryAt.get(key);
      if (known === undefined) this.entryAt.set(key, { fp, prevTerm });
      else {
        if (known.fp !== fp) throw new Violation(`log matching: two different entries at index ${entry.index} term ${entry.term}`);
        if (known.prevTerm !== undefined && prevTerm !== undefined && known.prevTerm !== prevTerm) {
          throw new Violation(`log matching: entry ${key} follows term ${prevTerm} on n${node.id} but ${known.prevTerm} elsewhere`);
        }
      }
      prevTerm = entry.term;
    }
    if (rd.softState?.role === 'leader') {
      this.stats.elections++;
      this.checkLeaderCompleteness(node);
      // A new leader is where half-replicated entries of older terms meet a new commit rule
      // (Raft figure 8): sometimes cut it down before its own entries spread.
      if (!this.faultsOver && this.rng.chance(this.k.newLeaderFaultChance)) {
        this.queue.push(this.now + this.rng.int(0, 6 * this.k.latencyMax), { kind: 'leaderFault', node: node.id, term: raw.raft.term });
      }
    }
    // Commits: a committed index never changes its entry, on any node, ever.
    const commit = raw.raft.log.committed;
    if (commit > node.recordedCommit) {
      const lo = Math.max(node.recordedCommit + 1, raw.raft.log.firstIndex());
      if (lo <= commit) {
        for (const entry of raw.raft.log.slice(lo, commit + 1, Infinity)) this.recordCommitted(entry.index, fingerprint(entry), node.id, raw.raft.term);
      }
      node.recordedCommit = commit;
    }
  }

  private recordCommitted(index: number, fp: string, nodeId: number, term: number): void {
    const known = this.committedAt.get(index);
    if (known === undefined) {
      this.committedAt.set(index, { fp, term });
      this.committedMax = Math.max(this.committedMax, index);
    } else if (known.fp !== fp) {
      throw new Violation(`committed entry lost: index ${index} was committed as ${known.fp}, now n${nodeId} commits ${fp}`);
    } else if (term < known.term) {
      known.term = term;
    }
  }

  /**
   * Leader completeness (§5.4): every entry committed in a term before the new leader's is in its
   * log. A stale candidate may still win an older term with late votes after a newer term has
   * committed entries; it must not hold those, and is deposed as soon as it speaks.
   */
  private checkLeaderCompleteness(node: SimNode): void {
    const log = node.raw!.raft.log;
    const term = node.raw!.raft.term;
    for (let i = log.firstIndex(); i <= this.committedMax; i++) {
      const known = this.committedAt.get(i);
      if (known === undefined || known.term >= term) continue;
      if (i > log.lastIndex()) throw new Violation(`leader completeness: n${node.id} leads term ${term} without committed entry ${i}`);
      const entry = log.slice(i, i + 1, Infinity)[0];
      if (fingerprint(entry) !== known.fp) {
        throw new Violation(`leader completeness: n${node.id} leads term ${term} with ${fingerprint(entry)} at committed index ${i} (${known.fp})`);
      }
    }
  }

  private checkDurable(node: SimNode, m: Message): void {
    const hard = node.store.durableHardState();
    if (m.term > hard.term && m.type !== 'preVote' && m.type !== 'preVoteResp') {
      throw new Violation(`durability: n${node.id} sends ${m.type} at term ${m.term} with term ${hard.term} on disk`);
    }
    if ((m.type === 'voteResp' && !m.reject) || m.type === 'vote') {
      const votedFor = m.type === 'vote' ? node.id : m.to;
      if (hard.vote !== votedFor || hard.term !== m.term) {
        throw new Violation(`durability: n${node.id} sends ${m.type} for ${votedFor} at term ${m.term}, disk has vote ${hard.vote} term ${hard.term}`);
      }
    }
    if (m.type === 'appResp' && !m.reject && m.index > node.store.durableLastIndex()) {
      throw new Violation(`durability: n${node.id} acknowledges index ${m.index} with ${node.store.durableLastIndex()} on disk`);
    }
  }

  private checkInvariants(): void {
    for (const node of this.nodes.values()) {
      const raw = node.raw;
      if (raw === undefined) continue;
      const r = raw.raft;
      if (r.role === 'leader') {
        const known = this.leaderOfTerm.get(r.term);
        if (known === undefined) this.leaderOfTerm.set(r.term, node.id);
        else if (known !== node.id) throw new Violation(`election safety: n${known} and n${node.id} both lead term ${r.term}\n${this.statusDump()}`);
      }
      const commit = r.log.committed;
      if (commit < node.lastCommit) throw new Violation(`n${node.id} commit went back from ${node.lastCommit} to ${commit}`);
      node.lastCommit = commit;
      if (node.app.applied > commit) throw new Violation(`n${node.id} applied ${node.app.applied} beyond commit ${commit}`);
    }
  }

  private statusDump(): string {
    const lines: string[] = [`probe ${JSON.stringify(this.probe)}`];
    for (const node of this.nodes.values()) {
      const raw = node.raw;
      if (raw === undefined) {
        lines.push(`n${node.id} down`);
        continue;
      }
      const s = raw.status();
      let line = `n${node.id} ${s.role} term=${s.term} vote=${s.vote} leader=${s.leader} commit=${s.commit} applied=${node.app.applied} last=${s.lastIndex} first=${raw.raft.log.firstIndex()} conf=${JSON.stringify(s.conf)} inflight=${node.inflight !== undefined}`;
      if (s.role === 'leader') {
        for (const [id, pr] of raw.raft.progress) line += `\n   pr${id} ${pr.state} match=${pr.match} next=${pr.next} paused=${pr.isPaused()} snap=${pr.pendingSnapshotIndex}/${pr.snapshotOffset}`;
      }
      lines.push(line);
    }
    return lines.join('\n');
  }

  private trace(line: string): void {
    if (!this.options.trace) return;
    this.traceLines.push(line);
    if (this.traceLines.length > traceLinesMax) this.traceLines.shift();
  }
}

function describe(m: Message): string {
  let s = `${m.type} ${m.from}->${m.to} t${m.term}`;
  if (m.type === 'app') s += ` prev=(${m.index},${m.logTerm}) n=${m.entries.length} commit=${m.commit}`;
  if (m.type === 'appResp') s += ` index=${m.index}${m.reject ? ` reject hint=${m.rejectHint}/${m.logTerm}` : ''}`;
  if (m.type === 'vote' || m.type === 'preVote') s += ` last=(${m.index},${m.logTerm})`;
  if (m.reject) s += ' reject';
  if (m.snapshot) s += ` snap@${m.snapshot.meta.index} off=${m.snapshot.offset}/${m.snapshot.totalBytes}`;
  return s;
}

export function runSeed(options: SimOptions): SimResult {
  return new Simulation(options).run();
}
