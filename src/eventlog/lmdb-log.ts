// The durable log on LMDB: entries under 8-byte big-endian keys, CRC-framed msgpack values, Raft's
// hard state and snapshot point in a `meta` sub-database of the same environment.
//
// Durability: every write resolves only after lmdb-js reports it `flushed` (fsynced), not merely
// committed. Writes issued in the same event-loop turn join one LMDB transaction and one fsync (the
// group commit): they are lmdb-js asynchronous puts and removes, which lmdb-js batches by event turn
// (`eventTurnBatching`) and executes, in issue order, on its write thread. Up to
// `groupsInFlightMax` group commits are in flight at once, so one group's fsync overlaps the next
// one's writes (lmdb-js's `overlappingSync`); a turn's appends beyond `groupEntriesMax` entries
// wait for the next group, so that many concurrent appenders, who all wake when their group is
// durable, split over two groups instead of taking turns with the disk. Writes never overtake:
// once a write waits, every later one waits behind it, and groups resolve in the order formed.
import * as path from 'node:path';
import { statSync } from 'node:fs';
import { open, type Database, type RootDatabase } from 'lmdb';
import { LoomError, assert, noteMappedBytes, watchMappedFile } from '../util';
import { decodeEntryFrame, decodeEntryFrameUnchecked, decodeEntryFrameView, decodeEntryValue, decodeIndexKey, encodeEntryValue, encodeIndexKey, indexKeyEncoder, isEntryDataReused, sharedValueDecoder, writeIndexKey } from './codec';
import { entryBytesMaxDefault, readBytesMaxDefault } from './limits';
import type { HardState, LogEntry, LogStats, LogStore, SnapshotMeta } from './types';
import { checkAppend, checkIndex, entrySizeBytes } from './validate';

export type SyncMode = 'full' | 'none';

export interface LmdbLogOptions {
  /** Directory of the log's LMDB environment (created if missing). */
  path: string;
  /** `none` skips fsync: for tests and benchmarks only, an acknowledged write may be lost on a crash. */
  sync?: SyncMode;
  entryBytesMax?: number;
  /** Largest size the memory map (and so the log) may grow to. */
  mapSizeBytes?: number;
  readOnly?: boolean;
  /** Told about every durable append and every fsync, for metrics. */
  observer?: LogObserver;
}

export interface LogObserver {
  /** An append became durable, `seconds` after it was issued. */
  appended(entries: number, seconds: number): void;
  /** One group commit reached the disk (one fsync). */
  synced(): void;
}

export interface VerifyReport {
  ok: boolean;
  checked: number;
  firstIndex: number;
  lastIndex: number;
  /** The first bad entry and why, when `ok` is false. */
  bad?: { index: number; reason: string };
}

/**
 * One group commit: the writes of one event-loop turn, one LMDB transaction, one fsync. It is
 * `forming` while it waits for a turn of its own (its writes wait in `queued`), `open` while its
 * writes go to lmdb-js in the current turn, then in flight until it is durable.
 */
interface GroupCommit {
  /** Writes that arrived while the previous group was in flight, issued in order when this one opens. */
  queued: Array<() => void>;
  /** Appended entries, dropped from `pending` once durable. */
  entries: LogEntry[];
  /** For the observer, per append call: how many entries, and when it was issued (performance.now()). */
  appendEntries: number[];
  appendStartedMs: number[];
  /** lmdb-js's promises for this group's transaction: committed, then flushed (fsynced). */
  committed: Promise<unknown> | undefined;
  flushed: Promise<unknown> | undefined;
  /** Writes run in a transaction callback (large values), each with a promise that rejects if it threw. */
  callbackWrites: Array<Promise<unknown>>;
  /** Holds large values (transaction callbacks): such a group is the only one in flight. */
  large: boolean;
  /** lmdb-js reported the group flushed; it resolves once every group before it has too. */
  flushedDone: boolean;
  /** Resolves once every write of the group is durable; what `append` and the other writes return. */
  durable: Promise<void>;
  resolve: () => void;
  reject: (err: Error) => void;
}

const mapSizeBytesDefault = 64 * 1024 * 1024 * 1024;
/** Bytes of durable entries kept in memory for the reader that follows the commit (the applier). */
export const recentBytesMax = 8 * 1024 * 1024;
/** Most durable entries kept so: small entries would otherwise fill the heap with tens of thousands. */
export const recentEntriesMax = 4096;
/** Values at least this large are put from the main thread (see putEntry). */
const mainThreadPutBytesMin = 16 * 1024;
/** Group commits committing or fsyncing at once. */
const groupsInFlightMax = 2;
/** Appended entries that one turn puts in one group; later appends of the turn form the next group. */
const groupEntriesMax = 128;
const hardStateKey = 'hard';
const snapshotKey = 'snapshot';

export class LmdbLog implements LogStore {
  readonly file: string;
  private readonly env: RootDatabase;
  private readonly entriesDb: Database<Buffer, Buffer>;
  /**
   * The same database, for range reads: keys decode straight to indexes and each value is handed
   * over in lmdb-js's shared read buffer, decoded (and CRC-checked) before the next one is read.
   */
  private readonly entriesReader: Database<Uint8Array, number>;
  private readonly metaDb: Database<unknown, string>;
  private readonly entryBytesMax: number;
  private readonly readOnly: boolean;
  private readonly observer: LogObserver | undefined;
  private snapshot: SnapshotMeta;
  private hard: HardState;
  private last: number;
  private lastTerm: number;
  /** Appended entries whose write has not committed yet: readable before they are on disk. */
  private readonly pending = new Map<number, LogEntry>();
  /**
   * The latest durable entries, oldest first, at most recentBytesMax and recentEntriesMax: the
   * applier reads an entry right after its commit, and takes it from here instead of copying it
   * back out of LMDB and checking the CRC of bytes this process wrote itself.
   */
  private readonly recent = new Map<number, LogEntry>();
  private recentBytes = 0;
  /** The group whose writes go to lmdb-js in this event-loop turn; it is in flight once the turn's batch closes. */
  private openGroup: GroupCommit | undefined;
  /** The groups committing and fsyncing now, oldest first: at most groupsInFlightMax. */
  private readonly inFlight: GroupCommit[] = [];
  /** The group collecting writes that wait for a turn (and a slot in flight); it opens in a later turn. */
  private forming: GroupCommit | undefined;
  private formingScheduled = false;
  /** Scratch key for puts and removes: lmdb-js copies a key into its write instructions at once. */
  private readonly key = Buffer.alloc(8);
  private closed = false;
  /** Stops giving back the pages of this log's map that reads touched (see util/mapped-memory.ts). */
  private readonly unwatchMap: () => void;
  private failure: Error | undefined;

  private constructor(options: LmdbLogOptions) {
    this.file = path.join(options.path, 'data.mdb');
    this.entryBytesMax = options.entryBytesMax ?? entryBytesMaxDefault;
    this.readOnly = options.readOnly ?? false;
    this.observer = options.observer;
    this.env = open({
      path: options.path,
      maxDbs: 4,
      mapSize: options.mapSizeBytes ?? mapSizeBytesDefault,
      noSync: options.sync === 'none',
      readOnly: this.readOnly,
      compression: false,
      cache: false,
    });
    this.entriesDb = this.env.openDB<Buffer, Buffer>({ name: 'entries', encoding: 'binary', keyEncoding: 'binary', cache: false });
    // lmdb-js takes per-database encoders although its typings list them only for the root.
    const readerOptions = { name: 'entries', keyEncoder: indexKeyEncoder, encoder: sharedValueDecoder, cache: false };
    this.entriesReader = this.env.openDB<Uint8Array, number>(readerOptions);
    this.metaDb = this.env.openDB<unknown, string>({ name: 'meta', encoding: 'msgpack', cache: false });
    // lmdb-js calls this just before it closes the current turn's batch into a transaction.
    this.env.on('beforecommit', () => this.closeOpenGroup());
    this.snapshot = (this.metaDb.get(snapshotKey) as SnapshotMeta | undefined) ?? { index: 0, term: 0 };
    this.hard = (this.metaDb.get(hardStateKey) as HardState | undefined) ?? { term: 0, vote: 0, commit: 0 };
    this.last = this.snapshot.index;
    this.lastTerm = this.snapshot.term;
    this.loadTail();
    this.unwatchMap = watchMappedFile(this.file);
  }

  static open(options: LmdbLogOptions): LmdbLog {
    return new LmdbLog(options);
  }

  append(entries: LogEntry[]): Promise<void> {
    this.checkWritable();
    checkAppend(entries, this.last, this.lastTerm, this.entryBytesMax);
    if (entries.length === 0) return Promise.resolve();
    // Encode everything before queueing anything, so a bad entry writes nothing.
    const values = entries.length === 1 ? [encodeEntryValue(entries[0])] : entries.map(encodeEntryValue);
    const group = this.groupForWrite(entries.length, values.some((v) => v.length >= mainThreadPutBytesMin));
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i];
      this.pending.set(entry.index, entry);
      group.entries.push(entry);
      if (group === this.openGroup) this.putEntry(group, entry.index, values[i]);
      else group.queued.push(() => this.putEntry(group, entry.index, values[i]));
    }
    if (this.observer) {
      group.appendEntries.push(entries.length);
      group.appendStartedMs.push(performance.now());
    }
    const lastEntry = entries[entries.length - 1];
    this.last = lastEntry.index;
    this.lastTerm = lastEntry.term;
    return group.durable;
  }

  entries(lo: number, hi: number, bytesMax = readBytesMaxDefault): LogEntry[] {
    // An entry in memory whose data its proposer will reuse is copied: the caller may keep it.
    return this.entriesToApply(lo, hi, bytesMax).map((entry) => (isEntryDataReused(entry.data) ? { ...entry, data: Buffer.from(entry.data) } : entry));
  }

  entriesToApply(lo: number, hi: number, bytesMax = readBytesMaxDefault): LogEntry[] {
    const out: LogEntry[] = [];
    this.scan(lo, hi, bytesMax, true, (entry) => out.push(entry));
    return out;
  }

  /**
   * Like `entries`, but an entry's data may be a view into lmdb-js's shared read buffer, which any
   * read of any LMDB database in this process overwrites: `visit` must be done with the bytes
   * before it reads LMDB (or returns).
   */
  visitEntries(lo: number, hi: number, visit: (entry: LogEntry) => void, bytesMax = readBytesMaxDefault, uncheckedTypes?: ReadonlySet<string>): number {
    return this.scan(lo, hi, bytesMax, false, visit, uncheckedTypes);
  }

  /**
   * Reads the file first, not the entries kept in memory: a reader that checks the data itself
   * (a chunk's sha256) then sees damage on disk as soon as it happens, as it would in a view.
   */
  visitEntryUnchecked(index: number, visit: (entry: LogEntry) => void): boolean {
    this.checkOpen();
    if (index < this.firstIndex() || index > this.last) return false;
    const value = this.entriesReader.get(index);
    if (value !== undefined) {
      noteMappedBytes(value.length);
      visit(decodeEntryFrameUnchecked(value, value.length, index, this.file));
      return true;
    }
    // Not durable yet, or durable after this read transaction began.
    const inMemory = this.pending.get(index) ?? this.recent.get(index);
    if (inMemory === undefined) throw new LoomError('CORRUPT', `log in ${this.file} is missing entry ${index}`, { index, file: this.file });
    visit(inMemory);
    return true;
  }

  releaseEntryData(index: number): boolean {
    if (this.pending.has(index)) return false;
    const kept = this.recent.get(index);
    if (kept !== undefined) this.forgetRecentEntry(kept);
    return true;
  }

  private scan(lo: number, hi: number, bytesMax: number, copyData: boolean, visit: (entry: LogEntry) => void, uncheckedTypes?: ReadonlySet<string>): number {
    this.checkOpen();
    if (lo < this.firstIndex() || hi > this.last + 1 || lo > hi) {
      throw new LoomError('NOT_FOUND', `entries [${lo}, ${hi}) are outside the log [${this.firstIndex()}, ${this.last}]`, { lo, hi });
    }
    let visited = 0;
    let bytes = 0;
    const take = (entry: LogEntry): boolean => {
      bytes += entrySizeBytes(entry);
      if (visited > 0 && bytes > bytesMax) return false;
      visited++;
      visit(entry);
      return true;
    };
    const decode =
      uncheckedTypes !== undefined
        ? (value: Uint8Array, size: number, index: number, file: string) => decodeEntryFrameUnchecked(value, size, index, file, uncheckedTypes)
        : copyData
          ? decodeEntryFrame
          : decodeEntryFrameView;
    // An entry is in memory (pending: appended, its group commit not finished; or recent) or only
    // on disk. Those in memory are usually a suffix, but group commits can finish out of order, so
    // runs of each are read in turn.
    let index = lo;
    while (index < hi) {
      const inMemory = this.pending.get(index) ?? this.recent.get(index);
      if (inMemory !== undefined) {
        if (!take(inMemory)) return visited;
        index++;
        continue;
      }
      let runEnd = index + 1;
      while (runEnd < hi && !this.pending.has(runEnd) && !this.recent.has(runEnd)) runEnd++;
      let expected = index;
      for (const { key, value } of this.entriesReader.getRange({ start: index, end: runEnd })) {
        if (key !== expected) break;
        noteMappedBytes(value.length);
        if (!take(decode(value, value.length, key, this.file))) return visited;
        expected++;
      }
      if (expected !== runEnd) {
        throw new LoomError('CORRUPT', `log in ${this.file} is missing entry ${expected}`, { index: expected, file: this.file });
      }
      index = runEnd;
    }
    return visited;
  }

  term(i: number): number {
    this.checkOpen();
    checkIndex(i, 'term');
    if (i === this.snapshot.index) return this.snapshot.term;
    if (i === this.last) return this.lastTerm;
    if (i < this.firstIndex() || i > this.last) {
      throw new LoomError('NOT_FOUND', `log has no entry ${i} (first ${this.firstIndex()}, last ${this.last})`, { index: i });
    }
    return this.entries(i, i + 1)[0].term;
  }

  firstIndex(): number {
    return this.snapshot.index + 1;
  }

  lastIndex(): number {
    return this.last;
  }

  async truncateSuffix(i: number): Promise<void> {
    this.checkWritable();
    checkIndex(i, 'truncateSuffix');
    assert(i > this.hard.commit, `truncateSuffix(${i}) would remove committed entries (commit ${this.hard.commit})`);
    if (i > this.last) return;
    assert(i > this.snapshot.index, `truncateSuffix(${i}) reaches into the snapshot at ${this.snapshot.index}`);
    const oldLast = this.last;
    this.last = i - 1;
    this.lastTerm = this.term(i - 1);
    for (let index = i; index <= oldLast; index++) this.pending.delete(index);
    this.forgetRecent((index) => index >= i);
    await this.write((group) => {
      for (let index = i; index <= oldLast; index++) this.removeEntry(group, index);
    });
  }

  async compactPrefix(i: number, conf?: SnapshotMeta['conf']): Promise<void> {
    this.checkWritable();
    checkIndex(i, 'compactPrefix');
    if (i <= this.snapshot.index) return;
    assert(i <= this.last, `compactPrefix(${i}) beyond last index ${this.last}`);
    const oldFirst = this.firstIndex();
    const snapshot: SnapshotMeta = conf ? { index: i, term: this.term(i), conf } : { index: i, term: this.term(i) };
    this.snapshot = snapshot;
    for (let index = oldFirst; index <= i; index++) this.pending.delete(index);
    this.forgetRecent((index) => index <= i);
    await this.write((group) => {
      for (let index = oldFirst; index <= i; index++) this.removeEntry(group, index);
      this.track(group, this.metaDb.put(snapshotKey, snapshot));
    });
  }

  hardState(): HardState {
    return { ...this.hard };
  }

  async setHardState(state: HardState): Promise<void> {
    this.checkWritable();
    this.hard = { ...state };
    const hard = this.hard;
    await this.write((group) => this.track(group, this.metaDb.put(hardStateKey, hard)));
  }

  snapshotMeta(): SnapshotMeta {
    return { ...this.snapshot };
  }

  async resetToSnapshot(meta: SnapshotMeta): Promise<void> {
    this.checkWritable();
    const oldFirst = this.firstIndex();
    const oldLast = this.last;
    this.snapshot = { ...meta };
    this.last = meta.index;
    this.lastTerm = meta.term;
    this.pending.clear();
    this.forgetRecent(() => true);
    const snapshot = this.snapshot;
    await this.write((group) => {
      for (let index = oldFirst; index <= oldLast; index++) this.removeEntry(group, index);
      this.track(group, this.metaDb.put(snapshotKey, snapshot));
    });
  }

  stats(): LogStats {
    this.checkOpen();
    let sizeBytes = 0;
    try {
      sizeBytes = statSync(this.file).size;
    } catch {
      sizeBytes = 0;
    }
    return { firstIndex: this.firstIndex(), lastIndex: this.last, lastTerm: this.lastTerm, sizeBytes };
  }

  /**
   * Reads every stored entry in order, checking its CRC, that indexes are dense and that terms
   * never decrease. Stops at the first bad entry. `onProgress` is called every `progressEvery` entries.
   */
  verify(onProgress?: (checked: number, total: number) => void, progressEvery = 100_000): VerifyReport {
    this.checkOpen();
    const first = this.firstIndex();
    const total = this.last - first + 1;
    let expected = first;
    let previousTerm = this.snapshot.term;
    let checked = 0;
    const report = (bad?: { index: number; reason: string }): VerifyReport => ({
      ok: bad === undefined,
      checked,
      firstIndex: first,
      lastIndex: this.last,
      ...(bad ? { bad } : {}),
    });
    for (const { key: index, value } of this.entriesReader.getRange({ start: 0 })) {
      if (index !== expected) return report({ index: expected, reason: `entry ${expected} is missing (next stored is ${index})` });
      let entry: LogEntry;
      try {
        entry = decodeEntryFrame(value, value.length, index, this.file);
      } catch (err) {
        return report({ index, reason: (err as Error).message });
      }
      if (entry.term < previousTerm) return report({ index, reason: `term ${entry.term} is below the previous term ${previousTerm}` });
      previousTerm = entry.term;
      expected++;
      checked++;
      if (onProgress && checked % progressEvery === 0) onProgress(checked, total);
    }
    if (expected !== this.last + 1) return report({ index: expected, reason: `entry ${expected} is missing (log should end at ${this.last})` });
    return report();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Writes already accepted finish first (or fail); their callers hear the outcome, not a closed env.
    for (const group of [...this.inFlight, this.openGroup, this.forming]) {
      if (group) await group.durable.catch(() => undefined);
    }
    try {
      await this.env.close();
    } finally {
      this.unwatchMap();
    }
  }

  private keepRecent(entry: LogEntry): void {
    const previous = this.recent.get(entry.index);
    if (previous !== undefined) this.recentBytes -= entrySizeBytes(previous);
    this.recent.set(entry.index, entry);
    this.recentBytes += entrySizeBytes(entry);
    if (this.recentBytes <= recentBytesMax && this.recent.size <= recentEntriesMax) return;
    // Over a limit: drop the oldest down to three quarters of both. Iterating a Map from its start
    // walks past the slots of deleted keys until V8 next rehashes it, so evicting one entry per
    // insert made every insert pay for all earlier evictions (16% of an append's CPU).
    for (const oldest of this.recent.values()) {
      if (this.recentBytes <= (recentBytesMax * 3) / 4 && this.recent.size <= (recentEntriesMax * 3) / 4) break;
      this.forgetRecentEntry(oldest);
    }
  }

  private forgetRecent(which: (index: number) => boolean): void {
    for (const [index, entry] of this.recent) if (which(index)) this.forgetRecentEntry(entry);
  }

  private forgetRecentEntry(entry: LogEntry): void {
    this.recent.delete(entry.index);
    this.recentBytes -= entrySizeBytes(entry);
  }

  private loadTail(): void {
    const lastKeys = [...this.entriesDb.getKeys({ reverse: true, limit: 1 })];
    if (lastKeys.length === 0) return;
    const lastIndex = decodeIndexKey(lastKeys[0]);
    const firstKeys = [...this.entriesDb.getKeys({ limit: 1 })];
    const firstIndex = decodeIndexKey(firstKeys[0]);
    if (firstIndex !== this.snapshot.index + 1) {
      throw new LoomError('CORRUPT', `log in ${this.file} starts at entry ${firstIndex}, expected ${this.snapshot.index + 1}`, {
        index: firstIndex,
        file: this.file,
      });
    }
    const value = this.entriesDb.getBinary(lastKeys[0]);
    assert(value !== undefined, 'last key has no value');
    const entry = decodeEntryValue(value, lastIndex, this.file);
    this.last = lastIndex;
    this.lastTerm = entry.term;
  }

  /** Queues a write that is not an append (truncation, compaction, hard state) into the current group. */
  private write(op: (group: GroupCommit) => void): Promise<void> {
    const group = this.groupForWrite();
    if (group === this.openGroup) op(group);
    else group.queued.push(() => op(group));
    return group.durable;
  }

  /**
   * The group a write of `entries` appended entries (0 for other writes) issued now belongs to: the
   * open one while it has room; else the forming one (every write after a waiting one waits too);
   * else a new group, opened at once when a slot is free. `large` writes go through lmdb-js
   * transaction callbacks, and a group holding them is kept alone in flight: overlapping such a
   * batch with another one lost a flush notification now and then (an upload that never finished).
   */
  private groupForWrite(entries = 0, large = false): GroupCommit {
    const open = this.openGroup;
    if (this.forming === undefined) {
      const roomy = open !== undefined && (open.entries.length === 0 || open.entries.length + entries <= groupEntriesMax);
      if (open !== undefined && roomy && (!large || this.inFlight.length === 0)) {
        open.large ||= large;
        return open;
      }
      if (open === undefined && this.mayOpen(large)) {
        this.openGroup = newGroupCommit();
        this.openGroup.large = large;
        return this.openGroup;
      }
      this.forming = newGroupCommit();
    }
    this.forming.large ||= large;
    return this.forming;
  }

  /** Whether a group (large or not) may go to lmdb-js now, beside the groups in flight. */
  private mayOpen(large: boolean): boolean {
    if (large) return this.inFlight.length === 0;
    return this.inFlight.length < groupsInFlightMax && !this.inFlight.some((g) => g.large);
  }

  /** Opens the forming group if nothing else is open in this turn and it may go beside those in flight. */
  private openForming(): void {
    const next = this.forming;
    if (next === undefined || this.openGroup !== undefined || !this.mayOpen(next.large)) return;
    this.forming = undefined;
    this.openGroup = next;
    try {
      for (const op of next.queued) op();
    } catch (err) {
      this.groupFailed(next, err as Error);
    }
    next.queued = [];
  }

  /** Opens the forming group in a later turn: this turn's batch has closed. */
  private scheduleForming(): void {
    if (this.forming === undefined || this.formingScheduled || !this.mayOpen(this.forming.large)) return;
    this.formingScheduled = true;
    setImmediate(() => {
      this.formingScheduled = false;
      this.openForming();
    });
  }

  private putEntry(group: GroupCommit, index: number, value: Buffer): void {
    if (value.length < mainThreadPutBytesMin) {
      this.track(group, this.entriesDb.put(writeIndexKey(this.key, index), value));
      return;
    }
    // A large value is put from the main thread, inside the same batch's transaction: LMDB
    // mallocs its overflow pages in the thread that puts, and freed 256 KiB blocks linger in the
    // malloc arenas of lmdb-js's (several) writer threads, which grew a 1 GiB upload's anonymous
    // memory by ~40 MiB. A failed callback rejects its own promise, so every one is awaited.
    const key = encodeIndexKey(index);
    const written = this.env.transaction(() => this.entriesDb.putSync(key, value));
    noteMappedBytes(value.length);
    this.track(group, written);
    group.callbackWrites.push(written);
  }

  private removeEntry(group: GroupCommit, index: number): void {
    this.track(group, this.entriesDb.remove(writeIndexKey(this.key, index)));
  }

  /**
   * Remembers the promises lmdb-js hands out for the group's batch: every write of one batch gets the
   * same commit promise, and `flushed` read right after the first write is that batch's fsync.
   */
  private track(group: GroupCommit, committed: Promise<unknown>): void {
    if (group.committed !== undefined) return;
    group.committed = committed;
    group.flushed = new Promise((resolve) => void this.env.flushed.then(resolve));
  }

  /** lmdb-js is closing this turn's batch: the open group is now in flight. */
  private closeOpenGroup(): void {
    const group = this.openGroup;
    // A group whose only write threw before reaching lmdb-js has nothing in this batch: it stays open.
    if (group === undefined || group.committed === undefined || group.flushed === undefined) return;
    this.openGroup = undefined;
    this.inFlight.push(group);
    const flushed = group.flushed;
    const committed = group.callbackWrites.length === 0 ? group.committed : Promise.all([group.committed, ...group.callbackWrites]);
    committed.then(() => flushed).then(
      () => this.groupFlushed(group),
      (err: Error) => this.groupFailed(group, err),
    );
    this.scheduleForming();
  }

  /** Finishes, in order, every group from the oldest in flight up to the first not yet flushed. */
  private groupFlushed(group: GroupCommit): void {
    group.flushedDone = true;
    while (this.inFlight.length > 0 && this.inFlight[0].flushedDone) this.groupDurable(this.inFlight.shift() as GroupCommit);
  }

  private groupDurable(group: GroupCommit): void {
    this.observer?.synced();
    for (const entry of group.entries) {
      if (this.pending.get(entry.index) !== entry) continue;
      this.pending.delete(entry.index);
      this.keepRecent(entry);
    }
    if (this.observer) {
      const now = performance.now();
      for (let i = 0; i < group.appendEntries.length; i++) this.observer.appended(group.appendEntries[i], (now - group.appendStartedMs[i]) / 1000);
    }
    // The forming group opens now, in this turn, so that the callers woken by `resolve` below join it.
    this.openForming();
    group.resolve();
  }

  private groupFailed(group: GroupCommit, err: Error): void {
    // A write that failed leaves memory ahead of the disk; nothing more may be written.
    this.failure ??= err;
    const failed = new LoomError('UNAVAILABLE', `log write to ${this.file} failed: ${err.message}`, { file: this.file });
    for (const g of new Set([group, ...this.inFlight, this.openGroup, this.forming])) g?.reject(failed);
    this.inFlight.length = 0;
    this.openGroup = this.forming = undefined;
  }

  private checkOpen(): void {
    if (this.closed) throw new LoomError('UNAVAILABLE', 'the log is closed');
  }

  private checkWritable(): void {
    this.checkOpen();
    // Refused here, before anything is queued: lmdb-js would fail the write on its thread instead.
    if (this.readOnly) throw new LoomError('UNAVAILABLE', `the log in ${this.file} is open read-only`, { file: this.file });
    if (this.failure) {
      throw new LoomError('UNAVAILABLE', `the log stopped accepting writes after a failed write: ${this.failure.message}`, { file: this.file });
    }
  }
}

function newGroupCommit(): GroupCommit {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const durable = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return {
    queued: [],
    entries: [],
    appendEntries: [],
    appendStartedMs: [],
    committed: undefined,
    flushed: undefined,
    callbackWrites: [],
    large: false,
    flushedDone: false,
    durable,
    resolve,
    reject,
  };
}
