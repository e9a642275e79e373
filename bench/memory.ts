// `npm run bench -- memory [--node-flags "<V8 flags>"] [--mib N]`: the resident memory of a
// `loom serve` process around a large HTTP upload and download (docs/buckets.md, decisions §16).
// VmRSS (what ps and top show) and its anonymous part are sampled from /proc every 25 ms: at
// start, after a 64 MiB warm-up and the release that follows it, at each transfer's peak, and
// once the node has been quiet. `--node-flags` runs the node with other V8 flags than loom's.

import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { loomNodeFlags } from '../src/cli/node-flags';
import { quietMsBeforeRelease } from '../src/util/transfer-memory';
import { startLoom } from './processes';
import { benchDir, fmt, machine, table } from './support';

const pieceBytes = 1024 * 1024;
const warmUpMiB = 64;

interface Resident {
  rssMiB: number;
  anonMiB: number;
}

function resident(pid: number): Resident {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const mib = (field: string): number => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) / 1024;
  return { rssMiB: mib('VmRSS'), anonMiB: mib('RssAnon') };
}

/** `mib` MiB, each MiB different (no chunk repeats, so every chunk is stored). */
function source(mib: number): Readable {
  const piece = Buffer.alloc(pieceBytes, 7);
  return Readable.from(
    (function* generate() {
      for (let i = 0; i < mib; i++) {
        for (let at = 0; at < pieceBytes; at += 64 * 1024) piece.writeUInt32BE(i, at);
        yield Buffer.from(piece);
      }
    })(),
  );
}

async function upload(port: number, name: string, mib: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'PUT', path: `/v1/buckets/memory/objects/${name}` }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`upload answered ${res.statusCode}`))));
    });
    req.on('error', reject);
    pipeline(source(mib), req).catch(reject);
  });
}

async function download(port: number, name: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: `/v1/buckets/memory/objects/${name}` }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`download answered ${res.statusCode}`))));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

const quiet = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 4 * quietMsBeforeRelease));

/** Runs `transfer`, sampling the node's memory; returns its rate and peak. */
async function measured(pid: number, mib: number, transfer: () => Promise<void>): Promise<{ mibPerS: number; peak: Resident }> {
  const peak = resident(pid);
  const sampler = setInterval(() => {
    const now = resident(pid);
    peak.rssMiB = Math.max(peak.rssMiB, now.rssMiB);
    peak.anonMiB = Math.max(peak.anonMiB, now.anonMiB);
  }, 25);
  const started = process.hrtime.bigint();
  try {
    await transfer();
  } finally {
    clearInterval(sampler);
  }
  return { mibPerS: mib / (Number(process.hrtime.bigint() - started) / 1e9), peak };
}

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { 'node-flags': { type: 'string' }, mib: { type: 'string' } } });
  const nodeFlags = values['node-flags'] === undefined ? loomNodeFlags : values['node-flags'].split(' ').filter((f) => f !== '');
  const mib = Number(values.mib ?? 1024);
  const work = benchDir('memory');
  const node = await startLoom(path.join(work.dir, 'node'), [], nodeFlags);
  const pid = node.child.pid as number;
  try {
    const port = node.ports.http;
    const start = resident(pid);
    await upload(port, 'warm-up', warmUpMiB);
    await download(port, 'warm-up');
    await quiet();
    const clean = resident(pid);
    const up = await measured(pid, mib, () => upload(port, 'object', mib));
    await quiet();
    const afterUp = resident(pid);
    const down = await measured(pid, mib, () => download(port, 'object'));
    await quiet();
    const end = resident(pid);
    process.stdout.write(`memory — ${machine()}\nnode: \`loom serve\` run with ${nodeFlags.length > 0 ? nodeFlags.join(' ') : 'no V8 flags'}; ${fmt(mib)} MiB over HTTP\n\n`);
    const above = (r: Resident, base: Resident): string => `+${fmt(r.rssMiB - base.rssMiB)} (anon +${fmt(r.anonMiB - base.anonMiB)})`;
    process.stdout.write(
      `${table(
        ['phase', 'MiB/s', 'VmRSS MiB', 'peak above the clean level', 'once quiet, above the start'],
        [
          ['start', '', fmt(start.rssMiB), '', ''],
          [`after a ${warmUpMiB} MiB warm-up, quiet`, '', fmt(clean.rssMiB), '', above(clean, start)],
          ['upload', fmt(up.mibPerS), fmt(up.peak.rssMiB), above(up.peak, clean), above(afterUp, start)],
          ['download', fmt(down.mibPerS), fmt(down.peak.rssMiB), above(down.peak, clean), above(end, start)],
        ],
      )}\n`,
    );
  } finally {
    await node.stop();
    work.remove();
  }
}
