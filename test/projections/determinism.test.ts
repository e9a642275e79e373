// The same log replayed into fresh nodes gives byte-identical views, conflicts included; a view
// rebuilt by `loom replay` equals the one built live; and a node SIGKILLed while it applies large
// batches comes back equal to a clean replay.

import { cpSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { openDatabase } from '../../src/core';
import { LmdbLog } from '../../src/eventlog';
import { ViewStore } from '../../src/projections';
import { silentLogger } from '../../src/util';
import { runLoom, startServe, stopServe } from '../support/cli';
import { seededRandom } from '../support/seeded';
import { makeTempDir, removeDir } from '../support/tmp';
import { viewDigest, writeMutations } from '../support/views';

async function buildViews(dataDir: string): Promise<void> {
  const log = LmdbLog.open({ path: path.join(dataDir, 'log') });
  const opened = await openDatabase({ log, viewsDir: path.join(dataDir, 'views'), logger: silentLogger(), ttlScanIntervalMs: 3_600_000 });
  await opened.core.idle();
  await opened.close();
  await log.close();
}

describe('views are a pure function of the log', () => {
  let root: string;
  beforeEach(() => {
    root = makeTempDir();
  });
  afterEach(() => removeDir(root));

  it('replays the same log into two fresh nodes with byte-identical views', async () => {
    const source = path.join(root, 'source');
    await writeMutations(path.join(source, 'log'), 5000, 7, { objects: 400 });
    for (const name of ['a', 'b']) {
      mkdirSync(path.join(root, name));
      cpSync(path.join(source, 'log'), path.join(root, name, 'log'), { recursive: true });
      await buildViews(path.join(root, name));
    }
    const a = await viewDigest(path.join(root, 'a'));
    const b = await viewDigest(path.join(root, 'b'));
    expect(a.records).toBeGreaterThan(500);
    // Objects, chunks with their reference counts, orphans and conflicts are compared too.
    expect(a.blobRecords).toBeGreaterThan(30);
    expect(b).toEqual(a);
  });

  it('rebuilds a view with loom replay equal to the one built live, and refuses to run beside a live node', async () => {
    const dataDir = path.join(root, 'node');
    await writeMutations(path.join(dataDir, 'log'), 3000, 11);
    await buildViews(dataDir);
    const live = await viewDigest(dataDir);

    const result = runLoom(['replay', '--projection', 'kv', '--data', dataDir]);
    expect(result.stderr).toMatch(/replay kv \[#+\] 3000\/3000 entries/);
    expect(result.stdout).toMatch(/replayed kv: 3000 entries up to 3000 in/);
    expect(result.status).toBe(0);
    expect(await viewDigest(dataDir)).toEqual(live);

    const serve = await startServe(dataDir);
    try {
      const refused = runLoom(['replay', '--projection', 'kv', '--data', dataDir]);
      expect(refused.status).toBe(1);
      expect(refused.stderr).toMatch(/data directory .* is in use by another loom process/);
      expect(runLoom(['replay', '--projection', 'nope', '--data', path.join(root, 'empty')]).stderr).toMatch(/no projection named "nope"/);
    } finally {
      await stopServe(serve);
    }
  });

  it('comes back equal to a clean replay after SIGKILLs in the middle of applying large batches', async () => {
    const dataDir = path.join(root, 'crashy');
    await writeMutations(path.join(dataDir, 'log'), 60_000, 13);
    const reference = path.join(root, 'reference');
    mkdirSync(reference);
    cpSync(path.join(dataDir, 'log'), path.join(reference, 'log'), { recursive: true });
    await buildViews(reference);

    const random = seededRandom(99);
    const killedAt: number[] = [];
    for (let round = 0; round < 4; round++) {
      const serve = await startServe(dataDir);
      await new Promise((resolve) => setTimeout(resolve, 20 + Math.floor(random() * 300)));
      await stopServe(serve, 'SIGKILL');
      const store = new ViewStore(path.join(dataDir, 'views', 'lmdb'));
      killedAt.push(store.readCheckpoint('kv')?.index ?? 0);
      await store.close();
    }
    // At least one kill landed while the node was still applying the log.
    expect(killedAt.some((index) => index < 60_000)).toBe(true);
    await buildViews(dataDir);
    expect(await viewDigest(dataDir)).toEqual(await viewDigest(reference));
  }, 120_000);
});
