// Translation between loom.v1 protobuf messages (as @grpc/proto-loader decodes them) and the inputs
// and results of the shared operations (src/api/operations.ts). No checks of its own beyond JSON
// parsing: every rule lives in the operation schemas, so every door answers alike.

import type { Change, ObjectInfo } from '../../projections';
import { LoomError } from '../../util';
import type { ClusterStatus, OperationName, OperationOutputs } from '../operations';

/** A decoded request: snake_case fields, `optional` ones absent when unset (see proto.ts). */
export type ProtoRequest = Record<string, unknown>;
export type ProtoMessage = Record<string, unknown>;

/** Operation input before validation, from a decoded request. Undefined fields are dropped. */
export const decodeRequest: { [N in OperationName]: (request: ProtoRequest) => Record<string, unknown> } = {
  'kv.put': (r) => defined({ bucket: r.bucket, key: r.key, value: r.value, expectRev: r.expect_rev, create: r.create, ttlMs: r.ttl_ms }),
  'kv.get': (r) => defined({ bucket: r.bucket, key: r.key, ...readOptions(r) }),
  'kv.del': (r) => defined({ bucket: r.bucket, key: r.key, expectRev: r.expect_rev }),
  'kv.list': (r) => defined({ bucket: r.bucket, prefix: r.prefix, limit: r.limit, cursor: r.cursor, ...readOptions(r) }),
  'ev.append': (r) => defined({ stream: r.stream, type: r.type, data: parseJson(r.data, 'data'), expectVersion: r.expect_version }),
  'ev.read': (r) => defined({ stream: r.stream, fromVersion: r.from_version, limit: r.limit, ...readOptions(r) }),
  'sql.query': (r) => defined({ sql: r.sql, params: parseJson(r.params, 'params'), limit: r.limit, cursor: r.cursor, ...readOptions(r) }),
  'cluster.status': () => ({}),
  'cluster.add': (r) => defined({ nodeId: r.node_id, host: r.host, raftPort: r.raft_port, learner: r.learner }),
  'cluster.remove': (r) => defined({ nodeId: r.node_id }),
  'cluster.transfer': (r) => defined({ to: r.to }),
  'obj.info': (r) => defined({ bucket: r.bucket, name: r.name, ...readOptions(r) }),
  'obj.list': (r) => defined({ bucket: r.bucket, prefix: r.prefix, limit: r.limit, cursor: r.cursor, ...readOptions(r) }),
  'obj.del': (r) => defined({ bucket: r.bucket, name: r.name, expectRev: r.expect_rev }),
};

/** An ObjectInfo message (Buckets). */
export function encodeObjectInfo(o: ObjectInfo): ProtoMessage {
  return {
    bucket: o.bucket,
    name: o.name,
    size: o.size,
    sha256: o.sha256,
    content_type: o.contentType,
    metadata: o.metadata,
    rev: o.rev,
    updated_at: o.updatedAt,
    chunk_bytes: o.chunkBytes,
    chunk_count: o.chunkCount,
  };
}

/** Response message for an operation's result. */
export const encodeResponse: { [N in OperationName]: (output: OperationOutputs[N]) => ProtoMessage } = {
  'obj.info': (o) => encodeObjectInfo(o),
  'obj.list': (o) => defined({ items: o.items.map(encodeObjectInfo), cursor: o.cursor }),
  'obj.del': (o) => ({ rev: o.rev, deleted: o.deleted }),
  'kv.put': (o) => ({ rev: o.rev }),
  'kv.get': (o) =>
    defined({ bucket: o.bucket, key: o.key, value: o.value, rev: o.rev, create_rev: o.createRev, updated_at: o.updatedAt, expires_at: o.expiresAt }),
  'kv.del': (o) => ({ rev: o.rev }),
  'kv.list': (o) => defined({ items: o.items.map((item) => ({ key: item.key, rev: item.rev })), cursor: o.cursor }),
  'ev.append': (o) => ({ seq: o.seq, version: o.version }),
  'ev.read': (o) => ({
    events: o.events.map((e) => ({ seq: e.seq, stream: e.stream, version: e.version, type: e.type, data: JSON.stringify(e.data), ts: e.ts })),
  }),
  'sql.query': (o) => defined({ columns: o.columns, rows: o.rows.map((row) => JSON.stringify(row)), cursor: o.cursor }),
  'cluster.status': (o) => encodeClusterStatus(o),
  'cluster.add': (o) => encodeClusterStatus(o),
  'cluster.remove': (o) => encodeClusterStatus(o),
  'cluster.transfer': (o) => encodeClusterStatus(o),
};

function encodeClusterStatus(o: ClusterStatus): ProtoMessage {
  return defined({
      node_id: o.nodeId,
      role: o.role,
      leader: o.leader ?? undefined,
      term: o.term,
      commit: o.commit,
      applied: o.applied,
    members: o.members.map((m) => ({ id: m.id, role: m.role })),
  });
}

export function encodeChange(change: Change): ProtoMessage {
  const common = { seq: change.seq, subject: change.subject, ts: change.ts };
  if (change.kind === 'kv') return { ...common, kv: { op: change.op, bucket: change.bucket, key: change.key, value: change.value } };
  if (change.kind === 'object') {
    const i = change.info;
    const info = defined({
      bucket: i.bucket,
      name: i.name,
      size: i.size,
      sha256: i.sha256,
      content_type: i.contentType,
      metadata: i.metadata,
      rev: i.rev,
      updated_at: i.updatedAt,
      chunk_bytes: i.chunkBytes,
      chunk_count: i.chunkCount,
    });
    return { ...common, object: { op: change.op, bucket: change.bucket, name: change.name, info } };
  }
  return { ...common, event: { stream: change.stream, type: change.type, version: change.version, data: JSON.stringify(change.data) } };
}

/** Watch arguments from a WatchRequest; db.watch validates them. */
export function decodeWatchRequest(r: ProtoRequest): { subject: unknown; fromSeq?: unknown } {
  return defined({ subject: r.subject, fromSeq: r.from_seq });
}

function readOptions(r: ProtoRequest): Record<string, unknown> {
  return { consistency: r.consistency, atLeast: r.at_least };
}

/** JSON text to a value; an empty string or an absent field means "absent", as in the proto comment. */
function parseJson(text: unknown, field: string): unknown {
  if (text === undefined || text === '') return undefined;
  if (typeof text !== 'string') throw new LoomError('INVALID_ARGUMENT', `${field} must be JSON text`, { field });
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new LoomError('INVALID_ARGUMENT', `${field} is not valid JSON: ${(err as Error).message}`, { field });
  }
}

function defined<T extends Record<string, unknown>>(value: T): T {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(value)) {
    const v = value[k];
    if (v !== undefined) out[k] = v;
  }
  return out as T;
}
