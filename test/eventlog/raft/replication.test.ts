// Scenario tests for log replication: the propose/commit flow, the Raft paper's figure 7 (a new
// leader brings every kind of divergent follower into line) and figure 8 (an entry of an earlier
// term is never committed by counting replicas), flow control and fast backtracking.

import { MemoryLog } from '../../../src/eventlog';
import type { LogEntry } from '../../../src/eventlog';
import { Harness } from './harness';

function entries(terms: number[]): LogEntry[] {
  return terms.map((term, i) => ({ index: i + 1, term, type: 'test.put', data: Buffer.from(`e${i + 1}`), ts: 0 }));
}

async function storeWith(terms: number[], term = Math.max(0, ...terms)): Promise<MemoryLog> {
  const store = new MemoryLog();
  await store.append(entries(terms));
  await store.setHardState({ term, vote: 0, commit: 0 });
  return store;
}

describe('raft log replication', () => {
  it('replicates a proposal, commits it on a quorum and tells the followers', async () => {
    const h = new Harness([1, 2, 3]);
    await h.campaign(1);
    await h.propose(1, 'x=1');
    expect(await h.deliverAll()).toEqual([
      '1→2 app t1 prev=1/1 [2/1 x=1] commit=1',
      '1→3 app t1 prev=1/1 [2/1 x=1] commit=1',
      '2→1 appResp t1 index=2',
      '3→1 appResp t1 index=2',
      '1→2 app t1 prev=2/1 [] commit=2',
      '1→3 app t1 prev=2/1 [] commit=2',
      '2→1 appResp t1 index=2',
      '3→1 appResp t1 index=2',
    ]);
    for (const id of [1, 2, 3]) expect(h.node(id).applied.map((e) => e.index)).toEqual([1, 2]);
  });

  // Figure 7: the leader of term 8 and six followers whose logs differ from it in every way.
  const leaderTerms = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
  const followers: Record<string, number[]> = {
    a: [1, 1, 1, 4, 4, 5, 5, 6, 6], // missing entries
    b: [1, 1, 1, 4], // missing many
    c: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], // one extra uncommitted entry
    d: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], // extra entries of a later term
    e: [1, 1, 1, 4, 4, 4, 4], // missing, and extra of an old term
    f: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], // a leader of terms 2 and 3 that never committed
  };
  for (const [name, terms] of Object.entries(followers)) {
    it(`figure 7 (${name}): the term-8 leader makes the follower's log equal to its own`, async () => {
      // given the leader's log on nodes 1 and 3, the follower's on node 2, all at term 7
      const stores = new Map([
        [1, await storeWith(leaderTerms, 7)],
        [2, await storeWith(terms, 7)],
        [3, await storeWith(leaderTerms, 7)],
      ]);
      const h = new Harness([1, 2, 3], {}, stores);
      // when node 1 wins term 8 (node 3 votes for it)
      await h.campaign(1);
      expect(h.node(1).raw.status()).toMatchObject({ role: 'leader', term: 8 });
      // then node 2 ends with exactly the leader's log, and everything is committed
      expect(h.log(2)).toEqual(h.log(1));
      expect(h.log(2)).toEqual([...leaderTerms, 8].map((t, i) => `${i + 1}/${t}`));
      expect(h.node(2).raw.status().commit).toBe(11);
    });
  }

  it('figure 7 (f): the follower skips back a whole term per round trip', async () => {
    const stores = new Map([
      [1, await storeWith(leaderTerms, 7)],
      [2, await storeWith(followers.f, 7)],
      [3, await storeWith(leaderTerms, 7)],
    ]);
    const h = new Harness([1, 2, 3], {}, stores);
    h.isolate(3);
    h.cutLink(1, 3);
    h.heal();
    const transcript = (await h.campaign(1)).filter((l) => l.startsWith('1→2 app') || l.startsWith('2→1 appResp'));
    expect(transcript.slice(0, 4)).toEqual([
      '1→2 app t8 prev=10/6 [11/8 noop] commit=0',
      // 2 has no term-6 entry: its last entry of term <= 6 is 11/3, so it hints 10/3 (its entry at 10)
      '2→1 appResp t8 reject 10 hint=10/3',
      // the leader's last entry of term <= 3 is index 3, so it retries right after it
      '1→2 app t8 prev=3/1 [4/4 e4, 5/4 e5, 6/5 e6, 7/5 e7, 8/6 e8, 9/6 e9, 10/6 e10, 11/8 noop] commit=0',
      '2→1 appResp t8 index=11',
    ]);
  });

  it('figure 8: an entry of an earlier term is not committed by counting replicas', async () => {
    // One entry per message and one message in flight, so acknowledgements arrive entry by entry.
    const h = new Harness([1, 2, 3, 4, 5], { appendEntriesBytesMax: 1, inflightMessagesMax: 1 });
    await h.campaign(1); // (a) S1 leads term 1, everyone has 1/1
    for (const id of [3, 4, 5]) h.cutLink(1, id);
    await h.propose(1, 'a');
    await h.deliverAll(); // 2/1 reaches S2 only
    expect(h.log(2)).toEqual(['1/1', '2/1']);
    h.heal();
    h.isolate(1);
    h.cutLink(5, 2);
    h.node(5).raw.campaign(); // (b) S5 wins term 2 with S3 and S4 and appends 2/2 locally
    await h.processAll();
    while (h.node(5).raw.status().role !== 'leader') await h.deliverOne();
    h.dropQueued((m) => m.from === 5);
    expect(h.log(5)).toEqual(['1/1', '2/2']);
    h.heal();
    h.isolate(5);
    h.start(1, h.node(1).store); // (c) S1 restarts; term 2 is taken, so it needs a second try
    h.node(1).raw.campaign();
    await h.deliverAll();
    const transcript = await h.campaign(1);
    expect(h.node(1).raw.status()).toMatchObject({ role: 'leader', term: 3 });
    // S1 replicates 2/1 to a majority (S1, S2, S3) ...
    const acked = transcript.indexOf('3→1 appResp t3 index=2');
    expect(acked).toBeGreaterThan(0);
    expect(transcript[transcript.indexOf('1→3 app t3 prev=1/1 [2/1 a] commit=1')]).toBeDefined();
    // ... but only commits it together with 3/3, an entry of its own term: had it committed 2/1
    // on counting alone, S5 could still win term 4 (votes of S2, S3, S4) and overwrite it (d).
    const commits = transcript.filter((l) => l.startsWith('1→') && l.includes('commit=2'));
    expect(commits).toEqual([]);
    expect(h.node(1).raw.status().commit).toBe(3);
  });

  /** S1 leads term 1 and holds 2/1 alone; it restarts, wins term 2, and 2/1 reaches one follower. */
  async function commitAfterOldTermEntryReachesQuorum(mutation?: 'commitWithoutTermCheck'): Promise<number> {
    const h = new Harness([1, 2, 3], { appendEntriesBytesMax: 1, inflightMessagesMax: 1, mutation });
    await h.campaign(1);
    h.isolate(1);
    await h.propose(1, 'a');
    await h.deliverAll();
    h.heal();
    h.start(1, h.node(1).store);
    h.node(1).raw.campaign();
    await h.processAll();
    let line = '';
    while (line !== '2→1 appResp t2 index=2') line = await h.deliverOne();
    return h.node(1).raw.status().commit;
  }

  it('does not commit 2/1 when it reaches a quorum under a later term', async () => {
    expect(await commitAfterOldTermEntryReachesQuorum()).toBe(1);
  });

  it('with the commitWithoutTermCheck mutation the same flow commits 2/1 early', async () => {
    expect(await commitAfterOldTermEntryReachesQuorum('commitWithoutTermCheck')).toBe(2);
  });

  it('flow control: at most inflightMessagesMax messages in flight to a replicating follower', async () => {
    const h = new Harness([1, 2], { appendEntriesBytesMax: 1, inflightMessagesMax: 2 });
    await h.campaign(1);
    for (const text of ['a', 'b', 'c']) await h.propose(1, text);
    // three entries ready, one per message, but only two may be in flight
    expect(h.queue.map((m) => `${m.type} ${m.entries.map((e) => e.index).join(',')}`)).toEqual(['app 2', 'app 3']);
    expect(await h.deliverAll()).toEqual([
      '1→2 app t1 prev=1/1 [2/1 a] commit=1',
      '1→2 app t1 prev=2/1 [3/1 b] commit=1',
      '2→1 appResp t1 index=2',
      '2→1 appResp t1 index=3',
      '1→2 app t1 prev=3/1 [4/1 c] commit=2',
      '1→2 app t1 prev=4/1 [] commit=3',
      '2→1 appResp t1 index=4',
      '2→1 appResp t1 index=4',
      '1→2 app t1 prev=4/1 [] commit=4',
      '2→1 appResp t1 index=4',
    ]);
  });

  it('a follower that missed a message rejects the next, and the leader backs up and resends', async () => {
    const h = new Harness([1, 2, 3], { heartbeatTimeoutTicks: 1, electionTimeoutTicks: 10 });
    await h.campaign(1);
    h.isolate(3);
    await h.propose(1, 'a');
    await h.deliverAll();
    h.heal();
    await h.propose(1, 'b');
    expect(await h.deliverAll()).toEqual([
      '1→2 app t1 prev=2/1 [3/1 b] commit=2',
      // 3 is still in replicate state: the leader sends after what it optimistically sent
      '1→3 app t1 prev=2/1 [3/1 b] commit=2',
      '2→1 appResp t1 index=3',
      // 3 has no entry 2: it rejects and hints its last entry, 1/1
      '3→1 appResp t1 reject 2 hint=1/1',
      '1→2 app t1 prev=3/1 [] commit=3',
      '1→3 app t1 prev=3/1 [] commit=3',
      // the leader, now probing 3, resends from 2
      '1→3 app t1 prev=1/1 [2/1 a, 3/1 b] commit=3',
      '2→1 appResp t1 index=3',
      // the answer to the empty message is stale by now and ignored
      '3→1 appResp t1 reject 3 hint=1/1',
      '3→1 appResp t1 index=3',
      '1→3 app t1 prev=3/1 [] commit=3',
      '3→1 appResp t1 index=3',
    ]);
    expect(h.log(3)).toEqual(h.log(1));
  });
});
