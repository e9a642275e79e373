// The blob view (object index and content-addressed chunk store) and reads over it.
// Used by the core's objects API and by change replay.

export { BlobProjection, BlobStore, blobProjectionName, chunkAt, decideBlobCommit, decideObjectCondition, type LogChunkReader, type MaterializeProgress } from './blob-view';
export { logChunkReader } from './log-chunks';
export type { ObjectRecord } from './blob-view';
export { BlobReader, checkChunkDigest, objectInfo } from './blob-read';
export type { ChunkStats, ObjectInfo, ObjectListPage } from './blob-read';
