// `loom replay --projection NAME`: drops one view and rebuilds it from the log, with progress and
// a summary. It takes the data directory's lock, so it never runs beside a live node.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { SnapshotStore, extractSnapshot } from '../core';
import { LmdbLog } from '../eventlog';
import { KvProjection, ProjectionRunner, SqlProjection, SqlStore, ViewStore, sqlFileName, type Projection, type ProjectionStore } from '../projections';
import { LoomError, lockDir, silentLogger } from '../util';

export interface ReplayProgress {
  applied: number;
  total: number;
  elapsedMs: number;
}

export interface ReplaySummary {
  projection: string;
  entries: number;
  lastIndex: number;
  elapsedMs: number;
  entriesPerSecond: number;
}

interface ReplayTarget<Tx> {
  store: ProjectionStore<Tx>;
  projection: Projection<Tx>;
  close(): Promise<void>;
}

/** The views' files (paths under the views directory, as snapshots name them), by projection. */
const viewFiles: Record<string, (file: string) => boolean> = {
  kv: (file) => file.startsWith('lmdb/'),
  sql: (file) => file === sqlFileName,
};

/** The projections `loom replay` can rebuild, by name. */
const targets: Record<string, (viewsDir: string) => ReplayTarget<unknown>> = {
  kv: (viewsDir) => {
    const store = new ViewStore(path.join(viewsDir, 'lmdb'));
    return { store: store as ProjectionStore<unknown>, projection: new KvProjection(store) as Projection<unknown>, close: () => store.close() };
  },
  sql: (viewsDir) => {
    const store = new SqlStore(path.join(viewsDir, sqlFileName));
    return { store: store as ProjectionStore<unknown>, projection: new SqlProjection() as Projection<unknown>, close: async () => store.close() };
  },
};

export function replayableProjections(): string[] {
  return Object.keys(targets);
}

export async function replayProjection(
  dataDir: string,
  name: string,
  onProgress: (progress: ReplayProgress) => void = () => undefined,
  batchEntriesMax = 10_000,
): Promise<ReplaySummary> {
  const open = targets[name];
  if (!open) {
    throw new LoomError('NOT_FOUND', `no projection named ${JSON.stringify(name)}; known: ${replayableProjections().join(', ')}`, { field: 'projection' });
  }
  const lock = lockDir(dataDir);
  const log = LmdbLog.open({ path: path.join(dataDir, 'log') });
  const viewsDir = path.join(dataDir, 'views');
  // A compacted log no longer holds the start: rebuild from the newest snapshot's copy of the view.
  const compacted = log.firstIndex() > 1;
  if (compacted) await restoreFromSnapshot(dataDir, viewsDir, viewFiles[name], log.firstIndex() - 1);
  const target = open(viewsDir);
  try {
    const { store, projection } = target;
    if (!compacted) {
      store.transaction((tx) => {
        projection.reset?.(tx);
        store.writeCheckpoint(tx, projection.name, 0, projection.version);
      });
    }
    const runner = new ProjectionRunner(projection, store, silentLogger());
    const started = Date.now();
    const first = runner.appliedIndex() + 1;
    const last = log.lastIndex();
    const total = Math.max(0, last - first + 1);
    let next = first;
    let lastReport = 0;
    while (next <= last) {
      const batch = log.entries(next, Math.min(last, next + batchEntriesMax - 1) + 1);
      runner.apply(batch);
      next += batch.length;
      const now = Date.now();
      if (now - lastReport >= 250 || next > last) {
        onProgress({ applied: next - first, total, elapsedMs: now - started });
        lastReport = now;
      }
    }
    const elapsedMs = Date.now() - started;
    return { projection: name, entries: total, lastIndex: last, elapsedMs, entriesPerSecond: total / Math.max(elapsedMs / 1000, 0.001) };
  } finally {
    await target.close();
    await log.close();
    lock.release();
  }
}

/** Replaces one view's files by the newest snapshot's copy of them (which the log continues). */
async function restoreFromSnapshot(dataDir: string, viewsDir: string, wanted: (file: string) => boolean, compactedTo: number): Promise<void> {
  const snapshots = new SnapshotStore(path.join(dataDir, 'snapshots'));
  try {
    const snapshot = snapshots.latest();
    if (!snapshot || snapshot.meta.index < compactedTo) {
      throw new LoomError('CORRUPT', `the log starts at ${compactedTo + 1} and no snapshot in ${snapshots.dir} covers what was compacted; the view cannot be rebuilt here`, {
        logFirstIndex: compactedTo + 1,
      });
    }
    const staged = `${viewsDir}.replay-incoming`;
    fs.rmSync(staged, { recursive: true, force: true });
    await extractSnapshot(snapshot.data, staged, snapshots.dir, { wanted });
    try {
      for (const name of listFiles(staged)) {
        const target = path.join(viewsDir, ...name.split('/'));
        for (const stale of [target, `${target}-wal`, `${target}-shm`, path.join(path.dirname(target), 'lock.mdb')]) fs.rmSync(stale, { force: true });
        fs.mkdirSync(path.dirname(target), { recursive: true });
        fs.renameSync(path.join(staged, ...name.split('/')), target);
      }
    } finally {
      fs.rmSync(staged, { recursive: true, force: true });
    }
  } finally {
    snapshots.close();
  }
}

function listFiles(dir: string, sub = ''): string[] {
  return fs.readdirSync(path.join(dir, sub), { withFileTypes: true }).flatMap((entry) => {
    const rel = sub === '' ? entry.name : `${sub}/${entry.name}`;
    return entry.isDirectory() ? listFiles(dir, rel) : [rel];
  });
}
