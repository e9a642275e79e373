// Multi-process: the leader is cut off from both followers by TCP proxies while it keeps running.
// It must stop acknowledging writes (CheckQuorum), no two nodes may acknowledge as leader at once,
// and a linearizable read must never return a value older than an acknowledged write.

import { NatsPool, TestCluster, sleep } from './cluster';
import { verifyAcks } from './verify';

jest.setTimeout(120_000);

describe('leader isolation', () => {
  let cluster: TestCluster;
  let pool: NatsPool;

  beforeAll(async () => {
    cluster = await TestCluster.start({ size: 3, proxies: true });
    pool = new NatsPool(cluster);
  });

  afterAll(async () => {
    await pool?.close();
    await cluster?.close();
  });

  it('steps the cut-off leader down, elects one new leader, and never serves a stale linearizable read', async () => {
    const acks: Array<{ writer: number; value: string; rev: number; node: number }> = [];
    const put = async (node: number, value: string): Promise<boolean> => {
      const reply = await pool.request(node, '$LOOM.API.KV.PUT.iso.k', Buffer.from(value), {}, 1500);
      if (reply.ok) acks.push({ writer: 1, value, rev: (JSON.parse(reply.body) as { rev: number }).rev, node });
      return reply.ok;
    };
    const old = await cluster.waitLeader();
    expect(await put(old, 'v1')).toBe(true);

    cluster.isolate(old, true);
    const cutAt = Date.now();
    // The isolated leader keeps running: writes it takes can never commit, and after an election
    // timeout without a quorum it steps down (CheckQuorum).
    const oldAcks: string[] = [];
    let steppedDownMs = 0;
    const watchRole = (async () => {
      while (Date.now() - cutAt < 4000) {
        const s = await cluster.status(old);
        if (steppedDownMs === 0 && s && s.role !== 'leader') steppedDownMs = Date.now() - cutAt;
        await sleep(50);
      }
    })();
    for (let i = 0; Date.now() - cutAt < 4000; i++) {
      if (await put(old, `old-${i}`)) oldAcks.push(`old-${i}`);
      await sleep(50);
    }
    await watchRole;
    expect(oldAcks).toEqual([]);
    expect(steppedDownMs).toBeGreaterThan(0);
    expect(steppedDownMs).toBeLessThan(3000);

    // The other two elect a leader of their own and take writes.
    const others = cluster.nodes.map((n) => n.id).filter((id) => id !== old);
    let fresh = 0;
    const deadline = Date.now() + 5000;
    while (fresh === 0 && Date.now() < deadline) {
      for (const id of others) {
        const s = await cluster.status(id);
        if (s?.role === 'leader') fresh = id;
      }
      await sleep(50);
    }
    expect(fresh).not.toBe(0);
    expect(await put(fresh, 'v2')).toBe(true);

    // No split brain: at no point do two nodes answer as leader of the same term, and the old one
    // answers as a follower (or candidate) while cut off.
    const statuses = await Promise.all(cluster.nodes.map((n) => cluster.status(n.id)));
    const leaders = statuses.filter((s) => s?.role === 'leader');
    expect(leaders.length).toBe(1);
    expect(leaders[0]!.nodeId).toBe(fresh);

    // A linearizable read on the cut-off node cannot confirm leadership: an error, never v1.
    const stale = await pool.request(old, '$LOOM.API.KV.GET.iso.k', new Uint8Array(0), { 'Loom-Consistency': 'linearizable' }, 8000);
    expect(stale.ok ? stale.body : stale.code).not.toBe('v1');
    expect(stale.ok).toBe(false);
    // Through the new leader and its follower, linearizable reads see v2.
    for (const id of others) {
      const read = await pool.request(id, '$LOOM.API.KV.GET.iso.k', new Uint8Array(0), { 'Loom-Consistency': 'linearizable' }, 5000);
      expect(read.ok ? read.body : read.code).toBe('v2');
    }

    // Heal: the old leader rejoins as a follower and converges; its linearizable reads see v2.
    cluster.isolate(old, false);
    let healedRead = '';
    const healDeadline = Date.now() + 10_000;
    while (healedRead !== 'v2' && Date.now() < healDeadline) {
      const read = await pool.request(old, '$LOOM.API.KV.GET.iso.k', new Uint8Array(0), { 'Loom-Consistency': 'linearizable' }, 3000);
      if (read.ok) {
        expect(read.body).toBe('v2');
        healedRead = read.body;
      } else await sleep(100);
    }
    expect(healedRead).toBe('v2');
    const commit = await cluster.waitConverged(Math.max(...acks.map((a) => a.rev)));
    for (const n of cluster.nodes) await cluster.kill(n.id, 'SIGTERM');
    verifyAcks(cluster, acks, commit);
  });
});
