// Scenario tests for ReadIndex, leadership transfer, membership changes and snapshots
// (InstallSnapshot in chunks after log compaction), as message transcripts.

import { MemoryLog } from '../../../src/eventlog';
import { isLoomError } from '../../../src/util';
import { Harness } from './harness';

describe('raft ReadIndex', () => {
  it('serves a read on the leader after a heartbeat round confirms it still leads', async () => {
    const h = new Harness([1, 2, 3]);
    await h.campaign(1);
    h.node(1).raw.readIndex('r1');
    expect(await h.deliverAll()).toEqual([
      '1→2 heartbeat t1 commit=1 ctx=r1',
      '1→3 heartbeat t1 commit=1 ctx=r1',
      '2→1 heartbeatResp t1 ctx=r1',
      '3→1 heartbeatResp t1 ctx=r1',
    ]);
    expect(h.node(1).readStates).toEqual([{ index: 1, context: 'r1' }]);
  });

  it('forwards a follower read to the leader and answers it with the read index', async () => {
    const h = new Harness([1, 2, 3]);
    await h.campaign(1);
    h.node(2).raw.readIndex('r2');
    expect(await h.deliverAll()).toEqual([
      '2→1 readIndex t1 index=0 ctx=r2',
      '1→2 heartbeat t1 commit=1 ctx=r2',
      '1→3 heartbeat t1 commit=1 ctx=r2',
      '2→1 heartbeatResp t1 ctx=r2',
      '3→1 heartbeatResp t1 ctx=r2',
      '1→2 readIndexResp t1 index=1 ctx=r2',
    ]);
    expect(h.node(2).readStates).toEqual([{ index: 1, context: 'r2' }]);
  });

  it('a leader cut off from the quorum never answers', async () => {
    const h = new Harness([1, 2, 3]);
    await h.campaign(1);
    h.isolate(1);
    h.node(1).raw.readIndex('r3');
    await h.deliverAll();
    expect(h.node(1).readStates).toEqual([]);
  });

  it('a new leader holds reads until it has committed an entry of its term', async () => {
    const h = new Harness([1, 2, 3]);
    h.node(1).raw.campaign();
    await h.processAll();
    while (h.node(1).raw.status().role !== 'leader') await h.deliverOne();
    h.node(1).raw.readIndex('early');
    await h.process(1);
    expect(h.queue.some((m) => m.context === 'early')).toBe(false);
    await h.deliverAll();
    expect(h.node(1).readStates).toEqual([{ index: 1, context: 'early' }]);
  });
});

describe('raft leadership transfer', () => {
  it('hands leadership to an up-to-date voter with timeoutNow', async () => {
    const h = new Harness([1, 2, 3]);
    await h.campaign(1);
    h.node(1).raw.transferLeadership(3);
    const transcript = await h.deliverAll();
    expect(transcript.slice(0, 5)).toEqual([
      '1→3 timeoutNow t1',
      '3→1 vote t2 last=1/1 transfer',
      '3→2 vote t2 last=1/1 transfer',
      '1→3 voteResp t2 granted',
      '2→3 voteResp t2 granted',
    ]);
    expect(h.node(3).raw.status()).toMatchObject({ role: 'leader', term: 2 });
    expect(h.node(1).raw.status()).toMatchObject({ role: 'follower', leader: 3 });
  });

  it('first catches a lagging target up, and refuses proposals meanwhile', async () => {
    const h = new Harness([1, 2, 3]);
    await h.campaign(1);
    h.isolate(3);
    await h.propose(1, 'a');
    await h.deliverAll();
    h.heal();
    h.node(1).raw.transferLeadership(3);
    expect(() => h.node(1).raw.propose('test.put', Buffer.from('b'), 0)).toThrow(/being transferred/);
    const transcript = await h.deliverAll();
    expect(transcript.slice(0, 3)).toEqual([
      '1→3 app t1 prev=2/1 [] commit=2',
      '3→1 appResp t1 reject 2 hint=1/1',
      '1→3 app t1 prev=1/1 [2/1 a] commit=2',
    ]);
    expect(transcript).toContain('1→3 timeoutNow t1');
    expect(h.node(3).raw.status().role).toBe('leader');
  });
});

describe('raft membership changes (one at a time)', () => {
  it('adds a learner, promotes it to voter, and removes a voter', async () => {
    const h = new Harness([1, 2, 3]);
    await h.campaign(1);
    h.start(4, new MemoryLog()); // node 4 boots knowing the genesis membership, outside it
    h.node(1).raw.proposeConfChange({ type: 'addLearner', nodeId: 4 });
    // a second change waits until the first is applied
    expect(() => h.node(1).raw.proposeConfChange({ type: 'addVoter', nodeId: 4 })).toThrow(/still being applied/);
    await h.deliverAll();
    expect(h.node(1).raw.confState()).toEqual({ voters: [1, 2, 3], learners: [4] });
    expect(h.log(4)).toEqual(h.log(1)); // the learner receives the log
    h.node(1).raw.proposeConfChange({ type: 'addVoter', nodeId: 4 });
    await h.deliverAll();
    expect(h.node(4).raw.confState()).toEqual({ voters: [1, 2, 3, 4], learners: [] });
    h.node(1).raw.proposeConfChange({ type: 'removeNode', nodeId: 2 });
    await h.deliverAll();
    for (const id of [1, 3, 4]) expect(h.node(id).raw.confState()).toEqual({ voters: [1, 3, 4], learners: [] });
    // node 2 no longer receives anything; the three left commit on their own
    await h.propose(1, 'after');
    const transcript = await h.deliverAll();
    expect(transcript.some((l) => l.includes('→2'))).toBe(false);
    expect(h.node(1).raw.status().commit).toBe(h.node(1).raw.status().lastIndex);
  });

  it('a learner receives the log but neither votes in the count nor campaigns', async () => {
    const h = new Harness([1, 2], { voters: [1], learners: [2] });
    await h.campaign(1);
    expect(h.log(2)).toEqual(['1/1']);
    await h.tick(2, 100);
    expect(h.node(2).raw.status().role).toBe('follower');
    expect(h.queue).toEqual([]);
  });

  it('rejects removing the last voter', async () => {
    const h = new Harness([1]);
    await h.campaign(1);
    let error: unknown;
    try {
      h.node(1).raw.proposeConfChange({ type: 'removeNode', nodeId: 1 });
    } catch (err) {
      error = err;
    }
    expect(isLoomError(error, 'INVALID_ARGUMENT')).toBe(true);
  });

  it('a removed leader keeps replicating and hands leadership to a remaining voter', async () => {
    const h = new Harness([1, 2, 3]);
    await h.campaign(1);
    h.node(1).raw.proposeConfChange({ type: 'removeNode', nodeId: 1 });
    const transcript = await h.deliverAll();
    expect(transcript.filter((l) => l.includes('timeoutNow'))).toHaveLength(1);
    const leaders = [2, 3].filter((id) => h.node(id).raw.status().role === 'leader');
    expect(leaders).toHaveLength(1);
    expect(h.node(leaders[0]).raw.confState()).toEqual({ voters: [2, 3], learners: [] });
  });
});

describe('raft snapshots and compaction', () => {
  it('sends a follower behind the compacted log the snapshot in chunks, then entries', async () => {
    const h = new Harness([1, 2, 3], { snapshotChunkBytesMax: 16 });
    await h.campaign(1);
    h.isolate(3);
    for (const text of ['a', 'b', 'c']) await h.propose(1, text);
    await h.deliverAll();
    // the leader's application snapshots at its applied index (4) and compacts its log
    const leader = h.node(1);
    const applied = leader.raw.status().applied;
    expect(applied).toBe(4);
    leader.snapshot = {
      meta: { index: applied, term: 1, conf: leader.raw.confState() },
      data: Buffer.from('state-after-four-entries-40-bytes-long!!'),
    };
    await leader.store.compactPrefix(applied);
    h.heal();
    await h.propose(1, 'd');
    const transcript = (await h.deliverAll()).filter((l) => l.includes('3'));
    expect(transcript).toEqual([
      '1→3 app t1 prev=4/1 [5/1 d] commit=4',
      '3→1 appResp t1 reject 4 hint=1/1',
      // sent on commit before the rejection arrived; its answer is stale once the snapshot starts
      '1→3 app t1 prev=5/1 [] commit=5',
      '1→3 snap t1 snapshot=4/1 bytes=0..16/40',
      '3→1 appResp t1 reject 5 hint=1/1',
      '3→1 snapResp t1 snapshot=4 have=16',
      '1→3 snap t1 snapshot=4/1 bytes=16..32/40',
      '3→1 snapResp t1 snapshot=4 have=32',
      '1→3 snap t1 snapshot=4/1 bytes=32..40/40',
      '3→1 appResp t1 index=4',
      '1→3 app t1 prev=4/1 [5/1 d] commit=5',
      '3→1 appResp t1 index=5',
    ]);
    const follower = h.node(3);
    expect(Buffer.from(follower.snapshot!.data.subarray(0, follower.snapshot!.data.byteLength)).toString()).toBe('state-after-four-entries-40-bytes-long!!');
    expect(follower.store.snapshotMeta()).toMatchObject({ index: 4, term: 1 });
    expect(h.log(3)).toEqual(['5/1']);
    expect(follower.raw.status()).toMatchObject({ commit: 5, applied: 5 });
  });

  /** Leader 1 with a snapshot of `data` at index 2 and its log compacted to it; 3 missed it all (8-byte chunks). */
  const behindCompactedLeader = async (data: Buffer): Promise<Harness> => {
    const h = new Harness([1, 2, 3], { snapshotChunkBytesMax: 8 });
    await h.campaign(1);
    h.isolate(3);
    await h.propose(1, 'a');
    await h.deliverAll();
    const leader = h.node(1);
    leader.snapshot = { meta: { index: 2, term: 1, conf: leader.raw.confState() }, data };
    await leader.store.compactPrefix(2);
    h.heal();
    return h;
  };

  it('sends a snapshot one chunk at a time: a heartbeat resends the chunk in flight, it starts no second stream', async () => {
    const h = await behindCompactedLeader(Buffer.alloc(80, 7));
    await h.tick(1, 1);
    let chunks = 0;
    let heartbeats = 0;
    // A heartbeat after every tenth message delivered: each resends the chunk in flight once.
    for (let i = 0; h.queue.length > 0 && i < 10_000; i++) {
      const line = await h.deliverOne();
      if (line.startsWith('1→3 snap ')) chunks++;
      if (i % 10 === 0 && h.node(3).store.snapshotMeta().index < 2) {
        await h.tick(1, 1);
        heartbeats++;
      }
    }
    expect(h.node(3).store.snapshotMeta()).toMatchObject({ index: 2, term: 1 });
    expect(heartbeats).toBeGreaterThan(5);
    expect(chunks).toBeLessThanOrEqual(10 + heartbeats);
  });

  it('a follower that lost a partial snapshot asks for it again from the start', async () => {
    const h = await behindCompactedLeader(Buffer.from('0123456789abcdef'));
    await h.tick(1, 1); // heartbeat → 3 answers → leader probes, finds the gap, starts the snapshot
    let line = '';
    while (line !== '1→3 snap t1 snapshot=2/1 bytes=0..8/16') line = await h.deliverOne();
    h.start(3, h.node(3).store); // 3 restarts, forgetting the partial snapshot
    const transcript = (await h.deliverAll()).filter((l) => l.includes('snap'));
    expect(transcript).toEqual([
      '3→1 snapResp t1 snapshot=2 have=8',
      '1→3 snap t1 snapshot=2/1 bytes=8..16/16',
      '3→1 snapResp t1 snapshot=2 reject have=0',
      '1→3 snap t1 snapshot=2/1 bytes=0..8/16',
      '3→1 snapResp t1 snapshot=2 have=8',
      '1→3 snap t1 snapshot=2/1 bytes=8..16/16',
    ]);
    expect(h.node(3).store.snapshotMeta()).toMatchObject({ index: 2, term: 1 });
  });
});
