// `npm run bench -- api`: KV put (durable) and get ops/s and p99 through each door with 64
// concurrent clients on one node, beside a single-node etcd driven the same way in the same run.

import * as grpc from '@grpc/grpc-js';
import { Etcd3 } from 'etcd3';
import { connect } from 'nats';
import * as path from 'node:path';
import { loadLoomProto } from '../src/api/grpc';
import { benchDir, fmt, machine, percentile, table } from './support';
import { hasCommand, startEtcd, startLoom } from './processes';

const clients = 64;
const durationMs = Number(process.env.LOOM_BENCH_MS ?? 5000);
/**
 * Unmeasured loops before every measured line. The harness's grpc-js client is shared by loom's
 * gRPC door and etcd: without a warm-up, loom's first gRPC line paid for compiling the client's hot
 * paths and etcd, measured last, found them optimised. Every line now starts warm, each door alike.
 */
const warmupMs = Number(process.env.LOOM_BENCH_WARMUP_MS ?? 1000);
const value = Buffer.alloc(128, 120);
const keys = 10_000;

interface Result {
  opsPerSecond: number;
  p99Ms: number;
}

/** Runs `clients` loops of `op`, unmeasured for warmupMs, then measured for durationMs. */
async function drive(op: (client: number, i: number) => Promise<unknown>): Promise<Result> {
  await loops(op, warmupMs);
  return loops(op, durationMs);
}

/** Runs `clients` loops of `op` for `ms`; op gets a loop id and an iteration count. */
async function loops(op: (client: number, i: number) => Promise<unknown>, ms: number): Promise<Result> {
  const latencies: number[] = [];
  const deadline = Date.now() + ms;
  let done = 0;
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let i = 0; Date.now() < deadline; i++) {
        const t0 = process.hrtime.bigint();
        await op(c, i);
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
        done++;
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  latencies.sort((a, b) => a - b);
  return { opsPerSecond: done / seconds, p99Ms: percentile(latencies, 99) };
}

const keyOf = (c: number, i: number): string => `k${(c * 7919 + i) % keys}`;

export async function run(): Promise<void> {
  const { dir, remove } = benchDir('api');
  const rows: Array<Array<string | number>> = [];
  const results: Record<string, { put: Result; get: Result }> = {};
  const loom = await startLoom(path.join(dir, 'loom'));
  try {
    const nc = await connect({ servers: `127.0.0.1:${loom.ports.nats}` });
    results.nats = {
      put: await drive((c, i) => nc.request(`$LOOM.API.KV.PUT.bench.${keyOf(c, i)}`, value, { timeout: 10_000 })),
      get: await drive((c, i) => nc.request(`$LOOM.API.KV.GET.bench.${keyOf(c, i)}`, undefined, { timeout: 10_000 })),
    };
    await nc.close();
    process.stderr.write(`nats door done\n`);

    // One channel with grpc-js's default options and no per-call metadata or deadline, as the etcd3
    // client drives etcd below (one channel per host, no grpcOptions, no default call options).
    const loaded = grpc.loadPackageDefinition(loadLoomProto()) as unknown as { loom: { v1: Record<string, new (a: string, c: grpc.ChannelCredentials) => grpc.Client> } };
    const kv = new loaded.loom.v1.KV(`127.0.0.1:${loom.ports.grpc}`, grpc.credentials.createInsecure()) as unknown as Record<string, Function>;
    const unary = (method: string, request: unknown): Promise<unknown> =>
      new Promise((resolve, reject) => kv[method].call(kv, request, (err: Error | null, res: unknown) => (err ? reject(err) : resolve(res))));
    results.grpc = {
      put: await drive((c, i) => unary('Put', { bucket: 'bench', key: keyOf(c, i), value })),
      get: await drive((c, i) => unary('Get', { bucket: 'bench', key: keyOf(c, i) })),
    };
    (kv as unknown as grpc.Client).close();
    process.stderr.write(`grpc door done\n`);

    const base = `http://127.0.0.1:${loom.ports.http}`;
    results.http = {
      put: await drive(async (c, i) => (await fetch(`${base}/v1/kv/bench/${keyOf(c, i)}`, { method: 'PUT', body: value })).arrayBuffer()),
      get: await drive(async (c, i) => (await fetch(`${base}/v1/kv/bench/${keyOf(c, i)}`)).arrayBuffer()),
    };
    process.stderr.write(`http door done\n`);
  } finally {
    await loom.stop();
  }

  if (hasCommand('etcd')) {
    const etcd = await startEtcd(path.join(dir, 'etcd'));
    try {
      const client = new Etcd3({ hosts: etcd.endpoint });
      results.etcd = {
        put: await drive(async (c, i) => client.put(`bench/${keyOf(c, i)}`).value(value)),
        get: await drive((c, i) => client.get(`bench/${keyOf(c, i)}`).buffer()),
      };
      client.close();
    } finally {
      await etcd.stop();
    }
  } else {
    process.stderr.write('etcd is not installed (apt-get install etcd-server): no anchor in this run\n');
  }
  remove();

  const anchor = results.etcd;
  for (const [door, r] of Object.entries(results)) {
    rows.push([
      door === 'etcd' ? 'etcd 3.4 (anchor)' : `loom ${door} door`,
      fmt(r.put.opsPerSecond),
      fmt(r.put.p99Ms, 1),
      anchor ? `${fmt(r.put.opsPerSecond / anchor.put.opsPerSecond, 2)}×` : '-',
      fmt(r.get.opsPerSecond),
      fmt(r.get.p99Ms, 1),
      anchor ? `${fmt(r.get.opsPerSecond / anchor.get.opsPerSecond, 2)}×` : '-',
    ]);
  }
  process.stdout.write(
    `## api (${machine()})\n\n${clients} concurrent clients, 128-byte values, ${durationMs} ms per line after ${warmupMs} ms of warm-up, durable puts (fsync), one connection per door\n\n` +
      `${table(['door', 'put ops/s', 'put p99 ms', 'put vs etcd', 'get ops/s', 'get p99 ms', 'get vs etcd'], rows)}\n`,
  );
}
