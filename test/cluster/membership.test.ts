// Multi-process: three `loom serve` processes with concurrent writers through the NATS door; a
// fourth node joins (learner, caught up from the log, promoted), one of the original three is
// removed and stopped, leadership moves to the newcomer and back to a restarted original member
// that was never told the newcomer's address — and no acknowledged write is lost.

import { execFile } from 'node:child_process';
import { loomMain } from '../support/cli';
import { loomNodeFlags } from '../../src/cli/node-flags';
import { NatsPool, TestCluster, Writers, sleep } from './cluster';
import { verifyAcks } from './verify';

jest.setTimeout(120_000);

const writerCount = 6;

interface CliAnswer {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI without blocking the event loop (the writers keep writing meanwhile). */
function loomAsync(args: string[]): Promise<CliAnswer> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...loomNodeFlags, loomMain, ...args], { timeout: 90_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('membership changes under load', () => {
  let cluster: TestCluster;
  let pool: NatsPool;
  let writers: Writers | undefined;

  beforeAll(async () => {
    cluster = await TestCluster.start({ size: 3 });
    pool = new NatsPool(cluster);
  });

  afterAll(async () => {
    // A failed expectation leaves the writers looping; stop them or jest never exits.
    await writers?.stop();
    await pool?.close();
    await cluster?.close();
  });

  it('adds a fourth node and removes one of the first three while writes continue, losing nothing', async () => {
    const leader = await cluster.waitLeader();
    const w = new Writers(cluster, pool);
    writers = w;
    w.start(writerCount);
    await w.grow(50);

    // A joining node neither votes nor campaigns until it is added.
    const joiner = await cluster.addNode();
    await sleep(300);
    const before = await cluster.status(joiner.id);
    expect(before?.role).toBe('learner');

    // Asked of a follower, the CLI follows its NOT_LEADER answer to the leader once.
    const follower = [1, 2, 3].find((id) => id !== leader)!;
    const added = await loomAsync([
      'cluster', 'add', '--node-id', String(joiner.id), '--host', '127.0.0.1', '--raft-port', String(joiner.raftPort),
      '--http', `http://127.0.0.1:${cluster.node(follower).ports.http}`,
    ]);
    expect(added.stderr).toContain('following to');
    expect(added.code).toBe(0);
    const afterAdd = JSON.parse(added.stdout) as { members: Array<{ id: number; role: string }> };
    expect(afterAdd.members.map((m) => `${m.id}:${m.role}`).sort()).toEqual(['1:voter', '2:voter', '3:voter', '4:voter']);
    await w.grow(50);
    expect((await cluster.status(joiner.id))?.role).toBe('follower');

    // Remove one of the original three that does not lead, then stop it.
    const removed = [1, 2, 3].find((id) => id !== leader && id !== follower)!;
    const removal = await loomAsync(['cluster', 'remove', '--node-id', String(removed), '--http', `http://127.0.0.1:${cluster.node(leader).ports.http}`]);
    expect(removal.code).toBe(0);
    expect((JSON.parse(removal.stdout) as { members: Array<{ id: number }> }).members.map((m) => m.id)).not.toContain(removed);
    await cluster.kill(removed, 'SIGTERM');
    await w.grow(50);

    // Leadership moves to the newcomer; the w follow it.
    const transfer = await loomAsync(['cluster', 'transfer-leader', '--to', String(joiner.id), '--http', `http://127.0.0.1:${cluster.node(leader).ports.http}`]);
    expect(transfer.code).toBe(0);
    expect(await cluster.waitLeader()).toBe(joiner.id);
    await w.grow(50);

    // The first leader restarts with its original --peers, which do not name the newcomer, and
    // leads again: it learns the newcomer's raft address when the newcomer reconnects, so the
    // newcomer keeps receiving the log (waitConverged below includes it).
    await cluster.kill(leader, 'SIGTERM');
    await cluster.startNode(leader);
    await w.grow(20);
    const back = await loomAsync(['cluster', 'transfer-leader', '--to', String(leader), '--http', `http://127.0.0.1:${cluster.node(joiner.id).ports.http}`]);
    expect(back.code).toBe(0);
    expect(await cluster.waitLeader()).toBe(leader);
    await w.grow(50);

    await w.stop();
    const maxRev = Math.max(...w.acks.map((a) => a.rev));
    const commit = await cluster.waitConverged(maxRev);
    const remaining = cluster.live().map((n) => n.id);
    expect(remaining.sort()).toEqual([1, 2, 3, 4].filter((id) => id !== removed));
    for (const id of remaining) await cluster.kill(id, 'SIGTERM');
    const compared = verifyAcks(cluster, w.acks, commit, remaining);
    process.stdout.write(`membership: acked writes ${w.acks.length}; log entries compared ${compared} on nodes ${remaining.join(', ')}\n`);
  });
});
