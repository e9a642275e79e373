// The streaming rpcs of the gRPC Buckets service: Put (client-streaming upload, re-chunked by the
// objects API with backpressure) and Get (server-streaming download, one write per chunk, waiting
// for `drain`). Stat, List and Delete are unary operations served like every other.

import { once } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { downloadPieceHeadroomBytes, type Database, type ObjectDownload, type PutObjectOptions } from '../../core';
import { LoomError, type Logger } from '../../util';
import { encodeObjectInfo, type ProtoRequest } from './codec';
import { toServiceError } from './status';

/** Event-loop turns an upload on grpc-js's path waits for a cancel that may be on its way. */
export const cancelSettleTurns = 3;

/** What an upload asks of its call: whether the client reset it, and (lean path) a PING round trip. */
export interface PutCall {
  cancelled(): boolean;
  roundTrip?(): Promise<void>;
}

export interface BucketStreamOptions {
  db: Database;
  logger: Logger;
  /** Auth and malformed-message checks shared with the other rpcs; returns the decoded message. */
  admit(call: { metadata: grpc.Metadata; request: unknown }): ProtoRequest;
  isClosing(): boolean;
}

export function bucketStreams(options: BucketStreamOptions): grpc.UntypedServiceImplementation {
  const { db, logger } = options;

  const put: grpc.handleClientStreamingCall<unknown, unknown> = (call, callback) => {
    // A cancelled call ends the upload's read loop with an error: nothing is committed.
    call.on('cancelled', () => call.destroy(new LoomError('UNAVAILABLE', 'the client cancelled the upload')));
    const run = async (): Promise<unknown> => {
      if (options.isClosing()) throw new LoomError('UNAVAILABLE', 'the gRPC server is shutting down');
      const messages = call[Symbol.asyncIterator]() as AsyncIterator<unknown>;
      const first = await messages.next();
      if (first.done) throw noPutMessage();
      const head = options.admit({ metadata: call.metadata, request: first.value });
      const data = (async function* data(): AsyncGenerator<Uint8Array> {
        if ((head.data as Buffer | undefined)?.length) yield head.data as Buffer;
        for (let next = await messages.next(); !next.done; next = await messages.next()) {
          const message = options.admit({ metadata: call.metadata, request: next.value });
          if (message.header) throw laterPutHeader();
          if ((message.data as Buffer | undefined)?.length) yield message.data as Buffer;
        }
      })();
      return putObject(db, head, data, { cancelled: () => call.cancelled });
    };
    run().then(
      (response) => callback(null, response),
      (err: unknown) => callback(toServiceError(err, logger)),
    );
  };

  const get: grpc.handleServerStreamingCall<unknown, unknown> = (call) => {
    const run = async (): Promise<void> => {
      if (options.isClosing()) throw new LoomError('UNAVAILABLE', 'the gRPC server is shutting down');
      const download = await openObjectDownload(db, options.admit(call));
      const stop = (): void => void download.stream.destroy();
      call.on('cancelled', stop);
      try {
        // The info goes out alone, so a client knows size and digest before the first byte.
        if (!call.write({ info: encodeObjectInfo(download.info) })) await once(call, 'drain');
        for await (const piece of download.stream) {
          if (call.cancelled) return;
          if (!call.write(new EncodedObjectChunk(encodeDataChunk(piece as Buffer, 0)))) await once(call, 'drain');
        }
      } finally {
        call.off('cancelled', stop);
      }
    };
    run().then(
      () => {
        if (!call.cancelled && !call.writableEnded) call.end();
      },
      (err: unknown) => {
        if (!call.cancelled && !call.writableEnded) call.emit('error', toServiceError(err, logger));
      },
    );
  };

  return { Put: put, Get: get };
}

/**
 * A Put, whichever path its messages came by (grpc-js's or lean-upload.ts): the first message's
 * header, then the data of every message. `call` tells whether the client has reset the call.
 */
export async function putObject(db: Database, head: ProtoRequest, data: AsyncIterable<Uint8Array>, call: PutCall): Promise<unknown> {
  const header = head.header as ProtoRequest | undefined | null;
  if (!header) throw new LoomError('INVALID_ARGUMENT', 'the first Put message must carry a header', { field: 'header' });
  const putOptions: PutObjectOptions = { metadata: (header.metadata as Record<string, string> | undefined) ?? {} };
  if (typeof header.content_type === 'string' && header.content_type !== '') putOptions.contentType = header.content_type;
  if (typeof header.sha256 === 'string') putOptions.sha256 = header.sha256;
  if (typeof header.chunk_bytes === 'number' && header.chunk_bytes > 0) putOptions.chunkBytes = header.chunk_bytes;
  if (typeof header.size === 'number') putOptions.size = header.size;
  if (typeof header.expect_rev === 'number') putOptions.expectRev = header.expect_rev;
  // A call reset or past its deadline by the time every byte is in commits nothing.
  putOptions.abandoned = () => call.cancelled();
  // A grpc-js client's cancel ends its request stream before its RST_STREAM arrives, so the end of
  // the messages may be a cancel (round-trip.ts). A `size` or `sha256` in the header settles it: a
  // short upload fails its check. Without them, the commit waits for a PING round trip (lean
  // path), after which the reset of a cancel sent before has arrived, and commits nothing if it
  // did. grpc-js's own path (leanUnary: false) has no PING to send and waits a few turns instead.
  if (putOptions.size === undefined && putOptions.sha256 === undefined) {
    putOptions.beforeCommit = async () => {
      if (call.roundTrip) await call.roundTrip();
      else for (let turn = 0; turn < cancelSettleTurns && !call.cancelled(); turn++) await new Promise((resolve) => setImmediate(resolve));
      if (call.cancelled()) throw new LoomError('UNAVAILABLE', 'the client cancelled the upload');
    };
  }
  const info = await db.objects.put(String(header.bucket ?? ''), String(header.name ?? ''), data, putOptions);
  return encodeObjectInfo(info);
}

export function noPutMessage(): LoomError {
  return new LoomError('INVALID_ARGUMENT', 'Put needs at least one message, the first with a header', { field: 'header' });
}

export function laterPutHeader(): LoomError {
  return new LoomError('INVALID_ARGUMENT', 'only the first Put message carries a header', { field: 'header' });
}

/** A Get request's download: the object's info and its bytes, as the request's fields ask. */
export async function openObjectDownload(db: Database, r: ProtoRequest): Promise<ObjectDownload> {
  const readOptions: { offset?: number; length?: number; consistency?: 'local' | 'linearizable'; atLeast?: number } = {};
  if (typeof r.offset === 'number') readOptions.offset = r.offset;
  if (typeof r.length === 'number') readOptions.length = r.length;
  if (r.consistency === 'local' || r.consistency === 'linearizable') readOptions.consistency = r.consistency;
  else if (r.consistency !== undefined && r.consistency !== '') throw new LoomError('INVALID_ARGUMENT', 'consistency must be local or linearizable', { field: 'consistency' });
  if (typeof r.at_least === 'number') readOptions.atLeast = r.at_least;
  return db.objects.get(String(r.bucket ?? ''), String(r.name ?? ''), readOptions);
}

/** An ObjectChunk already in protobuf bytes; the Get method's serializer passes it through. */
export class EncodedObjectChunk {
  constructor(readonly bytes: Buffer) {}
}

/** Tag of ObjectChunk.data (field 2, length-delimited): proto/loom.proto. */
const objectChunkDataTag = 0x12;

/**
 * ObjectChunk {data: piece} in protobuf bytes, with `roomBytes` of memory of its own free in front
 * (for a caller's framing). A download's piece has downloadPieceHeadroomBytes of its own in front,
 * enough for both and for the tag and length, so the message is the piece's own memory: protobufjs
 * would allocate and copy it. A piece without that room is copied into new memory that has it.
 */
export function encodeDataChunk(piece: Buffer, roomBytes: number): Buffer {
  const header = [objectChunkDataTag];
  for (let n = piece.byteLength; ; n = Math.floor(n / 128)) {
    if (n < 128) {
      header.push(n);
      break;
    }
    header.push((n % 128) | 0x80);
  }
  if (downloadPieceHeadroomBytes >= roomBytes + header.length && piece.byteOffset >= roomBytes + header.length) {
    const message = Buffer.from(piece.buffer, piece.byteOffset - header.length, header.length + piece.byteLength);
    message.set(header, 0);
    return message;
  }
  // allocUnsafeSlow: never a slice of Node's shared pool, so the room in front is this message's own.
  const message = Buffer.allocUnsafeSlow(roomBytes + header.length + piece.byteLength).subarray(roomBytes);
  message.set(header, 0);
  message.set(piece, header.length);
  return message;
}

/** The Buckets service with a Get serializer that sends an EncodedObjectChunk as it is. */
export function withEncodedChunks(service: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const get = service.Get as grpc.MethodDefinition<unknown, unknown>;
  return {
    ...service,
    Get: { ...get, responseSerialize: (value: unknown) => (value instanceof EncodedObjectChunk ? value.bytes : get.responseSerialize(value)) },
  };
}
