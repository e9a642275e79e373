// Buckets uploads acknowledged across a leader SIGKILL: five writers (HTTP and gRPC, four on
// distinct names, two contending for one name) keep uploading through the kill and the election
// that follows. Every acknowledged upload must end up byte-exact on every node, failed ones whole
// or absent, the contended name at one of its attempted versions no older than its last
// acknowledgement, and the $OBJ changes (live on the surviving followers, and a watch replay on
// the restarted node) must carry each acknowledged write exactly once and in order.

import { randomBytes } from 'node:crypto';
import { connect as natsConnect, type NatsConnection } from 'nats';
import type { GrpcClient } from '../support/grpc-buckets';
import { TestCluster, sleep } from './cluster';
import { bucketsClient, distinctViews, getObject, grpcUpload, listNames, putObject, recordChanges, sqlRows, waitCaughtUp, watchChanges, type ChangeMessage } from './buckets-support';

jest.setTimeout(120_000);

/** One upload a writer tried: where, how, and what came of it. */
interface Attempt {
  name: string;
  data: Buffer;
  door: 'http' | 'grpc';
  node: number;
  ok: boolean;
  rev?: number;
}

describe('Buckets uploads across a leader SIGKILL', () => {
  let cluster: TestCluster;
  const connections: NatsConnection[] = [];
  const clients = new Map<number, GrpcClient>();

  beforeAll(async () => {
    cluster = await TestCluster.start({ size: 3, extraArgs: ['--heartbeat-ms', '70', '--election-timeout-ms', '700'] });
  });

  afterAll(async () => {
    for (const c of clients.values()) c.close();
    for (const nc of connections) await nc.close().catch(() => undefined);
    await cluster?.close();
  });

  it('keeps every acknowledged upload on every node and delivers its change once, live on followers and in a replay', async () => {
    let leader = await cluster.waitLeader();
    const port = (id: number, door: 'http' | 'grpc' | 'nats' = 'http'): number => cluster.node(id).ports[door];
    const victim = leader;
    // Both followers stay up throughout: their live $OBJ changes must cover the failover.
    const events = new Map<number, ChangeMessage[]>();
    for (const f of cluster.live().map((n) => n.id).filter((id) => id !== victim)) {
      const nc = await natsConnect({ servers: `127.0.0.1:${port(f, 'nats')}`, timeout: 2000 });
      connections.push(nc);
      events.set(f, await recordChanges(nc, '$OBJ.dur.>'));
    }
    const attempts: Attempt[] = [];
    let stopped = false;
    let guess = leader;
    const client = (id: number): GrpcClient => {
      if (!clients.has(id)) clients.set(id, bucketsClient(port(id, 'grpc'), 15_000));
      return clients.get(id)!;
    };
    const writer = async (w: number, contended: boolean): Promise<void> => {
      let n = 0;
      while (!stopped) {
        const name = contended ? 'same' : `w${w}/${n}`;
        const data = randomBytes(20_000 + Math.floor(Math.random() * 700_000));
        const door = (w + n) % 2 === 0 ? 'http' : 'grpc';
        const target = guess;
        if (!cluster.node(target).serve) {
          await sleep(50);
          continue;
        }
        const attempt: Attempt = { name, data, door, node: target, ok: false };
        attempts.push(attempt);
        if (door === 'http') {
          const r = await putObject(port(target), 'dur', name, data, 15_000);
          attempt.ok = r.status === 200;
          attempt.rev = r.result?.rev;
          const named = r.error?.details?.leader;
          if (r.status === 421 && typeof named === 'number') guess = named;
        } else {
          const { info } = await grpcUpload(client(target), 'dur', name, data);
          attempt.ok = info !== undefined;
          attempt.rev = info && Number(info.rev);
        }
        if (!attempt.ok) {
          for (const node of cluster.live()) if ((await cluster.status(node.id))?.role === 'leader') guess = node.id;
          await sleep(30);
        }
        n++;
      }
    };
    const running = [writer(1, false), writer(2, false), writer(3, false), writer(4, true), writer(5, true)];
    const acked = (): Attempt[] => attempts.filter((a) => a.ok);
    const waitAcked = async (count: number): Promise<void> => {
      const deadline = Date.now() + 60_000;
      while (acked().length < count && Date.now() < deadline) await sleep(20);
    };
    await waitAcked(25);
    await cluster.kill(victim, 'SIGKILL');
    const before = acked().length;
    leader = await cluster.waitLeader(15_000);
    guess = leader;
    await waitAcked(before + 25);
    stopped = true;
    await Promise.all(running);
    for (const c of clients.values()) c.close();
    clients.clear();
    await cluster.startNode(victim);
    leader = await cluster.waitLeader(15_000);
    await waitCaughtUp(cluster, leader, 60_000);

    const problems: string[] = [];
    // Every acknowledged upload to a distinct name is byte-exact everywhere; a failed one is whole or absent.
    for (const n of cluster.live()) {
      for (const a of attempts.filter((x) => x.name !== 'same')) {
        const got = await getObject(port(n.id), 'dur', a.name);
        if (a.ok && (got.status !== 200 || !got.body.equals(a.data))) problems.push(`node${n.id} acked ${a.door} ${a.name} rev ${a.rev}: ${got.status}`);
        if (!a.ok && got.status === 200 && !got.body.equals(a.data)) problems.push(`node${n.id} failed ${a.name}: wrong bytes`);
      }
    }
    // The replicas agree on the objects table and on the listing.
    if ((await distinctViews(cluster, (p) => sqlRows(p, "SELECT name, rev, sha256 FROM objects WHERE bucket = 'dur' ORDER BY name"))) !== 1) problems.push('objects tables differ');
    if ((await distinctViews(cluster, (p) => listNames(p, 'dur'))) !== 1) problems.push('listings differ');
    // The contended name holds one of its attempted versions, at or after its last acknowledged rev.
    const lastAckedRev = Math.max(0, ...acked().filter((a) => a.name === 'same').map((a) => a.rev!));
    for (const n of cluster.live()) {
      const got = await getObject(port(n.id), 'dur', 'same');
      if (!attempts.some((a) => a.name === 'same' && a.data.equals(got.body))) problems.push(`node${n.id} 'same' is not any attempted version (${got.status})`);
      const rows = await sqlRows(port(n.id), "SELECT rev FROM objects WHERE bucket='dur' AND name='same'");
      if (!(Number(rows[0]?.[0]) >= lastAckedRev)) problems.push(`node${n.id} 'same' rev ${JSON.stringify(rows)} < last acked ${lastAckedRev}`);
    }
    // Live $OBJ changes on the followers: each acknowledged write's PUT at its rev exactly once.
    await sleep(500);
    for (const [f, list] of events) {
      for (const a of acked()) {
        const subject = `$OBJ.dur.${Buffer.from(a.name).toString('base64url')}`;
        const hits = list.filter((e) => e.subject === subject && e.op === 'PUT' && e.rev === a.rev).length;
        if (hits !== 1) problems.push(`node${f} live events for ${a.name}@${a.rev}: ${hits}`);
      }
      const seqs = list.map((e) => e.seq);
      if (new Set(seqs).size !== seqs.length) problems.push(`node${f} duplicate live event seqs`);
    }
    // A replay from seq 0 on the restarted node: every acknowledged write, in seq order, no duplicate.
    const nc = await natsConnect({ servers: `127.0.0.1:${port(victim, 'nats')}`, timeout: 2000 });
    connections.push(nc);
    const { reply, changes: replay } = await watchChanges(nc, '$OBJ.dur.>', 0);
    expect(reply.headers?.get('Loom-Error') ?? null).toBeNull();
    const deadline = Date.now() + 10_000;
    while (replay.length < acked().length && Date.now() < deadline) await sleep(100);
    await sleep(500);
    for (const a of acked()) if (!replay.some((e) => e.rev === a.rev)) problems.push(`replay on node${victim} misses ${a.name}@${a.rev}`);
    const replaySeqs = replay.map((e) => e.seq);
    if (replaySeqs.some((s, i) => i > 0 && s <= replaySeqs[i - 1])) problems.push('replay out of order or duplicated');
    expect(problems).toEqual([]);
  });
});
