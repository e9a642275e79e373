// Shared helpers for benchmarks: latency percentiles, temp dirs, machine description, tables.

import { execSync } from 'node:child_process';
import { closeSync, fdatasyncSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import * as path from 'node:path';

export function percentile(sortedMs: number[], p: number): number {
  if (sortedMs.length === 0) return 0;
  const i = Math.min(sortedMs.length - 1, Math.floor((p / 100) * sortedMs.length));
  return sortedMs[i];
}

export function benchDir(name: string): { dir: string; remove(): void } {
  // Benchmarks write to the project's disk (not tmpfs) so fsync costs are real.
  const base = path.resolve(process.env.LOOM_BENCH_DIR ?? path.join(__dirname, '../../../.bench-tmp'));
  execSync(`mkdir -p ${JSON.stringify(base)}`);
  const dir = mkdtempSync(path.join(base, `${name}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export function machine(): string {
  const cpu = cpus()[0]?.model ?? 'unknown cpu';
  // The clients run in this process, on the cores of the servers under test; `npm run bench` starts
  // it with loom's V8 flags, so its collector's helper threads do not take those cores either.
  const flags = process.execArgv.length > 0 ? `, clients with ${process.execArgv.join(' ')}` : '';
  return `${cpus().length} cores, ${cpu}, node ${process.version}${flags}, ${new Date().toISOString().slice(0, 10)}`;
}

export function table(headers: string[], rows: Array<Array<string | number>>): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r: string[]): string => `| ${r.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  return [line(cells[0]), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...cells.slice(1).map(line)].join('\n');
}

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** Probes of the disk's write rate a benchmark takes; it reports their median. */
export const diskProbes = 3;

/**
 * The disk's sequential write rate in MiB/s: 512 MiB in 4 MiB writes, then one fdatasync, taken
 * `diskProbes` times. A single probe read anything from 355 to 2,500 MiB/s on one machine within
 * minutes (a virtual disk with a write-back cache), so the median stands for the disk and every
 * probe is shown beside it.
 */
export function diskWriteMBps(dir: string): { median: number; probes: number[] } {
  const mib = 1024 * 1024;
  const block = Buffer.alloc(4 * mib, 1);
  const total = 512 * mib;
  const probes: number[] = [];
  for (let i = 0; i < diskProbes; i++) {
    const file = path.join(dir, 'write-probe');
    const fd = openSync(file, 'w');
    const started = process.hrtime.bigint();
    for (let at = 0; at < total; at += block.length) writeSync(fd, block);
    fdatasyncSync(fd);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    closeSync(fd);
    rmSync(file);
    probes.push(total / mib / seconds);
  }
  const sorted = [...probes].sort((a, b) => a - b);
  return { median: sorted[Math.floor(sorted.length / 2)], probes };
}
