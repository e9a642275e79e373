// The OpenAPI document served at /openapi.json, generated from the same zod schemas the doors
// validate with, so the published contract cannot drift from what the server enforces.

import { z } from 'zod';
import { operationSchemas, type OperationName } from '../operations';

function schemaOf(name: OperationName, omit: string[] = []): unknown {
  const shape = { ...operationSchemas[name].shape } as Record<string, z.ZodType>;
  for (const key of omit) delete shape[key];
  return z.toJSONSchema(z.object(shape), { unrepresentable: 'any', io: 'input' });
}

const errorResponse = {
  description: 'a LoomError',
  content: { 'application/json': { schema: { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' }, details: { type: 'object' } } } } },
};

const json = (schema: unknown) => ({ content: { 'application/json': { schema } } });

export function openApiDocument(): Record<string, unknown> {
  const op = (summary: string, extra: Record<string, unknown> = {}) => ({
    summary,
    responses: { '200': { description: 'ok' }, '4XX': errorResponse, '5XX': errorResponse },
    ...extra,
  });
  const param = (name: string, where: 'path' | 'query', description: string, required = where === 'path') => ({ name, in: where, required, description, schema: { type: 'string' } });
  const readParams = [param('consistency', 'query', 'local | linearizable'), param('atLeast', 'query', 'wait until this node applied this seq')];
  return {
    openapi: '3.1.0',
    info: { title: 'loom', version: '1', description: 'Every operation is also reachable over NATS ($LOOM.API.>) and gRPC with the same semantics and error codes.' },
    paths: {
      '/v1/kv/{bucket}/{key}': {
        put: op('put a key (body = value bytes)', {
          parameters: [param('bucket', 'path', 'bucket'), param('key', 'path', 'key'), param('expectRev', 'query', 'CAS: expected revision'), param('create', 'query', '1: only if absent'), param('ttlMs', 'query', 'expire after ms')],
          requestBody: { content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } },
        }),
        get: op('get a key (body = value bytes, header Loom-Rev)', { parameters: [param('bucket', 'path', 'bucket'), param('key', 'path', 'key'), ...readParams] }),
        delete: op('delete a key', { parameters: [param('bucket', 'path', 'bucket'), param('key', 'path', 'key'), param('expectRev', 'query', 'CAS: expected revision')] }),
      },
      '/v1/kv/{bucket}': {
        get: op('list keys', { parameters: [param('bucket', 'path', 'bucket'), param('prefix', 'query', 'key prefix'), param('limit', 'query', '1-10000'), param('cursor', 'query', 'from a previous page'), ...readParams] }),
      },
      '/v1/events/{stream}': {
        post: op('append an event', { parameters: [param('stream', 'path', 'stream')], requestBody: json(schemaOf('ev.append', ['stream'])) }),
        get: op('read a stream', { parameters: [param('stream', 'path', 'stream'), param('fromVersion', 'query', 'first version'), param('limit', 'query', '1-10000'), ...readParams] }),
      },
      '/v1/sql': { post: op('run a read-only SQL query', { requestBody: json(schemaOf('sql.query', ['consistency', 'atLeast', 'timeoutMs'])) }) },
      '/v1/watch': {
        get: op('watch changes (Server-Sent Events, id = seq; resume with Last-Event-ID)', { parameters: [param('subject', 'query', 'subject filter, e.g. $KV.users.>'), param('fromSeq', 'query', 'deliver changes after this seq')] }),
      },
      '/v1/cluster/status': { get: op('cluster status: role, leader, term, commit, applied, members') },
      '/v1/cluster/members': { post: op('add a member (learner first, then voter unless learner: true); leader only', { requestBody: json(schemaOf('cluster.add')) }) },
      '/v1/cluster/members/{id}': { delete: op('remove a member; leader only', { parameters: [param('id', 'path', 'node id')] }) },
      '/v1/cluster/transfer-leader': { post: op('hand leadership to another voter; leader only', { requestBody: json(schemaOf('cluster.transfer')) }) },
      '/v1/buckets/{bucket}/objects/{name}': {
        put: op('upload an object (streaming body; x-loom-sha256 or Digest checked; Content-Type kept)', {
          parameters: [param('bucket', 'path', 'bucket'), param('name', 'path', 'object name')],
          requestBody: { content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } },
        }),
        get: op('download an object (single Range, ETag = sha256, If-None-Match)', { parameters: [param('bucket', 'path', 'bucket'), param('name', 'path', 'object name')] }),
        delete: op('delete an object', { parameters: [param('bucket', 'path', 'bucket'), param('name', 'path', 'object name')] }),
      },
      '/v1/buckets/{bucket}/objects': {
        get: op('list objects', { parameters: [param('bucket', 'path', 'bucket'), param('prefix', 'query', 'name prefix'), param('limit', 'query', '1-10000'), param('cursor', 'query', 'from a previous page')] }),
      },
      '/healthz': { get: op('liveness') },
      '/readyz': { get: op('readiness: applied up to commit') },
      '/metrics': { get: op('Prometheus metrics') },
    },
  };
}
