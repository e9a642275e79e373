// Embedding: `openNode(options)` runs a loom node inside the caller's process — with or without
// network doors — and returns the same API the doors use. Options are validated by the same zod
// schema as `loom serve`'s configuration.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Bus } from '../bus';
import type { Database, EventsApi, KvApi, ReadOptions, SqlQueryInput, SqlResult, ViewPlugin, Watch } from '../core';
import type { Projection, SqlDatabase } from '../projections';
import { silentLogger, type Logger } from '../util';
import { loadConfig, type ConfigInput } from './config';
import { startNode, type LoomNode, type Ports } from './node';

export interface OpenNodeOptions {
  /** Data directory; omit with `memory: true` for a throwaway node. */
  data?: string;
  /** Keep everything in memory and a temporary directory, removed on close. */
  memory?: boolean;
  /** Network doors: false (default) runs with none; true or ports to listen (0 = free port). */
  doors?: boolean | { host?: string; natsPort?: number; grpcPort?: number; httpPort?: number };
  authToken?: string;
  sync?: 'full' | 'none';
  logger?: Logger;
  /** Developer SQL projections made with defineSqlProjection: their own tables, queryable with sql.query. */
  projections?: Array<Projection<SqlDatabase>>;
  plugins?: Array<(viewsDir: string) => ViewPlugin>;
  /** Buckets: default chunk size of uploads and largest object (docs/buckets.md). */
  objects?: { chunkBytes?: number; objectBytesMax?: number };
  /**
   * Snapshot the views and compact the log every `entries` applied entries, keeping
   * `catchUpEntries` below each snapshot (docs/snapshots.md). Default: never.
   */
  snapshots?: { entries?: number; catchUpEntries?: number };
}

export interface EmbeddedNode {
  readonly kv: KvApi;
  readonly events: EventsApi;
  readonly sql: { query(input: SqlQueryInput, options?: ReadOptions): Promise<SqlResult> };
  readonly bus: Bus;
  readonly db: Database;
  readonly ports: Ports;
  watch(subject: string, options?: { fromSeq?: number }): Watch;
  close(): Promise<void>;
}

export async function openNode(options: OpenNodeOptions = {}): Promise<EmbeddedNode> {
  const temporary = options.memory || options.data === undefined ? mkdtempSync(path.join(tmpdir(), 'loom-embedded-')) : undefined;
  const doors = typeof options.doors === 'object' ? options.doors : options.doors ? {} : undefined;
  const input: ConfigInput = {
    data: options.data ?? temporary,
    ...(options.sync ? { sync: options.sync } : {}),
    ...(options.authToken ? { authToken: options.authToken } : {}),
    ...(options.objects?.chunkBytes !== undefined ? { chunkBytes: options.objects.chunkBytes } : {}),
    ...(options.objects?.objectBytesMax !== undefined ? { objectBytesMax: options.objects.objectBytesMax } : {}),
    ...(options.snapshots?.entries !== undefined ? { snapshotEntries: options.snapshots.entries } : {}),
    ...(options.snapshots?.catchUpEntries !== undefined ? { snapshotCatchUpEntries: options.snapshots.catchUpEntries } : {}),
    ...(doors ? { host: doors.host ?? '127.0.0.1', natsPort: doors.natsPort ?? 0, grpcPort: doors.grpcPort ?? 0, httpPort: doors.httpPort ?? 0 } : {}),
  };
  const config = loadConfig({ defaults: input });
  let node: LoomNode;
  try {
    node = await startNode(config, {
      logger: options.logger ?? silentLogger(),
      doors: doors !== undefined,
      memoryLog: options.memory === true,
      plugins: options.plugins,
      sqlProjections: options.projections,
    });
  } catch (err) {
    if (temporary) rmSync(temporary, { recursive: true, force: true });
    throw err;
  }
  const db = node.db;
  return {
    kv: db.kv,
    events: db.events,
    sql: { query: (q, o) => db.sqlQuery(q, o) },
    bus: node.bus,
    db,
    ports: node.ports,
    watch: (subject, o) => db.watch(subject, o),
    async close() {
      await node.close();
      if (temporary) rmSync(temporary, { recursive: true, force: true });
    },
  };
}
