// `npm run bench -- snapshots [MiB]`: how fast a node takes a snapshot of views holding MiB (default
// 512) of objects, and how fast another node installs it from the file its chunks were gathered in
// (checked, written out, swapped in), beside the disk's sequential write rate in the same run, with
// the anonymous memory (heap and buffers, not mapped LMDB pages) each step adds. Both databases run
// in this process with full fsync, as `loom serve` would run them.

import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { SingleNodeReplicator, openDatabase, type OpenDatabase, type SnapshotHandler } from '../src/core';
import { FileSnapshotBytes } from '../src/core/snapshots';
import { LmdbLog } from '../src/eventlog';
import { silentLogger } from '../src/util';
import { benchDir, diskWriteMBps, fmt, machine, table } from './support';

const mib = 1024 * 1024;
const objectBytes = 4 * mib;
/** Bytes of each chunk handed to the follower's assembly: Raft's snapshotChunkBytesMax. */
const chunkBytes = mib;

class CapturingReplicator extends SingleNodeReplicator {
  handler: SnapshotHandler | undefined;
  useSnapshots(handler: SnapshotHandler): void {
    this.handler = handler;
  }
}

function rssAnonBytes(): number {
  return Number(/RssAnon:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]) * 1024;
}

/** Runs `step`, timing it and sampling this process's anonymous memory every 5 ms. */
async function measured(step: () => Promise<void>): Promise<{ seconds: number; growthMiB: number }> {
  const started = rssAnonBytes();
  let peak = started;
  const sampler = setInterval(() => (peak = Math.max(peak, rssAnonBytes())), 5);
  const t0 = process.hrtime.bigint();
  try {
    await step();
  } finally {
    clearInterval(sampler);
  }
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, growthMiB: (peak - started) / mib };
}

export async function run(args: string[]): Promise<void> {
  const totalMiB = Number(args[0] ?? 512);
  if (!Number.isSafeInteger(totalMiB) || totalMiB < 4) throw new Error(`size must be a whole number of MiB, at least 4, got ${args[0]}`);
  const { dir, remove } = benchDir('snapshots');
  const opened: OpenDatabase[] = [];
  const logs: LmdbLog[] = [];
  try {
    const { median: disk, probes } = diskWriteMBps(dir);
    const leaderLog = LmdbLog.open({ path: path.join(dir, 'leader/log') });
    const followerLog = LmdbLog.open({ path: path.join(dir, 'follower/log') });
    logs.push(leaderLog, followerLog);
    const leader = await openDatabase({ log: leaderLog, viewsDir: path.join(dir, 'leader/views'), logger: silentLogger(), snapshotCatchUpEntries: 10 });
    opened.push(leader);
    for (let i = 0; i < totalMiB * mib; i += objectBytes) await leader.db.objects.put('photos', `p${i / objectBytes}.jpg`, randomBytes(objectBytes));
    const replicator = new CapturingReplicator({ log: followerLog, now: Date.now });
    await replicator.start();
    const follower = await openDatabase({ log: followerLog, viewsDir: path.join(dir, 'follower/views'), logger: silentLogger(), replicator });
    opened.push(follower);

    let snapshotFile = '';
    let meta: Awaited<ReturnType<OpenDatabase['snapshot']>> | undefined;
    // Copies the views (every chunk's bytes written in), writes the snapshot file, and moves the
    // chunks below the compaction point from the log into the view before compacting.
    const take = await measured(async () => {
      meta = await leader.snapshot();
      snapshotFile = path.join(dir, 'leader/views-snapshots', `snap-${String(meta.index).padStart(20, '0')}.bin`);
    });
    const snapshotMiB = statSync(snapshotFile).size / mib;
    // As Raft delivers it: chunk by chunk into a file of the follower's snapshot store.
    const handler = replicator.handler as SnapshotHandler;
    const assembly = handler.assemble?.();
    if (!assembly) throw new Error('the follower gathers snapshots in memory');
    const sent = new FileSnapshotBytes(snapshotFile);
    const gather = await measured(async () => {
      const buffer = Buffer.allocUnsafe(chunkBytes);
      for (let at = 0; at < sent.byteLength; at += chunkBytes) {
        assembly.append(sent.readInto(buffer, at, Math.min(chunkBytes, sent.byteLength - at)));
        if ((at / chunkBytes) % 64 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
    });
    sent.close();
    const received = assembly.finish();
    const install = await measured(() => handler.install({ meta: meta as NonNullable<typeof meta>, data: received }));
    const stat = await follower.db.objects.stat('photos', 'p0.jpg');
    if (stat.size !== objectBytes) throw new Error('the follower does not hold what the leader stored');

    const row = (step: string, m: { seconds: number; growthMiB: number }): Array<string | number> => [
      step,
      fmt(snapshotMiB / m.seconds, 1),
      `${fmt((100 * snapshotMiB) / m.seconds / disk)}%`,
      fmt(m.seconds, 2),
      fmt(m.growthMiB, 1),
    ];
    process.stdout.write(`snapshots — ${machine()}\n`);
    process.stdout.write(`disk sequential write (512 MiB, 4 MiB writes, one fdatasync; median of ${probes.map((p) => fmt(p, 0)).join(', ')}): ${fmt(disk, 1)} MiB/s\n`);
    process.stdout.write(`views holding ${fmt(totalMiB)} MiB of objects (${fmt(totalMiB * mib / objectBytes)} × 4 MiB); snapshot file ${fmt(snapshotMiB, 1)} MiB\n\n`);
    process.stdout.write(
      `${table(
        ['step', 'MiB/s of snapshot', 'of disk', 'seconds', 'anonymous memory added, MiB'],
        [row('take (copy views, write the file, keep chunks before compacting)', take), row('gather 1 MiB chunks into a file (as Raft delivers them)', gather), row('install (check, write the views out, swap them in)', install)],
      )}\n`,
    );
  } finally {
    for (const db of opened.reverse()) await db.close();
    for (const log of logs) await log.close();
    remove();
  }
}
