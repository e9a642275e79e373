// The database's operations, used by every door and by embedders.

export { Core } from './core';
export type { CoreOptions, CoreStatus, Proposed } from './core';
export { Applier } from './applier';
export type { EntryConsumer } from './applier';
export { SingleNodeReplicator } from './replicator';
export type { ClusterMember, ClusterMembership, NewMember, ProposedEntry, ReplicationStatus, Replicator, SnapshotHandler } from './replicator';
export { SnapshotStore, encodeSnapshot, extractSnapshot } from './snapshots';
export type { SnapshotFile, ViewSnapshot } from './snapshots';
export { Views } from './views';
export { Database, EventsApi, KvApi } from './database';
export type { AppendInput, Consistency, EventRecord, KvEntry, PutOptions, ReadOptions, SqlQueries, SqlQueryInput, SqlResult } from './database';
export { ChangeFeed, watchChanges } from './watch';
export { changeBusMessage } from './change-messages';
export type { ChangeBatch, Watch, WatchOptions } from './watch';
export { Expirer } from './expirer';
export { openDatabase, snapshotCatchUpEntriesDefault } from './open';
export type { OpenDatabase, OpenDatabaseOptions, ViewPlugin } from './open';
export { ChunkCollector, ObjectsApi, chunkGcIntervalMsDefault, gcChunksPerEntryMax, orphanChunkAgeMsDefault, downloadPieceHeadroomBytes, uploadChunksInFlightMax, objectTooLarge } from './objects';
export type { GetObjectOptions, ObjectDownload, ObjectSource, ObjectsLimits, PutObjectOptions } from './objects';
