// Named defaults for every Raft timeout and limit (STYLE.md: a limit on everything, unit last).
// Ticks are whatever interval the driver ticks at; loom's node ticks every 100 ms.

export const electionTimeoutTicksDefault = 10;
export const heartbeatTimeoutTicksDefault = 1;
export const appendEntriesBytesMaxDefault = 1024 * 1024;
export const inflightMessagesMaxDefault = 256;
export const inflightBytesMaxDefault = 32 * 1024 * 1024;
export const uncommittedBytesMaxDefault = 64 * 1024 * 1024;
export const committedEntriesBytesMaxDefault = 16 * 1024 * 1024;
export const snapshotChunkBytesMaxDefault = 1024 * 1024;
export const pendingReadIndexMaxDefault = 4096;
/** ReadIndex requests outstanding at a leader (waiting for a heartbeat quorum). */
export const readIndexPendingMax = 65_536;
/** Longest opaque context a membership change may carry (the node puts a raft address there). */
export const confChangeContextBytesMax = 1024;
