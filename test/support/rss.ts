// The resident memory of a process around a transfer, for the 1 GiB memory tests of the doors:
// VmRSS (what ps and top show: anonymous memory and mapped file pages alike) sampled from /proc.

import { readFileSync } from 'node:fs';
import { quietMsBeforeRelease } from '../../src/util/transfer-memory';

export interface RssAround {
  /** VmRSS before the transfer. */
  startedBytes: number;
  /** The highest VmRSS sampled while it ran, and until `uploaded` was called. */
  peakBytes: number;
  uploadPeakBytes: number;
  /** VmRSS once nothing has moved for a while (the node gives back what the transfer used). */
  quietBytes: number;
}

export function rssBytes(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) * 1024;
}

/** RssAnon: the anonymous part of VmRSS (heap, buffers), without the mapped LMDB pages. */
export function rssAnonBytes(pid: number): number {
  return Number(/RssAnon:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) * 1024;
}

/** Runs `transfer`, sampling process `pid`'s VmRSS every 50 ms; `uploaded` marks the end of its upload. */
export async function rssAround(pid: number, transfer: (uploaded: () => void) => Promise<void>): Promise<RssAround> {
  const startedBytes = rssBytes(pid);
  let peakBytes = startedBytes;
  let uploadPeakBytes = startedBytes;
  const sampler = setInterval(() => (peakBytes = Math.max(peakBytes, rssBytes(pid))), 50);
  try {
    await transfer(() => (uploadPeakBytes = peakBytes));
  } finally {
    clearInterval(sampler);
  }
  await new Promise((resolve) => setTimeout(resolve, 4 * quietMsBeforeRelease));
  return { startedBytes, peakBytes, uploadPeakBytes, quietBytes: rssBytes(pid) };
}

/** One line for the test's output: the start and each level above it, in MiB. */
export function describeRss(what: string, rss: RssAround): string {
  const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(1);
  const above = (bytes: number): string => mib(bytes - rss.startedBytes);
  return `loom serve, ${what}: VmRSS ${mib(rss.startedBytes)} MiB at start, peak ${above(rss.peakBytes)} MiB above it (upload ${above(rss.uploadPeakBytes)}), ${above(rss.quietBytes)} MiB above it once quiet\n`;
}
