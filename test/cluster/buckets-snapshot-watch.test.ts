// Watches through a follower that catches up by snapshot: with small --snapshot-entries, a
// follower is cut off (its links, not its process) while objects are written and one deleted, then
// healed, so it installs a snapshot. A live watch on it must either deliver every acknowledged
// change or end with NOT_FOUND after a gap-free prefix (never skip silently and go on); a replay
// from a seq below its log must be NOT_FOUND or complete; and every node must hold the objects
// byte-exact with the same listing and chunk tables.

import { randomBytes } from 'node:crypto';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { httpRequest } from '../support/http';
import { TestCluster, sleep } from './cluster';
import { chunkTableQuery, deleteObject, distinctViews, listNames, objectProblems, putObject, sqlRows, waitCaughtUp, watchChanges } from './buckets-support';

jest.setTimeout(120_000);

describe('Buckets watches through a follower that caught up by snapshot', () => {
  let cluster: TestCluster;
  let nc: NatsConnection | undefined;

  beforeAll(async () => {
    cluster = await TestCluster.start({ size: 3, proxies: true, extraArgs: ['--heartbeat-ms', '70', '--election-timeout-ms', '700', '--snapshot-entries', '20', '--snapshot-catch-up-entries', '2'] });
  });

  afterAll(async () => {
    await nc?.close();
    await cluster?.close();
  });

  it('end a live watch with NOT_FOUND rather than skip changes, refuse or complete an old replay, and serve the objects byte-exact', async () => {
    const leader = await cluster.waitLeader();
    const port = (id: number, door: 'http' | 'nats' = 'http'): number => cluster.node(id).ports[door];
    const F = cluster.live().map((n) => n.id).find((id) => id !== leader)!;
    const expected = new Map<string, Buffer | null>();
    const acks: Array<{ name: string; rev: number; op: 'PUT' | 'DEL' }> = [];
    const put = async (name: string, data: Buffer): Promise<void> => {
      const r = await putObject(port(leader), 'sw', name, data);
      expect(r.status).toBe(200);
      expected.set(name, data);
      acks.push({ name, rev: r.result!.rev, op: 'PUT' });
    };
    await put('a0', randomBytes(200_000));
    nc = await natsConnect({ servers: `127.0.0.1:${port(F, 'nats')}`, timeout: 2000 });
    // A live watch (from now) on F.
    const live = await watchChanges(nc, '$OBJ.sw.>');
    expect(JSON.parse(Buffer.from(live.reply.data).toString())).toEqual({ ok: true });
    const got = live.changes;
    await put('a1', randomBytes(200_000));
    await sleep(300);
    cluster.isolate(F, true);
    for (let i = 0; i < 15; i++) await put(`b${i}`, randomBytes(150_000 + i));
    const d = await deleteObject(port(leader), 'sw', 'b3');
    expect(d.status).toBe(200);
    expected.set('b3', null);
    acks.push({ name: 'b3', rev: d.result!.rev, op: 'DEL' });
    for (let i = 0; i < 40; i++) await httpRequest(port(leader), 'PUT', `/v1/kv/k/x${i}`, { body: 'v' });
    await sleep(800);
    cluster.isolate(F, false);
    await waitCaughtUp(cluster, leader);
    await put('c0', randomBytes(100_000));
    await sleep(1000);
    const problems: string[] = [];
    // The live watch: every acknowledged change, in order, or an error (NOT_FOUND) and nothing after it.
    const errAt = got.findIndex((g) => g.error);
    const delivered = errAt >= 0 ? got.slice(0, errAt) : got;
    const ackedAfterStart = acks.filter((a) => a.name !== 'a0');
    if (errAt < 0) {
      const missing = ackedAfterStart.filter((a) => !delivered.some((g) => g.rev === a.rev));
      if (missing.length > 0) problems.push(`live watch on node${F} silently skipped ${missing.length} acked changes (${missing.map((m) => m.name).join(',')}) and then went on: ${JSON.stringify(got.map((g) => g.rev))}`);
    } else {
      if (got[errAt].error !== 'NOT_FOUND') problems.push(`watch error ${got[errAt].error}`);
      if (got.length > errAt + 1) problems.push('messages after the watch error');
      // What was delivered must be a gap-free prefix of the acknowledged changes.
      const revs = delivered.map((g) => g.rev);
      const prefix = ackedAfterStart.slice(0, revs.length).map((a) => a.rev);
      if (JSON.stringify(revs) !== JSON.stringify(prefix)) problems.push(`delivered ${JSON.stringify(revs)} is not a prefix of ${JSON.stringify(prefix)}`);
    }
    // A replay from seq 1 on F (its log compacted): NOT_FOUND, in the reply or as the first message, or a full replay.
    const replay = await watchChanges(nc, '$OBJ.sw.>', 1);
    await sleep(1500);
    if (!replay.reply.headers?.get('Loom-Error') && replay.changes[0]?.error !== 'NOT_FOUND') {
      const missing = acks.filter((a) => !replay.changes.some((g) => g.rev === a.rev));
      if (missing.length) problems.push(`replay fromSeq 1 on node${F} skipped ${missing.length} changes silently`);
    }
    // The objects, the listings and the chunk tables.
    problems.push(...(await objectProblems(cluster, 'sw', expected)));
    if ((await distinctViews(cluster, (p) => listNames(p, 'sw'))) !== 1) problems.push('lists differ');
    if ((await distinctViews(cluster, (p) => sqlRows(p, chunkTableQuery))) !== 1) problems.push('chunk tables differ');
    expect(problems).toEqual([]);
  });
});
