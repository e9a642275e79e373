// Reads over the blob view: object info, listings with cursors, and chunk reads that check every
// chunk against its SHA-256 (CORRUPT on a mismatch, never wrong bytes). Reads never write.

import { createHash } from 'node:crypto';
import { LoomError } from '../../util';
import { pageByName } from '../paging';
import { chunkAt, type BlobStore, type ObjectRecord } from './blob-view';

export interface ObjectInfo {
  bucket: string;
  name: string;
  size: number;
  sha256: string;
  contentType: string;
  metadata: Record<string, string>;
  rev: number;
  updatedAt: number;
  chunkBytes: number;
  chunkCount: number;
}

export interface ObjectListPage {
  items: ObjectInfo[];
  cursor?: string;
}

export interface ChunkStats {
  chunks: number;
  unreferenced: number;
  bytes: number;
}

export function objectInfo(bucket: string, name: string, record: ObjectRecord): ObjectInfo {
  return {
    bucket,
    name,
    size: record.size,
    sha256: record.sha256,
    contentType: record.contentType,
    metadata: record.metadata,
    rev: record.rev,
    updatedAt: record.updatedAt,
    chunkBytes: record.chunkBytes,
    chunkCount: record.chunks.byteLength / 32,
  };
}

export class BlobReader {
  constructor(private readonly store: BlobStore) {}

  record(bucket: string, name: string): ObjectRecord | undefined {
    return this.store.objects.get([bucket, name]);
  }

  stat(bucket: string, name: string): ObjectInfo | undefined {
    const record = this.record(bucket, name);
    return record ? objectInfo(bucket, name, record) : undefined;
  }

  /** Objects of a bucket in name order, from after `cursor` (see paging.ts for what is stable). */
  list(bucket: string, prefix: string, limit: number, cursor?: string): ObjectListPage {
    return pageByName(this.store.objects, bucket, prefix, limit, cursor, (name, value) => objectInfo(bucket, name, value));
  }

  /** Whether a chunk is stored and referenced by an object (so an upload need not send it again). */
  hasReferencedChunk(sha256: string): boolean {
    return (this.store.refs.get(sha256)?.refs ?? 0) > 0;
  }

  /** Chunk `i` of an object, checked against its digest; a copy the caller owns. */
  readChunk(bucket: string, name: string, record: ObjectRecord, i: number): Buffer {
    const bytes = this.readStoredChunk(bucket, name, record, i);
    checkChunkDigest(bucket, name, record, i, createHash('sha256').update(bytes).digest());
    return bytes;
  }

  /**
   * Chunk `i` of an object as stored, not yet checked: pass its sha256 to checkChunkDigest. It sits
   * `headroomBytes` into memory of its own (not zero-filled first), where the caller may frame it.
   */
  readStoredChunk(bucket: string, name: string, record: ObjectRecord, i: number, headroomBytes = 0): Buffer {
    // The stored bytes are valid only while `take` runs: copied into memory of its own (allocUnsafeSlow:
    // getBinary's would be zero-filled first).
    const chunk = this.store.readChunk(chunkAt(record.chunks, i), (stored) => {
      const memory = Buffer.allocUnsafeSlow(headroomBytes + stored.byteLength);
      memory.set(stored, headroomBytes);
      return memory.subarray(headroomBytes);
    });
    if (chunk === undefined) {
      // Only a delete or overwrite followed by a collection can do this, while a download was under way.
      throw new LoomError('NOT_FOUND', `chunk ${i} of object ${name} in bucket ${bucket} is gone: the object was replaced or deleted during the read`, { bucket, name, chunk: i });
    }
    return chunk;
  }

  /** Whether any chunk became unreferenced before `beforeTs` (something for a `blob.gc` to do). */
  hasOrphansBefore(beforeTs: number): boolean {
    for (const _ of this.store.orphans.getKeys({ start: [0, ''], end: [beforeTs, ''], limit: 1 })) return true;
    return false;
  }

  chunkStats(): ChunkStats {
    let chunks = 0;
    let unreferenced = 0;
    let bytes = 0;
    for (const { key, value } of this.store.refs.getRange({})) {
      chunks++;
      if (value.refs === 0) unreferenced++;
      bytes += this.store.chunkLength(key) ?? 0;
    }
    return { chunks, unreferenced, bytes };
  }
}

/** Throws CORRUPT unless `actual` (the sha256 of the bytes read) is chunk `i`'s digest in the record. */
export function checkChunkDigest(bucket: string, name: string, record: ObjectRecord, i: number, actual: Uint8Array): void {
  const expected = record.chunks.subarray(i * 32, i * 32 + 32);
  if (Buffer.compare(actual, expected) !== 0) {
    const sha = chunkAt(record.chunks, i);
    throw new LoomError('CORRUPT', `chunk ${i} (${sha}) of object ${name} in bucket ${bucket} fails its sha256 check`, { bucket, name, chunk: i, sha256: sha });
  }
}
