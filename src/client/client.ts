// The TypeScript client SDK over the official `nats` client: KV, event streams, SQL, objects and a
// watch that resumes by itself from the last seq it delivered after any disconnect. It speaks only
// the wire contract ($LOOM.API.*, CONTRACT.md), so it works against any loom node. Object bytes go
// over the node's HTTP door, which streams with flow control (docs/buckets.md).

import { createHash } from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { connect as natsConnect, createInbox, headers as natsHeaders, type ConnectionOptions, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from 'nats';
import { LoomError, errorCodes, names, type ErrorCode } from '../util';
import { ConnectionState } from './connection-state';

export interface ClientOptions {
  /** NATS URLs of loom nodes, e.g. `nats://127.0.0.1:4222`. */
  servers: string | string[];
  token?: string;
  /**
   * Per-request time limit (default 10 s). For the HTTP object transfers it is a stall limit, not a
   * limit on the whole transfer: the longest the SDK waits on the network with no byte moving
   * (connecting, sending, awaiting the response, each piece of a body). One option for both,
   * because both bound the same thing, how long a node may stay silent before the call fails.
   */
  timeoutMs?: number;
  /** Passed through to the nats client (reconnect settings, name, …). */
  nats?: Partial<ConnectionOptions>;
  /**
   * Base URL of a node's HTTP door, e.g. `http://127.0.0.1:8080`: `objects.put` and `objects.get`
   * stream bytes through it (core NATS request/reply has no flow control). Needed only for those two.
   */
  http?: string;
}

export interface ObjectInfo {
  bucket: string;
  name: string;
  size: number;
  /** SHA-256 of the whole object, hex. */
  sha256: string;
  contentType: string;
  metadata: Record<string, string>;
  rev: number;
  updatedAt: number;
  chunkBytes: number;
  chunkCount: number;
}

export interface PutObjectOptions {
  contentType?: string;
  /** Sent as `x-loom-meta-<key>` headers, so keys arrive lower-cased (docs/buckets.md has the rule for keys and values). */
  metadata?: Record<string, string>;
  /** Hex SHA-256 the node must see, or it rejects the upload and nothing becomes visible. */
  sha256?: string;
  chunkBytes?: number;
  /** Write only if the object's rev is this (0: only if it does not exist), else CONFLICT and nothing changes. */
  expectRev?: number;
}

export type ObjectSource = Readable | AsyncIterable<Uint8Array | string> | Uint8Array | string;

export interface ReadOptions {
  consistency?: 'local' | 'linearizable';
  atLeast?: number;
}

export interface KvValue {
  value: Uint8Array;
  rev: number;
  createRev: number;
  updatedAt: number;
}

export interface EventRecord {
  seq: number;
  stream: string;
  version: number;
  type: string;
  data: unknown;
  ts: number;
}

/**
 * A change a watch delivers. `omittedBytes` is set when the change was too large for one NATS message
 * (the node's maxPayloadBytes): `value` is then empty, `info` and `data` undefined; read the value,
 * object or event through the API.
 */
export type WatchChange =
  | { kind: 'kv'; seq: number; subject: string; op: 'PUT' | 'DEL'; value: Uint8Array; omittedBytes?: number }
  | { kind: 'object'; seq: number; subject: string; op: 'PUT' | 'DEL'; info: ObjectChangeInfo | undefined; omittedBytes?: number }
  | { kind: 'event'; seq: number; subject: string; version: number; data: unknown; omittedBytes?: number };

/** An object change's info: the object's after a PUT; bucket, name, rev, updatedAt and `deleted: true` after a DEL. */
export type ObjectChangeInfo = ObjectInfo | { bucket: string; name: string; rev: number; updatedAt: number; deleted: true };

export interface ClientWatch extends AsyncIterableIterator<WatchChange> {
  /** The seq of the last change delivered: resume from here. */
  readonly lastSeq: number;
  close(): void;
}

const json = (value: unknown): Uint8Array => Buffer.from(JSON.stringify(value));

/** A watch message as a change: its kind from its subject's root ($KV, $OBJ) or its version header ($EV). */
function watchChangeOf(seq: number, msg: Msg): WatchChange {
  const subject = msg.headers?.get('Loom-Subject') ?? '';
  const omitted = msg.headers?.get('Loom-Omitted-Bytes');
  const omittedBytes = omitted !== undefined && omitted !== '' ? Number(omitted) : undefined;
  const parsed = (): unknown => (omittedBytes === undefined ? JSON.parse(Buffer.from(msg.data).toString('utf8')) : undefined);
  const extra = omittedBytes === undefined ? {} : { omittedBytes };
  const version = msg.headers?.get('Loom-Version');
  if (version !== undefined && version !== '') return { kind: 'event', seq, subject, version: Number(version), data: parsed(), ...extra };
  const op = (msg.headers?.get('Loom-Op') as 'PUT' | 'DEL' | undefined) || 'PUT';
  if (subject.startsWith('$OBJ.')) return { kind: 'object', seq, subject, op, info: parsed() as ObjectChangeInfo | undefined, ...extra };
  return { kind: 'kv', seq, subject, op, value: msg.data, ...extra };
}

export class LoomClient {
  readonly kv = {
    put: async (bucket: string, key: string, value: Uint8Array | string, options: { expectRev?: number; create?: boolean; ttlMs?: number } = {}): Promise<{ rev: number }> => {
      checkBucketKey(bucket, key);
      const h = natsHeaders();
      if (options.expectRev !== undefined) h.set('Loom-Expect-Rev', String(options.expectRev));
      if (options.create) h.set('Loom-Create', '1');
      if (options.ttlMs !== undefined) h.set('Loom-TTL', String(options.ttlMs));
      return this.requestJson(`$LOOM.API.KV.PUT.${bucket}.${key}`, typeof value === 'string' ? Buffer.from(value) : value, h);
    },
    get: async (bucket: string, key: string, options: ReadOptions = {}): Promise<KvValue> => {
      checkBucketKey(bucket, key);
      const reply = await this.request(`$LOOM.API.KV.GET.${bucket}.${key}`, new Uint8Array(0), readHeaders(options));
      return {
        value: reply.data,
        rev: Number(reply.headers?.get('Loom-Rev')),
        createRev: Number(reply.headers?.get('Loom-Create-Rev')),
        updatedAt: Number(reply.headers?.get('Loom-Updated-At')),
      };
    },
    delete: async (bucket: string, key: string, options: { expectRev?: number } = {}): Promise<{ rev: number }> => {
      checkBucketKey(bucket, key);
      const h = natsHeaders();
      if (options.expectRev !== undefined) h.set('Loom-Expect-Rev', String(options.expectRev));
      return this.requestJson(`$LOOM.API.KV.DEL.${bucket}.${key}`, new Uint8Array(0), h);
    },
    list: async (bucket: string, options: { prefix?: string; limit?: number; cursor?: string } & ReadOptions = {}): Promise<{ items: Array<{ key: string; rev: number }>; cursor?: string }> => {
      const { consistency, atLeast, ...body } = options;
      names.checkBucket(bucket);
      return this.requestJson(`$LOOM.API.KV.LIST.${bucket}`, json(body), readHeaders({ consistency, atLeast }));
    },
  };

  readonly events = {
    append: async (stream: string, event: { type: string; data: unknown; expectVersion?: number }): Promise<{ seq: number; version: number }> => {
      names.checkStream(stream);
      return this.requestJson(`$LOOM.API.EV.APPEND.${stream}`, json(event));
    },
    read: async (stream: string, options: { fromVersion?: number; limit?: number } & ReadOptions = {}): Promise<EventRecord[]> => {
      const { consistency, atLeast, ...body } = options;
      names.checkStream(stream);
      const reply = await this.requestJson<{ events: EventRecord[] }>(`$LOOM.API.EV.READ.${stream}`, json(body), readHeaders({ consistency, atLeast }));
      return reply.events;
    },
  };

  readonly sql = {
    query: (sql: string, options: { params?: unknown[] | Record<string, unknown>; limit?: number; cursor?: string } & ReadOptions = {}): Promise<{ columns: string[]; rows: unknown[][]; cursor?: string }> => {
      const { consistency, atLeast, ...body } = options;
      return this.requestJson('$LOOM.API.SQL.QUERY', json({ sql, ...body }), readHeaders({ consistency, atLeast }));
    },
  };

  readonly objects = {
    /** Streams `source` to the node (HTTP PUT) and resolves with the committed object's info. */
    put: async (bucket: string, name: string, source: ObjectSource, options: PutObjectOptions = {}): Promise<ObjectInfo> => {
      names.checkBucket(bucket);
      names.checkObjectName(name);
      // The node's own rule (names.ts), so a value HTTP would change or refuse fails here alike.
      const headers: Record<string, string> = { 'content-type': names.checkContentType(options.contentType ?? names.contentTypeDefault) };
      // Each value as its UTF-8 bytes, as the node reads it; HTTP lower-cases the keys.
      for (const [key, value] of Object.entries(names.checkObjectMetadata(options.metadata ?? {}))) headers[`x-loom-meta-${key}`] = names.metadataValueToHeader(value);
      if (options.sha256 !== undefined) headers['x-loom-sha256'] = options.sha256;
      if (options.chunkBytes !== undefined) headers['x-loom-chunk-bytes'] = String(options.chunkBytes);
      // A Readable goes in as itself, not wrapped, so a failed upload destroys the caller's stream.
      const body = source instanceof Readable ? source : Readable.from(typeof source === 'string' || source instanceof Uint8Array ? [Buffer.from(source)] : source);
      // As headers a node of an older build refuses (400), where it would ignore the query alone
      // and overwrite: If-None-Match: * for "only if absent", else If-Match: * with the rev.
      let query = '';
      if (options.expectRev !== undefined) {
        if (names.checkSeq(options.expectRev, 'expectRev') === 0) headers['if-none-match'] = '*';
        else {
          headers['if-match'] = '*';
          query = `?expectRev=${options.expectRev}`;
        }
      }
      const { response, stall } = await this.httpRequest('PUT', `${objectPath(bucket, name)}${query}`, headers, body);
      return JSON.parse((await readAll(response, stall)).toString('utf8')) as ObjectInfo;
    },
    /**
     * Opens a download (HTTP GET, one `Range` when offset or length is given) as a Node Readable.
     * The stream never ends as if whole with bytes missing or wrong: a whole object is checked
     * against its sha256 as it streams (CORRUPT at the end), and a response cut short fails the
     * stream with the node's reason, CORRUPT (naming the chunk) when a chunk failed its check,
     * or UNAVAILABLE with `details.offset` to resume from when the network cut it. Every byte
     * delivered before such a failure is the object's. A body on which no byte arrives for
     * `timeoutMs` while the stream waits for one fails TIMEOUT, also with `details.offset`; a
     * consumer that stops reading is never timed out. Length 0 reads nothing but still fails
     * NOT_FOUND for a missing object and INVALID_ARGUMENT for an offset past its end.
     */
    get: async (bucket: string, name: string, options: { offset?: number; length?: number } & ReadOptions = {}): Promise<Readable> => {
      names.checkBucket(bucket);
      names.checkObjectName(name);
      const offset = options.offset ?? 0;
      if (!Number.isSafeInteger(offset) || offset < 0) throw new LoomError('INVALID_ARGUMENT', 'offset must be a non-negative integer', { field: 'offset' });
      if (options.length !== undefined && (!Number.isSafeInteger(options.length) || options.length < 0)) {
        throw new LoomError('INVALID_ARGUMENT', 'length must be a non-negative integer', { field: 'length' });
      }
      const reads: ReadOptions = { consistency: options.consistency, atLeast: options.atLeast };
      if (options.length === 0) return this.emptyRead(bucket, name, offset, reads);
      const headers: Record<string, string> = {};
      if (options.offset !== undefined || options.length !== undefined) {
        headers.range = `bytes=${offset}-${options.length === undefined ? '' : offset + options.length - 1}`;
      }
      const path = `${objectPath(bucket, name)}${readQuery(reads)}`;
      let exchange: HttpExchange;
      try {
        exchange = await this.httpRequest('GET', path, headers);
      } catch (err) {
        // HTTP has no range for a read at the very end (an empty object from offset 0, say): its 416
        // names the size, and a read from there is empty, as over gRPC and the node's own API.
        const size = err instanceof LoomError && err.details.field === 'range' ? err.details.size : undefined;
        if (typeof size !== 'number') throw err;
        if (offset === size) return Readable.from([], { objectMode: false });
        throw new LoomError('INVALID_ARGUMENT', `offset ${offset} is outside the object (${size} bytes)`, { field: 'offset', size });
      }
      // highWaterMark 0: a piece is pulled from the response only once the consumer has taken the
      // last, so a cut fails the stream with nothing buffered, and the bytes the consumer saw are
      // exactly those before the offset the error names (a buffered piece would be dropped).
      return Readable.from(this.receiveObject({ bucket, name, path }, exchange), { objectMode: false, highWaterMark: 0 });
    },
    info: (bucket: string, name: string, options: ReadOptions = {}): Promise<ObjectInfo> => {
      names.checkBucket(bucket);
      return this.requestJson(`$LOOM.API.OBJ.INFO.${bucket}`, json({ name }), readHeaders(options));
    },
    /** One page: fewer than `limit` items when they would not fit in one NATS message; follow `cursor` until there is none. */
    list: (bucket: string, options: { prefix?: string; limit?: number; cursor?: string } & ReadOptions = {}): Promise<{ items: ObjectInfo[]; cursor?: string }> => {
      const { consistency, atLeast, ...body } = options;
      names.checkBucket(bucket);
      return this.requestJson(`$LOOM.API.OBJ.LIST.${bucket}`, json(body), readHeaders({ consistency, atLeast }));
    },
    /** Deletes an object (only if its rev is `expectRev`, when given: else CONFLICT). */
    delete: (bucket: string, name: string, options: { expectRev?: number } = {}): Promise<{ rev: number; deleted: boolean }> => {
      names.checkBucket(bucket);
      return this.requestJson(`$LOOM.API.OBJ.DEL.${bucket}`, json(options.expectRev === undefined ? { name } : { name, expectRev: names.checkSeq(options.expectRev, 'expectRev') }));
    },
  };

  private readonly connection: ConnectionState;

  private constructor(
    readonly nc: NatsConnection,
    private readonly timeoutMs: number,
    private readonly options: ClientOptions,
  ) {
    this.connection = new ConnectionState(nc);
  }

  static async connect(options: ClientOptions): Promise<LoomClient> {
    const nc = await natsConnect({
      servers: options.servers,
      ...(options.token ? { token: options.token } : {}),
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      ...options.nats,
    });
    return new LoomClient(nc, options.timeoutMs ?? 10_000, options);
  }

  status(): Promise<{ nodeId: number; role: string; leader: number | null; term: number; commit: number; applied: number }> {
    return this.requestJson('$LOOM.API.CLUSTER.STATUS', new Uint8Array(0));
  }

  /**
   * Every committed change matching `subject` with seq > fromSeq, in order, then live ones. After a
   * disconnect (or a server restart) it asks again from the last seq it delivered: no gap, no duplicate.
   */
  watch(subject: string, options: { fromSeq?: number } = {}): ClientWatch {
    return new Watcher(this, subject, options.fromSeq ?? 0);
  }

  /**
   * Drains the connection (subscriptions end once their pending messages are handled), within
   * timeoutMs, then closes it: a client that is reconnecting, whose drain fails or does not finish
   * in time, or whose node goes away while it drains, is closed all the same, so nothing is left
   * redialing. A drain waits for the node, so it never ended while the node was down.
   */
  async close(): Promise<void> {
    if (this.nc.isClosed()) return;
    if (this.connection.isConnected()) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.nc.drain().catch(() => undefined),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, this.timeoutMs))),
      ]).finally(() => clearTimeout(timer));
    }
    if (!this.nc.isClosed()) await this.nc.close();
  }

  /** Sends a request; a reply carrying `Loom-Error` becomes a LoomError with the same code. */
  async request(subject: string, data: Uint8Array, headers?: MsgHdrs): Promise<{ data: Uint8Array; headers?: MsgHdrs }> {
    // While the client reconnects, a request would be dropped unsent (connection-state.ts): it
    // waits for the reconnect, within its own time limit.
    const started = Date.now();
    if (!(await this.connection.untilConnected(this.timeoutMs)) && !this.connection.isClosed()) {
      throw new LoomError('UNAVAILABLE', `no connection to a loom node for ${this.timeoutMs} ms (the client is reconnecting); the request on ${subject} was not sent`, { subject });
    }
    const timeout = Math.max(1, this.timeoutMs - (Date.now() - started));
    let reply;
    try {
      reply = await this.nc.request(subject, data, { timeout, ...(headers ? { headers } : {}) });
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === '503') throw new LoomError('UNAVAILABLE', `no loom node answers on ${subject}`, { subject });
      if (code === 'TIMEOUT') throw new LoomError('TIMEOUT', `no reply on ${subject} within ${this.timeoutMs} ms`, { subject });
      throw new LoomError('UNAVAILABLE', `request on ${subject} failed: ${(err as Error).message}`, { subject });
    }
    const errorCode = reply.headers?.get('Loom-Error');
    if (errorCode) throw toLoomError(errorCode, reply.data);
    return { data: reply.data, headers: reply.headers };
  }

  /**
   * One request to the HTTP door; resolves with the response once its status is 2xx, and turns an
   * error status (JSON body {code, message, details}) into a LoomError with the same code. It fails
   * TIMEOUT (details.phase) when the network stalls for timeoutMs: connecting, sending the body,
   * or awaiting the response; whoever reads the body times each piece with the `stall` it returns.
   */
  private async httpRequest(method: string, path: string, headers: Record<string, string>, body?: Readable): Promise<HttpExchange> {
    const base = this.options.http;
    if (base === undefined) throw new LoomError('INVALID_ARGUMENT', 'objects.put and objects.get need the node\'s HTTP address: connect({http: "http://host:port"})', { field: 'http' });
    // The path goes out exactly as built: a WHATWG URL (new URL, fetch) would resolve the dot
    // segments of a name like `x/../y`, even percent-encoded ones, and reach another object.
    const origin = new URL(base);
    const transport = origin.protocol === 'https:' ? https : http;
    const href = `${origin.origin}${path}`;
    if (this.options.token !== undefined) headers.authorization = `Bearer ${this.options.token}`;
    const request = transport.request(origin, { method, headers, path });
    let answered: http.IncomingMessage | undefined;
    let finished = false;
    const stall = new StallTimer(this.timeoutMs, () => {
      const phase = sendPhase(request, answered, finished);
      // Nothing waits to go out: the caller's source is slow, which is not the network's stall.
      if (phase === undefined) return stall.restart();
      const timeout = new LoomError('TIMEOUT', `${method} ${href} timed out: ${stallReasons[phase]} for ${this.timeoutMs} ms`, { url: href, phase, timeoutMs: this.timeoutMs });
      stall.timeout = timeout;
      if (answered === undefined) request.destroy(timeout);
      else answered.destroy(timeout);
    });
    let sourceError: unknown;
    body?.once('error', (err) => (sourceError ??= err));
    const response = new Promise<http.IncomingMessage>((resolve, reject) => {
      request.once('response', (res: http.IncomingMessage) => {
        answered = res;
        stall.stop();
        resolve(res);
      });
      const fail = (err: Error): void => {
        stall.stop();
        // The caller's own source failed (the pipeline below then ends the request): its error, not the network's.
        reject(stall.timeout ?? sourceError ?? new LoomError('UNAVAILABLE', `${method} ${href} failed: ${err.message}`, { url: href }));
      };
      request.once('error', fail);
      // A failed source aborts the request, and a request aborted before it connected closes
      // without an 'error'.
      request.once('close', () => answered === undefined && fail(new Error('the request closed before an answer')));
    });
    // Until the response, the count restarts whenever bytes move out (a piece taken from the
    // source, a drained socket): an upload fails only when what it wrote stays unsent.
    stall.restart();
    request.on('drain', () => stall.restart());
    request.once('finish', () => {
      finished = true;
      if (answered === undefined) stall.restart();
    });
    // A body the server rejects early (413, 400) ends the request; the response says why.
    // Each piece is checked on its way: Node's request throws, out of the pipe and the caller's
    // reach, on anything but bytes and strings (a Readable of numbers, say).
    const pieces = async function* (source: AsyncIterable<unknown>): AsyncGenerator<Uint8Array | string> {
      for await (const piece of source) {
        if (typeof piece !== 'string' && !(piece instanceof Uint8Array)) {
          const got = piece === null ? 'null' : typeof piece === 'object' ? (piece.constructor?.name ?? 'object') : typeof piece;
          throw (sourceError ??= new LoomError('INVALID_ARGUMENT', `an object upload's source yields bytes (Buffer, Uint8Array) or strings, not ${got}`, { field: 'source' }));
        }
        if (answered === undefined) stall.restart();
        yield piece;
      }
    };
    const sent = body ? pipeline(body, pieces, request) : Promise.resolve(request.end());
    sent.catch(() => undefined);
    const res = await response;
    if (res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300) {
      await sent;
      return { response: res, stall };
    }
    const text = (await readAll(res, stall)).toString('utf8');
    let parsed: { code?: string; message?: string; details?: Record<string, unknown> } = {};
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch {
      parsed = { message: text };
    }
    const code = parsed.code ?? (res.statusCode === 404 ? 'NOT_FOUND' : 'INTERNAL');
    throw toLoomError(code, Buffer.from(JSON.stringify({ message: parsed.message ?? `HTTP ${res.statusCode}`, details: parsed.details ?? {} })));
  }

  /** A zero-length read, answered as the node's own API answers one: the object must exist and `offset` lie within it (its end included). */
  private async emptyRead(bucket: string, name: string, offset: number, options: ReadOptions): Promise<Readable> {
    // Over NATS rather than an HTTP HEAD: a HEAD answer has no body, so every error but 404 would
    // lose the node's code, while INFO carries it (NOT_FOUND among them) as every other call does.
    const { size } = await this.objects.info(bucket, name, options);
    if (offset > size) throw new LoomError('INVALID_ARGUMENT', `offset ${offset} is outside the object (${size} bytes)`, { field: 'offset', size });
    return Readable.from([], { objectMode: false });
  }

  /**
   * A download's body, piece by piece. A body that errors or ends short of its Content-Length was
   * cut, by the network or by the node (which, once its status line is out, can answer a chunk
   * that fails its check only by cutting the response); the stream then fails with cutError's
   * reason. A whole object (200) is also checked against its sha256, the ETag.
   */
  private async *receiveObject(download: DownloadTarget, { response, stall }: HttpExchange): AsyncGenerator<Buffer> {
    const body = bodyPlace(response);
    const etag = /^"([0-9a-f]{64})"$/.exec(String(response.headers.etag ?? ''))?.[1];
    const target: DownloadTarget = { ...download, ...(etag === undefined ? {} : { etag }) };
    const check = response.statusCode === 200 && etag !== undefined ? new Sha256Check(etag, download.bucket, download.name) : undefined;
    const pieces = response[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    let received = 0;
    let cause: Error | undefined;
    try {
      for (;;) {
        // Only the response's own failure is a cut: an error the consumer throws in at `yield`
        // (it destroyed the stream) passes out untouched.
        // The count runs only while the stream waits on the network, not while the consumer holds a piece.
        let step: IteratorResult<Buffer>;
        stall.restart();
        try {
          step = await pieces.next();
        } catch (err) {
          cause = err as Error;
          break;
        } finally {
          stall.stop();
        }
        if (step.done) break;
        received += step.value.byteLength;
        check?.update(step.value);
        yield step.value;
      }
      // A cut connection destroys the response with the bytes that arrived before the cut still in
      // its buffer, and the iterator stops short of them; they are the object's, and cutError asks
      // from the first byte after them, so they are delivered too.
      const rest = cause === undefined ? null : (response.read() as Buffer | null);
      if (rest !== null) {
        received += rest.byteLength;
        check?.update(rest);
        yield rest;
      }
    } finally {
      stall.stop();
      response.destroy();
    }
    // A stall is the network's, and asking the node again would wait as long: resume from here.
    if (stall.timeout !== undefined) {
      const at = body.start + received;
      throw new LoomError(
        'TIMEOUT',
        `download of object ${download.name} in bucket ${download.bucket} stalled at byte ${at}: no byte arrived for ${this.timeoutMs} ms; get it again with offset ${at} to resume`,
        { ...stall.timeout.details, bucket: download.bucket, name: download.name, offset: at },
      );
    }
    // Every byte announced arrived: an error after the last one cut nothing.
    const whole = body.length === undefined ? cause === undefined : received === body.length;
    if (!whole) {
      const end = body.length === undefined ? Number.MAX_SAFE_INTEGER : body.start + body.length - 1;
      throw await this.cutError(target, body.start + received, end, cause?.message ?? `the body ended after ${received} of ${body.length} bytes`);
    }
    check?.verify();
  }

  /**
   * Why a download was cut at byte `at` (the first it did not deliver; `end` is its last). The node
   * sends every byte before a chunk that fails its check and then cuts the response, and it checks
   * a response's first chunk before its status line. So one request from `at` tells: an error
   * answer is the node's reason (CORRUPT naming the chunk; CONFLICT if the object changed, through
   * If-Match), and bytes mean the cut was the network's, so the caller can resume from `at`:
   * UNAVAILABLE, details.offset = at. The answer's bytes are never spliced into the stream.
   */
  private async cutError(target: DownloadTarget, at: number, end: number, why: string): Promise<LoomError> {
    const { bucket, name } = target;
    const resumable = (reason: string): LoomError =>
      new LoomError('UNAVAILABLE', `download of object ${name} in bucket ${bucket} was cut at byte ${at} (${reason}); get it again with offset ${at} to resume`, { bucket, name, offset: at });
    const headers: Record<string, string> = target.etag === undefined ? {} : { 'if-match': `"${target.etag}"` };
    headers.range = `bytes=${at}-${end === Number.MAX_SAFE_INTEGER ? '' : end}`;
    try {
      const answer = await this.httpRequest('GET', target.path, headers);
      answer.response.destroy();
    } catch (err) {
      // The node answered why (CORRUPT, CONFLICT, NOT_FOUND, …); not reaching it says nothing about the object.
      if (err instanceof LoomError && err.code !== 'UNAVAILABLE' && err.code !== 'TIMEOUT') return err;
      return resumable(`${why}; asking the node why failed: ${(err as Error).message}`);
    }
    return resumable(`${why}; the node serves the bytes from there`);
  }

  private async requestJson<T>(subject: string, data: Uint8Array, headers?: MsgHdrs): Promise<T> {
    const reply = await this.request(subject, data, headers);
    return JSON.parse(Buffer.from(reply.data).toString('utf8')) as T;
  }
}

/** Names are checked before they become subject tokens: a bad one never reaches the wire. */
function checkBucketKey(bucket: string, key: string): void {
  names.checkBucket(bucket);
  names.checkKey(key);
}

/**
 * The object's HTTP path: each `/`-separated part of the name percent-encoded, and a part that is
 * `.` or `..` sent as `%2E` or `%2E%2E`, so no proxy or URL parser on the way sees a dot segment
 * to resolve. The node decodes the path back to exactly the name.
 */
function objectPath(bucket: string, name: string): string {
  const segments = name.split('/').map((segment) => (segment === '.' || segment === '..' ? segment.replace(/\./g, '%2E') : encodeURIComponent(segment)));
  return `/v1/buckets/${encodeURIComponent(bucket)}/objects/${segments.join('/')}`;
}

/** Where a download was sent from: enough to ask the node again about the same object. */
interface DownloadTarget {
  bucket: string;
  name: string;
  /** The GET's path and query, without Range. */
  path: string;
  /** The object's sha256 as the ETag gave it, hex. */
  etag?: string;
}

/** The query carrying read options, `?…` or empty. */
function readQuery(options: ReadOptions): string {
  const query = new URLSearchParams();
  if (options.consistency !== undefined) query.set('consistency', options.consistency);
  if (options.atLeast !== undefined) query.set('atLeast', String(options.atLeast));
  return query.toString() === '' ? '' : `?${query.toString()}`;
}

/** The object offset a response's body starts at and its length (undefined without Content-Length). */
function bodyPlace(response: http.IncomingMessage): { start: number; length: number | undefined } {
  const announced = response.headers['content-length'] === undefined ? undefined : Number(response.headers['content-length']);
  const length = announced !== undefined && Number.isSafeInteger(announced) ? announced : undefined;
  const range = /^bytes (\d+)-(\d+)\//.exec(String(response.headers['content-range'] ?? ''));
  if (response.statusCode === 206 && range) return { start: Number(range[1]), length: length ?? Number(range[2]) - Number(range[1]) + 1 };
  return { start: 0, length };
}

/** A response body whole, each piece awaited within the exchange's stall limit. */
async function readAll(response: http.IncomingMessage, stall: StallTimer): Promise<Buffer> {
  const pieces: Buffer[] = [];
  stall.restart();
  try {
    for await (const piece of response) {
      pieces.push(piece as Buffer);
      stall.restart();
    }
  } catch (err) {
    throw stall.timeout ?? err;
  } finally {
    stall.stop();
  }
  return Buffer.concat(pieces);
}

/** An HTTP response with the stall timer of its exchange, which its reader runs while it waits. */
interface HttpExchange {
  response: http.IncomingMessage;
  stall: StallTimer;
}

/** Where an HTTP exchange was stuck when its stall limit ran out (details.phase of the TIMEOUT). */
type StallPhase = 'connect' | 'upload' | 'response' | 'download';

const stallReasons: Record<StallPhase, string> = {
  connect: 'no connection',
  upload: 'no byte of the request went out',
  response: 'no response',
  download: 'no byte of the body arrived',
};

/**
 * What a request that ran out of time waits for; undefined when it waits on nothing of the
 * network's (the caller's source has not given the next piece, and every byte given went out).
 */
function sendPhase(request: http.ClientRequest, answered: http.IncomingMessage | undefined, finished: boolean): StallPhase | undefined {
  if (answered !== undefined) return 'download';
  if (request.socket === null || request.socket.connecting) return 'connect';
  if (finished) return 'response';
  return request.writableLength > 0 ? 'upload' : undefined;
}

/**
 * The stall limit of one HTTP exchange: a timer the exchange restarts whenever it starts waiting
 * on the network or bytes move, and stops while it waits on the caller. It fires once at most.
 */
class StallTimer {
  private timer: NodeJS.Timeout | undefined;
  /** The TIMEOUT the exchange failed with, once the timer fired. */
  timeout: LoomError | undefined;

  constructor(
    private readonly timeoutMs: number,
    private readonly expired: () => void,
  ) {}

  restart(): void {
    clearTimeout(this.timer);
    if (this.timeout === undefined) this.timer = setTimeout(() => this.expired(), this.timeoutMs);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** A whole object's running sha256: `verify` throws CORRUPT, once every byte was seen, if they do not hash to the expected one. */
class Sha256Check {
  private readonly hash = createHash('sha256');

  constructor(
    private readonly expected: string,
    private readonly bucket: string,
    private readonly name: string,
  ) {}

  update(piece: Buffer): void {
    this.hash.update(piece);
  }

  verify(): void {
    const actual = this.hash.digest('hex');
    if (actual === this.expected) return;
    throw new LoomError('CORRUPT', `object ${this.name} in bucket ${this.bucket} arrived with sha256 ${actual}, not ${this.expected}`, { bucket: this.bucket, name: this.name });
  }
}

function readHeaders(options: ReadOptions): MsgHdrs | undefined {
  if (options.consistency === undefined && options.atLeast === undefined) return undefined;
  const h = natsHeaders();
  if (options.consistency !== undefined) h.set('Loom-Consistency', options.consistency);
  if (options.atLeast !== undefined) h.set('Loom-At-Least', String(options.atLeast));
  return h;
}

function toLoomError(code: string, body: Uint8Array): LoomError {
  let parsed: { message?: string; details?: Record<string, unknown> } = {};
  try {
    parsed = JSON.parse(Buffer.from(body).toString('utf8')) as typeof parsed;
  } catch {
    parsed = { message: Buffer.from(body).toString('utf8') };
  }
  const known: ErrorCode = code in errorCodes ? (code as ErrorCode) : 'INTERNAL';
  return new LoomError(known, parsed.message ?? code, parsed.details ?? {});
}

/** One client-side watch: a fresh deliver inbox per (re)start, so an old server-side watch can never deliver twice. */
class Watcher implements ClientWatch {
  private last: number;
  private queue: WatchChange[] = [];
  private waiter: { resolve: (r: IteratorResult<WatchChange>) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;
  private closed = false;
  private sub: Subscription | undefined;
  private restarting: Promise<void> | undefined;

  constructor(
    private readonly client: LoomClient,
    private readonly subject: string,
    fromSeq: number,
  ) {
    this.last = fromSeq;
    this.restarting = this.start().catch((err: Error) => this.fail(err));
    void this.watchStatus();
  }

  get lastSeq(): number {
    return this.last;
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<WatchChange> {
    return this;
  }

  async next(): Promise<IteratorResult<WatchChange>> {
    const change = this.queue.shift();
    if (change) return this.deliver(change);
    if (this.failure) throw this.failure;
    if (this.closed) return { value: undefined, done: true };
    const result = await new Promise<IteratorResult<WatchChange>>((resolve, reject) => (this.waiter = { resolve, reject }));
    return result.done ? result : this.deliver(result.value);
  }

  async return(): Promise<IteratorResult<WatchChange>> {
    this.close();
    return { value: undefined, done: true };
  }

  close(): void {
    this.closed = true;
    this.sub?.unsubscribe();
    this.waiter?.resolve({ value: undefined, done: true });
    this.waiter = undefined;
  }

  private deliver(change: WatchChange): IteratorResult<WatchChange> {
    this.last = change.seq;
    return { value: change, done: false };
  }

  /** Highest seq queued or delivered: anything at or below it is a duplicate. */
  private highWater(): number {
    return this.queue.length > 0 ? this.queue[this.queue.length - 1].seq : this.last;
  }

  private async start(): Promise<void> {
    this.sub?.unsubscribe();
    const deliver = createInbox();
    const sub = this.client.nc.subscribe(deliver, {
      callback: (err, msg) => {
        if (err || this.sub !== sub) return;
        const code = msg.headers?.get('Loom-Error');
        if (code) return this.fail(toLoomError(code, msg.data));
        const seq = Number(msg.headers?.get('Loom-Seq'));
        if (!(seq > this.highWater())) return;
        const change = watchChangeOf(seq, msg);
        if (this.waiter) {
          const waiter = this.waiter;
          this.waiter = undefined;
          waiter.resolve({ value: change, done: false });
          this.last = change.seq;
        } else this.queue.push(change);
      },
    });
    this.sub = sub;
    await this.client.request('$LOOM.API.WATCH', json({ subject: this.subject, fromSeq: this.highWater(), deliver }));
  }

  private fail(err: Error): void {
    this.failure = err;
    this.waiter?.reject(err);
    this.waiter = undefined;
  }

  /** Restarts the server-side watch after every reconnect, from the last seq seen. */
  private async watchStatus(): Promise<void> {
    for await (const status of this.client.nc.status()) {
      if (this.closed) return;
      if (status.type !== 'reconnect') continue;
      await this.restarting?.catch(() => undefined);
      this.restarting = this.restartWithRetry();
    }
  }

  private async restartWithRetry(): Promise<void> {
    for (let attempt = 0; !this.closed; attempt++) {
      try {
        await this.start();
        return;
      } catch (err) {
        // The node may still be starting its API after a restart: try again shortly.
        if (attempt >= 40) return this.fail(err as Error);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
  }
}
