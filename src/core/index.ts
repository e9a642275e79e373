// The database's operations, used by every door and by embedders.

export { Core } from './core';
export type { CoreOptions, CoreStatus, Proposed } from './core';
export { Applier } from './applier';
export type { EntryConsumer } from './applier';
export { SingleNodeReplicator } from './replicator';
export type { ProposedEntry, Replicator } from './replicator';
