// Scenario tests for elections: the message flow of a PreVote election, one vote per term, the
// up-to-date rule, PreVote keeping a rejoining node from disrupting, CheckQuorum, durability order.

import { MemoryLog } from '../../../src/eventlog';
import { emptyMessage } from '../../../src/eventlog/raft';
import { Harness } from './harness';

describe('raft elections', () => {
  it('elects a leader through PreVote then vote, and commits its no-op', async () => {
    // given three fresh nodes with PreVote
    const h = new Harness([1, 2, 3], { preVote: true });
    // when node 1's election timeout fires
    const transcript = await h.campaign(1);
    // then it wins term 1 and commits the empty entry of its term everywhere
    expect(transcript).toEqual([
      '1→2 preVote t1 last=0/0',
      '1→3 preVote t1 last=0/0',
      '2→1 preVoteResp t1 granted',
      '3→1 preVoteResp t1 granted',
      '1→2 vote t1 last=0/0',
      '1→3 vote t1 last=0/0',
      '2→1 voteResp t1 granted',
      '3→1 voteResp t1 granted',
      '1→2 app t1 prev=0/0 [1/1 noop] commit=0',
      '1→3 app t1 prev=0/0 [1/1 noop] commit=0',
      '2→1 appResp t1 index=1',
      '3→1 appResp t1 index=1',
      '1→2 app t1 prev=1/1 [] commit=1',
      '1→3 app t1 prev=1/1 [] commit=1',
      '2→1 appResp t1 index=1',
      '3→1 appResp t1 index=1',
    ]);
    expect(h.node(1).raw.status()).toMatchObject({ role: 'leader', term: 1, commit: 1 });
    expect(h.node(2).raw.status()).toMatchObject({ role: 'follower', leader: 1, commit: 1 });
  });

  it('campaigns by itself when the randomized election timeout elapses', async () => {
    const h = new Harness([1, 2, 3], { electionTimeoutTicks: 10, random: () => 0.5 });
    await h.tick(1, 14);
    expect(h.node(1).raw.status().role).toBe('follower');
    await h.tick(1, 1); // timeout = 10 + floor(0.5 * 10) = 15 ticks
    expect(h.node(1).raw.status().role).toBe('candidate');
  });

  it('grants one vote per term: a second candidate in the same term is rejected', async () => {
    const h = new Harness([1, 2, 3]);
    h.isolate(3);
    await h.campaign(1); // 2 votes for 1 in term 1
    h.heal();
    h.isolate(1);
    h.node(3).raw.campaign(); // 3 also campaigns at term 1
    const transcript = await h.deliverAll();
    expect(transcript).toContain('3→2 vote t1 last=0/0');
    expect(transcript).toContain('2→3 voteResp t1 rejected');
    expect(h.node(3).raw.status().role).not.toBe('leader');
  });

  it('refuses to vote for a candidate whose log is less up to date (§5.4.1)', async () => {
    const h = new Harness([1, 2, 3]);
    await h.campaign(1);
    h.isolate(3);
    await h.propose(1, 'x=1');
    await h.deliverAll();
    h.heal();
    h.isolate(1);
    h.node(3).raw.campaign();
    const transcript = await h.deliverAll();
    expect(transcript).toContain('3→2 vote t2 last=1/1');
    expect(transcript).toContain('2→3 voteResp t2 rejected');
  });

  it('sends a vote only after the vote is durable, and leader appends at once', async () => {
    const h = new Harness([1, 2, 3]);
    h.node(1).raw.campaign();
    await h.process(1);
    expect(h.node(1).sentEarly).toEqual([]);
    expect(h.node(1).sentAfterPersist.map((m) => m.type)).toEqual(['vote', 'vote']);
    await h.deliverOne(); // 2 receives the vote request and grants it
    expect(h.node(2).sentEarly).toEqual([]);
    expect(h.node(2).sentAfterPersist.map((m) => m.type)).toEqual(['voteResp']);
    expect(h.node(2).store.hardState()).toEqual({ term: 1, vote: 1, commit: 0 });
    await h.deliverOne(); // 3 grants too
    await h.deliverOne(); // 1 wins and appends its no-op: replication need not wait for its own fsync
    expect(h.node(1).raw.status().role).toBe('leader');
    expect(h.node(1).sentEarly.map((m) => m.type)).toEqual(['app', 'app']);
  });

  it('drops a message from a term it has left before the Ready went out', async () => {
    // found by the simulator (seed 21258): a vote granted in term 1 left after the disk already
    // said term 2, vote 3 — it vouched for a vote the disk no longer records
    const h = new Harness([1, 2, 3]);
    const voter = h.node(2).raw;
    voter.step({ ...emptyMessage('vote', 1, 2, 1) });
    voter.step({ ...emptyMessage('vote', 3, 2, 2) });
    const rd = voter.ready();
    expect(rd.hardState).toEqual({ term: 2, vote: 3, commit: 0 });
    expect(rd.messagesAfterPersist.map((m) => `${m.type} →${m.to} t${m.term}`)).toEqual(['voteResp →3 t2']);
  });

  it('after a torn write, a stored entry of a later term than the hard state raises the term', async () => {
    const store = new MemoryLog();
    await store.append([{ index: 1, term: 3, type: 'test.put', data: Buffer.from('x'), ts: 0 }]);
    await store.setHardState({ term: 1, vote: 2, commit: 0 });
    const h = new Harness([1, 2, 3], {}, new Map([[1, store]]));
    expect(h.node(1).raw.status()).toMatchObject({ term: 3, vote: 0 });
  });

  it('with PreVote, a node cut off and rejoining does not disrupt the leader', async () => {
    const h = new Harness([1, 2, 3], { preVote: true, checkQuorum: true, electionTimeoutTicks: 10 });
    await h.campaign(1);
    h.isolate(3);
    await h.tick(3, 50); // 3 keeps pre-campaigning, never raising its term
    await h.deliverAll();
    expect(h.node(3).raw.status()).toMatchObject({ term: 1, role: 'preCandidate' });
    h.heal();
    await h.tick(3, 20);
    const transcript = await h.deliverAll();
    // the others still hear from their leader (its lease holds), so they ignore the PreVote
    expect(transcript).toEqual(['3→1 preVote t2 last=1/1', '3→2 preVote t2 last=1/1', '3→1 preVote t2 last=1/1', '3→2 preVote t2 last=1/1']);
    expect(h.node(1).raw.status()).toMatchObject({ role: 'leader', term: 1 });
  });

  it('with CheckQuorum, a leader that stops hearing from a quorum steps down', async () => {
    const h = new Harness([1, 2, 3], { checkQuorum: true, electionTimeoutTicks: 10 });
    await h.campaign(1);
    h.isolate(1);
    await h.tick(1, 9);
    await h.deliverAll();
    expect(h.node(1).raw.status().role).toBe('leader');
    await h.tick(1, 11); // two election timeouts without a single answer
    await h.deliverAll();
    expect(h.node(1).raw.status()).toMatchObject({ role: 'follower', leader: 0 });
  });

  it('with CheckQuorum, followers ignore a vote request while their leader lease holds', async () => {
    const h = new Harness([1, 2, 3], { checkQuorum: true, electionTimeoutTicks: 10 });
    await h.campaign(1);
    h.isolate(1);
    h.node(3).raw.campaign(); // no PreVote: 3 goes straight to term 2
    const transcript = await h.deliverAll();
    expect(transcript).toEqual(['3→1 vote t2 last=1/1 (dropped)', '3→2 vote t2 last=1/1']);
    expect(h.node(2).raw.status()).toMatchObject({ term: 1, leader: 1 });
  });

  it('a follower that forgets its dead leader grants a PreVote at once; one that still hears it does not', async () => {
    const h = new Harness([1, 2, 3], { preVote: true, checkQuorum: true, electionTimeoutTicks: 10 });
    await h.campaign(1);
    h.isolate(1); // the leader is gone, but nobody has timed out yet
    // only 2 learnt it (its connection closed): 3 still honours the lease and ignores 2's PreVote
    h.node(2).raw.forgetLeader();
    h.node(2).raw.campaign();
    await h.deliverAll();
    expect(h.node(2).raw.status()).toMatchObject({ role: 'preCandidate', term: 1 });
    // once 3 forgets it too, 2's next campaign wins well before any election timeout
    h.node(3).raw.forgetLeader();
    h.node(2).raw.campaign();
    await h.deliverAll();
    expect(h.node(2).raw.status()).toMatchObject({ role: 'leader', term: 2 });
    expect(h.node(3).raw.status()).toMatchObject({ leader: 2, term: 2 });
  });

  it('forgetLeader is a no-op on a leader or a follower without a leader', async () => {
    const h = new Harness([1, 2, 3], { preVote: true, checkQuorum: true });
    h.node(2).raw.forgetLeader();
    expect(h.node(2).raw.status()).toMatchObject({ role: 'follower', leader: 0 });
    await h.campaign(1);
    h.node(1).raw.forgetLeader();
    expect(h.node(1).raw.status()).toMatchObject({ role: 'leader', leader: 1 });
  });

  it('a candidate counts its own vote only once the vote is durable', async () => {
    // found by the simulator (seed 7647): a single voter that led on an unwritten vote crashed,
    // restarted in the old term, voted for another node, and two leaders shared a term
    const h = new Harness([1]);
    h.node(1).raw.campaign();
    expect(h.node(1).raw.status()).toMatchObject({ role: 'candidate', term: 1 });
    const rd = h.node(1).raw.ready();
    expect(rd.hardState).toEqual({ term: 1, vote: 1, commit: 0 });
    await h.node(1).store.setHardState(rd.hardState!);
    h.node(1).raw.advance();
    expect(h.node(1).raw.status()).toMatchObject({ role: 'leader', term: 1 });
  });

  it('a single voter elects itself and commits alone', async () => {
    const h = new Harness([1]);
    expect(await h.campaign(1)).toEqual([]);
    expect(h.node(1).raw.status()).toMatchObject({ role: 'leader', term: 1, commit: 1 });
    await h.propose(1, 'x=1');
    expect(h.node(1).raw.status().commit).toBe(2);
    expect(h.node(1).applied.map((e) => e.index)).toEqual([1, 2]);
  });
});
