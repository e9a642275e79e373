// The Buckets HTTP routes (CONTRACT.md): streaming uploads straight from the request (never
// buffered whole), downloads streamed with backpressure, single Range, ETag = sha256, If-None-Match.

import type * as http from 'node:http';
import { Readable, finished } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { objectTooLarge, type Database } from '../../core';
import type { ObjectInfo } from '../../projections';
import { LoomError, isLoomError, names } from '../../util';
import { parseInput, runOperation, type OperationContext } from '../operations';
import { flagParam, intParam } from './params';

export interface BucketRouteOptions {
  db: Database;
  nodeId: number;
}

type Query = Record<string, string | undefined>;
type ObjectParams = { Params: { bucket: string; '*': string }; Querystring: Query };

/** An upload's Content-Type, taken off the request before Fastify reads it as the body's format. */
const objectContentTypes = new WeakMap<http.IncomingMessage, string | undefined>();

/** Request headers `x-loom-meta-<key>: <value>` become object metadata (keys lower-cased by HTTP). */
export const metadataHeaderPrefix = 'x-loom-meta-';

export function registerBucketRoutes(app: FastifyInstance, options: BucketRouteOptions): void {
  const ctx: OperationContext = { db: options.db, nodeId: options.nodeId };
  const { db } = options;

  // Uploads: this context hands the handler the raw request stream, whatever the content type, so
  // the body is read chunk by chunk as the upload proposes it, never held in memory.
  void app.register(async (raw) => {
    raw.removeAllContentTypeParsers();
    raw.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
    // The Content-Type is the object's, stored as sent (the metadata rule of every door checks it),
    // not the body's format: Fastify would answer 415 for one that is not a valid media type.
    raw.addHook('onRequest', async (request) => {
      objectContentTypes.set(request.raw, request.headers['content-type']);
      delete request.headers['content-type'];
    });
    raw.put('/v1/buckets/:bucket/objects/*', async (request: FastifyRequest<ObjectParams>, reply: FastifyReply) => {
      const { bucket } = request.params;
      const name = request.params['*'];
      const tooLarge = announcedTooLarge(request.headers['content-length'], db.objects.objectBytesMax);
      if (tooLarge) {
        // Refused before a byte is read; the connection closes rather than draining the body.
        reply.raw.shouldKeepAlive = false;
        throw tooLarge;
      }
      const body = (request.body as Readable | undefined) ?? request.raw;
      try {
        const condition = await writeCondition(db, bucket, name, request);
        // A held-back 100 Continue goes once the condition holds, before the body is read.
        const beforeFirstRead = awaitingContinue.has(request.raw) ? () => reply.raw.writeContinue() : undefined;
        const info = await db.objects.put(bucket, name, body, { ...uploadOptions(request), ...condition, ...(beforeFirstRead ? { beforeFirstRead } : {}) });
        // As S3 answers a PUT: the stored object's ETag, which a GET's If-None-Match compares.
        reply.header('etag', `"${info.sha256}"`);
        return info;
      } catch (err) {
        // A condition refused before the body was read: close rather than drain it.
        if (!request.raw.complete) reply.raw.shouldKeepAlive = false;
        return failedPrecondition(err, request, reply);
      }
    });
  });

  app.get('/v1/buckets/:bucket/objects/*', async (request: FastifyRequest<ObjectParams>, reply: FastifyReply) => {
    const { bucket } = request.params;
    const name = request.params['*'];
    const info = await db.objects.stat(bucket, name, readOptions(request.query));
    const etag = `"${info.sha256}"`;
    // The preconditions in RFC 9110 §13.2.2's order. A failed If-Match, or If-Unmodified-Since
    // without If-Match, is 412 whatever the body would have been; If-None-Match, or
    // If-Modified-Since without it, is 304 when the client's copy is current.
    const { headers } = request;
    const ifMatch = headers['if-match'];
    if (ifMatch !== undefined && !matchesEtag(ifMatch, etag, 'strong')) {
      return reply.status(412).send({ code: 'CONFLICT', message: `If-Match ${ifMatch} does not match the object's ETag ${etag}`, details: { field: 'if-match', etag } });
    }
    const unmodifiedSince = ifMatch === undefined ? httpDateSeconds(headers['if-unmodified-since']) : undefined;
    if (unmodifiedSince !== undefined && lastModifiedSeconds(info) > unmodifiedSince) {
      return reply.status(412).send({
        code: 'CONFLICT',
        message: `the object was modified after If-Unmodified-Since ${headers['if-unmodified-since']}`,
        details: { field: 'if-unmodified-since', lastModified: new Date(info.updatedAt).toUTCString() },
      });
    }
    objectHeaders(reply, info, etag);
    const ifNoneMatch = headers['if-none-match'];
    if (ifNoneMatch !== undefined ? matchesEtag(ifNoneMatch, etag, 'weak') : notModifiedSince(headers['if-modified-since'], info)) return reply.status(304).send();
    // If-Range: the range only while the object is the one the client has part of, else all of it.
    const ifRange = request.headers['if-range'] as string | undefined;
    const range = ifRange === undefined || rangeStillValid(ifRange, etag, info) ? parseRange(request.headers.range, info.size) : undefined;
    if (range === 'unsatisfiable') {
      return reply.status(416).header('content-range', `bytes */${info.size}`).header('content-type', 'application/json').send({ code: 'INVALID_ARGUMENT', message: `range not satisfiable for ${info.size} bytes`, details: { field: 'range', size: info.size } });
    }
    if (request.method === 'HEAD') {
      // The headers a GET would send, without reading (or checking) a byte of the object: Fastify
      // would drain a whole download for HEAD. An empty stream keeps the Content-Length set here
      // (for no payload at all Fastify's HEAD handling writes 0).
      if (range) reply.status(206).header('content-range', `bytes ${range.start}-${range.end}/${info.size}`);
      return reply.header('content-length', String(range ? range.end - range.start + 1 : info.size)).send(Readable.from([]));
    }
    const download = await db.objects.get(bucket, name, range ? { offset: range.start, length: range.end - range.start + 1 } : {});
    if (download.info.rev !== info.rev) throw new LoomError('CONFLICT', 'the object changed while the download started; retry', { bucket, name });
    // Read the first piece before the status line goes out, so a corrupt first chunk is a 500 CORRUPT.
    const first = await withFirstPiece(download.stream);
    if (range) reply.status(206).header('content-range', `bytes ${range.start}-${range.end}/${info.size}`);
    return reply.header('content-length', String(download.length)).send(new SentBeforeCut(first, reply.raw));
  });

  app.delete('/v1/buckets/:bucket/objects/*', async (request: FastifyRequest<ObjectParams>, reply: FastifyReply) => {
    const { bucket } = request.params;
    const name = request.params['*'];
    try {
      const condition = await writeCondition(db, bucket, name, request);
      return await runOperation(ctx, 'obj.del', parseInput('obj.del', { bucket, name, ...condition }));
    } catch (err) {
      return failedPrecondition(err, request, reply);
    }
  });

  app.get('/v1/buckets/:bucket/objects', async (request: FastifyRequest<{ Params: { bucket: string }; Querystring: Query }>) => {
    const q = request.query;
    const input: Record<string, unknown> = { bucket: request.params.bucket, ...readOptions(q) };
    if (q.prefix !== undefined) input.prefix = q.prefix;
    if (q.limit !== undefined) input.limit = intParam(q.limit, 'limit');
    if (q.cursor !== undefined) input.cursor = q.cursor;
    return runOperation(ctx, 'obj.list', parseInput('obj.list', input));
  });
}

/**
 * The condition a PUT or DELETE asks for, as `expectRev` (the object's rev; 0: it must not exist):
 * `?expectRev=N` or `?create=1`, as the KV routes take them; `If-None-Match: *` (only if absent);
 * or `If-Match: "<etag>"` / `*` (only if present, with that ETag), which becomes the rev of the
 * object a linearizable read finds, so the write is decided when it is applied like any other
 * (docs/decisions.md §21). `If-Match: *` with `?expectRev=N` (N ≥ 1) is expectRev N: the SDK sends
 * that pair because a node of an older build refuses If-Match on a write, where it would ignore
 * the query. Other preconditions (If-None-Match with ETags, the date ones) are refused rather than
 * ignored: ignoring one would lose the update the client guards.
 */
async function writeCondition(db: Database, bucket: string, name: string, request: FastifyRequest<ObjectParams>): Promise<{ expectRev?: number }> {
  const { headers, query } = request;
  for (const header of ['if-modified-since', 'if-unmodified-since'] as const) {
    if (headers[header] !== undefined) throw new LoomError('INVALID_ARGUMENT', `${header} on an object write is not supported; use If-Match with the object's ETag`, { field: header });
  }
  const asked: Array<[string, number | undefined]> = [];
  if (query.expectRev !== undefined) asked.push(['expectRev', intParam(query.expectRev, 'expectRev')]);
  if (query.create !== undefined && flagParam(query.create, 'create')) asked.push(['create', 0]);
  const ifNoneMatch = headers['if-none-match'];
  if (ifNoneMatch !== undefined) {
    if (ifNoneMatch.trim() !== '*') throw new LoomError('INVALID_ARGUMENT', 'If-None-Match on an object write takes only *, "only if it does not exist"', { field: 'if-none-match' });
    asked.push(['if-none-match', 0]);
  }
  const ifMatch = headers['if-match'];
  if (ifMatch !== undefined) {
    const atRev = asked.length === 1 && asked[0][0] === 'expectRev' && (asked[0][1] as number) >= 1 ? asked[0][1] : undefined;
    if (ifMatch.trim() === '*' && atRev !== undefined) return { expectRev: atRev };
    asked.push(['if-match', undefined]);
  }
  if (asked.length > 1) throw new LoomError('INVALID_ARGUMENT', `an object write takes one condition, not ${asked.map(([field]) => field).join(' and ')}`, { field: asked[1][0] });
  if (asked.length === 0) return {};
  if (ifMatch === undefined) return { expectRev: asked[0][1] as number };
  const current = await db.objects.stat(bucket, name, { consistency: 'linearizable' }).catch((err: unknown) => {
    if (isLoomError(err, 'NOT_FOUND')) return undefined;
    throw err;
  });
  const etag = current && `"${current.sha256}"`;
  if (!current || !matchesEtag(ifMatch, etag as string, 'strong')) {
    throw new LoomError('CONFLICT', current ? `If-Match ${ifMatch} does not match the object's ETag ${etag}` : `If-Match ${ifMatch}: object ${name} does not exist in bucket ${bucket}`, {
      bucket,
      name,
      currentRev: current?.rev ?? 0,
      ...(etag ? { etag } : {}),
    });
  }
  return { expectRev: current.rev };
}

/**
 * A condition that does not hold: 412 Precondition Failed when an If-* header asked (RFC 9110
 * §13.1), 409 CONFLICT when the query did (as the KV routes answer). Anything else goes on.
 */
function failedPrecondition(err: unknown, request: FastifyRequest<ObjectParams>, reply: FastifyReply): FastifyReply {
  const fromHeader = request.headers['if-match'] !== undefined || request.headers['if-none-match'] !== undefined;
  if (fromHeader && isLoomError(err, 'CONFLICT') && err.details.currentRev !== undefined) return reply.status(412).send(err.toJSON());
  throw err;
}

/** TOO_LARGE if a Content-Length announces more than objectBytesMax. */
function announcedTooLarge(contentLength: string | undefined, objectBytesMax: number): LoomError | undefined {
  const announced = contentLength === undefined ? NaN : Number(contentLength);
  if (!(announced > objectBytesMax)) return undefined;
  return objectTooLarge(objectBytesMax);
}

/**
 * `Expect: 100-continue` (curl and S3 SDKs send it before large bodies) is answered before any body
 * is sent: `unauthorized(req)` (a request without the token, as the routes would answer it) first,
 * so the object limit is told only to a caller with the token; then an object upload whose
 * Content-Length is over objectBytesMax, 413. Both close the connection, whose body never comes.
 * Every other request gets its 100 Continue and goes on to the routes.
 */
export function answerExpectContinue(server: http.Server, objectBytesMax: number, unauthorized: (req: http.IncomingMessage) => LoomError | undefined): void {
  server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const upload = req.method === 'PUT' && /^\/v1\/buckets\/[^/]+\/objects\//.test(req.url ?? '');
    const refusal = unauthorized(req) ?? (upload ? announcedTooLarge(req.headers['content-length'], objectBytesMax) : undefined);
    if (refusal) {
      res.shouldKeepAlive = false;
      res.writeHead(refusal.httpStatus, { 'content-type': 'application/json; charset=utf-8' }).end(JSON.stringify(refusal.toJSON()));
      return;
    }
    // A conditional upload hears 100 Continue only once its condition holds (the route sends it),
    // so one refused 412 or 409 is not sent a body first.
    if (upload && isConditional(req)) awaitingContinue.add(req);
    else res.writeContinue();
    server.emit('request', req, res);
  });
}

/** Uploads sent `Expect: 100-continue` whose 100 Continue waits for their condition. */
const awaitingContinue = new WeakSet<http.IncomingMessage>();

function isConditional(req: http.IncomingMessage): boolean {
  if (req.headers['if-match'] !== undefined || req.headers['if-none-match'] !== undefined) return true;
  const query = new URL(req.url ?? '/', 'http://loom').searchParams;
  return query.has('expectRev') || query.has('create');
}

function uploadOptions(request: FastifyRequest<ObjectParams>): { contentType?: string; metadata: Record<string, string>; sha256?: string; chunkBytes?: number } {
  const headers = request.headers;
  refuseRepeatedHeaders(request.raw.rawHeaders);
  const metadata: Record<string, string> = {};
  for (const [key, value] of Object.entries(headers)) {
    if (key.startsWith(metadataHeaderPrefix) && typeof value === 'string') metadata[key.slice(metadataHeaderPrefix.length)] = names.metadataValueFromHeader(value, `metadata.${key.slice(metadataHeaderPrefix.length)}`);
  }
  const out: { contentType?: string; metadata: Record<string, string>; sha256?: string; chunkBytes?: number } = { metadata };
  const contentType = objectContentTypes.get(request.raw);
  if (typeof contentType === 'string') out.contentType = contentType;
  const sha256 = expectedSha256(headers);
  if (sha256 !== undefined) out.sha256 = sha256;
  const chunkBytes = headers['x-loom-chunk-bytes'];
  if (typeof chunkBytes === 'string') out.chunkBytes = intParam(chunkBytes, 'x-loom-chunk-bytes');
  return out;
}

/**
 * Node keeps the first of two Content-Type headers and joins two of any other with ", ": an
 * object's content type or metadata value sent twice is refused rather than stored as either.
 */
function refuseRepeatedHeaders(rawHeaders: string[]): void {
  const seen = new Set<string>();
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i].toLowerCase();
    if (name !== 'content-type' && !name.startsWith(metadataHeaderPrefix)) continue;
    if (seen.has(name)) {
      const field = name === 'content-type' ? 'contentType' : `metadata.${name.slice(metadataHeaderPrefix.length)}`;
      throw new LoomError('INVALID_ARGUMENT', `header ${name} is sent more than once; an object keeps one value`, { field });
    }
    seen.add(name);
  }
}

/**
 * The sha256 an upload's client expects, from any of: `x-loom-sha256: <hex>`; `Digest:
 * sha-256=<base64>` (RFC 3230); `Content-Digest` or `Repr-Digest: sha-256=:<base64>:` (RFC 9530;
 * for a PUT both are the digest of the bytes sent). Every one sent must name the same digest. Other
 * algorithms in those headers are skipped, as RFC 9530 lets a recipient do; a sha-256 value that
 * is not 32 bytes of base64 is refused, naming the header.
 */
export function expectedSha256(headers: http.IncomingHttpHeaders): string | undefined {
  const named: Array<[string, string]> = [];
  const loom = headers['x-loom-sha256'];
  if (typeof loom === 'string') named.push(['x-loom-sha256', loom.trim().toLowerCase()]);
  for (const [header, form] of [['digest', /^([A-Za-z0-9+/]{43}=)$/], ['content-digest', /^:([A-Za-z0-9+/]{43}=):$/], ['repr-digest', /^:([A-Za-z0-9+/]{43}=):$/]] as const) {
    const value = headers[header];
    if (typeof value !== 'string') continue;
    for (const member of value.split(',')) {
      const eq = member.indexOf('=');
      if (eq < 0 || member.slice(0, eq).trim().toLowerCase() !== 'sha-256') continue;
      const base64 = form.exec(member.slice(eq + 1).trim())?.[1];
      if (base64 === undefined) {
        const shape = header === 'digest' ? 'sha-256=<32 bytes in base64>' : 'sha-256=:<32 bytes in base64>:';
        throw new LoomError('INVALID_ARGUMENT', `${header} must be ${shape}, got ${JSON.stringify(member.trim())}`, { field: header });
      }
      named.push([header, Buffer.from(base64, 'base64').toString('hex')]);
    }
  }
  const differs = named.find(([, digest]) => digest !== named[0][1]);
  if (differs) throw new LoomError('INVALID_ARGUMENT', `${named[0][0]} and ${differs[0]} name different digests`, { field: differs[0] });
  return named[0]?.[1];
}

/**
 * One `bytes=` range (RFC 9110 §14.1.2): undefined = serve the whole object, as a server may for a
 * Range it does not take (several ranges, another unit, a malformed one). Empty list elements are
 * skipped (§5.6.1), so `bytes=0-1,` is one range.
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  if (header === undefined) return undefined;
  const unit = /^\s*bytes\s*=(.*)$/i.exec(header);
  if (!unit) return undefined;
  const specs = unit[1].split(',').map((spec) => spec.trim()).filter((spec) => spec !== '');
  if (specs.length !== 1) return undefined;
  const match = /^(\d*)\s*-\s*(\d*)$/.exec(specs[0]);
  if (!match) return undefined;
  const [, first, last] = match;
  if (first === '' && last === '') return undefined;
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0) return 'unsatisfiable';
    // A suffix of an empty object is satisfiable (§14.1.1), and all of it is nothing: the whole.
    if (size === 0) return undefined;
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  if (start >= size) return 'unsatisfiable';
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
  if (end < start) return undefined;
  return { start, end };
}

/** RFC 9110 §8.8.3.2: If-None-Match compares weakly (W/ tags match), If-Match strongly. */
function matchesEtag(header: string | undefined, etag: string, comparison: 'weak' | 'strong'): boolean {
  if (header === undefined) return false;
  return header.split(',').some((tag) => {
    const t = tag.trim();
    return t === '*' || t === etag || (comparison === 'weak' && t === `W/${etag}`);
  });
}

/** An HTTP date's whole seconds since the epoch; undefined for none or an invalid one (RFC 9110 ignores those). */
function httpDateSeconds(value: string | undefined): number | undefined {
  const ms = value === undefined ? NaN : Date.parse(value);
  return Number.isFinite(ms) ? Math.floor(ms / 1000) : undefined;
}

/** Last-Modified has whole seconds, so comparisons with the dates clients send back use those. */
function lastModifiedSeconds(info: ObjectInfo): number {
  return Math.floor(info.updatedAt / 1000);
}

/** If-Modified-Since (RFC 9110 §13.1.3): the object is unchanged since that date. */
function notModifiedSince(value: string | undefined, info: ObjectInfo): boolean {
  const since = httpDateSeconds(value);
  return since !== undefined && lastModifiedSeconds(info) <= since;
}

/** If-Range (RFC 9110 §13.1.5) holds an ETag, compared strongly, or the Last-Modified date sent. */
function rangeStillValid(ifRange: string, etag: string, info: ObjectInfo): boolean {
  const value = ifRange.trim();
  if (value.startsWith('"') || value.startsWith('W/')) return value === etag;
  return httpDateSeconds(value) === lastModifiedSeconds(info);
}

function objectHeaders(reply: FastifyReply, info: ObjectInfo, etag: string): void {
  reply.header('etag', etag).header('accept-ranges', 'bytes').header('content-type', info.contentType).header('loom-rev', String(info.rev));
  reply.header('last-modified', new Date(info.updatedAt).toUTCString());
  for (const [key, value] of Object.entries(info.metadata)) reply.header(`${metadataHeaderPrefix}${key}`, names.metadataValueToHeader(value));
}

/**
 * Resolves once the stream has its first piece buffered (or has ended), so that a first chunk that
 * fails its check rejects here, before the status line; the same stream is then sent as is.
 * The stream keeps an error listener for good: it reads ahead, so a later chunk can fail before
 * Fastify attaches its own (or never, for HEAD), and an 'error' with no listener ends the process.
 * Fastify still sees that error, from the stream's state, and answers 500 or cuts the response.
 */
function withFirstPiece(stream: Readable): Promise<Readable> {
  stream.on('error', () => undefined);
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      stream.off('readable', onReadable);
      stream.off('error', done);
      if (err) reject(err);
      else resolve(stream);
    };
    const onReadable = (): void => done();
    stream.on('readable', onReadable);
    stream.on('error', done);
  });
}

/**
 * The body Fastify sends for a download: the download's pieces as Fastify asks for them, and its
 * failure (a later chunk that fails its check) only once every byte before it has left the node.
 * The download fails only after handing over every good piece, but Fastify answers a body's
 * failure after the status line by destroying the socket, which drops the bytes still queued for
 * it, and a client could then not tell where the damage is (docs/buckets.md). So the failure ends
 * the connection first, its FIN after those bytes, and reaches Fastify once that is done.
 */
class SentBeforeCut extends Readable {
  /** Fastify asked for a piece that has not been pushed yet. */
  private wanted = false;
  private failure: Error | undefined;
  private cutting = false;

  constructor(
    private readonly pieces: Readable,
    private readonly response: http.ServerResponse,
  ) {
    // One piece of its own at most, so the download's own read-ahead stays the bound.
    super({ objectMode: true, highWaterMark: 1 });
    pieces.on('readable', () => this.pull());
    pieces.once('end', () => this.push(null));
    pieces.once('error', (err) => {
      this.failure = err;
      // A piece pushed and not yet taken is sent first: _read comes once it has been.
      if (this.wanted) this.cut();
    });
  }

  override _read(): void {
    this.wanted = true;
    if (this.failure !== undefined) this.cut();
    else this.pull();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.pieces.destroy();
    callback(err);
  }

  private pull(): void {
    while (this.wanted) {
      const piece: unknown = this.pieces.read();
      if (piece === null) return;
      this.wanted = this.push(piece);
    }
  }

  private cut(): void {
    if (this.cutting) return;
    this.cutting = true;
    const failure = this.failure as Error;
    // After this turn: the read that called _read may still return a piece, which is written first.
    process.nextTick(() => {
      const socket = this.response.socket;
      if (!this.response.headersSent || socket === null || socket.destroyed) {
        this.destroy(failure);
        return;
      }
      socket.end();
      finished(socket, { readable: false }, () => this.destroy(failure));
    });
  }
}

function readOptions(query: Query): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (query.consistency !== undefined) out.consistency = query.consistency;
  if (query.atLeast !== undefined) out.atLeast = intParam(query.atLeast, 'atLeast');
  return out;
}

