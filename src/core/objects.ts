// The objects API (Buckets): streaming uploads that propose chunks with backpressure and commit at
// the end, streaming downloads with ranges that check every chunk, listings, deletes, and the
// leader's chunk collector. Memory per upload is one chunk being filled plus a bounded window.

import { createHash, hash } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  BlobReader,
  blobChunkHeaderBytesMax,
  checkChunkDigest,
  encodeBlobChunkInPlace,
  checkBucket,
  checkContentType,
  checkLimit,
  checkObjectMetadata,
  checkObjectName,
  checkSeq,
  chunkBytesDefault,
  chunkBytesMax,
  chunkBytesMin,
  contentTypeDefault,
  decideObjectCondition,
  listLimitDefault,
  listLimitMax,
  objectBytesMaxDefault,
  objectChunksMax,
  type ObjectInfo,
  type ObjectListPage,
  type ObjectRecord,
} from '../projections';
import { ChunkFrames, type ChunkFrameStats } from './chunk-frames';
import { LoomError, isLoomError, noteTransferEnded, noteTransferred, type Logger } from '../util';
import type { Database, ReadOptions } from './database';

/**
 * Bytes of chunk proposals one upload may have awaiting their commit: bounds its memory (the log
 * holds a proposal's bytes until they are durable). A wide window keeps several group commits and
 * their fsyncs in flight, which is what lets an upload approach the disk's write rate.
 */
export const uploadBytesInFlightMax = 8 * 1024 * 1024;
/**
 * Bytes of chunks an upload gathers before it proposes them together (within its window): the
 * chunks of an object up to this size reach the log with its commit, in one group commit and fsync.
 */
export const uploadBatchBytes = 4 * 1024 * 1024;
/** Most chunk proposals one upload has awaiting their commit, whatever the chunk size. */
export const uploadChunksInFlightMax = 64;
/** Bytes a download reads (and checks) ahead of its consumer: bounds its memory. */
export const downloadBytesAheadMax = 1024 * 1024;
/**
 * Bytes in front of every piece an ObjectDownload stream yields that belong to that piece's memory
 * alone: its consumer may write its framing there (the gRPC door does) instead of copying the piece.
 */
export const downloadPieceHeadroomBytes = 16;
/** Default age after which a chunk no object references is collected (an upload must finish within it). */
export const orphanChunkAgeMsDefault = 24 * 3600 * 1000;
/** Default interval between the leader's looks for chunks past the orphan age. */
export const chunkGcIntervalMsDefault = 60_000;
/** Most chunks one `blob.gc` entry removes; the collector proposes again while more are due. */
export const gcChunksPerEntryMax = 10_000;

export interface ObjectsLimits {
  /** Default chunk size of uploads. */
  chunkBytes?: number;
  /** Largest object. */
  objectBytesMax?: number;
}

export interface PutObjectOptions {
  contentType?: string;
  metadata?: Record<string, string>;
  /** Hex SHA-256 the caller expects; a mismatch rejects the upload and nothing becomes visible. */
  sha256?: string;
  /** Chunk size of this object (default: the node's). */
  chunkBytes?: number;
  /** Bytes the caller will send; a source that ends short of it or runs past it rejects the upload. */
  size?: number;
  /**
   * Write only if the object's rev is this (0: only if it does not exist), else CONFLICT and
   * nothing becomes visible. Checked against a linearizable read before the first byte is read,
   * and decided for good when the commit is applied.
   */
  expectRev?: number;
  /**
   * Called just before the first byte of `source` is read, once the upload's checks (its condition
   * among them) have passed: the HTTP door sends a held-back 100 Continue here.
   */
  beforeFirstRead?: () => void;
  /**
   * Called once the source has ended and its chunks are proposed, just before the commit is
   * proposed; a rejection commits nothing. A door whose transport cannot tell a client's end from
   * its cancel (gRPC under Node's HTTP/2) waits here for a cancel that may be on its way.
   */
  beforeCommit?: () => Promise<void>;
  /**
   * Asked just before the commit is proposed, without waiting for anything: true (the caller has
   * gone: reset, deadline passed) commits nothing. It narrows the window in which an upload whose
   * caller was told it failed still commits; it cannot close it.
   */
  abandoned?: () => boolean;
}

export interface GetObjectOptions extends ReadOptions {
  offset?: number;
  /** Bytes from offset; default to the end. */
  length?: number;
}

export interface ObjectDownload {
  info: ObjectInfo;
  /** The range served: [offset, offset + length). */
  offset: number;
  length: number;
  /** The bytes: an object-mode stream of Buffers, one per chunk read, each with downloadPieceHeadroomBytes of memory of its own in front. */
  stream: Readable;
}

export type ObjectSource = AsyncIterable<Uint8Array | string> | Uint8Array | string;

export class ObjectsApi {
  readonly chunkBytes: number;
  readonly objectBytesMax: number;

  /** The buffers uploads fill with chunk bytes, reused once their entries are released. */
  private readonly frames: ChunkFrames;

  /** The current blob view's reads (replaced when a snapshot replaces the views). */
  private get reader(): BlobReader {
    return this.blobReader();
  }

  constructor(
    private readonly db: Database,
    private readonly blobReader: () => BlobReader,
    limits: ObjectsLimits = {},
  ) {
    this.chunkBytes = checkChunkBytes(limits.chunkBytes ?? chunkBytesDefault);
    this.objectBytesMax = limits.objectBytesMax ?? objectBytesMaxDefault;
    this.frames = new ChunkFrames(db.core);
  }

  /**
   * Uploads an object from a stream: reads one chunk's worth, hashes it, proposes it (unless an
   * object already references that chunk) and reads on only while fewer than
   * uploadBytesInFlightMax (or uploadChunksInFlightMax) of proposals await their commit. Commits
   * once the source ends.
   */
  async put(bucket: string, name: string, source: ObjectSource, options: PutObjectOptions = {}): Promise<ObjectInfo> {
    checkBucket(bucket);
    checkObjectName(name);
    const chunkBytes = checkChunkBytes(options.chunkBytes ?? this.chunkBytes);
    const expected = options.sha256 === undefined ? undefined : checkSha256(options.sha256);
    const expectedSize = options.size === undefined ? undefined : checkExpectedSize(options.size, this.objectBytesMax);
    // Checked before the first chunk is read, so a bad value stores nothing (the commit checks again).
    const contentType = checkContentType(options.contentType ?? contentTypeDefault);
    const metadata = checkObjectMetadata(options.metadata ?? {});
    const expectRev = options.expectRev === undefined ? undefined : checkSeq(options.expectRev, 'expectRev');
    if (expectRev !== undefined) await this.checkCondition(bucket, name, expectRev);
    options.beforeFirstRead?.();
    const whole = createHash('sha256');
    const digests: Buffer[] = [];
    const inflight: Array<Promise<unknown>> = [];
    // Chunk entries not yet proposed, each with the frame it lives in: gathered up to
    // uploadBatchBytes, counted in the window.
    const pending: Array<{ data: Uint8Array; frame: Buffer }> = [];
    let pendingBytes = 0;
    const window = Math.max(1, Math.min(uploadChunksInFlightMax, Math.floor(uploadBytesInFlightMax / chunkBytes)));
    let size = 0;
    // Chunk bytes go straight into the entry body, after room for its header, in a buffer with room
    // for the log's framing too: the chunk is copied only into LMDB, never to encode or frame it.
    // A chunk's frame is taken when its first byte arrives, so the end of an upload takes none; once
    // its entry is applied and out of the log's memory, the frame is filled again (chunk-frames.ts).
    let frame: Buffer | undefined;
    let filled = 0;
    let lastChunkSeq = 0;
    let outcome: Awaited<ReturnType<Database['mutate']>>;
    let digest: Buffer;

    const flush = async (): Promise<void> => {
      const full = frame as Buffer;
      const bytes = full.subarray(blobChunkHeaderBytesMax, blobChunkHeaderBytesMax + filled);
      const sha = createHash('sha256').update(bytes).digest();
      digests.push(sha);
      if (digests.length > objectChunksMax) {
        throw new LoomError('TOO_LARGE', `an object has at most ${objectChunksMax} chunks of ${chunkBytes} bytes (objectChunksMax)`, { limit: 'objectChunksMax', max: objectChunksMax });
      }
      if (!this.reader.hasReferencedChunk(sha.toString('hex'))) {
        // The digest was computed from these bytes just above, so the body skips encodeMutation's re-hash.
        pending.push({ data: encodeBlobChunkInPlace(full, filled, sha), frame: full });
        pendingBytes += filled;
        // The entry holds the frame (and the log frames the entry in it); the next chunk takes another.
        frame = undefined;
        if (pendingBytes >= uploadBatchBytes || inflight.length + pending.length >= window) proposePending();
        if (inflight.length >= window) await inflight.shift();
      }
      filled = 0;
    };

    /**
     * Proposes the gathered chunks in one turn, so they share a group commit. The upload waits for
     * each to be durable, not applied: log order applies it before the commit, whose apply checks
     * every chunk is stored.
     */
    const proposePending = (): void => {
      for (const { data, frame: used } of pending) {
        const proposed = this.db.core.proposeCommitted({ type: 'blob.chunk', data }).then((seq) => {
          lastChunkSeq = Math.max(lastChunkSeq, seq);
          this.frames.lend(used, seq);
        });
        // Its failure is reported when the upload awaits it; until then (the source may be slow)
        // it must not count as an unhandled rejection, which ends a Node process.
        proposed.catch(() => undefined);
        inflight.push(proposed);
      }
      pending.length = 0;
      pendingBytes = 0;
    };

    try {
      for await (const piece of toIterable(source)) {
        const bytes = typeof piece === 'string' ? Buffer.from(piece) : piece;
        size += bytes.byteLength;
        noteTransferred(bytes.byteLength);
        if (expectedSize !== undefined && size > expectedSize) {
          throw new LoomError('INVALID_ARGUMENT', `the upload sent more than the ${expectedSize} bytes it announced`, { field: 'size', size: expectedSize });
        }
        if (size > this.objectBytesMax) {
          throw objectTooLarge(this.objectBytesMax);
        }
        whole.update(bytes);
        let at = 0;
        while (at < bytes.byteLength) {
          const n = Math.min(chunkBytes - filled, bytes.byteLength - at);
          frame ??= this.frames.take(blobChunkHeaderBytesMax + chunkBytes);
          frame.set(bytes.subarray(at, at + n), blobChunkHeaderBytesMax + filled);
          filled += n;
          at += n;
          if (filled === chunkBytes) await flush();
        }
      }
      if (filled > 0) await flush();
      if (expectedSize !== undefined && size !== expectedSize) {
        throw new LoomError('INVALID_ARGUMENT', `the upload ended after ${size} of the ${expectedSize} bytes it announced`, { field: 'size', size: expectedSize, received: size });
      }
      const sha256 = whole.digest();
      if (expected !== undefined && !sha256.equals(expected)) {
        throw new LoomError('INVALID_ARGUMENT', `the object's sha256 is ${sha256.toString('hex')}, not the expected ${expected.toString('hex')}`, {
          field: 'sha256',
          actual: sha256.toString('hex'),
        });
      }
      // The commit is proposed in the same turn as the last chunks, and without waiting for those
      // still in flight: it follows them in the log, so it cannot be durable before them, and its
      // apply checks that every chunk is stored. An object up to uploadBatchBytes costs one fsync.
      proposePending();
      await options.beforeCommit?.();
      if (options.abandoned?.()) throw new LoomError('UNAVAILABLE', 'the upload was abandoned before its commit');
      const committing = this.db.mutate('blob.commit', {
        bucket,
        name,
        size,
        sha256,
        chunkBytes,
        chunks: Buffer.concat(digests),
        contentType,
        metadata,
        ...(expectRev === undefined ? {} : { expectRev }),
      });
      const [commit, ...chunks] = await Promise.allSettled([committing, ...inflight.splice(0)]);
      // A chunk that failed cannot be in a commit that succeeded (the commit's apply refused it), so
      // a committed object is whole; a failed chunk explains a failed commit better than the commit.
      if (commit.status === 'rejected') throw chunks.find((c) => c.status === 'rejected')?.reason ?? commit.reason;
      outcome = commit.value;
      digest = sha256;
    } catch (err) {
      // Chunks already proposed stay unreferenced and are collected after the orphan age. Once the
      // caller hears of the failure they are applied, so the chunk store shows what it holds.
      await Promise.allSettled(inflight);
      // The upload's own error is the one to report; a wait that times out changes nothing stored.
      if (lastChunkSeq > 0) await this.db.core.waitApplied(lastChunkSeq).catch(() => undefined);
      throw err;
    } finally {
      noteTransferEnded();
    }
    const info = this.reader.stat(bucket, name);
    // A later write may already have replaced it; the info describes what this upload committed.
    if (info && info.rev === outcome.seq) return info;
    return {
      bucket,
      name,
      size,
      sha256: digest.toString('hex'),
      contentType,
      metadata,
      rev: outcome.seq,
      updatedAt: 0,
      chunkBytes,
      chunkCount: digests.length,
    };
  }

  async stat(bucket: string, name: string, options: ReadOptions = {}): Promise<ObjectInfo> {
    checkBucket(bucket);
    checkObjectName(name);
    await this.db.settle(options);
    const info = this.reader.stat(bucket, name);
    if (!info) throw new LoomError('NOT_FOUND', `object ${name} not found in bucket ${bucket}`, { bucket, name });
    return info;
  }

  /**
   * Opens a download of [offset, offset + length) as a byte stream that reads one chunk at a time
   * as the consumer pulls; each chunk is checked against its sha256 (the stream fails CORRUPT).
   */
  async get(bucket: string, name: string, options: GetObjectOptions = {}): Promise<ObjectDownload> {
    checkBucket(bucket);
    checkObjectName(name);
    await this.db.settle(options);
    const record = this.reader.record(bucket, name);
    if (!record) throw new LoomError('NOT_FOUND', `object ${name} not found in bucket ${bucket}`, { bucket, name });
    const { offset, length } = checkRange(options.offset, options.length, record.size);
    const info = this.reader.stat(bucket, name) as ObjectInfo;
    return { info, offset, length, stream: this.chunkStream(bucket, name, record, offset, length) };
  }

  async list(bucket: string, options: { prefix?: string; limit?: number; cursor?: string } & ReadOptions = {}): Promise<ObjectListPage> {
    checkBucket(bucket);
    const prefix = options.prefix ?? '';
    if (typeof prefix !== 'string' || Buffer.byteLength(prefix) > 1024) throw new LoomError('INVALID_ARGUMENT', 'prefix must be a string of at most 1024 bytes', { field: 'prefix' });
    const limit = checkLimit(options.limit, 'limit', listLimitDefault, listLimitMax);
    await this.db.settle(options);
    return this.reader.list(bucket, prefix, limit, options.cursor);
  }

  /** Deletes an object (only if its rev is `expectRev`, when given: else CONFLICT). */
  async delete(bucket: string, name: string, options: { expectRev?: number } = {}): Promise<{ rev: number; deleted: boolean }> {
    const expectRev = options.expectRev === undefined ? undefined : checkSeq(options.expectRev, 'expectRev');
    const outcome = await this.db.mutate('blob.del', { bucket, name, ...(expectRev === undefined ? {} : { expectRev }) });
    return { rev: outcome.seq, deleted: outcome.deleted ?? false };
  }

  /**
   * Fails a conditional upload before its first byte when a linearizable read already shows the
   * condition unmet (the commit's apply decides for good: the object may change meanwhile).
   */
  private async checkCondition(bucket: string, name: string, expectRev: number): Promise<void> {
    await this.db.settle({ consistency: 'linearizable' });
    const currentRev = this.reader.stat(bucket, name)?.rev ?? 0;
    const unmet = decideObjectCondition(0, currentRev, { bucket, name, expectRev });
    if (unmet) throw new LoomError('CONFLICT', unmet.message, unmet.details);
  }

  /**
   * Proposes `blob.gc` entries until no chunk that became unreferenced more than `olderThanMs` ago
   * is left (as of the proposal). Only the leader should call this; `now` is its clock.
   */
  async collectGarbage(options: { olderThanMs?: number; now?: number } = {}): Promise<{ collected: number; entries: number }> {
    const olderThanMs = options.olderThanMs ?? orphanChunkAgeMsDefault;
    const beforeTs = Math.max(0, (options.now ?? Date.now()) - olderThanMs);
    let collected = 0;
    let entries = 0;
    while (this.reader.hasOrphansBefore(beforeTs)) {
      const outcome = await this.db.mutate('blob.gc', { beforeTs, limit: gcChunksPerEntryMax });
      entries++;
      collected += outcome.collected ?? 0;
      if ((outcome.collected ?? 0) < gcChunksPerEntryMax) break;
    }
    return { collected, entries };
  }

  /** How this database's uploads reuse their chunk buffers (docs/decisions.md §17). */
  frameStats(): ChunkFrameStats {
    return this.frames.stats();
  }

  chunkStats(): ReturnType<BlobReader['chunkStats']> {
    return this.reader.chunkStats();
  }

  private chunkStream(bucket: string, name: string, record: ObjectRecord, offset: number, length: number): Readable {
    const reader = this.reader;
    const end = offset + length;
    let position = offset;
    // Read ahead up to downloadBytesAheadMax: read() is called again while fewer pieces are
    // buffered, so the consumer's writes are large and the sync chunk reads overlap its I/O.
    return new CheckedPieces(Math.max(1, Math.floor(downloadBytesAheadMax / record.chunkBytes)), () => {
      if (position >= end) {
        noteTransferEnded();
        return null;
      }
      const index = Math.floor(position / record.chunkBytes);
      const chunkStart = index * record.chunkBytes;
      const bytes = reader.readStoredChunk(bucket, name, record, index, downloadPieceHeadroomBytes);
      // Checked on this thread. A worker thread (tried) took ~25% off this thread's CPU, but the
      // 1 GiB memory test's growth rose to 76-106 MiB of its 100 MiB bound (docs/buckets.md).
      checkChunkDigest(bucket, name, record, index, hash('sha256', bytes, 'buffer'));
      const from = position - chunkStart;
      const to = Math.min(bytes.byteLength, end - chunkStart);
      position = chunkStart + to;
      noteTransferred(to - from);
      return from === 0 && to === bytes.byteLength ? bytes : bytes.subarray(from, to);
    });
  }
}

/**
 * A download's pieces: an object-mode Readable of Buffers, one per chunk read (a byte stream read
 * with for-await joined the pieces it had buffered into a copy, losing each piece's headroom and
 * the gRPC door's one message per chunk). A piece that fails to read (a chunk that fails its
 * check) stops the reading, but the stream fails with that error only once its consumer has taken
 * every good piece read ahead of it: destroying at once would drop them, and the consumer could
 * not tell where the damage lies from where its bytes stopped. So a download delivers every byte
 * before a damaged chunk, then fails; one whose first chunk is damaged fails before any piece.
 */
class CheckedPieces extends Readable {
  /** The error of the piece that failed, held while good pieces before it are still buffered. */
  private failure: Error | undefined;

  constructor(
    highWaterMark: number,
    /** The next piece, null at the end; throws if it cannot be read whole and right. */
    private readonly readPiece: () => Buffer | null,
  ) {
    super({ objectMode: true, highWaterMark });
  }

  override _read(): void {
    let piece: Buffer | null;
    try {
      piece = this.readPiece();
    } catch (err) {
      // Nothing is pushed, so Readable calls _read no more: the reading stops here.
      if (this.readableLength === 0) this.destroy(err as Error);
      else this.failure = err as Error;
      return;
    }
    this.push(piece);
  }

  /**
   * Every consumer takes buffered pieces through read() (flowing mode, pipe and for-await too), so
   * this is where the last good piece leaves: the held failure follows it.
   */
  override read(size?: number): unknown {
    const piece: unknown = super.read(size);
    if (this.failure !== undefined && this.readableLength === 0 && !this.destroyed) this.destroy(this.failure);
    return piece;
  }
}

export interface ChunkCollectorOptions {
  objects: ObjectsApi;
  logger: Logger;
  now: () => number;
  isLeader: () => boolean;
  intervalMs?: number;
  orphanChunkAgeMs?: number;
}

/** The leader's periodic `blob.gc`: chunks unreferenced for longer than the orphan age go. */
export class ChunkCollector {
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(private readonly options: ChunkCollectorOptions) {}

  start(): void {
    this.timer = setInterval(() => void this.collect(), this.options.intervalMs ?? chunkGcIntervalMsDefault);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  async collect(): Promise<number> {
    if (this.running || !this.options.isLeader()) return 0;
    this.running = true;
    try {
      const { collected } = await this.options.objects.collectGarbage({ olderThanMs: this.options.orphanChunkAgeMs ?? orphanChunkAgeMsDefault, now: this.options.now() });
      return collected;
    } catch (err) {
      if (!isLoomError(err, 'UNAVAILABLE')) this.options.logger.warn({ err }, 'chunk collection failed; retrying on the next interval');
      return 0;
    } finally {
      this.running = false;
    }
  }
}

/** The error of an object over objectBytesMax, however its size became known. */
export function objectTooLarge(objectBytesMax: number): LoomError {
  return new LoomError('TOO_LARGE', `object is larger than objectBytesMax (${objectBytesMax} bytes)`, { limit: 'objectBytesMax', max: objectBytesMax });
}

function checkChunkBytes(chunkBytes: number): number {
  if (!Number.isInteger(chunkBytes) || chunkBytes < chunkBytesMin || chunkBytes > chunkBytesMax) {
    throw new LoomError('INVALID_ARGUMENT', `chunkBytes must be an integer from ${chunkBytesMin} to ${chunkBytesMax} (chunkBytesMax), got ${chunkBytes}`, { field: 'chunkBytes' });
  }
  return chunkBytes;
}

function checkExpectedSize(size: number, objectBytesMax: number): number {
  if (!Number.isSafeInteger(size) || size < 0) throw new LoomError('INVALID_ARGUMENT', `size must be an integer from 0 to 2^53 - 1, got ${size}`, { field: 'size' });
  if (size > objectBytesMax) {
    throw objectTooLarge(objectBytesMax);
  }
  return size;
}

function checkSha256(hex: string): Buffer {
  if (typeof hex !== 'string' || !/^[0-9a-fA-F]{64}$/.test(hex)) throw new LoomError('INVALID_ARGUMENT', 'sha256 must be 64 hex digits', { field: 'sha256' });
  return Buffer.from(hex, 'hex');
}

function checkRange(offset: number | undefined, length: number | undefined, size: number): { offset: number; length: number } {
  const from = offset ?? 0;
  if (!Number.isSafeInteger(from) || from < 0 || (from > size) || (from === size && size > 0 && length !== 0)) {
    throw new LoomError('INVALID_ARGUMENT', `offset ${from} is outside the object (${size} bytes)`, { field: 'offset', size });
  }
  const rest = size - from;
  const n = length === undefined ? rest : length;
  if (!Number.isSafeInteger(n) || n < 0) throw new LoomError('INVALID_ARGUMENT', `length must be a non-negative integer, got ${length}`, { field: 'length' });
  return { offset: from, length: Math.min(n, rest) };
}

function toIterable(source: ObjectSource): AsyncIterable<Uint8Array | string> {
  if (typeof source === 'string' || source instanceof Uint8Array) {
    return (async function* one() {
      yield source;
    })();
  }
  return source;
}
