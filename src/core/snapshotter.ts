// Takes snapshots of the views every `snapshotEntries` applied entries and compacts the log below
// them (keeping `catchUpEntries` for followers a little behind); installs a snapshot received from
// the leader. See docs/snapshots.md.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LogStore, SnapshotMeta } from '../eventlog';
import { LoomError, assert, type Logger } from '../util';
import type { SnapshotAssembly } from '../eventlog/raft';
import { FileSnapshotBytes, extractSnapshot, writeSnapshot, type SnapshotStore, type ViewSnapshot } from './snapshots';
import type { Views } from './views';

export interface SnapshotterOptions {
  log: LogStore;
  store: SnapshotStore;
  logger: Logger;
  /** Take a snapshot once this many entries were applied since the last one; 0 never does. */
  snapshotEntries: number;
  /** Entries kept in the log below a snapshot, so a follower a little behind catches up from the log. */
  catchUpEntries: number;
  /** Largest snapshot taken (an operator's cap on the disk it needs); a bigger one is refused (TOO_LARGE). */
  snapshotBytesMax: number;
  /** The views now. */
  current: () => Views;
  /** Stops the applier (it must not read the log while the log restarts after a snapshot). */
  pauseApplier: () => Promise<void>;
  /** Where a snapshot's files are written before they replace the views (beside the views directory). */
  incomingDir: string;
  /**
   * Restarts the log after the snapshot (`resetLog`), replaces the views by the files in
   * `incomingDir`, then resumes the applier from them; reads answer UNAVAILABLE from before the
   * log is reset.
   */
  replaceViews: (meta: SnapshotMeta, resetLog: () => Promise<void>) => Promise<void>;
  /** Raft membership as of an index, in a replicated group. */
  confAt?: (index: number) => SnapshotMeta['conf'];
}

export class Snapshotter {
  private readonly options: SnapshotterOptions;
  private taking: Promise<void> | undefined;
  /** Set while a snapshot from the leader is installed: no snapshot of the old views may start. */
  private installing = false;
  private lastIndex: number;
  private closed = false;

  constructor(options: SnapshotterOptions) {
    this.options = options;
    this.lastIndex = Math.max(options.store.latest()?.meta.index ?? 0, options.log.firstIndex() - 1);
  }

  /** The newest snapshot, to send a follower that needs entries the log no longer has. */
  latest(): ViewSnapshot | undefined {
    return this.options.store.latest();
  }

  /** Gathers a snapshot arriving from the leader in a file, not in memory. */
  assemble(): SnapshotAssembly {
    return this.options.store.assemble();
  }

  /** Called after every applied batch: starts a snapshot in the background when one is due. */
  applied(index: number): void {
    const { snapshotEntries } = this.options;
    if (snapshotEntries <= 0 || this.taking || this.installing || this.closed || index - this.lastIndex < snapshotEntries) return;
    if (!this.options.current().canBackup()) return;
    this.runTake().catch((err: unknown) => {
      // The next try comes after snapshotEntries more entries, not after the next batch: a
      // snapshot copies every view, and what failed (a damaged chunk, the size limit) stays.
      this.lastIndex = Math.max(this.lastIndex, index);
      this.options.logger.error({ err, retryAfterIndex: index + snapshotEntries }, 'taking a snapshot failed; the log stays uncompacted until the next try');
    });
  }

  /**
   * Copies the views, stores them as a snapshot, then compacts the log below it; after any
   * snapshot already being taken (two at once would share files), never during an install.
   */
  async take(): Promise<ViewSnapshot> {
    while (this.taking) await this.taking;
    if (this.installing) throw new LoomError('UNAVAILABLE', 'this node is installing a snapshot from the leader; retry shortly');
    if (this.closed) throw new LoomError('UNAVAILABLE', 'the node is closing');
    return this.runTake();
  }

  /** Starts a take now: the caller made sure none is running. */
  private runTake(): Promise<ViewSnapshot> {
    assert(this.taking === undefined, 'one snapshot is taken at a time');
    const run = this.takeNow();
    const taking = run.then(
      () => undefined,
      () => undefined,
    );
    this.taking = taking;
    void taking.then(() => {
      if (this.taking === taking) this.taking = undefined;
    });
    return run;
  }

  private async takeNow(): Promise<ViewSnapshot> {
    const { log, store, logger } = this.options;
    const views = this.options.current();
    if (!views.canBackup()) throw new LoomError('UNAVAILABLE', 'a view plugin of this node cannot copy itself, so no snapshot can be taken');
    // Each view's copy holds at least this much: checkpoints only move forward.
    const index = views.appliedIndex();
    assert(index >= log.firstIndex() - 1, `views at ${index} lag the compacted log starting at ${log.firstIndex()}`);
    const started = Date.now();
    const conf = this.options.confAt?.(index);
    const meta: SnapshotMeta = conf ? { index, term: log.term(index), conf } : { index, term: log.term(index) };
    const copy = store.tempFile(`taking-${index}-views`);
    const file = store.tempFile(`taking-${index}`);
    let snapshot: ViewSnapshot;
    try {
      fs.rmSync(copy, { recursive: true, force: true });
      await views.backup(copy, (progress) => logger.info({ ...progress, index }, 'copying chunk bytes into the snapshot'));
      await writeSnapshot(file, meta, copy, this.options.snapshotBytesMax, (progress) => logger.info({ ...progress, index }, 'writing the snapshot'));
      snapshot = { meta, data: new FileSnapshotBytes(file) };
      store.save(snapshot);
    } finally {
      fs.rmSync(copy, { recursive: true, force: true });
      fs.rmSync(file, { force: true });
    }
    this.lastIndex = Math.max(this.lastIndex, index);
    const compactTo = index - this.options.catchUpEntries;
    if (compactTo > log.firstIndex() - 1) {
      const kept = await views.keepChunksUpTo(compactTo, (progress) => logger.info({ ...progress, below: compactTo }, 'copying chunk bytes from the log into the blob view before compacting it'));
      if (kept.chunks > 0) logger.info({ chunks: kept.chunks, bytes: kept.bytes, below: compactTo }, 'chunk bytes copied from the log into the blob view before compacting it');
      await log.compactPrefix(compactTo, this.options.confAt?.(compactTo));
    }
    logger.info({ index, bytes: snapshot.data.byteLength, ms: Date.now() - started, logFirstIndex: log.firstIndex() }, 'snapshot taken; log compacted below it');
    return snapshot;
  }

  /**
   * Installs a snapshot received from the leader: stored durably first (a crash part-way restores
   * the views from it on start), then the log restarts after it, then the views are replaced.
   */
  async install(snapshot: ViewSnapshot): Promise<void> {
    // Set first: the batch the applier finishes while it pauses must not start a snapshot of the
    // views this one replaces (saving it would drop the snapshot the log is about to rely on).
    this.installing = true;
    try {
      while (this.taking) await this.taking;
      const { log, store, logger } = this.options;
      const { incomingDir } = this.options;
      const source = `received at index ${snapshot.meta.index}`;
      const started = Date.now();
      fs.rmSync(incomingDir, { recursive: true, force: true });
      // Checked and written out while the old views still serve; only the swap pauses them.
      try {
        const meta = await extractSnapshot(snapshot.data, incomingDir, source, { onProgress: (progress) => logger.info({ ...progress, index: snapshot.meta.index }, 'writing out a snapshot from the leader') });
        if (meta.index !== snapshot.meta.index || meta.term !== snapshot.meta.term) {
          throw new LoomError('CORRUPT', `snapshot ${source} says it was taken at ${meta.index}/${meta.term}, not ${snapshot.meta.index}/${snapshot.meta.term}`, { index: meta.index, term: meta.term });
        }
      } catch (err) {
        // Raft's own bytes (a file of the store): nothing else reads them.
        snapshot.data.release?.();
        fs.rmSync(incomingDir, { recursive: true, force: true });
        throw err;
      }
      store.save(snapshot);
      await this.options.pauseApplier();
      await this.options.replaceViews(snapshot.meta, () => log.resetToSnapshot(snapshot.meta));
      this.lastIndex = Math.max(this.lastIndex, snapshot.meta.index);
      logger.info({ index: snapshot.meta.index, term: snapshot.meta.term, bytes: snapshot.data.byteLength, ms: Date.now() - started }, 'snapshot installed');
    } finally {
      this.installing = false;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    while (this.taking) await this.taking;
  }
}
