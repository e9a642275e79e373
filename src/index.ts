// loomdb: the package's public entry. Embed a node with `openNode`, or import the parts.

export { openNode, startNode, loadConfig } from './node';
export type { EmbeddedNode, OpenNodeOptions, LoomNode, Config } from './node';
export { LoomError, errorCodes, isLoomError } from './util';
export type { ErrorCode } from './util';
export type { Change } from './projections';
export type { Watch, KvEntry, EventRecord, ReadOptions, SqlResult } from './core';
export { defineSqlProjection } from './projections';
export type { SqlProjectionDefinition, SqlProjectionEntry } from './projections';
