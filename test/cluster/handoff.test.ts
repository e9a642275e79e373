// Multi-process: a leader stopped gracefully (SIGTERM, as systemd does before an upgrade) hands
// leadership to a caught-up follower before it exits, so the group keeps taking writes without
// waiting for an election, and every acknowledged write survives on the two that remain.

import { NatsPool, TestCluster, Writers, sleep } from './cluster';
import { verifyAcks } from './verify';

jest.setTimeout(120_000);

describe('graceful leader stop', () => {
  let cluster: TestCluster;
  let pool: NatsPool;

  beforeAll(async () => {
    cluster = await TestCluster.start({ size: 3, extraArgs: ['--heartbeat-ms', '70', '--election-timeout-ms', '700', '--log-level', 'info'] });
    pool = new NatsPool(cluster);
  });

  afterAll(async () => {
    await pool?.close();
    await cluster?.close();
  });

  it('hands leadership to a follower before exiting, while writers keep writing', async () => {
    const writers = new Writers(cluster, pool);
    writers.start(4);
    const leader = await cluster.waitLeader();
    while (writers.acks.length < 50) await sleep(20);
    const serve = cluster.node(leader).serve!;
    await cluster.kill(leader, 'SIGTERM');
    expect(serve.child.exitCode).toBe(0);

    // The stopping leader said whom it handed over to, and that the hand-over finished.
    const lines = serve
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg: string; to?: number });
    const handOff = lines.find((l) => l.msg === 'stopping: handing leadership over');
    expect(handOff?.to).toBeDefined();
    expect(handOff?.to).not.toBe(leader);
    expect(lines.some((l) => l.msg.startsWith('stopping: leadership hand-over did not finish'))).toBe(false);

    // The survivors agree on that node, and it serves writes.
    expect(await cluster.waitLeader()).toBe(handOff?.to);
    const acksAtStop = writers.acks.length;
    while (writers.acks.length < acksAtStop + 50) await sleep(20);
    await writers.stop();

    const maxRev = Math.max(...writers.acks.map((a) => a.rev));
    const commit = await cluster.waitConverged(maxRev);
    const survivors = cluster.live().map((n) => n.id);
    for (const id of survivors) await cluster.kill(id, 'SIGTERM');
    verifyAcks(cluster, writers.acks, commit, survivors);
  });
});
