// What every call on the lean path (lean-unary.ts, lean-upload.ts) shares: its deadline and its one
// answer, written on the HTTP/2 stream byte for byte as grpc-js's sendMetadata, sendMessage and
// sendStatus would.

import type * as http2 from 'node:http2';
import { status as Status } from '@grpc/grpc-js';
import type { Logger } from '../../util';
import { toServiceError } from './status';

export interface LeanUnaryOptions {
  /** Largest request message, in bytes, as grpc.max_receive_message_length. */
  messageBytesMax: number;
  logger: Logger;
}

/** Room in front of each LeanDownload message for the gRPC prefix: compressed flag and length. */
export const framingBytes = 5;

/** A call's deadline and answer; a subclass reads the request and decides the answer. */
export abstract class LeanCallBase {
  /** Epoch ms; Infinity without a deadline. */
  protected readonly deadline: number;
  private readonly deadlineTimer: NodeJS.Timeout | undefined;
  /** Set once the call is answered (or given up on): later events and results are dropped. */
  protected answered = false;
  /** A download whose headers are out: a status now goes in its trailers. */
  protected streaming = false;
  /** The status a download ended with before its messages did (its deadline). */
  protected endStatus: http2.OutgoingHttpHeaders | undefined;

  constructor(
    protected readonly stream: http2.ServerHttp2Stream,
    timeoutMs: number | undefined,
    protected readonly options: LeanUnaryOptions,
  ) {
    // As grpc-js: every stream error is followed by 'close', and a closed call has no one to answer.
    stream.once('error', ignore);
    if (timeoutMs === undefined) {
      this.deadline = Infinity;
    } else {
      this.deadline = Date.now() + timeoutMs;
      const timer = setTimeout(() => this.fail(Status.DEADLINE_EXCEEDED, 'Deadline exceeded'), timeoutMs);
      stream.once('close', () => clearTimeout(timer));
      this.deadlineTimer = timer;
    }
  }

  /** Headers, the message, then trailers: what grpc-js's sendMetadata, sendMessage and sendStatus write. */
  protected succeed(serialize: () => Buffer): void {
    let body: Buffer;
    try {
      body = serialize();
    } catch {
      this.fail(Status.INTERNAL, 'Error serializing response');
      return;
    }
    if (!this.finish()) return;
    const framed = frame(body);
    const stream = this.stream;
    stream.respond(responseHeaders, { waitForTrailers: true, sendDate: false } as http2.ServerStreamResponseOptions);
    stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': Status.OK, 'grpc-message': 'OK' }));
    stream.end(framed);
  }

  /** The status grpc-js sends for an error the call's work threw. */
  protected failWith(err: unknown): void {
    const error = toServiceError(err, this.options.logger);
    this.fail(error.code, error.details, error.metadata.toHttp2Headers());
  }

  /** A trailers-only answer, as grpc-js sends every status that comes before a message. */
  protected fail(code: Status, details: string, trailers?: http2.OutgoingHttpHeaders): void {
    if (this.streaming) {
      // The headers are out: the status ends the stream as its trailers.
      if (!this.finish()) return;
      this.endStatus = { 'grpc-status': code, 'grpc-message': encodeURI(details), ...trailers };
      this.stream.end();
      return;
    }
    if (!this.finish()) return;
    this.stream.respond(
      { 'grpc-status': code, 'grpc-message': encodeURI(details), ':status': 200, 'content-type': 'application/grpc+proto', ...trailers },
      { endStream: true },
    );
  }

  /** Marks the call answered; false if it already was, or if the client has gone (nothing to send). */
  protected finish(): boolean {
    if (this.answered) return false;
    this.answered = true;
    clearTimeout(this.deadlineTimer);
    return !this.stream.destroyed && !this.stream.closed;
  }
}

/**
 * The headers in front of every answer that has a message. grpc-js's sendMetadata also writes
 * `grpc-accept-encoding` and `grpc-encoding: identity`, and Node adds `date`: all optional in the
 * gRPC protocol (grpc-go sends none of them), and a grpc-js client parses each on every call.
 * Leaving them out took ~6% off the client's CPU per KV put (365-372 against 385-395 µs, three
 * alternating runs of 64 clients) and the put rate rose alike. Trailers-only answers keep grpc-js's form.
 */
export const responseHeaders: http2.OutgoingHttpHeaders = {
  ':status': 200,
  'content-type': 'application/grpc+proto',
};

/** A message with the 5-byte gRPC prefix in front, in a new buffer. */
export function frame(message: Buffer): Buffer {
  const framed = Buffer.allocUnsafe(framingBytes + message.length);
  framed[0] = 0;
  framed.writeUInt32BE(message.length, 1);
  message.copy(framed, framingBytes);
  return framed;
}

export function ignore(): void {}
