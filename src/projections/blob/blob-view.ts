// The blob view: the object index of every bucket and the content-addressed chunk store with its
// reference counts, in sub-databases of the ViewStore's LMDB environment. Garbage collection is
// driven by `blob.gc` entries, so every replica removes exactly the same chunks (docs/buckets.md).
// A chunk's bytes are stored once: the view points at the log entry that carries them, and copies
// them in only before the log forgets that entry (compaction) or into a snapshot.

import { createHash } from 'node:crypto';
import type { Database } from 'lmdb';
import type { LogEntry } from '../../eventlog';
import { LoomError, retryAbortedCommit, noteMappedBytes } from '../../util';
import type { Outcome } from '../decide';
import { decodeMutation, type BlobChunk, type BlobCommit, type BlobDel, type BlobGc } from '../entries';
import type { Projection } from '../projection';
import type { ViewStore } from '../kv/kv-view';

export interface ObjectRecord {
  size: number;
  /** SHA-256 of the whole object, hex. */
  sha256: string;
  chunkBytes: number;
  /** Concatenated 32-byte chunk digests, in order. */
  chunks: Uint8Array;
  contentType: string;
  metadata: Record<string, string>;
  /** Seq of the commit that wrote this version. */
  rev: number;
  updatedAt: number;
}

/** References to one chunk (one per occurrence in an object) and, at zero, since when it is unreferenced. */
interface ChunkRefs {
  refs: number;
  /** Timestamp (of the entry) at which refs became 0 or the chunk was stored; 0 while referenced. */
  since: number;
}

/** A chunk whose bytes are still in the log: the `blob.chunk` entry that stored them. */
interface ChunkInLog {
  index: number;
  length: number;
}

/** The log, as the blob view reads chunk bytes from it. */
export interface LogChunkReader {
  /**
   * Hands the chunk bytes of the `blob.chunk` entry at `index` to `take` (they are valid only
   * during the call) and returns what it returns; undefined once the log no longer holds that entry.
   */
  read<T>(index: number, take: (bytes: Uint8Array) => T): T | undefined;
  /** The log's first index: the entries below it were compacted away (or replaced by a snapshot). */
  firstIndex(): number;
}

/** Chunks copied from the log into the view per transaction when the log is about to forget them. */
const materializeBatchChunks = 64;
/** How often a long copy of chunks into the view reports its progress. */
const materializeProgressMs = 2000;

export interface MaterializeProgress {
  /** Chunks copied so far, and their bytes. */
  chunks: number;
  bytes: number;
  /** Chunks due when the copy began (some may be collected before their turn). */
  of: number;
}

type ObjectKey = [string, string];

export const blobProjectionName = 'blob';
export const blobProjectionVersion = 1;

/** The blob sub-databases; chunk keys are hex digests so that every index sorts the same way. */
export class BlobStore {
  readonly objects: Database<ObjectRecord, ObjectKey>;
  /** Chunk bytes held by the view itself (copied from the log before it was compacted). */
  readonly chunks: Database<Buffer, string>;
  /** Chunks whose bytes are in the log; a chunk is in this database or in `chunks`, never both. */
  readonly chunksInLog: Database<ChunkInLog, string>;
  readonly refs: Database<ChunkRefs, string>;
  /** Unreferenced chunks by the time they became so: what a `blob.gc` walks. */
  readonly orphans: Database<true, [number, string]>;
  readonly conflicts: Database<true, number>;
  /** Seqs of `blob.del` entries that found no object: they changed nothing, so a replay shows no change. */
  readonly unchanged: Database<true, number>;
  /**
   * The databases dump() shows as they are; the chunks of both stores are shown as `blob-chunks`.
   * Not `blob-unchanged`: a view built before it existed has no records for its older no-op
   * deletes, so an upgraded replica and one rebuilt from the log differ there and nowhere else.
   */
  private static readonly plainDbNames = ['blob-objects', 'blob-refs', 'blob-orphans', 'blob-conflicts'];

  /** `readLogChunk` reads chunks still in the log; without it, reading one of those is CORRUPT. */
  constructor(
    readonly views: ViewStore,
    readonly readLogChunk?: LogChunkReader,
  ) {
    const env = views.env;
    this.objects = env.openDB<ObjectRecord, ObjectKey>({ name: 'blob-objects', encoding: 'msgpack', cache: false });
    this.chunks = env.openDB<Buffer, string>({ name: 'blob-chunks', encoding: 'binary', cache: false });
    this.chunksInLog = env.openDB<ChunkInLog, string>({ name: 'blob-chunks-in-log', encoding: 'msgpack', cache: false });
    this.refs = env.openDB<ChunkRefs, string>({ name: 'blob-refs', encoding: 'msgpack', cache: false });
    this.orphans = env.openDB<true, [number, string]>({ name: 'blob-orphans', encoding: 'msgpack', cache: false });
    this.conflicts = env.openDB<true, number>({ name: 'blob-conflicts', encoding: 'msgpack', cache: false });
    this.unchanged = env.openDB<true, number>({ name: 'blob-unchanged', encoding: 'msgpack', cache: false });
  }

  /** The stored length of a chunk, wherever its bytes are; undefined if it is not stored. */
  chunkLength(sha: string): number | undefined {
    return this.chunksInLog.get(sha)?.length ?? this.chunks.getBinaryFast(sha)?.length;
  }

  /**
   * Hands a chunk's bytes, as stored (not checked), to `take`, valid only during the call; undefined
   * if it is not stored. A chunk whose log entry is gone and that the view does not hold is CORRUPT.
   */
  readChunk<T>(sha: string, take: (bytes: Uint8Array) => T): T | undefined {
    const inLog = this.chunksInLog.get(sha);
    if (inLog !== undefined) {
      const read = this.readLogChunk?.read(inLog.index, take);
      if (read !== undefined) return read;
      // The log may have been compacted since this read transaction began, after the chunk was
      // copied into the view: look again in a fresh one.
      this.views.env.resetReadTxn();
      if (this.chunksInLog.get(sha)?.index === inLog.index) {
        // A log that starts past everything this view applied was reset for a snapshot that is
        // about to replace the view (a follower installing one): the view is stale, not damaged.
        const applied = this.views.readCheckpoint(blobProjectionName)?.index ?? 0;
        if (this.readLogChunk !== undefined && this.readLogChunk.firstIndex() - 1 > applied) {
          throw new LoomError('UNAVAILABLE', 'this node is installing a snapshot from the leader; retry shortly');
        }
        throw new LoomError('CORRUPT', `chunk ${sha} is stored in log entry ${inLog.index}, which the log no longer holds`, { sha256: sha, index: inLog.index });
      }
    }
    // getBinaryFast reuses one buffer: only its `length` is meaningful (its byteLength is the buffer's).
    const stored = this.chunks.getBinaryFast(sha);
    if (stored === undefined) return undefined;
    noteMappedBytes(stored.length);
    return take(stored.subarray(0, stored.length));
  }

  /**
   * Copies the bytes of every chunk stored by a log entry at or below `index` into the view, before
   * the log forgets those entries (or into a copy that must stand without the log: a snapshot).
   * Runs in batches, each its own transaction, yielding between them; the applier may run in
   * between (it only adds chunks above the applied index, and a chunk it collects is skipped).
   * `onProgress` hears how far it is, about every materializeProgressMs. A batch whose commit LMDB
   * aborts is run again (util/aborted-commit.ts), and `onAbortedCommit` hears of it.
   */
  async materializeUpTo(
    index: number,
    onProgress?: (progress: MaterializeProgress) => void,
    onAbortedCommit: (err: Error, attempt: number) => void = () => undefined,
  ): Promise<{ chunks: number; bytes: number }> {
    const read = this.readLogChunk;
    const due: string[] = [];
    for (const { key, value } of this.chunksInLog.getRange({})) if (value.index <= index) due.push(key);
    let chunks = 0;
    let bytes = 0;
    let reportAt = Date.now() + materializeProgressMs;
    for (let at = 0; at < due.length; at += materializeBatchChunks) {
      if (at > 0) await new Promise((resolve) => setImmediate(resolve));
      if (onProgress && Date.now() >= reportAt) {
        onProgress({ chunks, bytes, of: due.length });
        reportAt = Date.now() + materializeProgressMs;
      }
      // Counted per batch: a batch whose commit LMDB aborted runs again from the start.
      const batch = retryAbortedCommit(
        () =>
          this.views.env.transactionSync(() => {
            const copied = { chunks: 0, bytes: 0 };
            for (const sha of due.slice(at, at + materializeBatchChunks)) {
              const inLog = this.chunksInLog.get(sha);
              if (inLog === undefined || inLog.index > index) continue;
              // Checked before the log's copy is forgotten: a damaged one stops the compaction. The
              // bytes go straight from the log's read into the view (putSync copies them), no copy between.
              const found = read?.read(inLog.index, (stored) => {
                if (createHash('sha256').update(stored).digest('hex') !== sha) {
                  throw new LoomError('CORRUPT', `chunk ${sha} in log entry ${inLog.index} fails its sha256 check; the log is not compacted below it`, { sha256: sha, index: inLog.index });
                }
                this.chunks.putSync(sha, Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength));
                return true;
              });
              if (found === undefined) {
                throw new LoomError('CORRUPT', `chunk ${sha} is stored in log entry ${inLog.index}, which the log no longer holds`, { sha256: sha, index: inLog.index });
              }
              this.chunksInLog.removeSync(sha);
              copied.chunks++;
              copied.bytes += inLog.length;
            }
            return copied;
          }),
        onAbortedCommit,
      );
      chunks += batch.chunks;
      bytes += batch.bytes;
    }
    return { chunks, bytes };
  }

  /**
   * Every key/value pair of the blob databases, in order: for comparing two replicas byte for byte.
   * Chunks are shown with their bytes, wherever they are (`blob-chunks`), so a replica that copied
   * them out of its log before compacting it compares equal to one that did not.
   */
  *dump(): Generator<[string, Buffer, Buffer]> {
    const raw = (name: string): Database<Buffer, Buffer> => this.views.env.openDB<Buffer, Buffer>({ name, encoding: 'binary', keyEncoding: 'binary' });
    for (const name of BlobStore.plainDbNames) {
      for (const { key, value } of raw(name).getRange({})) yield [name, Buffer.from(key), Buffer.from(value)];
    }
    const shas = [...this.chunks.getKeys({}), ...this.chunksInLog.getKeys({})].sort();
    for (const sha of shas) {
      const bytes = this.readChunk(sha, (b) => Buffer.from(b)) ?? Buffer.alloc(0);
      yield ['blob-chunks', Buffer.from(sha), bytes];
    }
  }
}

/** Digest i of a chunk list, hex. */
export function chunkAt(chunks: Uint8Array, i: number): string {
  return Buffer.from(chunks.buffer, chunks.byteOffset + i * 32, 32).toString('hex');
}

/**
 * A conditional object write against the object's current rev (0: absent): undefined when it may
 * go ahead (no condition, or it holds), else the CONFLICT every replica decides alike.
 */
export function decideObjectCondition(seq: number, currentRev: number, write: { bucket: string; name: string; expectRev?: number }): (Outcome & { ok: false }) | undefined {
  const { expectRev, bucket, name } = write;
  if (expectRev === undefined || expectRev === currentRev) return undefined;
  const message =
    expectRev === 0
      ? `object ${name} already exists in bucket ${bucket} (rev ${currentRev})`
      : currentRev === 0
        ? `object ${name} does not exist in bucket ${bucket}, not at the expected rev ${expectRev}`
        : `object ${name} in bucket ${bucket} is at rev ${currentRev}, not the expected ${expectRev}`;
  return { ok: false, seq, code: 'CONFLICT', message, details: { bucket, name, currentRev } };
}

/**
 * Whether a commit may become visible, given the object's current rev (0: absent) and the stored
 * length of each of its chunks (undefined = not stored, e.g. collected under an upload that took
 * longer than the orphan age).
 */
export function decideBlobCommit(seq: number, currentRev: number, lengths: Array<number | undefined>, commit: BlobCommit): Outcome {
  const unmet = decideObjectCondition(seq, currentRev, commit);
  if (unmet) return unmet;
  const missing = lengths.findIndex((l) => l === undefined);
  if (missing >= 0) {
    return {
      ok: false,
      seq,
      code: 'CONFLICT',
      message: `chunk ${missing} of object ${commit.name} in bucket ${commit.bucket} is not stored (collected or never uploaded); upload again`,
      details: { bucket: commit.bucket, name: commit.name, chunk: missing },
    };
  }
  let total = 0;
  for (let i = 0; i < lengths.length; i++) {
    const length = lengths[i] as number;
    const last = i === lengths.length - 1;
    if ((!last && length !== commit.chunkBytes) || (last && length > commit.chunkBytes)) {
      return { ok: false, seq, code: 'CONFLICT', message: `chunk ${i} of object ${commit.name} has ${length} bytes, not ${commit.chunkBytes}`, details: { bucket: commit.bucket, name: commit.name, chunk: i } };
    }
    total += length;
  }
  if (total !== commit.size) {
    return { ok: false, seq, code: 'CONFLICT', message: `the chunks of object ${commit.name} hold ${total} bytes, not ${commit.size}`, details: { bucket: commit.bucket, name: commit.name } };
  }
  return { ok: true, seq, rev: seq };
}

export class BlobProjection implements Projection<void> {
  readonly name = blobProjectionName;
  readonly version = blobProjectionVersion;
  readonly handles = ['blob.chunk', 'blob.commit', 'blob.del', 'blob.gc'];

  constructor(private readonly store: BlobStore) {}

  reset(): void {
    const s = this.store;
    for (const db of [s.objects, s.chunks, s.chunksInLog, s.refs, s.orphans, s.conflicts, s.unchanged] as Array<Database<unknown, import('lmdb').Key>>) db.clearSync();
  }

  apply(entries: LogEntry[]): Array<Outcome | undefined> {
    const outcomes: Array<Outcome | undefined> = new Array(entries.length);
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i];
      const mutation = decodeMutation(entry);
      if (!mutation) continue;
      switch (mutation.type) {
        case 'blob.chunk':
          outcomes[i] = this.storeChunk(entry, mutation.body);
          break;
        case 'blob.commit':
          outcomes[i] = this.commit(entry, mutation.body);
          break;
        case 'blob.del':
          outcomes[i] = this.del(entry, mutation.body);
          break;
        case 'blob.gc':
          outcomes[i] = this.collect(entry, mutation.body);
          break;
        default:
          break;
      }
      if (outcomes[i] && !outcomes[i]?.ok) this.store.conflicts.putSync(entry.index, true);
    }
    return outcomes;
  }

  private storeChunk(entry: LogEntry, chunk: BlobChunk): Outcome {
    const s = this.store;
    const sha = Buffer.from(chunk.sha256.buffer, chunk.sha256.byteOffset, 32).toString('hex');
    const refs = s.refs.get(sha);
    if (refs === undefined) {
      // The bytes stay in this entry: the view notes where (materializeUpTo copies them in later).
      s.chunksInLog.putSync(sha, { index: entry.index, length: chunk.bytes.byteLength });
      s.refs.putSync(sha, { refs: 0, since: entry.ts });
      s.orphans.putSync([entry.ts, sha], true);
    } else if (refs.refs === 0) {
      // Stored again by an upload in progress: it must outlive the orphan age from now on.
      s.orphans.removeSync([refs.since, sha]);
      s.refs.putSync(sha, { refs: 0, since: entry.ts });
      s.orphans.putSync([entry.ts, sha], true);
    }
    return { ok: true, seq: entry.index };
  }

  private commit(entry: LogEntry, commit: BlobCommit): Outcome {
    const s = this.store;
    const count = commit.chunks.byteLength / 32;
    const lengths: Array<number | undefined> = new Array(count);
    for (let i = 0; i < count; i++) lengths[i] = s.chunkLength(chunkAt(commit.chunks, i));
    const key: ObjectKey = [commit.bucket, commit.name];
    const previous = s.objects.get(key);
    const outcome = decideBlobCommit(entry.index, previous?.rev ?? 0, lengths, commit);
    if (!outcome.ok) return outcome;
    // Reference the new chunks before releasing the old ones, so a chunk both share never drops to 0.
    for (let i = 0; i < count; i++) this.reference(chunkAt(commit.chunks, i), +1, entry.ts);
    if (previous) this.release(previous, entry.ts);
    s.objects.putSync(key, {
      size: commit.size,
      sha256: Buffer.from(commit.sha256.buffer, commit.sha256.byteOffset, 32).toString('hex'),
      chunkBytes: commit.chunkBytes,
      chunks: Buffer.from(commit.chunks.buffer, commit.chunks.byteOffset, commit.chunks.byteLength),
      contentType: commit.contentType,
      metadata: commit.metadata,
      rev: entry.index,
      updatedAt: entry.ts,
    });
    return outcome;
  }

  private del(entry: LogEntry, del: BlobDel): Outcome {
    const s = this.store;
    const key: ObjectKey = [del.bucket, del.name];
    const previous = s.objects.get(key);
    const unmet = decideObjectCondition(entry.index, previous?.rev ?? 0, del);
    if (unmet) return unmet;
    if (!previous) {
      // Remembered so that a watch replaying this entry shows no delete, as a live one does not.
      s.unchanged.putSync(entry.index, true);
      return { ok: true, seq: entry.index, rev: entry.index, deleted: false };
    }
    this.release(previous, entry.ts);
    s.objects.removeSync(key);
    return { ok: true, seq: entry.index, rev: entry.index, deleted: true };
  }

  private collect(entry: LogEntry, gc: BlobGc): Outcome {
    const s = this.store;
    const doomed: Array<[number, string]> = [];
    for (const key of s.orphans.getKeys({ start: [0, ''], end: [gc.beforeTs, ''], limit: gc.limit })) doomed.push(key);
    for (const [ts, sha] of doomed) {
      s.orphans.removeSync([ts, sha]);
      s.refs.removeSync(sha);
      s.chunks.removeSync(sha);
      s.chunksInLog.removeSync(sha);
    }
    return { ok: true, seq: entry.index, collected: doomed.length };
  }

  private release(record: ObjectRecord, ts: number): void {
    const count = record.chunks.byteLength / 32;
    for (let i = 0; i < count; i++) this.reference(chunkAt(record.chunks, i), -1, ts);
  }

  private reference(sha: string, delta: 1 | -1, ts: number): void {
    const s = this.store;
    const current = s.refs.get(sha);
    if (current === undefined) throw new Error(`chunk ${sha} has no reference count`);
    const refs = current.refs + delta;
    if (refs < 0) throw new Error(`chunk ${sha} would have a negative reference count`);
    if (current.refs === 0) s.orphans.removeSync([current.since, sha]);
    if (refs === 0) s.orphans.putSync([ts, sha], true);
    s.refs.putSync(sha, { refs, since: refs === 0 ? ts : 0 });
  }
}
