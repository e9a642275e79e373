// `npm run bench -- buckets`: upload and download MB/s of 1 MiB and 100 MiB objects over gRPC and
// HTTP on loopback (full fsync), beside the disk's sequential write rate measured in the same run.
// The node is a `loom serve` process of its own, as a user runs it; the clients run in this one.

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as grpc from '@grpc/grpc-js';
import { loadLoomProto } from '../src/api/grpc';
import { startLoom } from './processes';
import { benchDir, diskWriteMBps, fmt, machine, table } from './support';

const mib = 1024 * 1024;
const pieceBytes = mib;
/** 1 MiB objects each door uploads and downloads before the measured lines. */
const warmUpObjects = 64;
/** Seeds of the warm-up objects, far from the measured ones (1, 2, ...). */
const warmUpSeed = 1_000_000;
/** Receive window of the second gRPC client (per stream and per connection). */
const clientWindowBytes = 8 * mib;

/** CPU milliseconds used so far by process `pid` (all its threads), from /proc. */
function cpuMsOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  // utime and stime, fields 14 and 15 of stat(5), in clock ticks of 10 ms.
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** CPU per MiB moved, of the node (all its threads) and of this client process, since `since`. */
interface CpuMark {
  node: number;
  client: NodeJS.CpuUsage;
}

function cpuMark(pid: number): CpuMark {
  return { node: cpuMsOf(pid), client: process.cpuUsage() };
}

function cpuMsPerMiB(pid: number, since: CpuMark, bytes: number): { node: number; client: number } {
  const client = process.cpuUsage(since.client);
  return { node: (cpuMsOf(pid) - since.node) / (bytes / mib), client: (client.user + client.system) / 1000 / (bytes / mib) };
}

/** Runs `task(i)` for i in [0, count), `parallel` at a time. */
async function inParallel(count: number, parallel: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      for (let i = next++; i < count; i = next++) await task(i);
    }),
  );
}

/** Random bytes the pieces are cut from (incompressible, as photos and archives are). */
const randomPiece = randomBytes(pieceBytes);
/** Bytes between the stamps that make every 64 KiB of every piece of every object distinct. */
const stampEveryBytes = 64 * 1024;

/**
 * Piece `i` of object `seed`: `size` bytes, none of whose chunks (≥ 64 KiB) equals another, so no
 * upload is spared a chunk write by the chunk store's deduplication.
 */
function pieceOf(size: number, seed: number, i: number): Buffer {
  const out = Buffer.from(randomPiece.subarray(0, size));
  for (let at = 0; at + 8 <= size; at += stampEveryBytes) {
    out.writeUInt32BE(seed, at);
    out.writeUInt32BE(i * (pieceBytes / stampEveryBytes) + at / stampEveryBytes, at + 4);
  }
  return out;
}

function source(size: number, seed: number): Readable {
  return Readable.from(
    (function* pieces() {
      for (let at = 0, i = 0; at < size; at += pieceBytes, i++) yield pieceOf(Math.min(pieceBytes, size - at), seed, i);
    })(),
  );
}

function httpPut(port: number, name: string, size: number, seed: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'PUT', path: `/v1/buckets/bench/objects/${name}` }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`PUT ${res.statusCode}`))));
    });
    req.on('error', reject);
    // An object of one piece goes in one write with its length, as a client sends a file it holds
    // in memory; larger ones stream (chunked) from the generator.
    if (size <= pieceBytes) req.end(pieceOf(size, seed, 0));
    else pipeline(source(size, seed), req).catch(reject);
  });
}

function httpGet(port: number, name: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: `/v1/buckets/bench/objects/${name}` }, (res) => {
      let n = 0;
      res.on('data', (d: Buffer) => (n += d.length));
      res.on('end', () => resolve(n));
      res.on('error', reject);
    });
  });
}

type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

function grpcPut(client: Client, name: string, size: number, seed: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const call = client.Put((err: Error | null) => (err ? reject(err) : resolve())) as grpc.ClientWritableStream<unknown>;
    void (async () => {
      if (size <= pieceBytes) {
        // One piece: in the message with the header, as for HTTP above.
        call.end({ header: { bucket: 'bench', name, size }, data: pieceOf(size, seed, 0) });
        return;
      }
      // The size, as a client uploading a file knows it: the node then commits without waiting
      // to rule out a cancel (docs/buckets.md).
      call.write({ header: { bucket: 'bench', name, size } });
      for await (const data of source(size, seed)) if (!call.write({ data })) await new Promise((r) => call.once('drain', r));
      call.end();
    })();
  });
}

async function grpcGet(client: Client, name: string): Promise<number> {
  let n = 0;
  for await (const m of client.Get({ bucket: 'bench', name }) as grpc.ClientReadableStream<{ data: Buffer }>) n += m.data.length;
  return n;
}

/** Objects of each size, how many, and how many move at once (1: one after another). */
const lines: Array<{ size: number; count: number; parallel: number; doors: ReadonlyArray<'http' | 'grpc' | 'grpc+window'> }> = [
  { size: mib, count: 64, parallel: 1, doors: ['http', 'grpc', 'grpc+window'] },
  { size: mib, count: 64, parallel: 8, doors: ['http', 'grpc', 'grpc+window'] },
  { size: 100 * mib, count: 3, parallel: 1, doors: ['http', 'grpc', 'grpc+window'] },
];

export async function run(): Promise<void> {
  const work = benchDir('buckets');
  const node = await startLoom(path.join(work.dir, 'node'));
  const pid = node.child.pid as number;
  const loaded = grpc.loadPackageDefinition(loadLoomProto()) as unknown as { loom: { v1: Record<string, new (a: string, c: grpc.ChannelCredentials, o?: grpc.ChannelOptions) => grpc.Client> } };
  const client = new loaded.loom.v1.Buckets(`127.0.0.1:${node.ports.grpc}`, grpc.credentials.createInsecure()) as Client;
  // grpc-js receives with HTTP/2's 64 KiB stream window unless told otherwise, so a download waits
  // for a window update every 64 KiB; clients that stream large objects should open it wider
  // (grpc-go and grpc-java size theirs from the bandwidth-delay product). Measured apart.
  const windowed = new loaded.loom.v1.Buckets(`127.0.0.1:${node.ports.grpc}`, grpc.credentials.createInsecure(), {
    'grpc-node.flow_control_window': clientWindowBytes,
  }) as Client;
  const port = node.ports.http;
  try {
    // Unmeasured: the node's and the clients' hot paths compile in the first few hundred uploads and
    // downloads, which otherwise fell on the first measured lines (1 MiB, one at a time) alone.
    // Seeds of their own: a measured object with a warm-up object's content would store no chunk.
    for (let i = 0; i < warmUpObjects; i++) {
      await httpPut(port, `warm-${i}`, mib, warmUpSeed + 2 * i);
      await grpcPut(client, `warm-${i}`, mib, warmUpSeed + 2 * i + 1);
      await httpGet(port, `warm-${i}`);
      await grpcGet(client, `warm-${i}`);
      await grpcGet(windowed, `warm-${i}`);
    }
    const loadBefore = loadavg()[0];
    const { median: disk, probes } = diskWriteMBps(work.dir);
    const rows: Array<Array<string | number>> = [];
    let seed = 1;
    for (const { size, count, parallel, doors } of lines) {
      for (const door of doors) {
        const rpc = door === 'grpc' ? client : windowed;
        const names = Array.from({ length: count }, (_, i) => `${door}-${size}-${parallel}-${i}`);
        let cpu = cpuMark(pid);
        let started = process.hrtime.bigint();
        await inParallel(count, parallel, (i) => (door === 'http' ? httpPut(port, names[i], size, seed++) : grpcPut(rpc, names[i], size, seed++)));
        const up = (size * count) / mib / (Number(process.hrtime.bigint() - started) / 1e9);
        const upCpu = cpuMsPerMiB(pid, cpu, size * count);
        cpu = cpuMark(pid);
        started = process.hrtime.bigint();
        await inParallel(count, parallel, async (i) => {
          const n = door === 'http' ? await httpGet(port, names[i]) : await grpcGet(rpc, names[i]);
          if (n !== size) throw new Error(`downloaded ${n} bytes of ${size}`);
        });
        const down = (size * count) / mib / (Number(process.hrtime.bigint() - started) / 1e9);
        const downCpu = cpuMsPerMiB(pid, cpu, size * count);
        rows.push([
          `${size / mib} MiB × ${count}, ${parallel === 1 ? 'one at a time' : `${parallel} at a time`}`,
          door,
          fmt(up, 1),
          `${fmt((100 * up) / disk, 0)}%`,
          `${fmt(upCpu.node, 1)} / ${fmt(upCpu.client, 1)}`,
          fmt(down, 1),
          `${fmt(downCpu.node, 1)} / ${fmt(downCpu.client, 1)}`,
        ]);
      }
    }
    process.stdout.write(`buckets — ${machine()}, load average ${fmt(loadBefore, 2)} before, ${fmt(loadavg()[0], 2)} after\n`);
    process.stdout.write(`disk sequential write (512 MiB, 4 MiB writes, one fdatasync; median of ${probes.map((p) => fmt(p, 0)).join(', ')}): ${fmt(disk, 1)} MiB/s\n`);
    process.stdout.write(`targets (issue #6): upload ≥ 40% of the disk, download ≥ 300 MB/s (${fmt(300e6 / mib, 1)} MiB/s)\n\n`);
    process.stdout.write(`node: \`loom serve\` in its own process; cpu ms/MiB: node (all threads) / clients (this process)\n`);
    process.stdout.write(`(grpc+window: a client with grpc-node.flow_control_window = ${clientWindowBytes / mib} MiB)\n`);
    process.stdout.write(`${table(['objects', 'door', 'upload MiB/s', 'upload / disk', 'up cpu ms/MiB', 'download MiB/s', 'down cpu ms/MiB'], rows)}\n`);
  } finally {
    client.close();
    windowed.close();
    await node.stop();
    work.remove();
  }
}
