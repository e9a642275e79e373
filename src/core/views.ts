// The views of one database, opened together over one directory: the built-in LMDB views (KV,
// event streams, blobs) and the plugged-in families (the SQL view). They are replaced as a whole
// when a snapshot is installed, so everything that reads them goes through `Views`, never keeps
// a store of its own.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { BlobProjection, BlobReader, BlobStore, KvProjection, KvReader, ProjectionRunner, ViewStore, type LogChunkReader, type MaterializeProgress, type ProjectionStatus } from '../projections';
import type { Logger } from '../util';
import type { EntryConsumer } from './applier';
import type { SqlQueries } from './database';

/** A family of projections (e.g. the SQL view) plugged in by the node; opened over the views dir. */
export interface ViewPlugin {
  consumers: Array<EntryConsumer & { status(): ProjectionStatus }>;
  sql?: SqlQueries;
  /**
   * Copies the plugin's files, consistent with its checkpoints, under `dir` with the names they
   * have under the views directory. Without it the node cannot take snapshots (nor compact its log).
   */
  backup?(dir: string): Promise<void>;
  close(): Promise<void>;
}

export interface ViewsOptions {
  viewsDir: string;
  logger: Logger;
  /** fsync the views too (the log always fsyncs; views can be rebuilt from it or a snapshot). */
  viewSync?: boolean;
  plugins?: Array<(viewsDir: string) => ViewPlugin>;
  /** Reads chunk bytes from the log, where the blob view leaves them until compaction. */
  readLogChunk?: LogChunkReader;
}

export const lmdbViewsDirName = 'lmdb';

export class Views {
  readonly store: ViewStore;
  readonly blobStore: BlobStore;
  readonly reader: KvReader;
  readonly blobReader: BlobReader;
  readonly consumers: Array<EntryConsumer & { status(): ProjectionStatus }>;
  readonly sql: SqlQueries | undefined;
  private readonly plugins: ViewPlugin[];
  private readonly lmdbDir: string;
  private readonly viewSync: boolean;
  private readonly logger: Logger;

  constructor(options: ViewsOptions) {
    const { logger } = options;
    this.logger = logger;
    fs.mkdirSync(options.viewsDir, { recursive: true });
    this.lmdbDir = path.join(options.viewsDir, lmdbViewsDirName);
    this.viewSync = options.viewSync ?? false;
    this.store = new ViewStore(this.lmdbDir, { sync: this.viewSync });
    const kvRunner = new ProjectionRunner(new KvProjection(this.store), this.store, logger.child({ projection: 'kv' }));
    this.blobStore = new BlobStore(this.store, options.readLogChunk);
    const blobRunner = new ProjectionRunner(new BlobProjection(this.blobStore), this.store, logger.child({ projection: 'blob' }));
    this.plugins = (options.plugins ?? []).map((open) => open(options.viewsDir));
    this.consumers = [kvRunner, blobRunner, ...this.plugins.flatMap((p) => p.consumers)];
    this.reader = new KvReader(this.store, [this.blobStore.conflicts, this.blobStore.unchanged]);
    this.blobReader = new BlobReader(this.blobStore);
    this.sql = this.plugins.find((p) => p.sql)?.sql;
  }

  private readonly warnAbortedCommit = (err: Error, attempt: number): void =>
    this.logger.warn({ attempt, err }, 'LMDB aborted the commit of a batch of chunks copied into the blob view, an lmdb-js free-space bug: running it again');

  /** The lowest checkpoint of every view: everything up to it is in all of them. */
  appliedIndex(): number {
    return Math.min(...this.consumers.map((c) => c.appliedIndex()));
  }

  /** Whether every view can copy itself (a plugin without `backup` cannot). */
  canBackup(): boolean {
    return this.plugins.every((p) => p.backup !== undefined);
  }

  /**
   * Copies every view under `dir` (same layout as the views directory), each consistent with its
   * checkpoint. The copy holds the bytes of every chunk, so it stands without this node's log.
   */
  async backup(dir: string, onProgress?: (progress: MaterializeProgress) => void): Promise<void> {
    const lmdbDir = path.join(dir, lmdbViewsDirName);
    fs.mkdirSync(lmdbDir, { recursive: true });
    await this.store.env.backup(lmdbDir, false);
    const copy = new ViewStore(lmdbDir);
    try {
      await new BlobStore(copy, this.blobStore.readLogChunk).materializeUpTo(Number.MAX_SAFE_INTEGER, onProgress, this.warnAbortedCommit);
    } finally {
      await copy.close();
    }
    for (const plugin of this.plugins) await plugin.backup?.(dir);
  }

  /**
   * Copies into the view, durably, the bytes of every chunk stored by a log entry at or below
   * `index`: what must happen before the log is compacted below `index`.
   */
  async keepChunksUpTo(index: number, onProgress?: (progress: MaterializeProgress) => void): Promise<{ chunks: number; bytes: number }> {
    const kept = await this.blobStore.materializeUpTo(index, onProgress, this.warnAbortedCommit);
    if (!this.viewSync) {
      // The views' commits are written but not fsynced, and these bytes are about to exist nowhere
      // else on this node: this call's, and those of an earlier call that failed part-way.
      const file = await fs.promises.open(path.join(this.lmdbDir, 'data.mdb'), 'r+');
      try {
        await file.datasync();
      } finally {
        await file.close();
      }
    }
    return kept;
  }

  async close(): Promise<void> {
    for (const plugin of this.plugins) await plugin.close();
    await this.store.close();
  }
}
