// Test support for multi-process clusters: real `loom serve` processes on loopback, a TCP proxy
// between every pair of peers (to cut links), and a NATS-door client that follows NOT_LEADER.

import { rmSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { connect as natsConnect, headers as natsHeaders, type NatsConnection } from 'nats';
import { startServe, stopServe, type ServeProcess } from '../support/cli';
import { makeTempDir, removeDir } from '../support/tmp';
import { freePort } from '../support/ports';

export { freePort };

export const clusterSecret = 'test-cluster-secret';


/** A proxy for one direction of one peer pair (from → to); `cut` drops it until `heal`. */
export class LinkProxy {
  private readonly sockets = new Set<net.Socket>();
  private server: net.Server | undefined;
  cut = false;

  constructor(readonly from: number, readonly to: number, readonly port: number, private readonly target: () => number) {}

  async start(): Promise<void> {
    const server = net.createServer((client) => {
      if (this.cut) return client.destroy();
      const upstream = net.connect({ host: '127.0.0.1', port: this.target() });
      for (const [a, b] of [[client, upstream], [upstream, client]] as const) {
        this.sockets.add(a);
        a.on('data', (chunk) => {
          if (!this.cut) b.write(chunk);
        });
        a.on('error', () => b.destroy());
        a.on('close', () => {
          this.sockets.delete(a);
          b.destroy();
        });
      }
    });
    this.server = server;
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
  }

  setCut(cut: boolean): void {
    this.cut = cut;
    if (cut) for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

export interface ClusterNode {
  id: number;
  dir: string;
  raftPort: number;
  args: string[];
  serve: ServeProcess | undefined;
  ports: Record<string, number>;
}

export interface ClusterOptions {
  size?: number;
  /** Route peer traffic through LinkProxy instances so links can be cut. */
  proxies?: boolean;
  extraArgs?: string[];
}

export class TestCluster {
  readonly nodes: ClusterNode[] = [];
  readonly proxies: LinkProxy[] = [];
  private readonly root = makeTempDir('loom-cluster-');
  private extraArgs: string[] = [];

  static async start(options: ClusterOptions = {}): Promise<TestCluster> {
    const cluster = new TestCluster();
    cluster.extraArgs = options.extraArgs ?? [];
    const size = options.size ?? 3;
    const raftPorts: number[] = [];
    for (let i = 0; i < size; i++) raftPorts.push(await freePort());
    for (let id = 1; id <= size; id++) {
      const peers: string[] = [];
      for (let j = 1; j <= size; j++) {
        let port = raftPorts[j - 1];
        if (options.proxies && j !== id) {
          const proxy = new LinkProxy(id, j, await freePort(), () => raftPorts[j - 1]);
          await proxy.start();
          cluster.proxies.push(proxy);
          port = proxy.port;
        }
        peers.push(`${j}=127.0.0.1:${port}`);
      }
      const args = ['--node-id', String(id), '--raft-port', String(raftPorts[id - 1]), '--peers', peers.join(','), '--cluster-secret', clusterSecret, ...(options.extraArgs ?? [])];
      cluster.nodes.push({ id, dir: path.join(cluster.root, `n${id}`), raftPort: raftPorts[id - 1], args, serve: undefined, ports: {} });
    }
    const started = await Promise.allSettled(cluster.nodes.map((n) => cluster.startNode(n.id)));
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      // The caller never gets the cluster to close: stop the nodes that did start.
      await cluster.close();
      throw failed.reason;
    }
    return cluster;
  }

  /**
   * Starts one more node that joins the running group (`--join`): its --peers lists the current
   * members plus itself; it waits, as a non-voter, until `loom cluster add` adds it.
   */
  async addNode(): Promise<ClusterNode> {
    const id = this.nodes.length + 1;
    const raftPort = await freePort();
    const peers = [...this.live().map((n) => `${n.id}=127.0.0.1:${n.raftPort}`), `${id}=127.0.0.1:${raftPort}`];
    const args = ['--node-id', String(id), '--raft-port', String(raftPort), '--peers', peers.join(','), '--join', '--cluster-secret', clusterSecret, ...this.extraArgs];
    this.nodes.push({ id, dir: path.join(this.root, `n${id}`), raftPort, args, serve: undefined, ports: {} });
    await this.startNode(id);
    return this.node(id);
  }

  node(id: number): ClusterNode {
    return this.nodes[id - 1];
  }

  /** Starts (or restarts, on the same ports) one node's process. */
  async startNode(id: number): Promise<void> {
    const node = this.node(id);
    rmSync(path.join(node.dir, 'ports.json'), { force: true });
    const fixed = node.ports.nats ? ['--nats-port', String(node.ports.nats), '--http-port', String(node.ports.http), '--grpc-port', String(node.ports.grpc)] : [];
    node.serve = await startServe(node.dir, [...node.args, ...fixed], 30_000);
    node.ports = node.serve.ports;
  }

  async kill(id: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const node = this.node(id);
    if (node.serve) await stopServe(node.serve, signal);
    node.serve = undefined;
  }

  signal(id: number, signal: NodeJS.Signals): void {
    this.node(id).serve?.child.kill(signal);
  }

  /** Cuts (or heals) every link to and from one node. */
  isolate(id: number, cut: boolean): void {
    for (const p of this.proxies) if (p.from === id || p.to === id) p.setCut(cut);
  }

  live(): ClusterNode[] {
    return this.nodes.filter((n) => n.serve !== undefined);
  }

  /** One value from a node's /metrics (NaN if it has no such line). */
  async metric(id: number, name: string): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${this.node(id).ports.http}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
    return line ? Number(line.split(' ').pop()) : NaN;
  }

  async status(id: number): Promise<ClusterStatusBody | undefined> {
    try {
      const res = await fetch(`http://127.0.0.1:${this.node(id).ports.http}/v1/cluster/status`, { signal: AbortSignal.timeout(1000) });
      return (await res.json()) as ClusterStatusBody;
    } catch {
      return undefined;
    }
  }

  /** The live node every live node agrees leads, once they agree. */
  async waitLeader(timeoutMs = 10_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const statuses = await Promise.all(this.live().map((n) => this.status(n.id)));
      const leaders = statuses.filter((s) => s?.role === 'leader');
      if (leaders.length === 1 && statuses.every((s) => s?.leader === leaders[0]!.nodeId)) return leaders[0]!.nodeId;
      await sleep(50);
    }
    throw new Error('no agreed leader');
  }

  /** Waits until every live node has applied the same commit index, at least `index`. */
  async waitConverged(index: number, timeoutMs = 20_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      const statuses = await Promise.all(this.live().map((n) => this.status(n.id)));
      last = JSON.stringify(statuses.map((s) => s && { id: s.nodeId, commit: s.commit, applied: s.applied }));
      const applied = statuses.map((s) => s?.applied ?? -1);
      if (applied.every((a) => a >= index && a === applied[0]) && statuses.every((s) => s?.commit === applied[0])) return applied[0];
      await sleep(100);
    }
    throw new Error(`nodes did not converge on ${index}: ${last}`);
  }

  async close(): Promise<void> {
    for (const n of this.nodes) {
      if (n.serve) {
        n.serve.child.kill('SIGCONT');
        await this.kill(n.id, 'SIGKILL');
      }
    }
    for (const p of this.proxies) await p.close();
    removeDir(this.root);
  }
}

export interface ClusterStatusBody {
  nodeId: number;
  role: string;
  leader: number | null;
  term: number;
  commit: number;
  applied: number;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface DoorReply {
  ok: boolean;
  code?: string;
  body: string;
  rev?: number;
  details?: Record<string, unknown>;
}

/** NATS-door connections to each node, opened on demand and dropped when they fail. */
export class NatsPool {
  private readonly conns = new Map<number, Promise<NatsConnection>>();

  constructor(private readonly cluster: TestCluster) {}

  private conn(id: number): Promise<NatsConnection> {
    let c = this.conns.get(id);
    if (!c) {
      const port = this.cluster.node(id).ports.nats;
      c = natsConnect({ servers: `127.0.0.1:${port}`, reconnect: false, timeout: 1000 });
      const settled = c;
      this.conns.set(id, settled);
      settled.then(
        (nc) => void nc.closed().then(() => this.conns.get(id) === settled && this.conns.delete(id)),
        () => this.conns.get(id) === settled && this.conns.delete(id),
      );
    }
    return c;
  }

  async request(id: number, subject: string, data: Uint8Array, hdrs: Record<string, string> = {}, timeoutMs = 2000): Promise<DoorReply> {
    try {
      const nc = await this.conn(id);
      const h = natsHeaders();
      for (const [k, v] of Object.entries(hdrs)) h.set(k, v);
      const msg = await nc.request(subject, data, { timeout: timeoutMs, headers: h });
      const code = msg.headers?.get('Loom-Error');
      const body = Buffer.from(msg.data).toString();
      if (code) return { ok: false, code, body, details: (JSON.parse(body) as { details?: Record<string, unknown> }).details };
      const rev = msg.headers?.get('Loom-Rev');
      return { ok: true, body, rev: rev ? Number(rev) : undefined };
    } catch (err) {
      return { ok: false, code: 'TRANSPORT', body: (err as Error).message };
    }
  }

  async close(): Promise<void> {
    for (const c of this.conns.values()) {
      try {
        await (await c).close();
      } catch {
        // Already gone with its node.
      }
    }
    this.conns.clear();
  }
}

export interface Ack {
  writer: number;
  value: string;
  rev: number;
  node: number;
}

/**
 * Writers that put unique values (writer:n:attempt) on key w<writer> through the NATS door,
 * following NOT_LEADER hints and retrying elsewhere on any failure (with a fresh value, since a
 * failed write's outcome is unknown). Every acknowledged write is recorded.
 */
export class Writers {
  readonly acks: Ack[] = [];
  private stopped = false;
  private running: Array<Promise<void>> = [];
  private guess = 1;

  constructor(private readonly cluster: TestCluster, private readonly pool: NatsPool, readonly bucket = 'w') {}

  start(count: number): void {
    for (let w = 1; w <= count; w++) this.running.push(this.run(w));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.running);
  }

  /** Resolves once `by` more writes are acknowledged; fails if writes stall for `timeoutMs`. */
  async grow(by: number, timeoutMs = 30_000): Promise<void> {
    const target = this.acks.length + by;
    const deadline = Date.now() + timeoutMs;
    while (this.acks.length < target) {
      if (Date.now() > deadline) throw new Error(`writes stalled at ${this.acks.length} acknowledgements`);
      await sleep(20);
    }
  }

  private async run(writer: number): Promise<void> {
    let n = 0;
    let attempt = 0;
    let target = this.guess;
    while (!this.stopped) {
      const value = `${writer}:${n}:${attempt}`;
      const reply = await this.pool.request(target, `$LOOM.API.KV.PUT.${this.bucket}.w${writer}`, Buffer.from(value));
      if (reply.ok) {
        this.acks.push({ writer, value, rev: (JSON.parse(reply.body) as { rev: number }).rev, node: target });
        this.guess = target;
        n++;
        attempt = 0;
        continue;
      }
      attempt++;
      const leader = reply.code === 'NOT_LEADER' ? (reply.details?.leader as number | null | undefined) : undefined;
      if (typeof leader === 'number' && leader !== target) {
        target = leader;
        continue;
      }
      target = (target % this.cluster.nodes.length) + 1;
      await sleep(25);
    }
  }
}
