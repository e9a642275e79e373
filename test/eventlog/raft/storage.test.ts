// Raft over the foundation's LMDB log: the same scenarios through the real storage boundary, and a
// restart that recovers term, vote, log and membership from disk.

import { LmdbLog } from '../../../src/eventlog';
import type { RaftSnapshotMeta } from '../../../src/eventlog/raft';
import { makeTempDir, removeDir } from '../../support/tmp';
import { Harness } from './harness';

describe('raft over the LMDB log', () => {
  const dirs: string[] = [];
  const logs: LmdbLog[] = [];

  function openLog(dir: string): LmdbLog {
    const log = LmdbLog.open({ path: dir });
    logs.push(log);
    return log;
  }

  afterEach(async () => {
    for (const log of logs.splice(0)) await log.close().catch(() => undefined);
    for (const dir of dirs.splice(0)) removeDir(dir);
  });

  it('elects, replicates, compacts, and a restarted node recovers its state from disk', async () => {
    const stores = new Map([1, 2, 3].map((id) => {
      const dir = makeTempDir('loom-raft-');
      dirs.push(dir);
      return [id, openLog(dir)] as const;
    }));
    const h = new Harness([1, 2, 3], {}, stores);
    await h.campaign(1);
    h.start(4, openLog(dirs[0] + '-4'));
    dirs.push(dirs[0] + '-4');
    h.node(1).raw.proposeConfChange({ type: 'addLearner', nodeId: 4 });
    await h.deliverAll();
    for (const text of ['a', 'b']) await h.propose(1, text);
    await h.deliverAll();
    expect(h.log(2)).toEqual(['1/1', '2/1', '3/1', '4/1']);

    // node 2 snapshots and compacts (the membership travels in the snapshot metadata), then restarts
    const store2 = stores.get(2)!;
    const meta: RaftSnapshotMeta = { index: 4, term: 1, conf: h.node(2).raw.confState() };
    await store2.resetToSnapshot(meta);
    await store2.close();
    const reopened = openLog(dirs[1]);
    expect(reopened.hardState()).toEqual({ term: 1, vote: 1, commit: 4 });
    h.start(2, reopened);
    expect(h.node(2).raw.status()).toMatchObject({ term: 1, vote: 1, commit: 4, lastIndex: 4 });
    expect(h.node(2).raw.confState()).toEqual({ voters: [1, 2, 3], learners: [4] });

    await h.propose(1, 'c');
    await h.deliverAll();
    expect(h.log(2)).toEqual(['5/1']);
    expect(h.node(2).raw.status().commit).toBe(5);
  });
});
