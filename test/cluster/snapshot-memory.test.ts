// Multi-process: a follower kept down while 192 MiB of objects are written catches up by a
// snapshot of about that size, and neither the leader taking and sending it nor the follower
// receiving and installing it holds it in memory (docs/decisions.md §20). Memory is the process's
// anonymous memory (RssAnon: heap and buffers, not the mapped LMDB pages), sampled from /proc.
// Then a follower SIGKILLed while it receives such a snapshot, and while it writes the views out
// of it, comes back whole.

import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { rssAnonBytes } from '../support/rss';
import { TestCluster, sleep } from './cluster';

jest.setTimeout(240_000);

const objectBytes = 4 * 1024 * 1024;
const objects = 48;
/** Anonymous memory a node may add while it takes, sends or installs the snapshot. */
const growthBoundBytes = 128 * 1024 * 1024;

/** Samples the anonymous memory of `pid` every 20 ms until stopped; stop() gives the peak above the start. */
function sampleAnon(pid: number): { stop: () => number } {
  const started = rssAnonBytes(pid);
  let peak = started;
  const sampler = setInterval(() => {
    try {
      peak = Math.max(peak, rssAnonBytes(pid));
    } catch {
      // The process ended; the test fails on its own.
    }
  }, 20);
  return {
    stop: () => {
      clearInterval(sampler);
      return peak - started;
    },
  };
}

describe('a snapshot of 192 MiB of objects', () => {
  let cluster: TestCluster;

  beforeAll(async () => {
    // One snapshot once the objects are in (each object is 17 entries), none while they go in.
    cluster = await TestCluster.start({ size: 3, extraArgs: ['--snapshot-entries', '900', '--snapshot-catch-up-entries', '10'] });
  });

  afterAll(async () => {
    await cluster?.close();
  });

  /** Writes the objects to the leader (a follower down), then a few more writes until the leader compacts past them. */
  const writeWhileDown = async (leader: number, prefix: string, beforeCompaction: () => void = () => undefined): Promise<string[]> => {
    const http = `http://127.0.0.1:${cluster.node(leader).ports.http}`;
    const digests: string[] = [];
    for (let i = 0; i < objects; i++) {
      const bytes = randomBytes(objectBytes);
      digests.push(createHash('sha256').update(bytes).digest('hex'));
      const put = await fetch(`${http}/v1/buckets/photos/objects/${prefix}${i}.jpg`, { method: 'PUT', body: bytes });
      expect(put.status).toBe(200);
    }
    beforeCompaction();
    // A few writes more reach the snapshot interval: the leader snapshots and compacts.
    const compactedBefore = await cluster.metric(leader, 'loom_log_first_index');
    let i = 0;
    const deadline = Date.now() + 120_000;
    while ((await cluster.metric(leader, 'loom_log_first_index')) <= compactedBefore) {
      if (Date.now() > deadline) throw new Error('the leader never compacted its log');
      await fetch(`${http}/v1/kv/k/${prefix}${i++}`, { method: 'PUT', body: 'v' });
      await sleep(20);
    }
    return digests;
  };

  const sha256Of = async (id: number, name: string): Promise<string> => {
    const got = Buffer.from(await (await fetch(`http://127.0.0.1:${cluster.node(id).ports.http}/v1/buckets/photos/objects/${name}`)).arrayBuffer());
    return createHash('sha256').update(got).digest('hex');
  };

  it('is taken, sent and installed with each node adding far less memory than its size', async () => {
    const leader = await cluster.waitLeader();
    const follower = [1, 2, 3].find((id) => id !== leader)!;
    await cluster.kill(follower, 'SIGKILL');
    let leaderMemory: { stop: () => number } | undefined;
    const digests = await writeWhileDown(leader, 'p', () => (leaderMemory = sampleAnon(cluster.node(leader).serve!.child.pid!)));

    await cluster.startNode(follower);
    const followerMemory = sampleAnon(cluster.node(follower).serve!.child.pid!);
    await cluster.waitConverged((await cluster.status(leader))!.commit, 180_000);
    const leaderGrowth = leaderMemory!.stop();
    const followerGrowth = followerMemory.stop();
    process.stdout.write(
      `snapshot of ${objects * 4} MiB of objects: leader anonymous memory +${(leaderGrowth / 2 ** 20).toFixed(1)} MiB taking and sending it, follower +${(followerGrowth / 2 ** 20).toFixed(1)} MiB installing it\n`,
    );
    expect(leaderGrowth).toBeLessThan(growthBoundBytes);
    expect(followerGrowth).toBeLessThan(growthBoundBytes);

    // The follower came back by the snapshot, and serves the objects byte for byte.
    expect(await cluster.metric(follower, 'loom_log_first_index')).toBeGreaterThan(1);
    for (const i of [0, objects - 1]) expect(await sha256Of(follower, `p${i}.jpg`)).toBe(digests[i]);
  });

  it('comes back whole after the follower is SIGKILLed while it receives it and while it writes the views out', async () => {
    const leader = await cluster.waitLeader();
    const follower = [1, 2, 3].find((id) => id !== leader)!;
    await cluster.kill(follower, 'SIGKILL');
    const digests = await writeWhileDown(leader, 'q');
    const dir = cluster.node(follower).dir;
    const snapshots = path.join(dir, 'snapshots');
    const receiving = (): boolean => existsSync(snapshots) && readdirSync(snapshots).some((n) => n.startsWith('receiving-'));
    const writingViews = (): boolean => existsSync(path.join(dir, 'views.incoming'));
    /** Starts the follower and SIGKILLs it once `stage` shows on disk; false if it caught up first. */
    const killDuring = async (stage: () => boolean): Promise<boolean> => {
      await cluster.startNode(follower);
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline) {
        if (stage()) {
          await cluster.kill(follower, 'SIGKILL');
          return true;
        }
        await sleep(2);
      }
      return false;
    };
    expect(await killDuring(receiving)).toBe(true);
    const caughtWritingViews = await killDuring(writingViews);
    if (!caughtWritingViews) await cluster.kill(follower, 'SIGKILL');
    await cluster.startNode(follower);
    await cluster.waitConverged((await cluster.status(leader))!.commit, 180_000);
    for (const i of [0, objects - 1]) expect(await sha256Of(follower, `q${i}.jpg`)).toBe(digests[i]);
    expect(await sha256Of(follower, 'p0.jpg')).toBe(await sha256Of(leader, 'p0.jpg'));
    // Nothing half-written is left: no received file, no views written out but not swapped in.
    expect(readdirSync(snapshots).filter((n) => !/^snap-\d{20}\.bin$/.test(n))).toEqual([]);
    expect(existsSync(path.join(dir, 'views.incoming')) || existsSync(path.join(dir, 'views.old'))).toBe(false);
    process.stdout.write(`snapshot install interrupted by SIGKILL while receiving, and ${caughtWritingViews ? 'while writing the views out' : '(caught up before the views were written out)'}\n`);
  });
});
