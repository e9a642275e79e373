// The durable event log: the LogStore contract, its LMDB and in-memory implementations, limits.

export type { HardState, LogEntry, LogStats, LogStore, SnapshotMeta } from './types';
export { MemoryLog } from './memory-log';
export type { MemoryLogOptions } from './memory-log';
export * from './limits';
export { LmdbLog } from './lmdb-log';
export { checkEntrySize, entrySizeBytes } from './validate';
export { allocEntryData, entryFrameHeadBytesMax, entryFrameTailBytesMax, isEntryDataReused, markEntryDataReused, reuseEntryData } from './codec';
export type { LmdbLogOptions, LogObserver, SyncMode, VerifyReport } from './lmdb-log';
