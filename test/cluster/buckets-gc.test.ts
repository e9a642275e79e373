// Buckets chunk collection while a follower is down: objects that share chunks (across objects and
// within one) are deleted and overwritten, and their orphaned chunks collected (1 s orphan age),
// while one follower is away long enough to need a snapshot and later another just long enough to
// catch up from the log; content whose chunks were collected is then uploaded again. After each
// catch-up and after rolling SIGKILL restarts of every node, the replicas must hold the same chunk
// bookkeeping and objects table, list exactly the live objects, and serve each byte-exact.

import { randomBytes } from 'node:crypto';
import { httpRequest } from '../support/http';
import { TestCluster, sleep } from './cluster';
import { chunkTableQuery, deleteObject, distinctViews, listNames, objectProblems, putObject, sqlRows, waitCaughtUp } from './buckets-support';

jest.setTimeout(120_000);

const K = 256 * 1024;

describe('Buckets chunk collection with a follower down', () => {
  let cluster: TestCluster;

  beforeAll(async () => {
    cluster = await TestCluster.start({
      size: 3,
      extraArgs: ['--heartbeat-ms', '70', '--election-timeout-ms', '700', '--orphan-chunk-age-ms', '1000', '--chunk-gc-interval-ms', '200', '--snapshot-entries', '25', '--snapshot-catch-up-entries', '2'],
    });
  });

  afterAll(async () => {
    await cluster?.close();
  });

  it('leaves every replica with the same chunks and every live object readable, after snapshot and log catch-up and rolling restarts', async () => {
    let leader = await cluster.waitLeader();
    const port = (id: number): number => cluster.node(id).ports.http;
    // Ten chunk-sized contents; objects are made of them, so they share chunks.
    const B = Array.from({ length: 10 }, () => randomBytes(K));
    const cat = (...ix: number[]): Buffer => Buffer.concat(ix.map((i) => B[i]));
    const expected = new Map<string, Buffer | null>();
    const put = async (name: string, data: Buffer): Promise<void> => {
      const r = await putObject(port(leader), 'gc', name, data);
      expect([name, r.status]).toEqual([name, 200]);
      expected.set(name, data);
    };
    const del = async (name: string): Promise<void> => {
      const r = await deleteObject(port(leader), 'gc', name);
      expect([name, r.status]).toEqual([name, 200]);
      expected.set(name, null);
    };
    const waitNoOrphans = async (id: number, ms = 15_000): Promise<void> => {
      const deadline = Date.now() + ms;
      let last: unknown;
      while (Date.now() < deadline) {
        last = await sqlRows(port(id), 'SELECT count(*) FROM _loom_chunks WHERE refs = 0');
        if (JSON.stringify(last) === '[[0]]') return;
        await sleep(200);
      }
      throw new Error(`orphans remain on node${id}: ${JSON.stringify(last)}`);
    };
    const problems: string[] = [];
    const verifyAll = async (label: string): Promise<void> => {
      await waitCaughtUp(cluster, leader, 60_000);
      problems.push(...(await objectProblems(cluster, 'gc', expected, `${label}: `)));
      const live = [...expected].filter(([, d]) => d !== null).map(([k]) => k).sort();
      for (const n of cluster.live()) {
        const listed = await listNames(port(n.id), 'gc');
        if (JSON.stringify(listed) !== JSON.stringify(live)) problems.push(`${label}: node${n.id} list ${JSON.stringify(listed)}`);
      }
      if ((await distinctViews(cluster, (p) => sqlRows(p, chunkTableQuery))) !== 1) problems.push(`${label}: _loom_chunks differ`);
      if ((await distinctViews(cluster, (p) => sqlRows(p, 'SELECT bucket, name, rev, sha256 FROM objects ORDER BY bucket, name'))) !== 1) problems.push(`${label}: objects differ`);
    };

    await put('P', cat(0, 1, 2));
    await put('Q', cat(0, 1, 3));
    await put('R', cat(4, 5));
    await put('D', cat(8, 8, 8)); // one chunk three times in one object
    await verifyAll('initial');

    // Phase 1: follower F down; deletes, overwrites, collection, re-upload of collected content, snapshots.
    const F = cluster.live().map((n) => n.id).find((id) => id !== leader)!;
    await cluster.kill(F, 'SIGKILL');
    await del('P'); // B2 orphan
    await put('R', cat(6, 4)); // B5 orphan
    await put('S', cat(1, 7)); // B1 shared with Q (dedup skip)
    await del('Q'); // B0, B3 orphans; B1 still referenced by S
    await put('D', cat(8, 9)); // B8 refs 3 -> 1
    await sleep(1500);
    await waitNoOrphans(leader);
    await put('P2', cat(2, 0)); // content whose chunks were collected: stored again
    await put('Q2', cat(3));
    for (let i = 0; i < 60; i++) await httpRequest(port(leader), 'PUT', `/v1/kv/k/x${i}`, { body: 'v' });
    await sleep(500);
    await cluster.startNode(F);
    await verifyAll('after snapshot catch-up');

    // Phase 2: another follower G down briefly (log catch-up): delete and collect a shared chunk's last user.
    const G = cluster.live().map((n) => n.id).find((id) => id !== leader && id !== F)!;
    await cluster.kill(G, 'SIGKILL');
    await del('S'); // B1, B7 orphans
    await put('D', cat(9)); // B8 orphan
    await sleep(1500);
    await waitNoOrphans(leader);
    await put('S2', cat(1, 7, 8)); // stored again after collection
    await cluster.startNode(G);
    await verifyAll('after log catch-up');
    for (const n of cluster.live()) await waitNoOrphans(n.id).catch((e: unknown) => problems.push(String(e)));

    // Phase 3: rolling SIGKILL restarts of every node, then everything again.
    for (const n of [...cluster.live()]) {
      await cluster.kill(n.id, 'SIGKILL');
      await cluster.startNode(n.id);
      leader = await cluster.waitLeader(15_000);
      await put(`after-restart-${n.id}`, cat(n.id, 9));
    }
    await verifyAll('after rolling restarts');
    expect(problems).toEqual([]);
  });
});
