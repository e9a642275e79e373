// Buckets uploads while leadership is transferred six times: four writers (HTTP and gRPC, objects
// up to ~2.8 MB) keep uploading to whichever node they believe leads. Each upload must be either
// acknowledged and present everywhere, or failed with NOT_LEADER naming another node or
// UNAVAILABLE and then whole or absent, the same on every replica; the chunk tables agree.

import { randomBytes } from 'node:crypto';
import { httpRequest } from '../support/http';
import { TestCluster, sleep } from './cluster';
import { bucketsClient, chunkTableQuery, distinctViews, getObject, grpcUpload, putObject, sqlRows, waitCaughtUp } from './buckets-support';

jest.setTimeout(120_000);

/** One upload a writer tried, and how it failed (`code`, and the leader the failure named). */
interface Attempt {
  name: string;
  data: Buffer;
  node: number;
  ok: boolean;
  code?: string;
  named?: unknown;
}

describe('Buckets uploads across leadership transfers', () => {
  let cluster: TestCluster;

  beforeAll(async () => {
    cluster = await TestCluster.start({ size: 3, extraArgs: ['--heartbeat-ms', '70', '--election-timeout-ms', '700'] });
  });

  afterAll(async () => {
    await cluster?.close();
  });

  it('each upload is acknowledged and everywhere, or failed NOT_LEADER (naming another node) or UNAVAILABLE and the same on every replica', async () => {
    let leader = await cluster.waitLeader();
    const port = (id: number, door: 'http' | 'grpc' = 'http'): number => cluster.node(id).ports[door];
    const attempts: Attempt[] = [];
    let stop = false;
    let guess = leader;
    const clients = new Map(cluster.nodes.map((n) => [n.id, bucketsClient(port(n.id, 'grpc'))]));
    const writer = async (w: number): Promise<void> => {
      let n = 0;
      while (!stop) {
        const name = `w${w}-${n++}`;
        const data = randomBytes(300_000 + Math.floor(Math.random() * 2_500_000));
        const node = guess;
        const attempt: Attempt = { name, data, node, ok: false };
        attempts.push(attempt);
        if (w % 2 === 0) {
          const r = await putObject(port(node), 'tr', name, data);
          attempt.ok = r.status === 200;
          if (!attempt.ok) {
            attempt.code = `${r.status} ${r.error?.code}`;
            attempt.named = r.error?.details?.leader;
          }
        } else {
          const { err } = await grpcUpload(clients.get(node)!, 'tr', name, data);
          attempt.ok = !err;
          if (err) {
            attempt.code = `grpc ${err.code} ${err.loom}`;
            const m = /"leader":(\d+)/.exec(err.details) ?? /leader[^0-9]*(\d+)/.exec(err.details);
            attempt.named = m ? Number(m[1]) : undefined;
          }
        }
        if (typeof attempt.named === 'number') guess = attempt.named;
        if (!attempt.ok) await sleep(20);
      }
    };
    const writers = [writer(1), writer(2), writer(3), writer(4)];
    for (let t = 0; t < 6; t++) {
      await sleep(1200);
      const others = cluster.nodes.map((n) => n.id).filter((id) => id !== leader);
      await httpRequest(port(leader), 'POST', '/v1/cluster/transfer-leader', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ to: others[t % 2] }) });
      leader = await cluster.waitLeader(15_000);
      guess = leader;
    }
    await sleep(1000);
    stop = true;
    await Promise.all(writers);
    for (const c of clients.values()) c.close();
    leader = await cluster.waitLeader();
    await waitCaughtUp(cluster, leader);
    const problems: string[] = [];
    for (const a of attempts) {
      const states = new Set<string>();
      for (const n of cluster.live()) {
        const got = await getObject(port(n.id), 'tr', a.name);
        if (got.status === 200 && !got.body.equals(a.data)) problems.push(`node${n.id} ${a.name} wrong bytes`);
        states.add(String(got.status));
      }
      if (states.size !== 1) problems.push(`${a.name} differs across replicas: ${[...states]}`);
      if (a.ok && !states.has('200')) problems.push(`${a.name} acked but ${[...states]}`);
      if (!a.ok) {
        if (!/^(421 NOT_LEADER|503 UNAVAILABLE|grpc 14 (NOT_LEADER|UNAVAILABLE))$/.test(a.code ?? '')) problems.push(`${a.name} on node${a.node} failed with ${a.code}`);
        if (/NOT_LEADER/.test(a.code ?? '') && a.named === a.node) problems.push(`${a.name} NOT_LEADER from node${a.node} names itself`);
      }
    }
    if ((await distinctViews(cluster, (p) => sqlRows(p, chunkTableQuery))) !== 1) problems.push('chunk tables differ');
    expect(problems).toEqual([]);
  });
});
