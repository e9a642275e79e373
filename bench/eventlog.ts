// `npm run bench -- eventlog`: durable appends/s and latency of the LMDB log at 1, 16 and 256
// concurrent appenders with 200-byte entries, beside two ceilings measured in the same run:
// fdatasync/s on the data disk, and lmdb-js batched puts/s with no fsync at all. Also the process's
// CPU time per append, and the load average when the run ended (the machine may be shared).

import { closeSync, fdatasyncSync, openSync, writeSync } from 'node:fs';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { open } from 'lmdb';
import { LmdbLog } from '../src/eventlog';
import { benchDir, fmt, machine, percentile, table } from './support';

const entryBytes = 200;
const durationMs = Number(process.env.LOOM_BENCH_MS ?? 5000);

function fdatasyncCeiling(dir: string): number {
  const fd = openSync(path.join(dir, 'fsync-probe'), 'w');
  const block = Buffer.alloc(4096, 1);
  const deadline = Date.now() + Math.min(durationMs, 3000);
  let n = 0;
  while (Date.now() < deadline) {
    writeSync(fd, block, 0, block.length, 0);
    fdatasyncSync(fd);
    n++;
  }
  closeSync(fd);
  return n / (Math.min(durationMs, 3000) / 1000);
}

async function lmdbNoSyncCeiling(dir: string): Promise<number> {
  const env = open({ path: path.join(dir, 'nosync'), noSync: true, compression: false, encoding: 'binary', keyEncoding: 'binary' });
  const value = Buffer.alloc(entryBytes, 7);
  const started = Date.now();
  let n = 0;
  while (Date.now() - started < Math.min(durationMs, 3000)) {
    await env.transaction(() => {
      for (let i = 0; i < 1000; i++) {
        const key = Buffer.allocUnsafe(8);
        key.writeBigUInt64BE(BigInt(++n));
        env.putSync(key, value);
      }
    });
  }
  const rate = n / ((Date.now() - started) / 1000);
  await env.close();
  return rate;
}

async function durableAppends(dir: string, appenders: number): Promise<{ rate: number; p50: number; p99: number; cpuMicros: number }> {
  const log = LmdbLog.open({ path: path.join(dir, `log-${appenders}`) });
  const data = Buffer.alloc(entryBytes, 7);
  const latencies: number[] = [];
  const deadline = Date.now() + durationMs;
  let appended = 0;
  const started = process.hrtime.bigint();
  const cpuStarted = process.cpuUsage();
  const appender = async (): Promise<void> => {
    while (Date.now() < deadline) {
      const t0 = process.hrtime.bigint();
      const index = log.lastIndex() + 1;
      await log.append([{ index, term: 1, type: 'kv.put', data, ts: Date.now() }]);
      latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      appended++;
    }
  };
  await Promise.all(Array.from({ length: appenders }, appender));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuStarted);
  await log.close();
  latencies.sort((a, b) => a - b);
  // CPU of the whole process (every thread, lmdb-js's writer included) per append: on a shared
  // machine it moves less than appends/s does.
  const cpuMicros = (cpu.user + cpu.system) / appended;
  return { rate: appended / seconds, p50: percentile(latencies, 50), p99: percentile(latencies, 99), cpuMicros };
}

export async function run(): Promise<void> {
  const { dir, remove } = benchDir('eventlog');
  try {
    process.stderr.write(`eventlog bench in ${dir}, ${durationMs} ms per line\n`);
    const fsyncs = fdatasyncCeiling(dir);
    const nosync = await lmdbNoSyncCeiling(dir);
    const rows: Array<Array<string | number>> = [];
    for (const appenders of [1, 16, 256]) {
      const r = await durableAppends(dir, appenders);
      rows.push([appenders, fmt(r.rate), fmt(r.p50, 2), fmt(r.p99, 2), fmt(r.cpuMicros, 1), `${fmt((r.rate / nosync) * 100, 1)}%`]);
      process.stderr.write(`  ${appenders} appenders: ${fmt(r.rate)} appends/s\n`);
    }
    process.stdout.write(`## eventlog (${machine()}, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')})\n\n`);
    process.stdout.write(`ceilings: fdatasync ${fmt(fsyncs)}/s on the data disk; lmdb-js batched puts without fsync ${fmt(nosync)}/s\n\n`);
    process.stdout.write(`${table(['appenders', 'durable appends/s', 'p50 ms', 'p99 ms', 'CPU µs/append', 'of no-fsync ceiling'], rows)}\n`);
  } finally {
    remove();
  }
}
