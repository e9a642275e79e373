// `npm run bench -- api`: KV put (durable) and get ops/s and p99 through each door with 64
// concurrent clients on one node, beside a single-node etcd driven the same way in the same run.

import * as grpc from '@grpc/grpc-js';
import { Etcd3 } from 'etcd3';
import { connect } from 'nats';
import * as os from 'node:os';
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

type Door = 'nats' | 'grpc' | 'http' | 'etcd';
type Op = (c: number, i: number) => Promise<unknown>;

/**
 * `--repeat=N` (default 1): every line N times, best kept. loom and etcd run side by side for the
 * whole bench and their lines alternate (etcd, then each loom door, for puts, then the same for
 * gets), so a burst of load from elsewhere on a shared machine hits both alike instead of
 * whichever happened to run in that minute.
 */
export async function run(args: string[] = []): Promise<void> {
  const repeat = Math.max(1, Number(args.find((a) => a.startsWith('--repeat='))?.slice(9) ?? 1));
  const { dir, remove } = benchDir('api');
  const rows: Array<Array<string | number>> = [];
  const results: Partial<Record<Door, { put: Result; get: Result }>> = {};
  const ops: Partial<Record<Door, { put: Op; get: Op }>> = {};
  const closers: Array<() => Promise<void> | void> = [];
  const loom = await startLoom(path.join(dir, 'loom'));
  closers.push(() => loom.stop());
  try {
    const nc = await connect({ servers: `127.0.0.1:${loom.ports.nats}` });
    closers.unshift(() => nc.close());
    ops.nats = {
      put: (c, i) => nc.request(`$LOOM.API.KV.PUT.bench.${keyOf(c, i)}`, value, { timeout: 10_000 }),
      get: (c, i) => nc.request(`$LOOM.API.KV.GET.bench.${keyOf(c, i)}`, undefined, { timeout: 10_000 }),
    };

    // One channel with grpc-js's default options and no per-call metadata or deadline, as the etcd3
    // client drives etcd below (one channel per host, no grpcOptions, no default call options).
    const loaded = grpc.loadPackageDefinition(loadLoomProto()) as unknown as { loom: { v1: Record<string, new (a: string, c: grpc.ChannelCredentials) => grpc.Client> } };
    const kv = new loaded.loom.v1.KV(`127.0.0.1:${loom.ports.grpc}`, grpc.credentials.createInsecure()) as unknown as Record<string, Function>;
    closers.unshift(() => (kv as unknown as grpc.Client).close());
    const unary = (method: string, request: unknown): Promise<unknown> =>
      new Promise((resolve, reject) => kv[method].call(kv, request, (err: Error | null, res: unknown) => (err ? reject(err) : resolve(res))));
    ops.grpc = {
      put: (c, i) => unary('Put', { bucket: 'bench', key: keyOf(c, i), value }),
      get: (c, i) => unary('Get', { bucket: 'bench', key: keyOf(c, i) }),
    };

    const base = `http://127.0.0.1:${loom.ports.http}`;
    ops.http = {
      put: async (c, i) => (await fetch(`${base}/v1/kv/bench/${keyOf(c, i)}`, { method: 'PUT', body: value })).arrayBuffer(),
      get: async (c, i) => (await fetch(`${base}/v1/kv/bench/${keyOf(c, i)}`)).arrayBuffer(),
    };

    if (hasCommand('etcd')) {
      const etcd = await startEtcd(path.join(dir, 'etcd'));
      closers.push(() => etcd.stop());
      const client = new Etcd3({ hosts: etcd.endpoint });
      closers.unshift(() => client.close());
      ops.etcd = {
        put: async (c, i) => client.put(`bench/${keyOf(c, i)}`).value(value),
        get: (c, i) => client.get(`bench/${keyOf(c, i)}`).buffer(),
      };
    } else {
      process.stderr.write('etcd is not installed (apt-get install etcd-server): no anchor in this run\n');
    }

    const doors = (['etcd', 'nats', 'grpc', 'http'] as const).filter((d) => ops[d] !== undefined);
    for (let r = 0; r < repeat; r++) {
      for (const op of ['put', 'get'] as const) {
        // Every get must find its key, in loom and in etcd alike: the put lines cover only as many
        // keys per loop as that loop managed, and a get loop may run further (a gRPC NOT_FOUND
        // stopped the bench; a NATS or etcd miss counted as a get).
        if (op === 'get' && r === 0) {
          await fill((ops.nats as { put: Op }).put);
          if (ops.etcd) await fill(ops.etcd.put);
        }
        for (const door of doors) {
          const result = await drive((ops[door] as { put: Op; get: Op })[op]);
          const kept = (results[door] ??= { put: { opsPerSecond: 0, p99Ms: 0 }, get: { opsPerSecond: 0, p99Ms: 0 } });
          if (result.opsPerSecond > kept[op].opsPerSecond) kept[op] = result;
          process.stderr.write(`${door} ${op} ${fmt(result.opsPerSecond)}/s (repeat ${r + 1}/${repeat}, load ${loadAverage()})\n`);
        }
      }
    }
  } finally {
    for (const close of closers) await close();
  }
  remove();

  const anchor = results.etcd;
  for (const door of ['nats', 'grpc', 'http', 'etcd'] as const) {
    const r = results[door];
    if (!r) continue;
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
  const best = repeat > 1 ? `, best of ${repeat} alternating runs per line` : '';
  process.stdout.write(
    `## api (${machine()})\n\n${clients} concurrent clients, 128-byte values, ${durationMs} ms per line after ${warmupMs} ms of warm-up${best}, durable puts (fsync), one connection per door, loom and etcd alternating\n\n` +
      `${table(['door', 'put ops/s', 'put p99 ms', 'put vs etcd', 'get ops/s', 'get p99 ms', 'get vs etcd'], rows)}\n`,
  );
}

/** Puts every key once (unmeasured), 64 at a time. */
async function fill(put: Op): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      // keyOf(0, k) is key k.
      for (let k = next++; k < keys; k = next++) await put(0, k);
    }),
  );
}

function loadAverage(): string {
  return os.loadavg()[0].toFixed(1);
}
