// Buckets when the whole cluster loses power: all three nodes SIGKILLed at once right after the
// last acknowledged write (uploads over HTTP and gRPC, empty objects, overwrites, deletes), with
// frequent snapshots, three rounds over. After every restart each acknowledged write must be there
// byte-exact on every node (a delete: gone), and the replicas must agree on listings and chunks.

import { randomBytes } from 'node:crypto';
import { TestCluster, sleep } from './cluster';
import { bucketsClient, chunkTableQuery, deleteObject, distinctViews, grpcUpload, listNames, objectProblems, putObject, sqlRows, waitCaughtUp } from './buckets-support';

jest.setTimeout(120_000);

describe('Buckets when every node is SIGKILLed at once', () => {
  let cluster: TestCluster;

  beforeAll(async () => {
    cluster = await TestCluster.start({ size: 3, extraArgs: ['--heartbeat-ms', '70', '--election-timeout-ms', '700', '--snapshot-entries', '30', '--snapshot-catch-up-entries', '3'] });
  });

  afterAll(async () => {
    await cluster?.close();
  });

  it('keeps acknowledged uploads, overwrites, deletes and empty objects on every node, and the replicas agree', async () => {
    let leader = await cluster.waitLeader();
    const port = (id: number, door: 'http' | 'grpc' = 'http'): number => cluster.node(id).ports[door];
    const expected = new Map<string, Buffer | null>();
    const problems: string[] = [];
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 6; i++) {
        const data = i === 0 ? Buffer.alloc(0) : randomBytes(50_000 * i + round);
        const name = `r${round}/o${i}`;
        if (i % 2 === 0) {
          expect((await putObject(port(leader), 'ca', name, data)).status).toBe(200);
        } else {
          const client = bucketsClient(port(leader, 'grpc'));
          const { err } = await grpcUpload(client, 'ca', name, data);
          client.close();
          expect(err).toBeUndefined();
        }
        expected.set(name, data);
      }
      if (round > 0) {
        expect((await deleteObject(port(leader), 'ca', `r${round - 1}/o2`)).status).toBe(200);
        expected.set(`r${round - 1}/o2`, null);
        const overwrite = randomBytes(70_000);
        expect((await putObject(port(leader), 'ca', `r${round - 1}/o3`, overwrite)).status).toBe(200);
        expected.set(`r${round - 1}/o3`, overwrite);
      }
      // Every node at once, right after the last acknowledgement.
      await Promise.all(cluster.live().map((n) => cluster.kill(n.id, 'SIGKILL')));
      await Promise.all(cluster.nodes.map((n) => cluster.startNode(n.id)));
      leader = await cluster.waitLeader(20_000);
      await waitCaughtUp(cluster, leader);
      problems.push(...(await objectProblems(cluster, 'ca', expected, `round ${round} `)));
      if ((await distinctViews(cluster, (p) => listNames(p, 'ca'))) !== 1) problems.push(`round ${round} lists differ`);
      if ((await distinctViews(cluster, (p) => sqlRows(p, chunkTableQuery))) !== 1) problems.push(`round ${round} chunk tables differ`);
      await sleep(100);
    }
    expect(problems).toEqual([]);
  });
});
