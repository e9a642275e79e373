// `npm run bench -- buckets`: upload and download MB/s of 1 MiB and 100 MiB objects over gRPC and
// HTTP on loopback (full fsync), beside the disk's sequential write rate measured in the same run.

import { closeSync, fdatasyncSync, openSync, writeSync } from 'node:fs';
import * as http from 'node:http';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as grpc from '@grpc/grpc-js';
import { loadLoomProto } from '../src/api/grpc';
import { openNode } from '../src';
import { benchDir, fmt, machine, table } from './support';

const mib = 1024 * 1024;
const pieceBytes = mib;
/** Receive window of the second gRPC client (per stream and per connection). */
const clientWindowBytes = 8 * mib;

function diskWriteMBps(dir: string): number {
  const fd = openSync(path.join(dir, 'write-probe'), 'w');
  const block = Buffer.alloc(4 * mib, 1);
  const total = 512 * mib;
  const started = process.hrtime.bigint();
  for (let at = 0; at < total; at += block.length) writeSync(fd, block);
  fdatasyncSync(fd);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  closeSync(fd);
  return total / mib / seconds;
}

/** CPU time of the whole process (client and node, all threads) since `since`, per MiB moved. */
function cpuMsPerMiB(since: NodeJS.CpuUsage, bytes: number): number {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1000 / (bytes / mib);
}

function source(size: number, seed: number): Readable {
  const piece = Buffer.alloc(pieceBytes, seed & 0xff);
  return Readable.from(
    (function* pieces() {
      for (let at = 0, i = 0; at < size; at += pieceBytes, i++) {
        const out = Buffer.from(piece.subarray(0, Math.min(pieceBytes, size - at)));
        out.writeUInt32BE(i, 0);
        out.writeUInt32BE(seed, out.length >= 8 ? 4 : 0);
        yield out;
      }
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
    pipeline(source(size, seed), req).catch(reject);
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
      call.write({ header: { bucket: 'bench', name } });
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

export async function run(): Promise<void> {
  const work = benchDir('buckets');
  const node = await openNode({ data: path.join(work.dir, 'node'), doors: true });
  const loaded = grpc.loadPackageDefinition(loadLoomProto()) as unknown as { loom: { v1: Record<string, new (a: string, c: grpc.ChannelCredentials, o?: grpc.ChannelOptions) => grpc.Client> } };
  const client = new loaded.loom.v1.Buckets(`127.0.0.1:${node.ports.grpc}`, grpc.credentials.createInsecure()) as Client;
  // grpc-js receives with HTTP/2's 64 KiB stream window unless told otherwise, so a download waits
  // for a window update every 64 KiB; clients that stream large objects should open it wider
  // (grpc-go and grpc-java size theirs from the bandwidth-delay product). Measured apart.
  const windowed = new loaded.loom.v1.Buckets(`127.0.0.1:${node.ports.grpc}`, grpc.credentials.createInsecure(), {
    'grpc-node.flow_control_window': clientWindowBytes,
  }) as Client;
  const port = node.ports.http as number;
  try {
    const loadBefore = loadavg()[0];
    const disk = diskWriteMBps(work.dir);
    const rows: Array<Array<string | number>> = [];
    let seed = 1;
    for (const [size, count] of [
      [mib, 64],
      [100 * mib, 3],
    ]) {
      for (const door of size === mib ? (['http', 'grpc'] as const) : (['http', 'grpc', 'grpc+window'] as const)) {
        const rpc = door === 'grpc' ? client : windowed;
        const names: string[] = [];
        let cpu = process.cpuUsage();
        let started = process.hrtime.bigint();
        for (let i = 0; i < count; i++) {
          const name = `${door}-${size}-${i}`;
          names.push(name);
          if (door === 'http') await httpPut(port, name, size, seed++);
          else await grpcPut(rpc, name, size, seed++);
        }
        const up = (size * count) / mib / (Number(process.hrtime.bigint() - started) / 1e9);
        const upCpu = cpuMsPerMiB(cpu, size * count);
        cpu = process.cpuUsage();
        started = process.hrtime.bigint();
        for (const name of names) {
          const n = door === 'http' ? await httpGet(port, name) : await grpcGet(rpc, name);
          if (n !== size) throw new Error(`downloaded ${n} bytes of ${size}`);
        }
        const down = (size * count) / mib / (Number(process.hrtime.bigint() - started) / 1e9);
        const downCpu = cpuMsPerMiB(cpu, size * count);
        rows.push([`${size / mib} MiB × ${count}`, door, fmt(up, 1), `${fmt((100 * up) / disk, 0)}%`, fmt(upCpu, 1), fmt(down, 1), fmt(downCpu, 1)]);
      }
    }
    process.stdout.write(`buckets — ${machine()}, load average ${fmt(loadBefore, 2)} before, ${fmt(loadavg()[0], 2)} after\n`);
    process.stdout.write(`disk sequential write (512 MiB, 4 MiB writes, one fdatasync): ${fmt(disk, 1)} MiB/s\n\n`);
    process.stdout.write(`(grpc+window: a client with grpc-node.flow_control_window = ${clientWindowBytes / mib} MiB)\n`);
    process.stdout.write(`${table(['objects', 'door', 'upload MiB/s', 'upload / disk', 'up cpu ms/MiB', 'download MiB/s', 'down cpu ms/MiB'], rows)}\n`);
  } finally {
    client.close();
    windowed.close();
    await node.close();
    work.remove();
  }
}
