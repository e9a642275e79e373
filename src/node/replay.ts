// `loom replay --projection NAME`: drops one view and rebuilds it from the log, with progress and
// a summary. It takes the data directory's lock, so it never runs beside a live node.

import * as path from 'node:path';
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
  const target = open(path.join(dataDir, 'views'));
  try {
    const { store, projection } = target;
    store.transaction((tx) => {
      projection.reset?.(tx);
      store.writeCheckpoint(tx, projection.name, log.firstIndex() - 1, projection.version);
    });
    const runner = new ProjectionRunner(projection, store, silentLogger());
    const started = Date.now();
    const first = log.firstIndex();
    const last = log.lastIndex();
    const total = last - first + 1;
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
