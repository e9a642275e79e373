// The objects API (Buckets): streaming uploads that propose chunks with backpressure and commit at
// the end, streaming downloads with ranges that check every chunk, listings, deletes, and the
// leader's chunk collector. Memory per upload is one chunk being filled plus a bounded window.

import { Readable } from 'node:stream';
import {
  BlobReader,
  blobChunkHeaderBytesMax,
  checkChunkDigest,
  encodeBlobChunkInPlace,
  checkBucket,
  checkLimit,
  checkObjectName,
  chunkBytesDefault,
  chunkBytesMax,
  chunkBytesMin,
  listLimitDefault,
  listLimitMax,
  objectBytesMaxDefault,
  objectChunksMax,
  type ObjectInfo,
  type ObjectListPage,
  type ObjectRecord,
} from '../projections';
import { allocEntryData } from '../eventlog';
import { LoomError, isLoomError, type Logger } from '../util';
import { ChunkHasher } from './chunk-hasher';
import type { Database, ReadOptions } from './database';

/**
 * Bytes of chunk proposals one upload may have awaiting their commit: bounds its memory (the log
 * holds a proposal's bytes until they are durable). A wide window keeps several group commits and
 * their fsyncs in flight, which is what lets an upload approach the disk's write rate.
 */
export const uploadBytesInFlightMax = 8 * 1024 * 1024;
/** Most chunk proposals one upload has awaiting their commit, whatever the chunk size. */
export const uploadChunksInFlightMax = 64;
/** Bytes a download reads (and checks) ahead of its consumer: bounds its memory. */
export const downloadBytesAheadMax = 1024 * 1024;
/**
 * Bytes in front of every piece a download stream yields that belong to that piece's memory alone:
 * a consumer may write its framing there (see pieceHeadroomBytes) instead of copying the piece.
 */
export const downloadPieceHeadroomBytes = 8;
/** Default age after which a chunk no object references is collected (an upload must finish within it). */
export const orphanChunkAgeMsDefault = 24 * 3600 * 1000;
/** Most chunks one `blob.gc` entry removes; the collector proposes again while more are due. */
export const gcChunksPerEntryMax = 10_000;

/** Pieces of download streams, whose memory in front is free for their consumer (a WeakSet: no retention). */
const piecesWithHeadroom = new WeakSet<Uint8Array>();

/** Bytes in front of `piece` that its consumer may overwrite: downloadPieceHeadroomBytes for a download's piece, else 0. */
export function pieceHeadroomBytes(piece: Uint8Array): number {
  return piecesWithHeadroom.has(piece) ? downloadPieceHeadroomBytes : 0;
}

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
  stream: Readable;
}

export type ObjectSource = AsyncIterable<Uint8Array | string> | Uint8Array | string;

export class ObjectsApi {
  readonly chunkBytes: number;
  readonly objectBytesMax: number;
  /** Hashes chunks (and whole uploads) on a worker thread, beside the main thread's I/O. */
  private readonly hasher = new ChunkHasher();

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
    const hasher = this.hasher;
    // The whole object's sha256, extended on the worker by every chunk in order.
    const whole = hasher.openStream();
    const digests: Buffer[] = [];
    const inflight: Array<Promise<unknown>> = [];
    const window = Math.max(1, Math.min(uploadChunksInFlightMax, Math.floor(uploadBytesInFlightMax / chunkBytes)));
    let size = 0;
    let chunkCount = 0;
    // Chunk bytes go straight into the entry body, after room for its header, in a buffer with room
    // for the log's framing too: the chunk is copied only into LMDB (and a hash slot), never to
    // encode or frame it.
    let frame = allocEntryData(blobChunkHeaderBytesMax + chunkBytes);
    let filled = 0;
    let lastChunkSeq = 0;

    const flush = async (): Promise<void> => {
      const index = chunkCount++;
      if (chunkCount > objectChunksMax) {
        throw new LoomError('TOO_LARGE', `an object has at most ${objectChunksMax} chunks of ${chunkBytes} bytes (objectChunksMax)`, { limit: 'objectChunksMax', max: objectChunksMax });
      }
      const full = frame;
      const length = filled;
      // The worker hashes this chunk while the next one is read. The proposal then holds the frame
      // (the log frames the entry in it), so the next chunk always fills a fresh one.
      const proposed = hasher.digest(full.subarray(blobChunkHeaderBytesMax, blobChunkHeaderBytesMax + length), whole).then((sha) => {
        digests[index] = sha;
        if (this.reader.hasReferencedChunk(sha.toString('hex'))) return undefined;
        // The digest was computed from these bytes, so the body skips encodeMutation's re-hash. The
        // upload waits for the chunk to be durable, not applied: log order applies it before the
        // commit, whose apply checks every chunk is stored.
        const data = encodeBlobChunkInPlace(full, length, sha);
        return this.db.core.proposeCommitted({ type: 'blob.chunk', data }).then((seq) => {
          lastChunkSeq = Math.max(lastChunkSeq, seq);
        });
      });
      // Awaited below or in the catch; until then a failure must not count as unhandled.
      proposed.catch(() => undefined);
      inflight.push(proposed);
      frame = allocEntryData(blobChunkHeaderBytesMax + chunkBytes);
      filled = 0;
      if (inflight.length >= window) await inflight.shift();
    };

    let sha256: Buffer;
    try {
      for await (const piece of toIterable(source)) {
        const bytes = typeof piece === 'string' ? Buffer.from(piece) : piece;
        size += bytes.byteLength;
        if (size > this.objectBytesMax) {
          throw new LoomError('TOO_LARGE', `object is larger than objectBytesMax (${this.objectBytesMax} bytes)`, { limit: 'objectBytesMax', max: this.objectBytesMax });
        }
        let at = 0;
        while (at < bytes.byteLength) {
          const n = Math.min(chunkBytes - filled, bytes.byteLength - at);
          frame.set(bytes.subarray(at, at + n), blobChunkHeaderBytesMax + filled);
          filled += n;
          at += n;
          if (filled === chunkBytes) await flush();
        }
      }
      if (filled > 0) await flush();
      await Promise.all(inflight.splice(0));
      sha256 = await hasher.finishStream(whole);
    } catch (err) {
      hasher.dropStream(whole);
      // Chunks already proposed stay unreferenced and are collected after the orphan age. Once the
      // caller hears of the failure they are applied, so the chunk store shows what it holds.
      await Promise.allSettled(inflight);
      // The upload's own error is the one to report; a wait that times out changes nothing stored.
      if (lastChunkSeq > 0) await this.db.core.waitApplied(lastChunkSeq).catch(() => undefined);
      throw err;
    }
    if (expected !== undefined && !sha256.equals(expected)) {
      throw new LoomError('INVALID_ARGUMENT', `the object's sha256 is ${sha256.toString('hex')}, not the expected ${expected.toString('hex')}`, {
        field: 'sha256',
        actual: sha256.toString('hex'),
      });
    }
    const outcome = await this.db.mutate('blob.commit', {
      bucket,
      name,
      size,
      sha256,
      chunkBytes,
      chunks: Buffer.concat(digests),
      contentType: options.contentType ?? 'application/octet-stream',
      metadata: options.metadata ?? {},
    });
    const info = this.reader.stat(bucket, name);
    // A later write may already have replaced it; the info describes what this upload committed.
    if (info && info.rev === outcome.seq) return info;
    return {
      bucket,
      name,
      size,
      sha256: sha256.toString('hex'),
      contentType: options.contentType ?? 'application/octet-stream',
      metadata: options.metadata ?? {},
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

  async delete(bucket: string, name: string): Promise<{ rev: number; deleted: boolean }> {
    const outcome = await this.db.mutate('blob.del', { bucket, name });
    return { rev: outcome.seq, deleted: outcome.deleted ?? false };
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

  chunkStats(): ReturnType<BlobReader['chunkStats']> {
    return this.reader.chunkStats();
  }

  /** Stops the hash worker; uploads and downloads still under way fail UNAVAILABLE. */
  close(): Promise<void> {
    return this.hasher.close();
  }

  private chunkStream(bucket: string, name: string, record: ObjectRecord, offset: number, length: number): Readable {
    const reader = this.reader;
    const hasher = this.hasher;
    const end = offset + length;
    // The next byte to read from the store, and the chunks read but not yet pushed, in order, each
    // being checked on the hash worker meanwhile.
    let position = offset;
    const ahead: Array<{ bytes: number; piece: Promise<Buffer> }> = [];
    let aheadBytes = 0;
    const readPiece = (): { bytes: number; piece: Promise<Buffer> } => {
      const index = Math.floor(position / record.chunkBytes);
      const chunkStart = index * record.chunkBytes;
      let bytes: Buffer;
      try {
        bytes = reader.readStoredChunk(bucket, name, record, index, downloadPieceHeadroomBytes);
      } catch (err) {
        position = end;
        return { bytes: 0, piece: Promise.reject(err as Error) };
      }
      const from = position - chunkStart;
      const to = Math.min(bytes.byteLength, end - chunkStart);
      position = chunkStart + to;
      const stored = bytes.byteLength;
      // The bytes move to the hash worker and back: `bytes` is detached until then.
      const piece = hasher.digestOwned(bytes).then((checked) => {
        checkChunkDigest(bucket, name, record, index, checked.digest);
        const out = from === 0 && to === checked.bytes.byteLength ? checked.bytes : checked.bytes.subarray(from, to);
        piecesWithHeadroom.add(out);
        return out;
      });
      // Awaited in order by read(); a failure ahead of that must not count as unhandled.
      piece.catch(() => undefined);
      return { bytes: stored, piece };
    };
    return new Readable({
      // Read ahead up to downloadBytesAheadMax (buffered plus being checked), so the consumer's
      // writes are large and the chunk checks on the worker overlap the sending.
      highWaterMark: downloadBytesAheadMax,
      read(): void {
        while (position < end && (ahead.length === 0 || aheadBytes + this.readableLength < downloadBytesAheadMax)) {
          const next = readPiece();
          ahead.push(next);
          aheadBytes += next.bytes;
        }
        const next = ahead.shift();
        if (next === undefined) {
          this.push(null);
          return;
        }
        next.piece.then(
          (piece) => {
            aheadBytes -= next.bytes;
            if (!this.destroyed) this.push(piece);
          },
          (err: Error) => this.destroy(err),
        );
      },
    });
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
    this.timer = setInterval(() => void this.collect(), this.options.intervalMs ?? 60_000);
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

function checkChunkBytes(chunkBytes: number): number {
  if (!Number.isInteger(chunkBytes) || chunkBytes < chunkBytesMin || chunkBytes > chunkBytesMax) {
    throw new LoomError('INVALID_ARGUMENT', `chunkBytes must be an integer from ${chunkBytesMin} to ${chunkBytesMax} (chunkBytesMax), got ${chunkBytes}`, { field: 'chunkBytes' });
  }
  return chunkBytes;
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

