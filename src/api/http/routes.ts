// The /v1 HTTP routes (CONTRACT.md): each one translates HTTP to an operation input and back.
// KV values travel as raw bytes; everything else is JSON. Watch is Server-Sent Events with
// `id: <seq>`, resumable with Last-Event-ID.

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Database } from '../../core';
import { changeMessage } from '../../projections';
import { LoomError } from '../../util';
import { parseInput, runOperation, type OperationContext, type OperationName } from '../operations';
import * as params from './params';

export interface RouteOptions {
  db: Database;
  nodeId: number;
  /** Largest request body (a KV value plus room), bytes. */
  bodyBytesMax: number;
}

type Query = Record<string, string | undefined>;

/** `?expectRev=5` → 5; refuses anything but a safe integer, naming the parameter. */
function intParam(query: Query, name: string): number | undefined {
  const value = query[name];
  return value === undefined ? undefined : params.intParam(value, name, `query parameter ${name}`);
}

function readOptions(query: Query): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (query.consistency !== undefined) out.consistency = query.consistency;
  const atLeast = intParam(query, 'atLeast');
  if (atLeast !== undefined) out.atLeast = atLeast;
  const timeoutMs = intParam(query, 'timeoutMs');
  if (timeoutMs !== undefined) out.timeoutMs = timeoutMs;
  return out;
}

function jsonBody(request: FastifyRequest): Record<string, unknown> {
  const body = request.body;
  if (body === undefined || body === null || body === '') return {};
  if (typeof body !== 'object' || Array.isArray(body) || Buffer.isBuffer(body)) throw new LoomError('INVALID_ARGUMENT', 'body must be a JSON object', { field: 'body' });
  return body as Record<string, unknown>;
}

export function registerRoutes(app: FastifyInstance, options: RouteOptions): void {
  const ctx: OperationContext = { db: options.db, nodeId: options.nodeId };
  const run = async (name: OperationName, input: unknown): Promise<unknown> => runOperation(ctx, name, parseInput(name, input));

  // KV values are bytes whatever their content type: this context parses every body as a Buffer.
  void app.register(async (raw) => {
    raw.removeAllContentTypeParsers();
    raw.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: options.bodyBytesMax }, (_request, body, done) => done(null, body));
    raw.put('/v1/kv/:bucket/*', async (request: FastifyRequest<{ Params: { bucket: string; '*': string }; Querystring: Query }>) => {
      const q = request.query;
      const input: Record<string, unknown> = { bucket: request.params.bucket, key: request.params['*'], value: (request.body as Buffer | undefined) ?? Buffer.alloc(0) };
      const expectRev = intParam(q, 'expectRev');
      if (expectRev !== undefined) input.expectRev = expectRev;
      if (q.create !== undefined) input.create = params.flagParam(q.create, 'create');
      const ttlMs = intParam(q, 'ttlMs');
      if (ttlMs !== undefined) input.ttlMs = ttlMs;
      return run('kv.put', input);
    });
  });

  app.get('/v1/kv/:bucket/*', async (request: FastifyRequest<{ Params: { bucket: string; '*': string }; Querystring: Query }>, reply: FastifyReply) => {
    const entry = (await run('kv.get', { bucket: request.params.bucket, key: request.params['*'], ...readOptions(request.query) })) as {
      value: Uint8Array;
      rev: number;
      createRev: number;
      updatedAt: number;
    };
    return reply
      .header('content-type', 'application/octet-stream')
      .header('loom-rev', String(entry.rev))
      .header('loom-create-rev', String(entry.createRev))
      .header('loom-updated-at', String(entry.updatedAt))
      .send(Buffer.from(entry.value.buffer, entry.value.byteOffset, entry.value.byteLength));
  });

  app.delete('/v1/kv/:bucket/*', async (request: FastifyRequest<{ Params: { bucket: string; '*': string }; Querystring: Query }>) => {
    const input: Record<string, unknown> = { bucket: request.params.bucket, key: request.params['*'] };
    const expectRev = intParam(request.query, 'expectRev');
    if (expectRev !== undefined) input.expectRev = expectRev;
    return run('kv.del', input);
  });

  app.get('/v1/kv/:bucket', async (request: FastifyRequest<{ Params: { bucket: string }; Querystring: Query }>) => {
    const q = request.query;
    const input: Record<string, unknown> = { bucket: request.params.bucket, ...readOptions(q) };
    if (q.prefix !== undefined) input.prefix = q.prefix;
    const limit = intParam(q, 'limit');
    if (limit !== undefined) input.limit = limit;
    if (q.cursor !== undefined) input.cursor = q.cursor;
    return run('kv.list', input);
  });

  app.post('/v1/events/:stream', async (request: FastifyRequest<{ Params: { stream: string } }>) => run('ev.append', { ...jsonBody(request), stream: request.params.stream }));

  app.get('/v1/events/:stream', async (request: FastifyRequest<{ Params: { stream: string }; Querystring: Query }>) => {
    const q = request.query;
    const input: Record<string, unknown> = { stream: request.params.stream, ...readOptions(q) };
    const fromVersion = intParam(q, 'fromVersion');
    if (fromVersion !== undefined) input.fromVersion = fromVersion;
    const limit = intParam(q, 'limit');
    if (limit !== undefined) input.limit = limit;
    return run('ev.read', input);
  });

  app.post('/v1/sql', async (request: FastifyRequest<{ Querystring: Query }>) => run('sql.query', { ...jsonBody(request), ...readOptions(request.query) }));

  app.get('/v1/cluster/status', async () => run('cluster.status', {}));
  app.post('/v1/cluster/members', async (request: FastifyRequest) => run('cluster.add', jsonBody(request)));
  app.delete('/v1/cluster/members/:id', async (request: FastifyRequest<{ Params: { id: string } }>) =>
    run('cluster.remove', { nodeId: intParam({ id: request.params.id }, 'id') }),
  );
  app.post('/v1/cluster/transfer-leader', async (request: FastifyRequest) => run('cluster.transfer', jsonBody(request)));

  app.get('/v1/watch', async (request: FastifyRequest<{ Querystring: Query }>, reply: FastifyReply) => {
    const subject = request.query.subject ?? '>';
    const lastEventId = request.headers['last-event-id'];
    const resumeFrom = typeof lastEventId === 'string' && lastEventId !== '' ? intParam({ lastEventId }, 'lastEventId') : undefined;
    const fromSeq = resumeFrom ?? intParam(request.query, 'fromSeq');
    const watch = options.db.watch(subject, { fromSeq });
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.write(': loom watch\n\n');
    const stop = (): void => watch.close();
    request.raw.on('close', stop);
    try {
      for await (const change of watch) {
        const message = changeMessage(change);
        const data =
          change.kind === 'kv'
            ? { ...message.headers, subject: message.subject, value: Buffer.from(message.payload).toString('base64') }
            : change.kind === 'object'
              ? { ...message.headers, subject: message.subject, info: change.info }
              : { ...message.headers, subject: message.subject, data: change.data };
        const ok = res.write(`id: ${change.seq}\nevent: change\ndata: ${JSON.stringify(data)}\n\n`);
        // Backpressure: a slow client holds the watch (which replays from the log later) instead of filling memory.
        if (!ok) await new Promise((resolve) => res.once('drain', resolve));
        if (res.destroyed) break;
      }
    } catch (err) {
      const error = err instanceof LoomError ? err : new LoomError('INTERNAL', (err as Error).message);
      if (!res.destroyed) res.write(`event: error\ndata: ${JSON.stringify(error.toJSON())}\n\n`);
    } finally {
      request.raw.off('close', stop);
      watch.close();
      res.end();
    }
  });
}
