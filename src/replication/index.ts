// Replication in the node: the Raft driver behind the core's Replicator seam and the TCP transport
// between peers (length-prefixed msgpack frames, cluster-secret handshake). Design: docs/replication.md.

export { RaftReplicator } from './raft-replicator';
export type { LeaderChange, RaftNetwork, RaftReplicatorOptions } from './raft-replicator';
export { PeerTransport, type PeerTls } from './transport';
export type { PeerAddress, TransportOptions } from './transport';
export { FrameParser, encodeFrame, validateFrame, validateMessage } from './frames';
export type { Frame, NodeAddresses } from './frames';
export * from './limits';
