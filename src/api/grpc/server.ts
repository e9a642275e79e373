// The node's gRPC door (@grpc/grpc-js over proto/loom.proto): each rpc is one shared operation from
// operations.ts, translated by codec.ts; errors leave as gRPC statuses with loom trailers (status.ts).

import { createHash, timingSafeEqual } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { Database, Watch } from '../../core';
import { LoomError, type Logger } from '../../util';
import { listenError } from '../http/server';
import { parseInput, runOperation, type OperationContext, type OperationName } from '../operations';
import { bucketStreams, encodeDataChunk, laterPutHeader, noPutMessage, openObjectDownload, putObject, withEncodedChunks } from './buckets';
import { framingBytes, serveLeanUnary, type LeanDownload, type LeanRoute, type LeanServedRoute } from './lean-unary';
import type { LeanUploadContext, LeanUploadRoute } from './lean-upload';
import { widenReceiveWindows } from './windows';
import { decodeRequest, decodeWatchRequest, encodeObjectInfo, encodeResponse, type ProtoRequest } from './codec';
import { encodeKvGetResponse, encodeRevResponse } from './kv-wire';
import { callsPerConnectionMaxDefault, keepaliveMs, keepaliveTimeoutMs, messageBytesMaxDefault, readTimeoutMsMax, shutdownGraceMsMax } from './limits';
import { loadLoomProto } from './proto';
import { toServiceError } from './status';
import { pumpWatch } from './watch-pump';

export interface GrpcServerLimits {
  /** Largest request message, in bytes (grpc.max_receive_message_length). */
  messageBytesMax?: number;
  /** Concurrent calls per client connection (grpc.max_concurrent_streams). */
  callsPerConnectionMax?: number;
}

export interface GrpcServerOptions {
  host: string;
  /** 0 picks a free port; listen() returns the one chosen. */
  port: number;
  db: Database;
  nodeId: number;
  logger: Logger;
  /** When set, every call must carry metadata `authorization: Bearer <authToken>`. */
  authToken?: string;
  limits?: GrpcServerLimits;
  /** PEM certificate and key: serve TLS only. */
  tls?: { cert: Buffer; key: Buffer };
  /** Serve KV Get, Put and Delete and Buckets.Get and Put on the lean path (lean-unary.ts); default true. False: all on grpc-js. */
  leanUnary?: boolean;
}

export interface GrpcServer {
  /** Binds and starts serving; resolves with the bound port. */
  listen(): Promise<number>;
  /** Ends open watches (UNAVAILABLE: resume elsewhere), lets unary calls finish, then stops. */
  close(): Promise<void>;
}

/** Which rpc runs which operation, per service of loom.v1. */
const unaryRoutes: Record<string, Record<string, OperationName>> = {
  KV: { Put: 'kv.put', Get: 'kv.get', Delete: 'kv.del', List: 'kv.list' },
  Events: { Append: 'ev.append', Read: 'ev.read' },
  SQL: { Query: 'sql.query' },
  Cluster: { Status: 'cluster.status', AddMember: 'cluster.add', RemoveMember: 'cluster.remove', TransferLeader: 'cluster.transfer' },
  Buckets: { Stat: 'obj.info', List: 'obj.list', Delete: 'obj.del' },
};

/** The unary rpcs served on the lean path (lean-unary.ts) unless it is turned off; Buckets.Get and Put are too. */
const leanMethods = { Put: 'kv.put', Get: 'kv.get', Delete: 'kv.del' } as const;

/** Operations whose schema takes `timeoutMs`: the call's remaining deadline is passed to them. */
const takesTimeout = new Set<OperationName>(['kv.get', 'kv.list', 'ev.read', 'sql.query', 'obj.info', 'obj.list']);

/** A request whose bytes did not decode: answered INVALID_ARGUMENT by the handler, not INTERNAL by grpc-js. */
class MalformedRequest {
  constructor(readonly reason: string) {}
}

export function createGrpcServer(options: GrpcServerOptions): GrpcServer {
  const logger = options.logger.child({ door: 'grpc' });
  const messageBytesMax = positive(options.limits?.messageBytesMax, 'messageBytesMax', messageBytesMaxDefault);
  const callsPerConnectionMax = positive(options.limits?.callsPerConnectionMax, 'callsPerConnectionMax', callsPerConnectionMaxDefault);
  const authorize = authorizer(options.authToken);
  const ctx: OperationContext = { db: options.db, nodeId: options.nodeId };
  const watches = new Map<grpc.ServerWritableStream<unknown, unknown>, Watch>();
  let closing = false;

  const server = new grpc.Server({
    // loom serves no channelz service, so the per-call counters and timestamps grpc-js keeps for it
    // are never read: skip them on the hot path of every call.
    'grpc.enable_channelz': 0,
    'grpc.max_receive_message_length': messageBytesMax,
    'grpc.max_concurrent_streams': callsPerConnectionMax,
    'grpc.keepalive_time_ms': keepaliveMs,
    'grpc.keepalive_timeout_ms': keepaliveTimeoutMs,
  });
  const definitions = loadLoomProto();

  /** Checks what every call needs before its operation runs; returns the decoded request. */
  function admit(call: { metadata: grpc.Metadata; request: unknown }): ProtoRequest {
    return admitRequest(call.request, call.metadata.get('authorization')[0]);
  }

  function admitRequest(request: unknown, authorization: grpc.MetadataValue | undefined): ProtoRequest {
    authorize(authorization);
    if (request instanceof MalformedRequest) {
      throw new LoomError('INVALID_ARGUMENT', `the request is not a valid protobuf message: ${request.reason}`, { field: 'body' });
    }
    return request as ProtoRequest;
  }

  /** One unary call, on either path; `deadline` is epoch ms, Infinity without one. Resolves with the response message. */
  async function runUnary(name: OperationName, request: unknown, authorization: grpc.MetadataValue | undefined, deadline: number): Promise<unknown> {
    const raw = decodeRequest[name](admitRequest(request, authorization));
    const remainingMs = deadline - Date.now();
    // A write that arrives after its deadline must not reach the log: the client has given up.
    if (remainingMs <= 0) throw new LoomError('TIMEOUT', `${name}: the call's deadline passed before it started`);
    if (takesTimeout.has(name) && Number.isFinite(remainingMs)) raw.timeoutMs = Math.min(Math.max(1, Math.floor(remainingMs)), readTimeoutMsMax);
    const output = await runOperation(ctx, name, parseInput(name, raw));
    return (encodeResponse[name] as (o: unknown) => unknown)(output);
  }

  /** A Buckets.Get on the lean path: the info message, then each piece as an ObjectChunk in its own memory. */
  async function openDownload(request: unknown, authorization: string | undefined, serialize: (message: unknown) => Buffer): Promise<LeanDownload> {
    if (closing) throw new LoomError('UNAVAILABLE', 'the gRPC server is shutting down');
    const download = await openObjectDownload(options.db, admitRequest(request, authorization));
    return {
      first: serialize({ info: encodeObjectInfo(download.info) }),
      rest: (async function* messages(): AsyncGenerator<Buffer> {
        for await (const piece of download.stream) yield encodeDataChunk(piece as Buffer, framingBytes);
      })(),
      close: () => void download.stream.destroy(),
    };
  }

  /** A Buckets.Put on the lean path: the first message's fields, then the data as it arrives. */
  async function runUpload(first: unknown, data: AsyncIterable<Uint8Array>, call: LeanUploadContext): Promise<unknown> {
    if (closing) throw new LoomError('UNAVAILABLE', 'the gRPC server is shutting down');
    if (first === undefined) throw noPutMessage();
    return putObject(options.db, admitRequest(first, call.authorization), data, call);
  }

  function unary(name: OperationName): grpc.handleUnaryCall<unknown, unknown> {
    return (call, callback) => {
      runUnary(name, call.request, call.metadata.get('authorization')[0], deadlineMsOf(call.getDeadline())).then(
        (response) => callback(null, response),
        (err: unknown) => callback(toServiceError(err, logger)),
      );
    };
  }

  function watch(call: grpc.ServerWritableStream<unknown, unknown>): void {
    let opened: Watch;
    try {
      if (closing) throw new LoomError('UNAVAILABLE', 'the gRPC server is shutting down');
      const { subject, fromSeq } = decodeWatchRequest(admit(call));
      opened = options.db.watch(subject as string, fromSeq === undefined ? {} : { fromSeq: fromSeq as number });
    } catch (err) {
      call.emit('error', toServiceError(err, logger));
      return;
    }
    watches.set(call, opened);
    pumpWatch(opened, call).then(
      () => {
        watches.delete(call);
        // Already ended when close() answered it UNAVAILABLE, or gone when the client cancelled.
        if (!call.cancelled && !call.destroyed && !call.writableEnded) call.end();
      },
      (err: unknown) => {
        watches.delete(call);
        if (!call.cancelled && !call.destroyed && !call.writableEnded) call.emit('error', toServiceError(err, logger));
      },
    );
  }

  const leanRoutes = new Map<string, LeanServedRoute>();
  for (const [service, routes] of Object.entries(unaryRoutes)) {
    const implementation: grpc.UntypedServiceImplementation = {};
    for (const [method, operation] of Object.entries(routes)) implementation[method] = unary(operation);
    if (service === 'Buckets') Object.assign(implementation, bucketStreams({ db: options.db, logger, admit, isClosing: () => closing }));
    const plain = serviceDefinition(definitions, service);
    const definition = withKvWire(tolerant(service === 'Buckets' ? withEncodedChunks(plain) : plain), service);
    server.addService(definition, implementation);
    if (service === 'Buckets') {
      const { path, requestDeserialize, responseSerialize } = definition.Get;
      leanRoutes.set(path, { deserialize: requestDeserialize, open: (request, authorization) => openDownload(request, authorization, responseSerialize) });
      const put = definition.Put;
      const upload: LeanUploadRoute = {
        upload: true,
        deserialize: put.requestDeserialize,
        serialize: put.responseSerialize,
        run: (first, data, call) => runUpload(first, data, call),
        checkCall: (authorization) => {
          if (closing) throw new LoomError('UNAVAILABLE', 'the gRPC server is shutting down');
          authorize(authorization);
        },
        checkLater: (fields, authorization, index) => {
          const message = admitRequest(fields, authorization);
          if (!message.header) return;
          if (index > 0) throw laterPutHeader();
          throw new LoomError('INVALID_ARGUMENT', 'a Put message carries one header', { field: 'header' });
        },
      };
      leanRoutes.set(put.path, upload);
    }
    if (service !== 'KV') continue;
    for (const [method, name] of Object.entries(leanMethods)) {
      const { path, requestDeserialize, responseSerialize } = definition[method];
      const route: LeanRoute = {
        deserialize: requestDeserialize,
        serialize: responseSerialize,
        run: (request, authorization, deadline) => runUnary(name, request, authorization, deadline),
      };
      leanRoutes.set(path, route);
    }
  }
  server.addService(tolerant(serviceDefinition(definitions, 'Watch')), { Watch: watch });

  return {
    async listen() {
      const host = options.host.includes(':') && !options.host.startsWith('[') ? `[${options.host}]` : options.host;
      const port = await new Promise<number>((resolve, reject) => {
        const credentials = options.tls
          ? grpc.ServerCredentials.createSsl(null, [{ private_key: options.tls.key, cert_chain: options.tls.cert }], false)
          : grpc.ServerCredentials.createInsecure();
        server.bindAsync(`${host}:${options.port}`, credentials, (err, bound) => (err ? reject(err) : resolve(bound)));
      }).catch((err: unknown) => {
        throw listenError(err, 'grpc', options.host, options.port);
      });
      widenReceiveWindows(server, logger);
      if (options.leanUnary !== false) serveLeanUnary(server, leanRoutes, { messageBytesMax, logger });
      logger.info({ host: options.host, port, messageBytesMax, callsPerConnectionMax, auth: options.authToken !== undefined, tls: options.tls !== undefined }, 'grpc listening');
      return port;
    },
    async close() {
      closing = true;
      // Watches never end on their own; tell their clients to resume (from their last seq) elsewhere.
      for (const [call, opened] of watches) {
        opened.close();
        call.emit('error', toServiceError(new LoomError('UNAVAILABLE', 'the gRPC server is shutting down; resume the watch from the last seq received'), logger));
      }
      watches.clear();
      let timer: NodeJS.Timeout | undefined;
      const graceful = new Promise<boolean>((resolve) => server.tryShutdown(() => resolve(true)));
      const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), shutdownGraceMsMax)));
      const finished = await Promise.race([graceful, timedOut]);
      clearTimeout(timer);
      if (!finished) {
        logger.warn({ shutdownGraceMsMax }, 'grpc calls still running at shutdown; closing their connections');
        server.forceShutdown();
      }
    },
  };
}

function serviceDefinition(definitions: ReturnType<typeof loadLoomProto>, service: string): grpc.ServiceDefinition {
  const definition = definitions[`loom.v1.${service}`];
  // Message types carry a `format`; services are plain maps of methods.
  if (!definition || 'format' in definition) throw new LoomError('INTERNAL', `proto/loom.proto has no service loom.v1.${service}`);
  return definition as unknown as grpc.ServiceDefinition;
}

/** The same service with request decoding that reports bad bytes to the handler instead of throwing. */
function tolerant(service: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(service)) {
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return method.requestDeserialize(bytes) as unknown;
        } catch (err) {
          return new MalformedRequest((err as Error).message);
        }
      },
    };
  }
  return out as grpc.ServiceDefinition;
}

/** Hand-written encoders for the answers of the hot KV rpcs (kv-wire.ts), proto-loader's for the rest. */
const kvResponseEncoders: Record<string, (message: Record<string, unknown>) => Buffer | undefined> = {
  Put: encodeRevResponse,
  Delete: encodeRevResponse,
  Get: encodeKvGetResponse,
};

function withKvWire(service: grpc.ServiceDefinition, name: string): grpc.ServiceDefinition {
  if (name !== 'KV') return service;
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = { ...service };
  for (const [method, encode] of Object.entries(kvResponseEncoders)) {
    const definition = out[method];
    if (!definition) throw new LoomError('INTERNAL', `proto/loom.proto has no rpc loom.v1.KV.${method}`);
    const fallback = definition.responseSerialize;
    out[method] = { ...definition, responseSerialize: (message: unknown) => encode(message as Record<string, unknown>) ?? fallback(message) };
  }
  return out as grpc.ServiceDefinition;
}

/** A check of the `authorization` metadata, or a no-op without a token. */
function authorizer(token: string | undefined): (authorization: grpc.MetadataValue | undefined) => void {
  if (token === undefined) return () => undefined;
  if (token === '') throw new LoomError('INVALID_ARGUMENT', 'authToken must not be empty (omit it to serve without auth)', { field: 'authToken' });
  // Compare digests, so the comparison takes the same time whatever the length of the guess.
  const expected = createHash('sha256').update(`Bearer ${token}`).digest();
  return (given) => {
    if (given === undefined) throw new LoomError('UNAUTHENTICATED', 'this server needs metadata "authorization: Bearer <token>"');
    const digest = createHash('sha256').update(typeof given === 'string' ? given : given.toString()).digest();
    if (!timingSafeEqual(digest, expected)) throw new LoomError('UNAUTHENTICATED', 'the bearer token is wrong');
  };
}

function deadlineMsOf(deadline: grpc.Deadline): number {
  return deadline instanceof Date ? deadline.getTime() : deadline;
}

function positive(value: number | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1) throw new LoomError('INVALID_ARGUMENT', `${name} must be a positive integer, got ${value}`, { field: name });
  return value;
}
