// `npm run bench -- cluster`: three `loom serve` processes on this machine, KV puts through the
// NATS door at 1, 16 and 128 clients, linearizable and follower reads, failover after SIGKILL;
// anchored in the same run by a three-member etcd cluster (puts through its HTTP/JSON gateway).

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { connect, headers as natsHeaders, type NatsConnection } from 'nats';
import { benchDir, fmt, machine, percentile, table } from './support';
import { loomNodeFlags } from '../src/cli/node-flags';
import { freePort } from '../test/support/ports';

const secondsPerLevel = Number(process.env.BENCH_SECONDS ?? 5);
const clientLevels = [1, 16, 128];
const loomMain = path.resolve(process.cwd(), 'dist/cli/main.js');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


interface Measured {
  ops: number;
  p50: number;
  p99: number;
}

/** Runs `clients` loops of `op` for `seconds`; ops/s and latency percentiles in ms. */
async function measure(clients: number, seconds: number, op: (client: number) => Promise<void>): Promise<Measured> {
  const latencies: number[] = [];
  const end = Date.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      while (Date.now() < end) {
        const t = process.hrtime.bigint();
        await op(c);
        latencies.push(Number(process.hrtime.bigint() - t) / 1e6);
      }
    }),
  );
  latencies.sort((a, b) => a - b);
  return { ops: latencies.length / seconds, p50: percentile(latencies, 50), p99: percentile(latencies, 99) };
}

interface LoomProc {
  id: number;
  child: ChildProcess;
  ports: Record<string, number>;
}

async function startLoom(dir: string, id: number, raftPorts: number[]): Promise<LoomProc> {
  const data = path.join(dir, `loom${id}`);
  const peers = raftPorts.map((p, i) => `${i + 1}=127.0.0.1:${p}`).join(',');
  const args = ['serve', '--data', data, '--node-id', String(id), '--raft-port', String(raftPorts[id - 1]), '--peers', peers, '--cluster-secret', 'bench-cluster-secret',
    '--nats-port', '0', '--http-port', '0', '--grpc-port', '0', '--log-level', 'warn'];
  const child = spawn(process.execPath, [...loomNodeFlags, loomMain, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
  const file = path.join(data, 'ports.json');
  while (!existsSync(file)) await sleep(50);
  return { id, child, ports: JSON.parse(readFileSync(file, 'utf8')) as Record<string, number> };
}

async function loomStatus(p: LoomProc): Promise<{ role: string; leader: number | null } | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${p.ports.http}/v1/cluster/status`, { signal: AbortSignal.timeout(500) });
    return (await res.json()) as { role: string; leader: number | null };
  } catch {
    return undefined;
  }
}

async function loomLeader(nodes: LoomProc[]): Promise<LoomProc> {
  for (;;) {
    for (const n of nodes) if ((await loomStatus(n))?.role === 'leader') return n;
    await sleep(50);
  }
}

async function natsPool(port: number, count: number): Promise<NatsConnection[]> {
  return Promise.all(Array.from({ length: count }, () => connect({ servers: `127.0.0.1:${port}` })));
}

async function benchLoom(dir: string): Promise<{ puts: Measured[]; linearizable: Measured; follower: Measured; failoverMs: number }> {
  const raftPorts = [await freePort(), await freePort(), await freePort()];
  const nodes = await Promise.all([1, 2, 3].map((id) => startLoom(dir, id, raftPorts)));
  try {
    const leader = await loomLeader(nodes);
    const conns = await natsPool(leader.ports.nats, 8);
    const value = Buffer.alloc(128, 1);
    const puts: Measured[] = [];
    for (const clients of clientLevels) {
      puts.push(await measure(clients, secondsPerLevel, (c) => conns[c % conns.length].request(`$LOOM.API.KV.PUT.bench.k${c % 1000}`, value, { timeout: 10_000 }).then(() => undefined)));
    }
    for (const c of conns) await c.close();
    const follower = nodes.find((n) => n !== leader)!;
    const fconns = await natsPool(follower.ports.nats, 8);
    const lin = natsHeaders();
    lin.set('Loom-Consistency', 'linearizable');
    const linearizable = await measure(64, secondsPerLevel, (c) => fconns[c % 8].request(`$LOOM.API.KV.GET.bench.k${c}`, undefined, { timeout: 10_000, headers: lin }).then(() => undefined));
    const local = await measure(64, secondsPerLevel, (c) => fconns[c % 8].request(`$LOOM.API.KV.GET.bench.k${c}`, undefined, { timeout: 10_000 }).then(() => undefined));
    for (const c of fconns) await c.close();

    // Failover: SIGKILL the leader, then write to the survivors until one acknowledges.
    const survivors = nodes.filter((n) => n !== leader);
    const sconns = await Promise.all(survivors.map((n) => connect({ servers: `127.0.0.1:${n.ports.nats}` })));
    const killedAt = Date.now();
    leader.child.kill('SIGKILL');
    let failoverMs = -1;
    while (failoverMs < 0 && Date.now() - killedAt < 30_000) {
      for (const nc of sconns) {
        const reply = await nc.request('$LOOM.API.KV.PUT.bench.failover', value, { timeout: 500 }).catch(() => undefined);
        if (reply && !reply.headers?.get('Loom-Error')) {
          failoverMs = Date.now() - killedAt;
          break;
        }
      }
      await sleep(10);
    }
    for (const c of sconns) await c.close();
    return { puts, linearizable, follower: local, failoverMs };
  } finally {
    for (const n of nodes) n.child.kill('SIGKILL');
  }
}

async function benchEtcd(dir: string): Promise<Measured[] | undefined> {
  const ports = await Promise.all(Array.from({ length: 6 }, freePort));
  const cluster = [1, 2, 3].map((i) => `e${i}=http://127.0.0.1:${ports[2 * i - 1]}`).join(',');
  const procs: ChildProcess[] = [];
  try {
    for (let i = 1; i <= 3; i++) {
      const client = ports[2 * i - 2];
      const peer = ports[2 * i - 1];
      const child = spawn('etcd', [
        '--name', `e${i}`, '--data-dir', path.join(dir, `etcd${i}`),
        '--listen-client-urls', `http://127.0.0.1:${client}`, '--advertise-client-urls', `http://127.0.0.1:${client}`,
        '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
        '--initial-cluster', cluster, '--initial-cluster-state', 'new', '--log-level', 'error',
      ], { stdio: 'ignore' });
      child.on('error', () => undefined);
      procs.push(child);
    }
    const base = `http://127.0.0.1:${ports[0]}`;
    const key = (c: number) => Buffer.from(`k${c % 1000}`).toString('base64');
    const value = Buffer.alloc(128, 1).toString('base64');
    const put = (c: number) =>
      fetch(`${base}/v3/kv/put`, { method: 'POST', body: JSON.stringify({ key: key(c), value }) }).then(async (r) => {
        if (!r.ok) throw new Error(`etcd put: ${r.status}`);
        await r.arrayBuffer();
      });
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        await put(0);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(200);
      }
    }
    // Puts go to one member; etcd forwards follower proposals to its leader internally.
    const out: Measured[] = [];
    for (const clients of clientLevels) out.push(await measure(clients, secondsPerLevel, put));
    return out;
  } catch (err) {
    process.stderr.write(`etcd anchor skipped: ${(err as Error).message}\n`);
    return undefined;
  } finally {
    for (const p of procs) p.kill('SIGKILL');
  }
}

export async function run(): Promise<void> {
  const work = benchDir('cluster');
  try {
    const loom = await benchLoom(work.dir);
    const etcd = await benchEtcd(work.dir);
    process.stdout.write(`cluster bench: ${machine()}; 3 nodes on loopback, fsync on, 128-byte values, ${secondsPerLevel} s per level\n\n`);
    const rows = clientLevels.map((clients, i) => {
      const l = loom.puts[i];
      const e = etcd?.[i];
      return [clients, fmt(l.ops), fmt(l.p50, 2), fmt(l.p99, 2), e ? fmt(e.ops) : '-', e ? fmt(e.p50, 2) : '-', e ? fmt(e.p99, 2) : '-', e ? fmt(l.ops / e.ops, 2) : '-'];
    });
    process.stdout.write(`${table(['clients', 'loom puts/s', 'p50 ms', 'p99 ms', 'etcd puts/s', 'p50 ms', 'p99 ms', 'loom/etcd'], rows)}\n\n`);
    process.stdout.write(
      `${table(
        ['reads on a follower (64 clients)', 'reads/s', 'p50 ms', 'p99 ms'],
        [
          ['linearizable (ReadIndex)', fmt(loom.linearizable.ops), fmt(loom.linearizable.p50, 2), fmt(loom.linearizable.p99, 2)],
          ['local (follower read)', fmt(loom.follower.ops), fmt(loom.follower.p50, 2), fmt(loom.follower.p99, 2)],
        ],
      )}\n\n`,
    );
    process.stdout.write(`failover: leader SIGKILL → first acknowledged write: ${loom.failoverMs} ms\n`);
  } finally {
    work.remove();
  }
}
