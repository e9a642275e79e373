// Projections: mutation entries and their outcomes, the projection contract and runner, the
// built-in views (KV and event streams on LMDB; SQL on SQLite) and change events.

export * from '../util/names';
export { blobChunkHeaderBytesMax, decodeMutation, encodeBlobChunkInPlace, encodeMutation, mutationTypes } from './entries';
export type { BlobChunk, BlobCommit, BlobDel, BlobGc, EventAppend, KvBucket, KvDel, KvPut, Mutation, MutationType } from './entries';
export { decideEventAppend, decideKvDel, decideKvPut } from './decide';
export type { Outcome } from './decide';
export { ProjectionRunner } from './projection';
export type { Projection, ProjectionState, ProjectionStatus, ProjectionStore } from './projection';
export { KvProjection, ViewStore, kvProjectionName } from './kv/kv-view';
export type { HistoryRecord, KvRecord, StoredEvent } from './kv/kv-view';
export { KvReader } from './kv/kv-read';
export type { KvListItem, KvListPage } from './kv/kv-read';
export { nameCursor } from './paging';
export type { NamePage } from './paging';
export { changeEntryTypes, changeMessage, changeOf, changeSubjectRoots, eventSubject, kvSubject, objectSubject, replayedChangeOf } from './changes';
export type { Change, ObjectChangeInfo } from './changes';
export * from './blob';
export * from './sql';
