// Every operation of the public API, once: an input schema and a function over the Database. The
// doors (NATS request/reply, HTTP, gRPC) only translate their wire format to these inputs and the
// results back, so the semantics and error codes are the same whichever door a client uses.

import { z } from 'zod';
import type { Database, EventRecord, KvEntry, ReplicationStatus } from '../core';
import type { KvListPage, ObjectInfo, ObjectListPage } from '../projections';
import { LoomError } from '../util';

const seq = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const bytes = z.instanceof(Uint8Array, { message: 'expected bytes' });
const consistency = z.enum(['local', 'linearizable']);
const readOptions = { consistency: consistency.optional(), atLeast: seq.optional(), timeoutMs: z.number().int().min(1).max(60_000).optional() };

export const operationSchemas = {
  'kv.put': z
    .object({ bucket: z.string(), key: z.string(), value: bytes, expectRev: seq.optional(), create: z.boolean().optional(), ttlMs: z.number().int().min(1).optional() })
    .strict(),
  'kv.get': z.object({ bucket: z.string(), key: z.string(), ...readOptions }).strict(),
  'kv.del': z.object({ bucket: z.string(), key: z.string(), expectRev: seq.optional() }).strict(),
  'kv.list': z
    .object({ bucket: z.string(), prefix: z.string().optional(), limit: z.number().int().optional(), cursor: z.string().optional(), ...readOptions })
    .strict(),
  'ev.append': z.object({ stream: z.string(), type: z.string(), data: z.unknown(), expectVersion: seq.optional() }).strict(),
  'ev.read': z.object({ stream: z.string(), fromVersion: seq.optional(), limit: z.number().int().optional(), ...readOptions }).strict(),
  'sql.query': z
    .object({
      sql: z.string(),
      params: z.union([z.array(z.unknown()), z.record(z.string(), z.unknown())]).optional(),
      limit: z.number().int().optional(),
      cursor: z.string().optional(),
      ...readOptions,
    })
    .strict(),
  'cluster.status': z.object({}).strict(),
  'cluster.add': z
    .object({ nodeId: z.number().int().min(1), host: z.string().min(1).max(255), raftPort: z.number().int().min(1).max(65535), learner: z.boolean().optional() })
    .strict(),
  'cluster.remove': z.object({ nodeId: z.number().int().min(1) }).strict(),
  'cluster.transfer': z.object({ to: z.number().int().min(1) }).strict(),
  'obj.info': z.object({ bucket: z.string(), name: z.string(), ...readOptions }).strict(),
  'obj.list': z
    .object({ bucket: z.string(), prefix: z.string().optional(), limit: z.number().int().optional(), cursor: z.string().optional(), ...readOptions })
    .strict(),
  'obj.del': z.object({ bucket: z.string(), name: z.string(), expectRev: seq.optional() }).strict(),
} as const;

export type OperationName = keyof typeof operationSchemas;
export type OperationInput<N extends OperationName> = z.infer<(typeof operationSchemas)[N]>;

export interface ClusterStatus {
  nodeId: number;
  role: 'leader' | 'follower' | 'candidate' | 'learner';
  leader: number | null;
  term: number;
  commit: number;
  applied: number;
  members: Array<{ id: number; role: string; addresses?: { nats?: string; grpc?: string; http?: string } }>;
}

export interface OperationOutputs {
  'kv.put': { rev: number };
  'kv.get': KvEntry;
  'kv.del': { rev: number };
  'kv.list': KvListPage;
  'ev.append': { seq: number; version: number };
  'ev.read': { events: EventRecord[] };
  'sql.query': { columns: string[]; rows: unknown[][]; cursor?: string };
  'cluster.status': ClusterStatus;
  'cluster.add': ClusterStatus;
  'cluster.remove': ClusterStatus;
  'cluster.transfer': ClusterStatus;
  'obj.info': ObjectInfo;
  'obj.list': ObjectListPage;
  'obj.del': { rev: number; deleted: boolean };
}

/** Validates a door's input against the operation's schema: INVALID_ARGUMENT names the field. */
export function parseInput<N extends OperationName>(name: N, input: unknown): OperationInput<N> {
  if ((name === 'kv.put' || name === 'kv.get' || name === 'kv.del') && isWellFormedKv(name, input)) return input as OperationInput<N>;
  const result = operationSchemas[name].safeParse(input);
  if (result.success) return result.data as OperationInput<N>;
  const issue = result.error.issues.find((i) => i.code === 'unrecognized_keys') ?? result.error.issues[0];
  if (issue.code === 'unrecognized_keys') {
    throw new LoomError('INVALID_ARGUMENT', `${name}: unknown field ${JSON.stringify(issue.keys[0])}`, { field: issue.keys[0] });
  }
  const field = issue.path.join('.') || 'body';
  throw new LoomError('INVALID_ARGUMENT', `${name}: ${field}: ${issue.message}`, { field });
}

/**
 * The KV requests nearly every call is (put, get, del with well-typed fields), checked by hand:
 * the zod schema costs several µs per call on the hottest path. The check accepts a strict subset
 * of what the schema accepts; anything else (a missing or mistyped field, an unknown one) goes
 * through the schema, so every error and its message are the schema's.
 */
function isWellFormedKv(name: 'kv.put' | 'kv.get' | 'kv.del', input: unknown): boolean {
  if (typeof input !== 'object' || input === null) return false;
  const proto = Object.getPrototypeOf(input) as unknown;
  if (proto !== Object.prototype && proto !== null) return false;
  const fields = input as Record<string, unknown>;
  if (typeof fields.bucket !== 'string' || typeof fields.key !== 'string') return false;
  if (name === 'kv.put' && !(fields.value instanceof Uint8Array)) return false;
  for (const field in fields) {
    const value = fields[field];
    switch (field) {
      case 'bucket':
      case 'key':
        continue;
      case 'value':
        if (name !== 'kv.put') return false;
        continue;
      case 'expectRev':
        if (name === 'kv.get' || (value !== undefined && !isSeq(value))) return false;
        continue;
      case 'create':
        if (name !== 'kv.put' || (value !== undefined && typeof value !== 'boolean')) return false;
        continue;
      case 'ttlMs':
        if (name !== 'kv.put' || (value !== undefined && !(Number.isSafeInteger(value) && (value as number) >= 1))) return false;
        continue;
      case 'consistency':
        if (name !== 'kv.get' || (value !== undefined && value !== 'local' && value !== 'linearizable')) return false;
        continue;
      case 'atLeast':
        if (name !== 'kv.get' || (value !== undefined && !isSeq(value))) return false;
        continue;
      case 'timeoutMs':
        if (name !== 'kv.get' || (value !== undefined && !(Number.isSafeInteger(value) && (value as number) >= 1 && (value as number) <= 60_000))) return false;
        continue;
      default:
        return false;
    }
  }
  return true;
}

function isSeq(value: unknown): boolean {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

export interface OperationContext {
  db: Database;
  nodeId: number;
}

/** Runs one operation on already-parsed input. */
export async function runOperation<N extends OperationName>(ctx: OperationContext, name: N, input: OperationInput<N>): Promise<OperationOutputs[N]> {
  const { db } = ctx;
  const run = async (): Promise<unknown> => {
    switch (name) {
      case 'kv.put': {
        const i = input as OperationInput<'kv.put'>;
        return db.kv.put(i.bucket, i.key, i.value, { expectRev: i.expectRev, create: i.create, ttlMs: i.ttlMs });
      }
      case 'kv.get': {
        const i = input as OperationInput<'kv.get'>;
        return db.kv.get(i.bucket, i.key, i);
      }
      case 'kv.del': {
        const i = input as OperationInput<'kv.del'>;
        return db.kv.delete(i.bucket, i.key, { expectRev: i.expectRev });
      }
      case 'kv.list': {
        const i = input as OperationInput<'kv.list'>;
        return db.kv.list(i.bucket, i);
      }
      case 'ev.append': {
        const i = input as OperationInput<'ev.append'>;
        return db.events.append(i.stream, { type: i.type, data: i.data, expectVersion: i.expectVersion });
      }
      case 'ev.read': {
        const i = input as OperationInput<'ev.read'>;
        return { events: await db.events.read(i.stream, i) };
      }
      case 'sql.query': {
        const { consistency: c, atLeast, timeoutMs, ...query } = input as OperationInput<'sql.query'>;
        return db.sqlQuery(query, { consistency: c, atLeast, timeoutMs });
      }
      case 'obj.info': {
        const i = input as OperationInput<'obj.info'>;
        return db.objects.stat(i.bucket, i.name, i);
      }
      case 'obj.list': {
        const i = input as OperationInput<'obj.list'>;
        return db.objects.list(i.bucket, i);
      }
      case 'obj.del': {
        const i = input as OperationInput<'obj.del'>;
        return db.objects.delete(i.bucket, i.name, i.expectRev === undefined ? {} : { expectRev: i.expectRev });
      }
      case 'cluster.add': {
        const i = input as OperationInput<'cluster.add'>;
        return clusterStatus(db, await db.membership.add(i));
      }
      case 'cluster.remove': {
        const i = input as OperationInput<'cluster.remove'>;
        return clusterStatus(db, await db.membership.remove(i.nodeId));
      }
      case 'cluster.transfer': {
        const i = input as OperationInput<'cluster.transfer'>;
        return clusterStatus(db, await db.membership.transferLeader(i.to));
      }
      case 'cluster.status': {
        const status = db.core.status();
        if (status.cluster) return clusterStatus(db, status.cluster);
        return {
          nodeId: ctx.nodeId,
          role: status.leader ? 'leader' : 'follower',
          leader: status.leader ? ctx.nodeId : null,
          term: status.term,
          commit: status.commitIndex,
          applied: status.appliedIndex,
          members: [{ id: ctx.nodeId, role: 'voter' }],
        } satisfies ClusterStatus;
      }
    }
    throw new LoomError('INVALID_ARGUMENT', `unknown operation ${String(name)}`);
  };
  return (await run()) as OperationOutputs[N];
}

/** A replicated node's status as the doors report it: Raft's view plus the core's indexes. */
function clusterStatus(db: Database, c: ReplicationStatus): ClusterStatus {
  const status = db.core.status();
  return { nodeId: c.nodeId, role: c.role, leader: c.leader, term: c.term, commit: status.commitIndex, applied: status.appliedIndex, members: c.members };
}
