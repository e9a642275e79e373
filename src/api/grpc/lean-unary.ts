// Serves the hottest rpcs (KV Get, Put, Delete; the Buckets Get download, and its Put upload through
// lean-upload.ts) straight on the HTTP/2 streams beneath grpc-js, answering byte for byte as grpc-js
// would; every other stream goes to grpc-js's own listener.

import type * as http2 from 'node:http2';
import { status as Status, type Server } from '@grpc/grpc-js';
import { LoomError } from '../../util';
import { toServiceError } from './status';
import { frame, framingBytes, LeanCallBase, responseHeaders, type LeanUnaryOptions } from './lean-call';
import { LeanUploadCall, type LeanUploadRoute } from './lean-upload';

export { framingBytes, type LeanUnaryOptions } from './lean-call';

/** One rpc the lean path serves: grpc-js's (de)serializers for it and the call's work. */
export interface LeanRoute {
  /** Bytes to request; must not throw (server.ts's `tolerant` turns bad bytes into a value). */
  deserialize(bytes: Buffer): unknown;
  serialize(message: unknown): Buffer;
  /** The call's work; `deadline` is epoch ms, Infinity without one. Rejections are answered by toServiceError. */
  run(request: unknown, authorization: string | undefined, deadline: number): Promise<unknown>;
}

/**
 * A server-streaming rpc the lean path serves (Buckets.Get): a first message, then messages sent
 * from their own memory. grpc-js copies every message it sends into a new buffer to put the 5-byte
 * gRPC prefix in front; here the prefix goes into room the message leaves for it.
 */
export interface LeanDownloadRoute {
  deserialize(bytes: Buffer): unknown;
  /** Opens the download; `deadline` is epoch ms, Infinity without one. Rejections are answered by toServiceError. */
  open(request: unknown, authorization: string | undefined, deadline: number): Promise<LeanDownload>;
}

export interface LeanDownload {
  /** The first message, serialized. */
  first: Buffer;
  /**
   * The messages after it, serialized, each with at least `framingBytes` of memory of its own in
   * front (the gRPC prefix is written there). An error ends the call with its status.
   */
  rest: AsyncIterable<Buffer>;
  /** Stops the download early (client gone, deadline passed). */
  close(): void;
}

/** Every kind of rpc the lean path serves. */
export type LeanServedRoute = LeanRoute | LeanDownloadRoute | LeanUploadRoute;

/**
 * Puts the lean path in front of grpc-js's 'stream' listeners. grpc-js's call objects, interceptor
 * chain and metadata copies, none of which loom's unary calls use, were about a quarter of the
 * server's CPU per KV get (measured side by side: 185 → 142 µs a get). Reaches into grpc-js's HTTP/2
 * servers (a private field, checked here, as in windows.ts): if a grpc-js upgrade renames it, every
 * call stays on grpc-js, which costs speed only, and the log says so. grpc-js's own per-stream
 * bookkeeping serves only options loom does not set (channelz, grpc.max_connection_idle_ms).
 */
export function serveLeanUnary(server: Server, routes: ReadonlyMap<string, LeanServedRoute>, options: LeanUnaryOptions): void {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map)) {
    options.logger.warn('grpc-js keeps no http2Servers map: every gRPC call takes the grpc-js path');
    return;
  }
  for (const http2Server of servers.keys() as IterableIterator<http2.Http2Server>) {
    const grpcListeners = http2Server.listeners('stream') as ((...args: unknown[]) => void)[];
    if (grpcListeners.some((l) => (l as { leanUnary?: boolean }).leanUnary)) continue;
    if (grpcListeners.length === 0) {
      options.logger.warn('grpc-js listens to no HTTP/2 streams: every gRPC call takes the grpc-js path');
      continue;
    }
    for (const listener of grpcListeners) http2Server.removeListener('stream', listener);
    const pacer = new AnswerPacer();
    const dispatch = function (this: unknown, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]): void {
      if (admitLean(stream, headers, routes, pacer, options)) return;
      for (const listener of grpcListeners) listener.call(this, stream, headers, ...rest);
    };
    http2Server.on('stream', Object.assign(dispatch, { leanUnary: true }));
  }
}

/** grpc-js keeps only metadata values of printable ASCII (its Metadata drops the others). */
const printable = /^[ -~]*$/;
/** grpc-js's parse of `grpc-timeout`: not anchored, so it finds a timeout anywhere in the value. */
const timeoutPattern = /(\d{1,8})\s*([HMSmun])/;
const msPerTimeoutUnit: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000_001 };

/**
 * Takes the stream if it is a call the lean path answers exactly as grpc-js: a served path, a gRPC
 * content type, identity encoding and a well-formed timeout. Anything else (a compressed call, a
 * malformed timeout grpc-js answers INTERNAL, a 415) returns false and goes to grpc-js untouched.
 */
function admitLean(
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  routes: ReadonlyMap<string, LeanServedRoute>,
  pacer: AnswerPacer,
  options: LeanUnaryOptions,
): boolean {
  const path = headers[':path'];
  const route = path === undefined ? undefined : routes.get(path);
  if (route === undefined) return false;
  const contentType = headers['content-type'];
  if (typeof contentType !== 'string' || !contentType.startsWith('application/grpc')) return false;
  const encoding = headers['grpc-encoding'];
  if (encoding !== undefined && encoding !== 'identity') return false;
  const timeout = headers['grpc-timeout'];
  let timeoutMs: number | undefined;
  if (timeout !== undefined) {
    const match = typeof timeout === 'string' && printable.test(timeout) ? timeoutPattern.exec(timeout) : null;
    if (match === null) return false;
    // grpc-js truncates to an int32 the same way.
    timeoutMs = (+match[1] * msPerTimeoutUnit[match[2]]) | 0;
  }
  const authorization = authorizationOf(headers.authorization);
  if ('upload' in route) new LeanUploadCall(stream, route, authorization, timeoutMs, options);
  else new LeanCall(stream, path as string, route, authorization, timeoutMs, pacer, options);
  return true;
}

/** The value grpc-js's `metadata.get('authorization')[0]` would give. */
function authorizationOf(value: string | string[] | undefined): string | undefined {
  if (typeof value === 'string') return printable.test(value) ? value : undefined;
  return value?.find((v) => printable.test(v));
}

/** One unary or server-streaming call: reads the framed request, runs it once the client half-closes, answers. */
class LeanCall extends LeanCallBase {
  /** Request bytes received but not yet a whole message. */
  private buffered: Buffer | undefined;
  private request: unknown;
  private received = false;

  constructor(
    stream: http2.ServerHttp2Stream,
    private readonly path: string,
    private readonly route: LeanRoute | LeanDownloadRoute,
    private readonly authorization: string | undefined,
    timeoutMs: number | undefined,
    private readonly pacer: AnswerPacer,
    options: LeanUnaryOptions,
  ) {
    super(stream, timeoutMs, options);
    stream.on('data', (chunk: Buffer) => this.receive(chunk));
    stream.once('end', () => this.halfClosed());
  }

  /** Splits the 5-byte-prefixed messages out of the DATA frames, as grpc-js's StreamDecoder. */
  private receive(chunk: Buffer): void {
    if (this.answered) return;
    let bytes = this.buffered === undefined ? chunk : Buffer.concat([this.buffered, chunk]);
    while (bytes.length >= 5) {
      const size = bytes.readUInt32BE(1);
      if (size > this.options.messageBytesMax) {
        this.fail(Status.RESOURCE_EXHAUSTED, `Received message larger than max (${size} vs ${this.options.messageBytesMax})`);
        return;
      }
      if (bytes.length < 5 + size) break;
      // A copy, as grpc-js makes: decoded bytes fields must not pin the connection's read buffer.
      // The flag byte is ignored, as grpc-js does under identity encoding (the only one taken here).
      this.message(Buffer.from(bytes.subarray(5, 5 + size)));
      if (this.answered) return;
      bytes = bytes.subarray(5 + size);
    }
    this.buffered = bytes.length === 0 ? undefined : bytes;
  }

  private message(bytes: Buffer): void {
    if (this.received) {
      this.fail(Status.UNIMPLEMENTED, `Received a second request message for server streaming method ${this.path}`);
      return;
    }
    this.received = true;
    this.request = this.route.deserialize(bytes);
  }

  private halfClosed(): void {
    if (this.answered) return;
    if (!this.received) {
      this.fail(Status.UNIMPLEMENTED, `Received no request message for server streaming method ${this.path}`);
      return;
    }
    if ('open' in this.route) {
      this.download(this.route).catch((err: unknown) => this.options.logger.error({ err }, 'grpc download failed unexpectedly'));
      return;
    }
    const route = this.route;
    route.run(this.request, this.authorization, this.deadline).then(
      (response) => this.pacer.send(() => this.succeed(() => route.serialize(response))),
      (err: unknown) => this.pacer.send(() => this.failWith(err)),
    );
  }

  /**
   * A server-streaming answer: the first message with the headers, then each later message framed in
   * the room in front of it and written as it is, waiting for `drain` (HTTP/2 flow control), then
   * trailers. A status before the headers is trailers-only; after them, it ends the stream as its
   * trailers (the deadline's too), as grpc-js's sendStatus does. A reset stream stops the download.
   */
  private async download(route: LeanDownloadRoute): Promise<void> {
    let download: LeanDownload;
    try {
      download = await route.open(this.request, this.authorization, this.deadline);
    } catch (err) {
      this.failWith(err);
      return;
    }
    const stream = this.stream;
    if (this.answered || stream.destroyed || stream.closed) {
      download.close();
      return;
    }
    this.streaming = true;
    stream.once('close', () => download.close());
    let trailers: http2.OutgoingHttpHeaders = { 'grpc-status': Status.OK, 'grpc-message': 'OK' };
    stream.respond(responseHeaders, { waitForTrailers: true, sendDate: false } as http2.ServerStreamResponseOptions);
    stream.once('wantTrailers', () => stream.sendTrailers(this.endStatus ?? trailers));
    try {
      stream.write(frame(download.first));
      for await (const message of download.rest) {
        if (this.answered || stream.destroyed || stream.closed) return;
        if (message.byteOffset < framingBytes) throw new LoomError('INTERNAL', 'a download message has no room for its gRPC prefix');
        const framed = Buffer.from(message.buffer, message.byteOffset - framingBytes, framingBytes + message.byteLength);
        framed[0] = 0;
        framed.writeUInt32BE(message.byteLength, 1);
        if (!stream.write(framed)) await drained(stream);
      }
    } catch (err) {
      // A reset stream closed the download under the loop: no one to tell.
      if (this.answered || stream.destroyed || stream.closed) return;
      const error = toServiceError(err, this.options.logger);
      trailers = { 'grpc-status': error.code, 'grpc-message': encodeURI(error.details), ...error.metadata.toHttp2Headers() };
    } finally {
      download.close();
    }
    if (!this.finish()) return;
    stream.end();
  }
}

/** Resolves when the stream can take more, or has closed (the caller then stops). */
function drained(stream: http2.ServerHttp2Stream): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.once('drain', done);
    stream.once('close', done);
  });
}

/**
 * Answers a server writes per turn of the event loop before the rest wait for the next turn. Node's
 * HTTP/2 hands a turn's frames to the socket only when the turn ends, and a client's calls arrive
 * together (64 in one read) and finish together (a read batch, a log group), so answering all in one
 * turn made the client wait for the last answer before it could start on the first: client and
 * server took turns. Eight at a time, the first answers leave while the server writes the rest; with
 * 64 clients on one connection (bench api) the client went from ~80% to ~100% busy and KV puts and
 * gets per second rose 25-35%. 4 and 16 measured no better, 32 clearly worse.
 */
export const answersPerTurnMax = 8;

/** Sends answers as they come, at most answersPerTurnMax per turn; the rest, in order, in later turns. */
class AnswerPacer {
  private sentThisTurn = 0;
  /** Answers waiting for a later turn; only ever non-empty while this turn's quota is spent. */
  private readonly waiting: (() => void)[] = [];
  private turnScheduled = false;

  send(answer: () => void): void {
    if (this.sentThisTurn < answersPerTurnMax) {
      this.sentThisTurn++;
      answer();
    } else {
      this.waiting.push(answer);
    }
    if (!this.turnScheduled) {
      this.turnScheduled = true;
      // An immediate runs after the turn's HTTP/2 frames have gone to the socket (Node writes them
      // from its own immediates, which run before the script's).
      setImmediate(() => this.nextTurn());
    }
  }

  private nextTurn(): void {
    this.turnScheduled = false;
    this.sentThisTurn = 0;
    for (const answer of this.waiting.splice(0, answersPerTurnMax)) this.send(answer);
  }
}

