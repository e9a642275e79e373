// Buckets on a leader cut off from its peers (every raft link through a proxy, cut): while the
// majority elects a new leader and overwrites an object, uploads to the isolated leader (HTTP and
// gRPC) must never be acknowledged, a linearizable read on it must never return the old bytes, an
// atLeast read of the new rev must not serve other bytes; after healing, every node holds the new
// version, none holds the unacknowledged uploads, and the chunk tables agree.

import { randomBytes } from 'node:crypto';
import { TestCluster, sleep } from './cluster';
import { bucketsClient, chunkTableQuery, distinctViews, getObject, grpcUpload, putObject, sqlRows, waitCaughtUp } from './buckets-support';

jest.setTimeout(120_000);

describe('Buckets on an isolated leader', () => {
  let cluster: TestCluster;

  beforeAll(async () => {
    cluster = await TestCluster.start({ size: 3, proxies: true, extraArgs: ['--heartbeat-ms', '70', '--election-timeout-ms', '700'] });
  });

  afterAll(async () => {
    await cluster?.close();
  });

  it('acknowledges no upload, serves no stale read, and agrees with the majority after healing', async () => {
    const old = await cluster.waitLeader();
    const port = (id: number, door: 'http' | 'grpc' = 'http'): number => cluster.node(id).ports[door];
    const v1 = randomBytes(600 * 1024);
    expect((await putObject(port(old), 'p', 'doc', v1)).status).toBe(200);
    await waitCaughtUp(cluster, old, 20_000);
    cluster.isolate(old, true);
    // Uploads to the isolated leader, started right away (HTTP and gRPC).
    const x1 = randomBytes(500 * 1024);
    const x2 = randomBytes(500 * 1024);
    const httpUpload = putObject(port(old), 'p', 'iso-http', x1, 25_000);
    const client = bucketsClient(port(old, 'grpc'), 25_000);
    const grpcUploaded = grpcUpload(client, 'p', 'iso-grpc', x2);
    // The majority elects a new leader, which takes a new version.
    const others = cluster.live().map((n) => n.id).filter((id) => id !== old);
    let newLeader = 0;
    const deadline = Date.now() + 15_000;
    while (!newLeader && Date.now() < deadline) {
      for (const id of others) if ((await cluster.status(id))?.role === 'leader') newLeader = id;
      await sleep(50);
    }
    expect(newLeader).not.toBe(0);
    const v2 = randomBytes(600 * 1024);
    const put2 = await putObject(port(newLeader), 'p', 'doc', v2);
    expect(put2.status).toBe(200);
    // Reads on the isolated node: never v1 when linearizable (UNAVAILABLE is fine), never other bytes at the new rev.
    const lin = await getObject(port(old), 'p', 'doc', '?consistency=linearizable', 20_000);
    const atLeast = await getObject(port(old), 'p', 'doc', `?atLeast=${put2.result!.rev}`, 20_000);
    const h = await httpUpload;
    const g = await grpcUploaded;
    client.close();
    cluster.isolate(old, false);
    const leader = await cluster.waitLeader(15_000);
    await waitCaughtUp(cluster, leader);
    const problems: string[] = [];
    if (lin.status === 200 && lin.body.equals(v1)) problems.push('linearizable read on the isolated leader returned the stale version');
    if (atLeast.status === 200 && !atLeast.body.equals(v2)) problems.push(`atLeast read on the isolated node returned other bytes (${atLeast.status})`);
    if (h.status === 200) problems.push('HTTP upload to the isolated leader was acknowledged');
    if (!g.err) problems.push('gRPC upload to the isolated leader was acknowledged');
    for (const n of cluster.live()) {
      if (!(await getObject(port(n.id), 'p', 'doc')).body.equals(v2)) problems.push(`node${n.id} doc is not v2`);
      for (const [name, data] of [['iso-http', x1], ['iso-grpc', x2]] as const) {
        const r = await getObject(port(n.id), 'p', name);
        if (r.status === 200 && !r.body.equals(data)) problems.push(`node${n.id} ${name} wrong bytes`);
        if (r.status === 200) problems.push(`node${n.id} ${name} present although the isolated leader could not commit`);
      }
    }
    if ((await distinctViews(cluster, (p) => sqlRows(p, chunkTableQuery))) !== 1) problems.push('chunk tables differ');
    expect(problems).toEqual([]);
  });
});
