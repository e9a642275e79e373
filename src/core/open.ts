// Assembles a database over a log: the built-in views and their runners as the applier's
// consumers, the live change feed, change events on the bus, TTL expiry. Used by the node (server)
// and by embedders alike, so both run exactly the same code.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Bus } from '../bus';
import type { LogStore, SnapshotMeta } from '../eventlog';
import { changeOf, changeSubjectRoots, logChunkReader, type Change, type Outcome, type ProjectionStatus } from '../projections';
import { LoomError, loadLibc, type Logger } from '../util';
import type { Replicator } from './replicator';
import { changeBusMessage } from './change-messages';
import { Core } from './core';
import { Database } from './database';
import { Expirer } from './expirer';
import { ChunkCollector, type ObjectsLimits } from './objects';
import { Snapshotter } from './snapshotter';
import { SnapshotStore, extractSnapshot, syncDir } from './snapshots';
import { Views, type ViewPlugin } from './views';
import { ChangeFeed } from './watch';

export type { ViewPlugin } from './views';

export interface OpenDatabaseOptions {
  log: LogStore;
  /** Directory for the views (LMDB, SQLite). */
  viewsDir: string;
  logger: Logger;
  bus?: Bus;
  now?: () => number;
  /** fsync the views too (the log always fsyncs; views can be rebuilt from it). */
  viewSync?: boolean;
  plugins?: Array<(viewsDir: string) => ViewPlugin>;
  ttlScanIntervalMs?: number;
  /** Buckets: default chunk size and largest object. */
  objects?: ObjectsLimits;
  /** How often the leader collects unreferenced chunks, and how old they must be (docs/buckets.md). */
  chunkGcIntervalMs?: number;
  orphanChunkAgeMs?: number;
  /** Consensus in front of the log (Raft in a cluster); a single voter when absent. */
  replicator?: Replicator;
  /** Where snapshots of the views are kept (default: `<viewsDir>-snapshots`). */
  snapshotsDir?: string;
  /** Snapshot the views and compact the log every this many applied entries; 0 (default) never. */
  snapshotEntries?: number;
  /** Largest snapshot the node takes (default: no limit); a cap on the disk a snapshot needs. */
  snapshotBytesMax?: number;
  /** Entries kept in the log below a snapshot for followers a little behind (default 5,000). */
  snapshotCatchUpEntries?: number;
}

export interface OpenDatabase {
  db: Database;
  core: Core;
  feed: ChangeFeed;
  projections(): ProjectionStatus[];
  /** Snapshots the views now and compacts the log below them (as `snapshotEntries` does on its own). */
  snapshot(): Promise<SnapshotMeta>;
  close(): Promise<void>;
}

export const snapshotCatchUpEntriesDefault = 5_000;

export async function openDatabase(options: OpenDatabaseOptions): Promise<OpenDatabase> {
  const { logger, log } = options;
  const libc = loadLibc();
  if (!libc.available) {
    logger.warn({ reason: libc.reason }, 'memory that reads and transfers used stays counted in this process\'s RSS (a download grows it by its size), though the kernel can reclaim the map pages');
  }
  const viewsDir = path.resolve(options.viewsDir);
  const viewsOptions = { viewsDir, logger, viewSync: options.viewSync, plugins: options.plugins, readLogChunk: logChunkReader(log) };
  const snapshots = new SnapshotStore(options.snapshotsDir ?? `${viewsDir}-snapshots`, (progress) => logger.info(progress, 'checking the stored snapshot against its digest'));
  let views = await openViewsCoveringLog(viewsOptions, log, snapshots, logger);
  // Set while a snapshot replaces the views: reads answer UNAVAILABLE instead of touching closed files.
  let replacing = false;
  const current = (): Views => {
    if (replacing) throw new LoomError('UNAVAILABLE', 'this node is installing a snapshot from the leader; retry shortly');
    return views;
  };
  const core = await Core.open({ log, logger, now: options.now, consumers: views.consumers, replicator: options.replicator });
  const feed = new ChangeFeed();
  const db = new Database({
    core,
    views: () => {
      const v = current();
      return { reader: v.reader, blobs: v.blobReader, ...(v.sql ? { sql: v.sql } : {}) };
    },
    feed,
    ...(options.objects ? { objectLimits: options.objects } : {}),
    ...(options.replicator?.membership ? { membership: options.replicator.membership } : {}),
  });

  const snapshotter = new Snapshotter({
    log,
    store: snapshots,
    logger: logger.child({ part: 'snapshots' }),
    snapshotEntries: options.snapshotEntries ?? 0,
    catchUpEntries: options.snapshotCatchUpEntries ?? snapshotCatchUpEntriesDefault,
    snapshotBytesMax: options.snapshotBytesMax ?? Infinity,
    incomingDir: `${viewsDir}.incoming`,
    current,
    confAt: options.replicator?.confAt?.bind(options.replicator),
    pauseApplier: () => core.pauseApplier(),
    replaceViews: async (meta, resetLog) => {
      replacing = true;
      try {
        await resetLog();
        await views.close();
        swapInViewsDir(viewsDir);
        views = new Views(viewsOptions);
      } finally {
        replacing = false;
      }
      core.resumeApplier(views.consumers, Math.max(meta.index, views.appliedIndex()));
      // Live watchers saw nothing of what the snapshot covers: they end instead of skipping it.
      feed.publish({ first: meta.index, last: meta.index, changes: [], snapshot: true });
    },
  });
  options.replicator?.useSnapshots?.(snapshotter);

  core.onApplied((entries, outcomes) => {
    snapshotter.applied(entries[entries.length - 1].index);
    const bus = options.bus;
    const busMayWant = bus !== undefined && changeSubjectRoots.some((root) => bus.hasInterestUnder(root));
    // Nobody to tell: no live watcher, and no bus subscription that could match a change subject.
    // A watcher that starts later replays these entries from the log, and live bus delivery is
    // at-most-once anyway, so skipping the changes (decoding each entry again) loses nothing.
    if (feed.size === 0 && !busMayWant) return;
    const changes: Change[] = [];
    for (let i = 0; i < entries.length; i++) {
      const change = changeOf(entries[i], outcomes[i] as Outcome | undefined);
      if (change) changes.push(change);
    }
    feed.publish({ first: entries[0].index, last: entries[entries.length - 1].index, changes });
    if (busMayWant) {
      for (const change of changes) {
        if (!bus.hasInterest(change.subject)) continue;
        const message = changeBusMessage(change, bus.maxPayloadBytes);
        if (message === undefined) {
          // Only a bus configured under ~1 KiB (a node's is at least 1 KiB): the applier must go on.
          logger.error({ subject: change.subject, maxPayloadBytes: bus.maxPayloadBytes }, 'a change event does not fit the bus even without its payload; not published');
          continue;
        }
        bus.publish(message.subject, message.payload, { headers: message.headers });
      }
    }
  });

  const expirer = new Expirer({
    db,
    logger,
    now: options.now ?? Date.now,
    isLeader: () => core.status().leader,
    scanIntervalMs: options.ttlScanIntervalMs,
  });
  expirer.start();
  const collector = new ChunkCollector({
    objects: db.objects,
    logger,
    now: options.now ?? Date.now,
    isLeader: () => core.status().leader,
    intervalMs: options.chunkGcIntervalMs,
    orphanChunkAgeMs: options.orphanChunkAgeMs,
  });
  collector.start();

  return {
    db,
    core,
    feed,
    projections: () => views.consumers.map((r) => r.status()),
    snapshot: async () => (await snapshotter.take()).meta,
    async close() {
      expirer.stop();
      collector.stop();
      await snapshotter.close();
      await core.close();
      snapshots.close();
      await views.close();
    },
  };
}

/**
 * Opens the views; if the log was compacted past what they hold (their writes are not fsynced,
 * or a snapshot install was cut short), restores them from the newest snapshot first.
 */
async function openViewsCoveringLog(viewsOptions: ConstructorParameters<typeof Views>[0], log: LogStore, snapshots: SnapshotStore, logger: Logger): Promise<Views> {
  const { viewsDir } = viewsOptions;
  for (const leftover of [`${viewsDir}.incoming`, `${viewsDir}.old`]) fs.rmSync(leftover, { recursive: true, force: true });
  const views = new Views(viewsOptions);
  const compactedTo = log.firstIndex() - 1;
  if (views.appliedIndex() >= compactedTo) return views;
  const snapshot = snapshots.latest();
  if (!snapshot || snapshot.meta.index < compactedTo) {
    await views.close();
    throw new LoomError('CORRUPT', `the views hold entries up to ${views.appliedIndex()} but the log starts at ${compactedTo + 1} and no snapshot in ${snapshots.dir} covers the gap`, {
      applied: views.appliedIndex(),
      logFirstIndex: compactedTo + 1,
    });
  }
  logger.info({ applied: views.appliedIndex(), snapshot: snapshot.meta.index }, 'views are behind the compacted log: restoring them from the newest snapshot');
  await views.close();
  await extractSnapshot(snapshot.data, `${viewsDir}.incoming`, snapshots.dir, {
    onProgress: (progress) => logger.info({ ...progress, snapshot: snapshot.meta.index }, 'restoring the views from the newest snapshot'),
  });
  swapInViewsDir(viewsDir);
  return new Views(viewsOptions);
}

/** Swaps the views directory for the snapshot's files, already written (and fsynced) in `<viewsDir>.incoming`. */
function swapInViewsDir(viewsDir: string): void {
  const incoming = `${viewsDir}.incoming`;
  const old = `${viewsDir}.old`;
  fs.rmSync(old, { recursive: true, force: true });
  if (fs.existsSync(viewsDir)) fs.renameSync(viewsDir, old);
  fs.renameSync(incoming, viewsDir);
  syncDir(path.dirname(viewsDir));
  fs.rmSync(old, { recursive: true, force: true });
}
