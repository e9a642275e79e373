// Building and running a node: configuration, composition, metrics.

export { configSchema, keyToEnv, keyToFlag, flagToKey, loadConfig } from './config';
export type { Config, ConfigInput, ConfigSources, Peer } from './config';
export { startNode } from './node';
export type { LoomNode, Ports, StartNodeOptions } from './node';
export { replayProjection, replayableProjections } from './replay';
export type { ReplayProgress, ReplaySummary } from './replay';
export { openNode } from './embed';
export type { EmbeddedNode, OpenNodeOptions } from './embed';
