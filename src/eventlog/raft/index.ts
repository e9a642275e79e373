// Raft as a pure state machine (no clock, no sockets, no disk), modelled on etcd-io/raft's
// RawNode: the public surface the node's driver and the simulator use. Design: docs/raft.md.

export { RawNode } from './raw-node';
export type { RaftStatus } from './raw-node';
export { applyConfChange, decodeConfChange, encodeConfChange } from './conf-change';
export { seededRandom } from './random';
export { emptyMessage, memorySnapshotAssembly } from './raft';
export type { Raft } from './raft';
export * from './limits';
export { entryTypeConfChange, entryTypeNoop } from './types';
export type {
  ConfChange,
  ConfChangeType,
  ConfState,
  Message,
  MessageType,
  RaftConfig,
  RaftMutation,
  RaftSnapshot,
  RaftSnapshotMeta,
  Ready,
  ReadState,
  Role,
  SnapshotAssembly,
  SnapshotBytes,
  SnapshotChunk,
  SoftState,
} from './types';
