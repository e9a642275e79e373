// Multi-process (issue 8 (c)): a follower kept down while the others write past log compaction
// catches up by snapshot — its views, blob chunks and log position — then from the log, and ends
// with views byte-identical to the nodes that applied every entry themselves.

import { existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { LmdbLog } from '../../src/eventlog';
import { SqlStore, ViewStore, sqlFileName } from '../../src/projections';
import { viewDigest } from '../support/views';
import { NatsPool, TestCluster, Writers, sleep } from './cluster';

jest.setTimeout(120_000);

const snapshotEntries = 100;
const catchUpEntries = 20;

function logBounds(dir: string): { first: number; last: number } {
  const log = LmdbLog.open({ path: path.join(dir, 'log'), readOnly: true });
  try {
    return { first: log.firstIndex(), last: log.lastIndex() };
  } finally {
    void log.close();
  }
}

describe('snapshot catch-up', () => {
  let cluster: TestCluster;
  let pool: NatsPool;
  let writers: Writers | undefined;

  beforeAll(async () => {
    cluster = await TestCluster.start({ size: 3, extraArgs: ['--snapshot-entries', String(snapshotEntries), '--snapshot-catch-up-entries', String(catchUpEntries)] });
    pool = new NatsPool(cluster);
  });

  afterAll(async () => {
    await writers?.stop();
    await pool?.close();
    await cluster?.close();
  });

  /** On a stall, say what each node was doing before failing. */
  const grow = async (w: Writers, by: number): Promise<void> => {
    try {
      await w.grow(by, 60_000);
    } catch (err) {
      for (const n of cluster.live()) {
        process.stderr.write(`node ${n.id}: ${JSON.stringify(await cluster.status(n.id))}\n${n.serve?.output().slice(-3000) ?? ''}\n`);
      }
      throw err;
    }
  };

  it('brings a follower that missed compacted entries back by snapshot, with identical views', async () => {
    const leader = await cluster.waitLeader();
    const w = new Writers(cluster, pool);
    writers = w;
    w.start(4);
    await grow(w, 60);

    const follower = [1, 2, 3].find((id) => id !== leader)!;
    await cluster.kill(follower, 'SIGKILL');
    const behind = logBounds(cluster.node(follower).dir).last;

    // While it is down: more puts, events and an object whose chunks live in the views.
    const http = `http://127.0.0.1:${cluster.node(leader).ports.http}`;
    const blob = Buffer.alloc(600 * 1024, 7);
    const put = await fetch(`${http}/v1/buckets/files/objects/photo.bin`, { method: 'PUT', body: blob, headers: { 'content-type': 'application/octet-stream' } });
    expect(put.status).toBe(200);
    for (let i = 0; i < 40; i++) {
      const reply = await pool.request(leader, `$LOOM.API.EV.APPEND.orders-${i % 4}`, Buffer.from(JSON.stringify({ type: 'placed', data: { i } })));
      expect(reply.ok).toBe(true);
    }
    await grow(w, 3 * snapshotEntries);
    // The leader has snapshotted and compacted past everything the follower holds.
    const deadline = Date.now() + 20_000;
    while ((await cluster.metric(leader, 'loom_log_first_index')) <= behind + 1) {
      if (Date.now() > deadline) throw new Error(`the leader never compacted past ${behind}`);
      await sleep(100);
    }

    await cluster.startNode(follower);
    await grow(w, 50);
    await w.stop();
    const maxRev = Math.max(...w.acks.map((a) => a.rev));
    const commit = await cluster.waitConverged(maxRev, 30_000);
    for (const id of [1, 2, 3]) await cluster.kill(id, 'SIGTERM');

    // The follower's log restarted after a snapshot: it never received the entries before it.
    const bounds = logBounds(cluster.node(follower).dir);
    expect(bounds.first).toBeGreaterThan(behind + 1);
    expect(readdirSync(path.join(cluster.node(follower).dir, 'snapshots')).some((n) => n.startsWith('snap-'))).toBe(true);

    // Byte-identical built-in views (KV, streams, blobs and chunks) and SQL views on all three.
    const digests = await Promise.all([1, 2, 3].map((id) => viewDigest(cluster.node(id).dir)));
    expect(digests[0].blobRecords).toBeGreaterThan(0);
    expect(digests[1].digest).toBe(digests[0].digest);
    expect(digests[2].digest).toBe(digests[0].digest);
    const sqlDumps = [1, 2, 3].map((id) => {
      const file = path.join(cluster.node(id).dir, 'views', sqlFileName);
      expect(existsSync(file)).toBe(true);
      const store = new SqlStore(file);
      try {
        // Checkpoints may differ by a trailing no-op: stopping the nodes one by one lets the last
        // two elect a new leader, whose empty entry moves their checkpoints and nothing else.
        const dump = store.dump();
        return JSON.stringify({ ...dump, tables: dump.tables.filter((t) => t.name !== '_loom_checkpoints') });
      } finally {
        store.close();
      }
    });
    expect(sqlDumps[1]).toBe(sqlDumps[0]);
    expect(sqlDumps[2]).toBe(sqlDumps[0]);

    // Every writer's last acknowledged write (or a later attempt of its own) is what the follower holds.
    const views = new ViewStore(path.join(cluster.node(follower).dir, 'views', 'lmdb'));
    try {
      for (let writer = 1; writer <= 4; writer++) {
        const last = w.acks.filter((a) => a.writer === writer).pop()!;
        const record = views.getKv('w', `w${writer}`);
        expect(record).toBeDefined();
        expect(record!.rev).toBeGreaterThanOrEqual(last.rev);
        expect(Buffer.from(record!.value).toString().startsWith(`${writer}:`)).toBe(true);
      }
      expect(Array.from(views.events.getKeys({})).length).toBe(40);
    } finally {
      await views.close();
    }
    process.stdout.write(`snapshot: follower ${follower} down at ${behind}, log now ${bounds.first}..${bounds.last}, commit ${commit}, acked ${w.acks.length}\n`);
  });
});
