// Assembles a database over a log: the built-in views and their runners as the applier's
// consumers, the live change feed, change events on the bus, TTL expiry. Used by the node (server)
// and by embedders alike, so both run exactly the same code.

import { mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { MsgHeaders, type Bus } from '../bus';
import type { LogStore } from '../eventlog';
import {
  BlobProjection,
  BlobReader,
  BlobStore,
  KvProjection,
  KvReader,
  ProjectionRunner,
  ViewStore,
  changeMessage,
  changeOf,
  type Change,
  type Outcome,
  type ProjectionStatus,
} from '../projections';
import type { Logger } from '../util';
import type { EntryConsumer } from './applier';
import type { Replicator } from './replicator';
import { Core } from './core';
import { Database, type SqlQueries } from './database';
import { Expirer } from './expirer';
import { ChunkCollector, type ObjectsLimits } from './objects';
import { ChangeFeed } from './watch';

/** A family of projections (e.g. the SQL view) plugged in by the node; opened over the views dir. */
export interface ViewPlugin {
  consumers: Array<EntryConsumer & { status(): ProjectionStatus }>;
  sql?: SqlQueries;
  close(): Promise<void>;
}

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
}

export interface OpenDatabase {
  db: Database;
  core: Core;
  feed: ChangeFeed;
  projections(): ProjectionStatus[];
  close(): Promise<void>;
}

export async function openDatabase(options: OpenDatabaseOptions): Promise<OpenDatabase> {
  const { logger } = options;
  mkdirSync(options.viewsDir, { recursive: true });
  const views = new ViewStore(path.join(options.viewsDir, 'lmdb'), { sync: options.viewSync });
  const kvRunner = new ProjectionRunner(new KvProjection(views), views, logger.child({ projection: 'kv' }));
  const blobStore = new BlobStore(views);
  const blobRunner = new ProjectionRunner(new BlobProjection(blobStore), views, logger.child({ projection: 'blob' }));
  const plugins = (options.plugins ?? []).map((open) => open(options.viewsDir));
  const runners = [kvRunner, blobRunner, ...plugins.flatMap((p) => p.consumers)];
  const core = await Core.open({ log: options.log, logger, now: options.now, consumers: runners, replicator: options.replicator });
  const feed = new ChangeFeed();
  const reader = new KvReader(views, [blobStore.conflicts]);
  const sql = plugins.find((p) => p.sql)?.sql;
  const db = new Database({ core, reader, feed, blobs: new BlobReader(blobStore), ...(options.objects ? { objectLimits: options.objects } : {}), ...(sql ? { sql } : {}), ...(options.replicator?.membership ? { membership: options.replicator.membership } : {}) });

  core.onApplied((entries, outcomes) => {
    const changes: Change[] = [];
    for (let i = 0; i < entries.length; i++) {
      const change = changeOf(entries[i], outcomes[i] as Outcome | undefined);
      if (change) changes.push(change);
    }
    feed.publish({ first: entries[0].index, last: entries[entries.length - 1].index, changes });
    const bus = options.bus;
    if (bus) {
      for (const change of changes) {
        if (!bus.hasInterest(change.subject)) continue;
        const message = changeMessage(change);
        bus.publish(message.subject, message.payload, { headers: MsgHeaders.fromRecord(message.headers) });
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
    projections: () => runners.map((r) => r.status()),
    async close() {
      expirer.stop();
      collector.stop();
      await core.close();
      for (const plugin of plugins) await plugin.close();
      await views.close();
    },
  };
}
