// The NATS door: `$LOOM.API.>` request/reply handlers on the embedded bus (CONTRACT.md), so any
// NATS client in any language can use loom with no loom library. Handlers are a queue group, so
// several can serve. Errors come back with header `Loom-Error` and a JSON body.

import { MsgHeaders, type Bus, type Msg, type Subscription } from '../../bus';
import { changeBusMessage, type Database, type EventRecord, type SqlResult } from '../../core';
import type { KvListPage, ObjectListPage } from '../../projections';
import { LoomError, assert, isLoomError, type Logger } from '../../util';
import { parseInput, runOperation, type OperationContext, type OperationName } from '../operations';
import { checkReplyFits, encodeEventsToFit, encodePageToFit, encodeSqlResultToFit, encodeWholeToFit } from './page-fit';

export const apiSubjectPrefix = '$LOOM.API.';
export const apiQueueGroup = 'loom-api';

export interface NatsApiOptions {
  bus: Bus;
  db: Database;
  nodeId: number;
  logger: Logger;
  /** Requests being served at once; more are answered UNAVAILABLE. */
  requestsInFlightMax?: number;
  /** Watches delivering at once. */
  watchesMax?: number;
}

interface Request {
  name: OperationName | 'watch';
  input: Record<string, unknown>;
}

const encoder = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

export class NatsApi {
  private subscription: Subscription | undefined;
  private inFlight = 0;
  private readonly watches = new Set<{ close(): void }>();
  private readonly ctx: OperationContext;
  private readonly requestsInFlightMax: number;
  private readonly watchesMax: number;

  constructor(private readonly options: NatsApiOptions) {
    this.ctx = { db: options.db, nodeId: options.nodeId };
    this.requestsInFlightMax = options.requestsInFlightMax ?? 4096;
    this.watchesMax = options.watchesMax ?? 1024;
  }

  start(): void {
    this.subscription = this.options.bus.subscribe(`${apiSubjectPrefix}>`, { queue: apiQueueGroup, callback: (msg) => this.handle(msg) });
  }

  stop(): void {
    this.subscription?.unsubscribe();
    for (const watch of this.watches) watch.close();
    this.watches.clear();
  }

  private handle(msg: Msg): void {
    if (!msg.reply) {
      this.options.logger.debug({ subject: msg.subject }, 'API request without a reply subject ignored');
      return;
    }
    if (this.inFlight >= this.requestsInFlightMax) {
      reply(msg, new LoomError('UNAVAILABLE', `too many API requests in flight (requestsInFlightMax ${this.requestsInFlightMax}); retry`, { limit: 'requestsInFlightMax' }), this.options.bus.maxPayloadBytes);
      return;
    }
    this.inFlight++;
    this.serve(msg)
      .catch((err: unknown) => {
        if (!isLoomError(err)) this.options.logger.error({ err, subject: msg.subject }, 'API request failed unexpectedly');
        reply(msg, err, this.options.bus.maxPayloadBytes);
      })
      .finally(() => this.inFlight--);
  }

  private async serve(msg: Msg): Promise<void> {
    const request = parseRequest(msg);
    if (request.name === 'watch') {
      this.startWatch(msg, request.input);
      return;
    }
    const input = parseInput(request.name, request.input);
    const result = await runOperation(this.ctx, request.name, input);
    if (request.name === 'kv.get') {
      const entry = result as { value: Uint8Array; rev: number; createRev: number; updatedAt: number };
      const headers = MsgHeaders.fromRecord({ 'Loom-Rev': String(entry.rev), 'Loom-Create-Rev': String(entry.createRev), 'Loom-Updated-At': String(entry.updatedAt) });
      // The headers count towards the limit too.
      checkReplyFits(entry.value.length + headers.encodedBytes(), this.options.bus.maxPayloadBytes, 'the value with its headers', 'read it over HTTP or gRPC, which carry values of any size');
      msg.respond(entry.value, { headers });
      return;
    }
    msg.respond(encodeToFit(request.name, result, this.options.bus.maxPayloadBytes) ?? encoder(result));
  }

  /** Replays then follows changes to `deliver` until nobody listens there any more. */
  private startWatch(msg: Msg, body: Record<string, unknown>): void {
    const { subject, fromSeq, deliver } = body;
    if (typeof deliver !== 'string' || deliver.length === 0 || /[\s*>]/.test(deliver)) {
      throw new LoomError('INVALID_ARGUMENT', 'watch: deliver must be a literal subject to publish changes to', { field: 'deliver' });
    }
    if (fromSeq !== undefined && (typeof fromSeq !== 'number' || !Number.isSafeInteger(fromSeq) || fromSeq < 0)) {
      throw new LoomError('INVALID_ARGUMENT', 'watch: fromSeq must be a non-negative integer', { field: 'fromSeq' });
    }
    const unknown = Object.keys(body).find((k) => !['subject', 'fromSeq', 'deliver'].includes(k));
    if (unknown) throw new LoomError('INVALID_ARGUMENT', `watch: unknown field ${JSON.stringify(unknown)}`, { field: unknown });
    if (this.watches.size >= this.watchesMax) {
      throw new LoomError('UNAVAILABLE', `too many watches (watchesMax ${this.watchesMax})`, { limit: 'watchesMax' });
    }
    const watch = this.options.db.watch(String(subject), { fromSeq: fromSeq as number | undefined });
    this.watches.add(watch);
    msg.respond(encoder({ ok: true }));
    const bus = this.options.bus;
    void (async () => {
      let sent = 0;
      try {
        for await (const change of watch) {
          if (!bus.hasInterest(deliver)) break;
          const message = changeBusMessage(change, bus.maxPayloadBytes, { 'Loom-Subject': change.subject });
          if (message === undefined) throw new LoomError('TOO_LARGE', `the change at seq ${change.seq} does not fit the bus even without its payload`, { limit: 'maxPayloadBytes', max: bus.maxPayloadBytes });
          bus.publish(deliver, message.payload, { headers: message.headers });
          // Let sockets drain between bursts of a long replay.
          if (++sent % 256 === 0) await new Promise((resolve) => setImmediate(resolve));
        }
      } catch (err) {
        if (bus.hasInterest(deliver)) bus.publish(deliver, encodeError(toError(err), bus.maxPayloadBytes), { headers: errorHeaders(toError(err)) });
      } finally {
        watch.close();
        this.watches.delete(watch);
      }
    })();
    // A watcher that stops listening while no change arrives is noticed by a periodic check.
    const check = setInterval(() => {
      if (!this.watches.has(watch)) clearInterval(check);
      else if (!bus.hasInterest(deliver)) {
        clearInterval(check);
        watch.close();
        this.watches.delete(watch);
      }
    }, 1000);
    check.unref();
  }
}

const kvPutPrefix = `${apiSubjectPrefix}KV.PUT.`;
const kvGetPrefix = `${apiSubjectPrefix}KV.GET.`;

/** `$LOOM.API.<GROUP>.<VERB>.<args…>` → an operation and its input. */
function parseRequest(msg: Msg): Request {
  // Most requests are a plain KV put or get, with no headers: read bucket and key straight from
  // the subject. Anything else (headers, a subject without a key) takes the general path below.
  if (msg.headerBlock === undefined) {
    const subject = msg.subject;
    const put = subject.startsWith(kvPutPrefix);
    if (put || subject.startsWith(kvGetPrefix)) {
      const dot = subject.indexOf('.', kvPutPrefix.length);
      if (dot > kvPutPrefix.length && dot < subject.length - 1) {
        const bucket = subject.slice(kvPutPrefix.length, dot);
        const key = subject.slice(dot + 1);
        return put ? { name: 'kv.put', input: { bucket, key, value: msg.data } } : { name: 'kv.get', input: { bucket, key } };
      }
    }
  }
  const tokens = msg.subject.slice(apiSubjectPrefix.length).split('.');
  const route = tokens.slice(0, 2).join('.');
  const headers = msg.headers;
  const header = (name: string): string | undefined => headers?.get(name);
  const number = (name: string): number | undefined => {
    const value = header(name);
    if (value === undefined) return undefined;
    const n = Number(value);
    if (value.trim() === '' || !Number.isSafeInteger(n)) throw new LoomError('INVALID_ARGUMENT', `header ${name} must be an integer, got ${JSON.stringify(value)}`, { field: name });
    return n;
  };
  const bucketAndKey = (): { bucket: string; key: string } => {
    if (tokens.length < 4) throw new LoomError('INVALID_ARGUMENT', `subject ${msg.subject} must name a bucket and a key`, { field: 'subject' });
    return { bucket: tokens[2], key: tokens.slice(3).join('.') };
  };
  const json = (): Record<string, unknown> => {
    if (msg.data.length === 0) return {};
    let body: unknown;
    try {
      body = JSON.parse(msg.data.toString('utf8'));
    } catch {
      throw new LoomError('INVALID_ARGUMENT', 'payload is not valid JSON', { field: 'payload' });
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new LoomError('INVALID_ARGUMENT', 'payload must be a JSON object', { field: 'payload' });
    return body as Record<string, unknown>;
  };
  const one = (field: string): string => {
    if (tokens.length !== 3) throw new LoomError('INVALID_ARGUMENT', `subject ${msg.subject} must end with one ${field} token`, { field: 'subject' });
    return tokens[2];
  };
  const readOptions = (): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    const consistency = header('Loom-Consistency');
    if (consistency !== undefined) out.consistency = consistency;
    const atLeast = number('Loom-At-Least');
    if (atLeast !== undefined) out.atLeast = atLeast;
    const timeoutMs = number('Loom-Timeout-Ms');
    if (timeoutMs !== undefined) out.timeoutMs = timeoutMs;
    return out;
  };
  switch (route) {
    case 'KV.PUT': {
      const input: Record<string, unknown> = { ...bucketAndKey(), value: msg.data };
      const expectRev = number('Loom-Expect-Rev');
      if (expectRev !== undefined) input.expectRev = expectRev;
      if (header('Loom-Create') !== undefined) input.create = header('Loom-Create') === '1' || header('Loom-Create') === 'true';
      const ttl = number('Loom-TTL');
      if (ttl !== undefined) input.ttlMs = ttl;
      return { name: 'kv.put', input };
    }
    case 'KV.GET':
      return { name: 'kv.get', input: { ...bucketAndKey(), ...readOptions() } };
    case 'KV.DEL': {
      const input: Record<string, unknown> = bucketAndKey();
      const expectRev = number('Loom-Expect-Rev');
      if (expectRev !== undefined) input.expectRev = expectRev;
      return { name: 'kv.del', input };
    }
    case 'KV.LIST':
      return { name: 'kv.list', input: { ...json(), bucket: one('bucket'), ...readOptions() } };
    case 'EV.APPEND':
      return { name: 'ev.append', input: { ...json(), stream: one('stream') } };
    case 'EV.READ':
      return { name: 'ev.read', input: { ...json(), stream: one('stream'), ...readOptions() } };
    case 'SQL.QUERY':
      return { name: 'sql.query', input: { ...json(), ...readOptions() } };
    case 'CLUSTER.STATUS':
      return { name: 'cluster.status', input: {} };
    case 'CLUSTER.ADD':
      return { name: 'cluster.add', input: json() };
    case 'CLUSTER.REMOVE':
      return { name: 'cluster.remove', input: json() };
    case 'CLUSTER.TRANSFER':
      return { name: 'cluster.transfer', input: json() };
    // Objects: the name travels in the JSON payload (any UTF-8, not a subject token). Bytes go
    // through HTTP or gRPC, which stream; see docs/buckets.md.
    case 'OBJ.INFO':
      return { name: 'obj.info', input: { ...json(), bucket: one('bucket'), ...readOptions() } };
    case 'OBJ.LIST':
      return { name: 'obj.list', input: { ...json(), bucket: one('bucket'), ...readOptions() } };
    // The condition travels in the payload ({"name","expectRev"}), which a node of an older build
    // refuses (its schema is strict) rather than ignores, as it would a header.
    case 'OBJ.DEL':
      return { name: 'obj.del', input: { ...json(), bucket: one('bucket') } };
    default:
      if (tokens[0] === 'WATCH' && tokens.length === 1) return { name: 'watch', input: json() };
      throw new LoomError('INVALID_ARGUMENT', `no API operation at ${msg.subject}`, { field: 'subject' });
  }
}

/**
 * The reply of an operation whose result can outgrow one NATS message, cut or refused to fit
 * (page-fit.ts); undefined for the others, sent as encoded (the bus refuses one over the limit).
 */
function encodeToFit(name: OperationName, result: unknown, payloadBytesMax: number): Buffer | undefined {
  switch (name) {
    case 'obj.list':
      return encodePageToFit(result as ObjectListPage, (item) => item.name, payloadBytesMax, 'object info');
    case 'kv.list':
      return encodePageToFit(result as KvListPage, (item) => item.key, payloadBytesMax, 'key');
    case 'ev.read':
      return encodeEventsToFit(result as { events: EventRecord[] }, payloadBytesMax);
    case 'sql.query':
      return encodeSqlResultToFit(result as SqlResult, payloadBytesMax);
    case 'obj.info':
      return encodeWholeToFit(result, payloadBytesMax, "the object's info", 'read it over HTTP or gRPC');
    case 'cluster.status':
      return encodeWholeToFit(result, payloadBytesMax, 'the cluster status', 'read it over HTTP (GET /v1/cluster/status) or gRPC');
    case 'cluster.add':
    case 'cluster.remove':
    case 'cluster.transfer':
      // The change is made by now: the error says so (and `done: true`), as a client would
      // otherwise take it as undone and retry it.
      return encodeWholeToFit(
        result,
        payloadBytesMax,
        `${name.toUpperCase()} is done, but the cluster status it answers with`,
        'read the status over HTTP (GET /v1/cluster/status) or gRPC',
        { done: true },
      );
    default:
      return undefined;
  }
}

function toError(err: unknown): LoomError {
  if (isLoomError(err)) return err;
  return new LoomError('INTERNAL', (err as Error)?.message ?? String(err));
}

function errorHeaders(err: LoomError): MsgHeaders {
  return MsgHeaders.fromRecord({ 'Loom-Error': err.code });
}

function reply(msg: Msg, err: unknown, payloadBytesMax: number): void {
  const error = toError(err);
  msg.respond(encodeError(error, payloadBytesMax), { headers: errorHeaders(error) });
}

/**
 * An error as JSON; one whose message and details (a long name quoted, say) are too big for a
 * reply keeps its code with a short message, rather than no reply at all.
 */
function encodeError(error: LoomError, payloadBytesMax: number): Buffer {
  const whole = encoder(error.toJSON());
  const headerBytes = errorHeaders(error).encodedBytes();
  if (whole.length + headerBytes <= payloadBytesMax) return whole;
  const message = `the ${error.code} error is ${whole.length} bytes, larger than a NATS reply may be (maxPayloadBytes ${payloadBytesMax}); HTTP and gRPC carry it whole`;
  const short = encoder({ code: error.code, message, details: {} });
  assert(short.length + headerBytes <= payloadBytesMax, 'a short error fits in the smallest maxPayloadBytes');
  return short;
}
