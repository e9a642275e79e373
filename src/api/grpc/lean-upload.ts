// Buckets.Put on the lean path: the upload reads its data straight from the HTTP/2 stream's DATA
// frames (put-parser.ts), with HTTP/2 flow control as its backpressure. grpc-js gathers each
// message into a buffer of its own before decoding it: a copy of every byte, and for large messages
// a buffer per message that dies old, which made collections most of the difference in CPU per MiB
// between gRPC and HTTP uploads.

import type * as http2 from 'node:http2';
import { status as Status } from '@grpc/grpc-js';
import { LoomError } from '../../util';
import { LeanCallBase, type LeanUnaryOptions } from './lean-call';
import { PutMessageParser, PutMessageTooLarge, type PutEvent } from './put-parser';
import { roundTrip } from './round-trip';

export interface LeanUploadRoute {
  /** Marks a client-streaming upload route. */
  upload: true;
  /** A Put message's fields other than its data (header, unknown fields); must not throw (server.ts's `tolerant`). */
  deserialize(bytes: Buffer): unknown;
  serialize(message: unknown): Buffer;
  /**
   * Runs the upload from the first message's fields (undefined if the client sent no message).
   * `data` yields the data of every message in order, and throws if the call ends first (reset,
   * deadline, a bad later message). Rejections are answered by toServiceError.
   */
  run(first: unknown, data: AsyncIterable<Uint8Array>, call: LeanUploadContext): Promise<unknown>;
  /** Checks the fields of message `index` that come after its data or in a later message; throws to fail the upload. */
  checkLater(fields: unknown, authorization: string | undefined, index: number): void;
  /**
   * What grpc-js's path checks before it reads a message (the server closing, then the token);
   * throws the error to answer instead of a malformed message's.
   */
  checkCall(authorization: string | undefined): void;
}

export interface LeanUploadContext {
  authorization: string | undefined;
  /** True once the client has reset the call (or it was answered): commit nothing. */
  cancelled(): boolean;
  /** Resolves once every frame the client sent before this call has arrived (round-trip.ts). */
  roundTrip(): Promise<void>;
}

/**
 * Bytes of data an upload may have received and not yet taken before its stream is paused; HTTP/2
 * flow control (the stream window, windows.ts) then holds the client.
 */
export const uploadQueuedBytesMax = 256 * 1024;
/**
 * Pieces likewise: a piece is a slice of one of Node's socket reads (up to 64 KiB) and holds all of
 * it, so a client sending tiny DATA frames among another call's would otherwise hold far more memory
 * than the bytes counted.
 */
export const uploadQueuedPiecesMax = 64;

/** One Put call: parses the messages as they arrive, starts the upload once the header is known, answers once. */
export class LeanUploadCall extends LeanCallBase {
  private readonly parser: PutMessageParser;
  private readonly pieces: PieceQueue;
  /** Index of the message being read. */
  private index = 0;
  /** The current message's non-data fields not yet checked (before the upload starts: the first message's). */
  private fields: Buffer[] = [];
  /** Data of the first message that came before its header (copied): it waits for the header. */
  private early: Buffer[] = [];
  private started = false;

  constructor(
    stream: http2.ServerHttp2Stream,
    private readonly route: LeanUploadRoute,
    private readonly authorization: string | undefined,
    timeoutMs: number | undefined,
    options: LeanUnaryOptions,
  ) {
    super(stream, timeoutMs, options);
    this.parser = new PutMessageParser(options.messageBytesMax);
    this.pieces = new PieceQueue(stream);
    stream.on('data', (chunk: Buffer) => this.receive(chunk));
    stream.once('end', () => this.halfClosed());
    // Before an answer, a closed stream is a client's reset: the upload fails and commits nothing.
    stream.once('close', () => this.finish());
  }

  protected override finish(): boolean {
    // Once answered (an error, the deadline) or reset, the upload stops and the rest of the stream is dropped.
    this.pieces.abandon(new LoomError('UNAVAILABLE', 'the call ended before its upload did'));
    this.early = [];
    this.fields = [];
    return super.finish();
  }

  private receive(chunk: Buffer): void {
    if (this.answered) return;
    try {
      for (const event of this.parser.feed(chunk)) this.dispatch(event);
    } catch (err) {
      this.refuse(err);
    }
  }

  private halfClosed(): void {
    if (this.answered) return;
    try {
      this.parser.end();
    } catch (err) {
      this.refuse(err);
      return;
    }
    if (!this.started) this.start(undefined);
    this.pieces.end();
  }

  private dispatch(event: PutEvent): void {
    if (event.kind === 'data') {
      if (this.started) this.pieces.push(event.bytes);
      else this.early.push(Buffer.from(event.bytes));
      return;
    }
    this.fields.push(event.bytes);
    if (!this.started) {
      // The upload starts at the first message's data if its header came before it (every encoder
      // writes fields in number order), else once the first message has ended.
      const first = this.decode(Buffer.concat(this.fields));
      if (!event.end && !hasHeader(first)) return;
      this.fields = [];
      this.start(first);
    } else if (event.end) {
      const fields = Buffer.concat(this.fields);
      this.fields = [];
      if (fields.length > 0 || this.index > 0) this.route.checkLater(this.decode(fields), this.authorization, this.index);
    }
    if (event.end) this.index++;
  }

  /** A message's fields but its data field, decoded; data hiding among them would be lost, so it is refused. */
  private decode(fields: Buffer): unknown {
    const decoded = this.route.deserialize(fields);
    const data = (decoded as { data?: Uint8Array } | null)?.data;
    if (data instanceof Uint8Array && data.length > 0) throw new LoomError('INVALID_ARGUMENT', 'the request is not a valid protobuf message: its data field is malformed', { field: 'body' });
    return decoded;
  }

  private start(first: unknown): void {
    this.started = true;
    for (const bytes of this.early) this.pieces.push(bytes);
    this.early = [];
    const context: LeanUploadContext = {
      authorization: this.authorization,
      cancelled: () => this.answered || this.stream.closed || this.stream.destroyed,
      roundTrip: () => roundTrip(this.stream.session),
    };
    let run: Promise<unknown>;
    try {
      run = this.route.run(first, this.pieces, context);
    } catch (err) {
      run = Promise.reject(err);
    }
    run.then(
      (response) => this.succeed(() => this.route.serialize(response)),
      (err: unknown) => this.failWith(err),
    );
  }

  /**
   * Answers a request the parser or a check refused, at once. An oversized message is refused
   * before any handler runs, as grpc-js does; for the rest, the server closing and a wrong token
   * come first, as on grpc-js's path, where they are checked before a message is decoded.
   */
  private refuse(err: unknown): void {
    if (err instanceof PutMessageTooLarge) {
      this.fail(Status.RESOURCE_EXHAUSTED, err.message);
      return;
    }
    try {
      this.route.checkCall(this.authorization);
    } catch (first) {
      this.failWith(first);
      return;
    }
    this.failWith(err);
  }
}

function hasHeader(fields: unknown): boolean {
  return typeof fields === 'object' && fields !== null && (fields as { header?: unknown }).header != null;
}

/**
 * The upload's data as an async iterable, fed by the call: pieces wait here until the upload takes
 * them, and the stream is paused while more than uploadQueuedBytesMax wait.
 */
class PieceQueue implements AsyncIterableIterator<Uint8Array> {
  private readonly queue: Buffer[] = [];
  private queuedBytes = 0;
  private ended = false;
  /** Set once the upload has seen the end or an error: nothing more reaches it. */
  private over = false;
  private error: unknown;
  private waiting: { resolve(result: IteratorResult<Uint8Array>): void; reject(err: unknown): void } | undefined;

  constructor(private readonly stream: http2.ServerHttp2Stream) {}

  push(bytes: Buffer): void {
    if (this.over || this.error !== undefined) return;
    if (this.waiting !== undefined) {
      const { resolve } = this.waiting;
      this.waiting = undefined;
      resolve({ value: bytes, done: false });
      return;
    }
    this.queue.push(bytes);
    this.queuedBytes += bytes.length;
    if (this.queuedBytes > uploadQueuedBytesMax || this.queue.length > uploadQueuedPiecesMax) this.stream.pause();
  }

  end(): void {
    this.ended = true;
    if (this.waiting !== undefined && this.queue.length === 0) this.settle();
  }

  /** Fails the upload with `err` (unless it has already seen its end) and lets the stream flow, its bytes dropped. */
  abandon(err: unknown): void {
    if (!this.over && this.error === undefined) {
      this.error = err;
      this.queue.length = 0;
      this.queuedBytes = 0;
      if (this.waiting !== undefined) this.settle();
    }
    this.stream.resume();
  }

  next(): Promise<IteratorResult<Uint8Array>> {
    const bytes = this.queue.shift();
    if (bytes !== undefined) {
      this.queuedBytes -= bytes.length;
      if (this.queuedBytes <= uploadQueuedBytesMax && this.queue.length <= uploadQueuedPiecesMax && this.stream.isPaused()) this.stream.resume();
      return Promise.resolve({ value: bytes, done: false });
    }
    if (this.error !== undefined || this.ended) {
      return new Promise((resolve, reject) => {
        this.waiting = { resolve, reject };
        this.settle();
      });
    }
    return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
  }

  /** The upload stopped reading (it failed): drop what comes. */
  return(): Promise<IteratorResult<Uint8Array>> {
    this.abandon(new LoomError('UNAVAILABLE', 'the upload stopped reading'));
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    return this;
  }

  /** Ends the waiting read with the error or the end. */
  private settle(): void {
    const waiting = this.waiting;
    if (waiting === undefined) return;
    this.waiting = undefined;
    this.over = true;
    if (this.error !== undefined) waiting.reject(this.error);
    else waiting.resolve({ value: undefined, done: true });
  }
}
