// A scenario harness for Raft: a few RawNodes over the foundation's LogStore (MemoryLog or LMDB),
// a hand-driven network, and a transcript of every message delivered, so tests read as the
// message flow they describe (etcd's testdata style).

import { MemoryLog } from '../../../src/eventlog';
import type { LogEntry, LogStore } from '../../../src/eventlog';
import { RawNode, entryTypeConfChange, entryTypeNoop } from '../../../src/eventlog/raft';
import type { Message, RaftConfig, RaftSnapshot, ReadState } from '../../../src/eventlog/raft';

export interface HarnessNode {
  id: number;
  raw: RawNode;
  store: LogStore;
  applied: LogEntry[];
  readStates: ReadState[];
  snapshot: RaftSnapshot | undefined;
  /** Messages the last Ready put in "send now" vs "send after persist". */
  sentEarly: Message[];
  sentAfterPersist: Message[];
}

export type HarnessConfig = Omit<RaftConfig, 'id'>;

export class Harness {
  readonly nodes = new Map<number, HarnessNode>();
  /** Messages sent and not yet delivered, in send order. */
  queue: Message[] = [];
  readonly transcript: string[] = [];
  private readonly cut = new Set<string>();
  /** The bootstrap membership every node starts with (the genesis configuration). */
  private readonly voters: number[];

  constructor(
    ids: number[],
    private readonly config: HarnessConfig = {},
    stores: Map<number, LogStore> = new Map(),
  ) {
    this.voters = config.voters ?? ids;
    for (const id of ids) this.start(id, stores.get(id) ?? new MemoryLog());
  }

  start(id: number, store: LogStore): void {
    const node: HarnessNode = {
      id,
      store,
      raw: undefined as unknown as RawNode,
      applied: [],
      readStates: [],
      snapshot: undefined,
      sentEarly: [],
      sentAfterPersist: [],
    };
    node.raw = new RawNode(
      {
        random: () => 0,
        preVote: false,
        checkQuorum: false,
        ...this.config,
        voters: this.voters,
        id,
        snapshotSource: () => node.snapshot,
      },
      store,
    );
    this.nodes.set(id, node);
  }

  node(id: number): HarnessNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  /** Drops every message from `a` to `b` (both directions unless oneWay). */
  cutLink(a: number, b: number, oneWay = false): void {
    this.cut.add(`${a}>${b}`);
    if (!oneWay) this.cut.add(`${b}>${a}`);
  }

  isolate(id: number): void {
    for (const other of this.nodes.keys()) if (other !== id) this.cutLink(id, other);
  }

  heal(): void {
    this.cut.clear();
  }

  /** Persists, sends and applies everything `id` has ready (a synchronous driver over MemoryLog). */
  async process(id: number): Promise<void> {
    const node = this.node(id);
    while (node.raw.hasReady()) {
      const rd = node.raw.ready();
      node.sentEarly = rd.messages;
      node.sentAfterPersist = rd.messagesAfterPersist;
      this.queue.push(...rd.messages);
      if (rd.snapshot) await node.store.resetToSnapshot(rd.snapshot.meta);
      if (rd.entries.length > 0) {
        if (rd.entries[0].index <= node.store.lastIndex()) await node.store.truncateSuffix(rd.entries[0].index);
        await node.store.append(rd.entries);
      }
      if (rd.hardState) await node.store.setHardState(rd.hardState);
      this.queue.push(...rd.messagesAfterPersist);
      if (rd.snapshot) node.snapshot = rd.snapshot;
      node.applied.push(...rd.committedEntries);
      node.readStates.push(...rd.readStates);
      node.raw.advance();
    }
  }

  async processAll(): Promise<void> {
    for (const id of this.nodes.keys()) await this.process(id);
  }

  /** Delivers queued messages (and those they cause) until none is left; returns the transcript lines. */
  async deliverAll(stepsMax = 10_000): Promise<string[]> {
    const lines: string[] = [];
    await this.processAll();
    for (let i = 0; i < stepsMax && this.queue.length > 0; i++) lines.push(await this.deliverOne());
    this.transcript.push(...lines);
    return lines;
  }

  /** Delivers the first queued message only. */
  async deliverOne(): Promise<string> {
    const m = this.queue.shift()!;
    if (this.cut.has(`${m.from}>${m.to}`) || !this.nodes.has(m.to)) return `${describe(m)} (dropped)`;
    this.node(m.to).raw.step(m);
    await this.processAll();
    return describe(m);
  }

  async tick(id: number, times = 1): Promise<void> {
    for (let i = 0; i < times; i++) this.node(id).raw.tick();
    await this.process(id);
  }

  async tickAll(times = 1): Promise<void> {
    for (let i = 0; i < times; i++) for (const id of this.nodes.keys()) this.node(id).raw.tick();
    await this.processAll();
  }

  async campaign(id: number): Promise<string[]> {
    this.node(id).raw.campaign();
    return this.deliverAll();
  }

  async propose(id: number, text: string): Promise<number> {
    const index = this.node(id).raw.propose('test.put', Buffer.from(text), 0);
    await this.process(id);
    return index;
  }

  /** The log of node `id` as "index/term" strings (what its store holds). */
  log(id: number): string[] {
    const store = this.node(id).store;
    if (store.lastIndex() < store.firstIndex()) return [];
    return store.entries(store.firstIndex(), store.lastIndex() + 1).map((e) => `${e.index}/${e.term}`);
  }

  dropQueued(filter: (m: Message) => boolean = () => true): void {
    this.queue = this.queue.filter((m) => !filter(m));
  }
}

export function describeEntry(e: LogEntry): string {
  if (e.type === entryTypeNoop) return `${e.index}/${e.term} noop`;
  if (e.type === entryTypeConfChange) return `${e.index}/${e.term} conf ${Buffer.from(e.data).toString()}`;
  return `${e.index}/${e.term} ${Buffer.from(e.data).toString()}`;
}

/** One transcript line per message, e.g. `1→2 app t1 prev=0/0 [1/1 noop] commit=0`. */
export function describe(m: Message): string {
  const head = `${m.from}→${m.to} ${m.type} t${m.term}`;
  switch (m.type) {
    case 'app':
      return `${head} prev=${m.index}/${m.logTerm} [${m.entries.map(describeEntry).join(', ')}] commit=${m.commit}`;
    case 'appResp':
      return m.reject ? `${head} reject ${m.index} hint=${m.rejectHint}/${m.logTerm}` : `${head} index=${m.index}`;
    case 'vote':
    case 'preVote':
      return `${head} last=${m.index}/${m.logTerm}${m.context ? ` ${m.context}` : ''}`;
    case 'voteResp':
    case 'preVoteResp':
      return `${head} ${m.reject ? 'rejected' : 'granted'}`;
    case 'heartbeat':
      return `${head} commit=${m.commit}${m.context ? ` ctx=${m.context}` : ''}`;
    case 'heartbeatResp':
      return `${head}${m.context ? ` ctx=${m.context}` : ''}`;
    case 'snap': {
      const c = m.snapshot!;
      return `${head} snapshot=${c.meta.index}/${c.meta.term} bytes=${c.offset}..${c.offset + c.data.byteLength}/${c.totalBytes}`;
    }
    case 'snapResp':
      return `${head} snapshot=${m.index} ${m.reject ? 'reject ' : ''}have=${m.rejectHint}`;
    case 'readIndex':
    case 'readIndexResp':
      return `${head} index=${m.index} ctx=${m.context}`;
    case 'transferLeader':
      return `${head} to=${m.index}`;
    default:
      return head;
  }
}
