// A snapshot is never held in memory whole (docs/decisions.md §20): a node takes one of views
// holding 256 MiB of objects, and another installs it from chunks gathered as Raft delivers them,
// while the process's anonymous memory (heap, buffers: not the mapped LMDB pages) grows by far
// less than the snapshot. Before, the snapshot was read, encoded and assembled in memory.

import { createHash, randomBytes } from 'node:crypto';
import { SingleNodeReplicator, openDatabase, type OpenDatabase, type SnapshotHandler } from '../../src/core';
import { FileSnapshotBytes } from '../../src/core/snapshots';
import { LmdbLog } from '../../src/eventlog';
import { silentLogger } from '../../src/util';
import { rssAnonBytes } from '../support/rss';
import { makeTempDir, removeDir } from '../support/tmp';

const objectBytes = 4 * 1024 * 1024;
const objects = 64;
const growthBoundBytes = 64 * 1024 * 1024;

class CapturingReplicator extends SingleNodeReplicator {
  handler: SnapshotHandler | undefined;
  useSnapshots(handler: SnapshotHandler): void {
    this.handler = handler;
  }
}

jest.setTimeout(120_000);

it('takes and installs a snapshot of 256 MiB of objects with anonymous memory growing by under 64 MiB', async () => {
  const dir = makeTempDir();
  const leaderLog = LmdbLog.open({ path: `${dir}/leader/log` });
  const followerLog = LmdbLog.open({ path: `${dir}/follower/log` });
  const opened: OpenDatabase[] = [];
  try {
    const leader = await openDatabase({ log: leaderLog, viewsDir: `${dir}/leader/views`, logger: silentLogger(), snapshotCatchUpEntries: 10, ttlScanIntervalMs: 60_000 });
    opened.push(leader);
    const digests: string[] = [];
    for (let i = 0; i < objects; i++) {
      const bytes = randomBytes(objectBytes);
      digests.push(createHash('sha256').update(bytes).digest('hex'));
      await leader.db.objects.put('photos', `p${i}.jpg`, bytes);
    }
    const replicator = new CapturingReplicator({ log: followerLog, now: Date.now });
    await replicator.start();
    const follower = await openDatabase({ log: followerLog, viewsDir: `${dir}/follower/views`, logger: silentLogger(), replicator, ttlScanIntervalMs: 60_000 });
    opened.push(follower);

    const startedBytes = rssAnonBytes(process.pid);
    let peakBytes = startedBytes;
    const sampler = setInterval(() => (peakBytes = Math.max(peakBytes, rssAnonBytes(process.pid))), 5);
    let snapshotBytes = 0;
    try {
      const meta = await leader.snapshot();
      const sent = new FileSnapshotBytes(`${dir}/leader/views-snapshots/snap-${String(meta.index).padStart(20, '0')}.bin`);
      snapshotBytes = sent.byteLength;
      // As Raft delivers it: 1 MiB chunks into the follower's assembly, a turn apart.
      const assembly = replicator.handler!.assemble!();
      const chunk = Buffer.allocUnsafe(1024 * 1024);
      for (let at = 0; at < sent.byteLength; at += chunk.length) {
        assembly.append(sent.readInto(chunk, at, Math.min(chunk.length, sent.byteLength - at)));
        await new Promise((resolve) => setImmediate(resolve));
      }
      sent.close();
      await replicator.handler!.install({ meta, data: assembly.finish() });
    } finally {
      clearInterval(sampler);
    }
    const growth = peakBytes - startedBytes;
    process.stdout.write(`snapshot of ${(snapshotBytes / 2 ** 20).toFixed(0)} MiB taken and installed: anonymous memory peaked ${(growth / 2 ** 20).toFixed(1)} MiB above the start\n`);
    expect(snapshotBytes).toBeGreaterThan(objects * objectBytes);
    expect(growth).toBeLessThan(growthBoundBytes);

    // The follower serves what the leader stored, byte for byte.
    for (const i of [0, objects - 1]) {
      const info = await follower.db.objects.stat('photos', `p${i}.jpg`);
      expect(info.sha256).toBe(digests[i]);
      const hash = createHash('sha256');
      for await (const piece of (await follower.db.objects.get('photos', `p${i}.jpg`)).stream) hash.update(piece as Buffer);
      expect(hash.digest('hex')).toBe(digests[i]);
    }
  } finally {
    for (const db of opened.reverse()) await db.close();
    await leaderLog.close();
    await followerLog.close();
    removeDir(dir);
  }
});
