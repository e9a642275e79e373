// A small promise client for the gRPC door, for these tests and for the shared conformance suite:
// it takes the operations' inputs (camelCase, as in src/api/operations.ts), returns plain JS results
// and throws a GrpcDoorError carrying the loom code from the `loom-error` trailer.

import * as grpc from '@grpc/grpc-js';
import type { ClusterStatus, OperationInput, OperationOutputs } from '../../../src/api/operations';
import { errorDetailsTrailer, errorTrailer, loadLoomProto } from '../../../src/api/grpc';
import type { Change } from '../../../src/projections';

/** A failed call: `code` is the loom code (from the trailer, or derived from the status without one). */
export class GrpcDoorError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown>,
    readonly grpcCode: grpc.status,
    /** Whether the server sent the `loom-error` trailer (transport-level failures do not). */
    readonly fromTrailer: boolean,
  ) {
    super(message);
    this.name = 'GrpcDoorError';
  }
}

/** The loom code a status means when the server sent no trailer (limits and deadlines of grpc-js). */
const codeOfStatus: Partial<Record<grpc.status, string>> = {
  [grpc.status.INVALID_ARGUMENT]: 'INVALID_ARGUMENT',
  [grpc.status.UNAUTHENTICATED]: 'UNAUTHENTICATED',
  [grpc.status.NOT_FOUND]: 'NOT_FOUND',
  [grpc.status.FAILED_PRECONDITION]: 'CONFLICT',
  [grpc.status.ALREADY_EXISTS]: 'CONFLICT',
  [grpc.status.RESOURCE_EXHAUSTED]: 'TOO_LARGE',
  [grpc.status.UNAVAILABLE]: 'UNAVAILABLE',
  [grpc.status.DEADLINE_EXCEEDED]: 'TIMEOUT',
  [grpc.status.CANCELLED]: 'CANCELLED',
};

export function doorError(err: grpc.ServiceError): GrpcDoorError {
  const trailer = err.metadata?.get(errorTrailer)[0];
  const detailsText = err.metadata?.get(errorDetailsTrailer)[0];
  const details = detailsText === undefined ? {} : (JSON.parse(String(detailsText)) as Record<string, unknown>);
  const code = trailer === undefined ? (codeOfStatus[err.code] ?? 'INTERNAL') : String(trailer);
  return new GrpcDoorError(code, err.details ?? err.message, details, err.code, trailer !== undefined);
}

export interface CallOptions {
  /** Deadline of the call, in ms from now. */
  deadlineMs?: number;
}

export interface DoorWatch extends AsyncIterable<Change> {
  /** Cancels the call; the iteration then ends quietly. */
  close(): void;
}

export interface GrpcDoor {
  kvPut(input: OperationInput<'kv.put'>, options?: CallOptions): Promise<OperationOutputs['kv.put']>;
  kvGet(input: OperationInput<'kv.get'>, options?: CallOptions): Promise<OperationOutputs['kv.get']>;
  kvDel(input: OperationInput<'kv.del'>, options?: CallOptions): Promise<OperationOutputs['kv.del']>;
  kvList(input: OperationInput<'kv.list'>, options?: CallOptions): Promise<OperationOutputs['kv.list']>;
  evAppend(input: OperationInput<'ev.append'>, options?: CallOptions): Promise<OperationOutputs['ev.append']>;
  evRead(input: OperationInput<'ev.read'>, options?: CallOptions): Promise<OperationOutputs['ev.read']>;
  sqlQuery(input: OperationInput<'sql.query'>, options?: CallOptions): Promise<OperationOutputs['sql.query']>;
  status(options?: CallOptions): Promise<ClusterStatus>;
  watch(subject: string, options?: { fromSeq?: number }): DoorWatch;
  /** The raw grpc-js clients, by service name, for tests of the wire itself. */
  readonly clients: Record<'KV' | 'Events' | 'SQL' | 'Watch' | 'Cluster', grpc.Client>;
  close(): void;
}

type Message = Record<string, unknown>;
type ClientConstructor = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ClientOptions) => grpc.Client;

export function grpcDoor(port: number, token?: string, host = '127.0.0.1'): GrpcDoor {
  const loaded = grpc.loadPackageDefinition(loadLoomProto()) as unknown as { loom: { v1: Record<string, ClientConstructor> } };
  const address = `${host}:${port}`;
  const make = (service: string): grpc.Client => new loaded.loom.v1[service](address, grpc.credentials.createInsecure());
  const clients = { KV: make('KV'), Events: make('Events'), SQL: make('SQL'), Watch: make('Watch'), Cluster: make('Cluster') };

  const metadata = (): grpc.Metadata => {
    const m = new grpc.Metadata();
    if (token !== undefined) m.set('authorization', `Bearer ${token}`);
    return m;
  };

  function unary(client: grpc.Client, method: string, request: Message, options: CallOptions = {}): Promise<Message> {
    const callOptions: grpc.CallOptions = options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs };
    return new Promise((resolve, reject) => {
      const fn = (client as unknown as Record<string, Function>)[method].bind(client) as (
        r: Message,
        m: grpc.Metadata,
        o: grpc.CallOptions,
        cb: (err: grpc.ServiceError | null, res?: Message) => void,
      ) => void;
      fn(request, metadata(), callOptions, (err, response) => (err ? reject(doorError(err)) : resolve(response as Message)));
    });
  }

  return {
    clients,
    async kvPut(i, o) {
      const r = await unary(clients.KV, 'Put', { bucket: i.bucket, key: i.key, value: Buffer.from(i.value), expect_rev: i.expectRev, create: i.create, ttl_ms: i.ttlMs }, o);
      return { rev: r.rev as number };
    },
    async kvGet(i, o) {
      const r = await unary(clients.KV, 'Get', { bucket: i.bucket, key: i.key, consistency: i.consistency, at_least: i.atLeast }, o);
      const entry: OperationOutputs['kv.get'] = {
        bucket: r.bucket as string,
        key: r.key as string,
        value: new Uint8Array(r.value as Buffer),
        rev: r.rev as number,
        createRev: r.create_rev as number,
        updatedAt: r.updated_at as number,
      };
      if (r.expires_at !== undefined) entry.expiresAt = r.expires_at as number;
      return entry;
    },
    async kvDel(i, o) {
      const r = await unary(clients.KV, 'Delete', { bucket: i.bucket, key: i.key, expect_rev: i.expectRev }, o);
      return { rev: r.rev as number };
    },
    async kvList(i, o) {
      const r = await unary(clients.KV, 'List', { bucket: i.bucket, prefix: i.prefix, limit: i.limit, cursor: i.cursor, consistency: i.consistency, at_least: i.atLeast }, o);
      const page: OperationOutputs['kv.list'] = { items: (r.items as Message[]).map((item) => ({ key: item.key as string, rev: item.rev as number })) };
      if (r.cursor !== undefined) page.cursor = r.cursor as string;
      return page;
    },
    async evAppend(i, o) {
      const data = i.data === undefined ? '' : JSON.stringify(i.data);
      const r = await unary(clients.Events, 'Append', { stream: i.stream, type: i.type, data, expect_version: i.expectVersion }, o);
      return { seq: r.seq as number, version: r.version as number };
    },
    async evRead(i, o) {
      const r = await unary(clients.Events, 'Read', { stream: i.stream, from_version: i.fromVersion, limit: i.limit, consistency: i.consistency, at_least: i.atLeast }, o);
      const events = (r.events as Message[]).map((e) => ({
        seq: e.seq as number,
        stream: e.stream as string,
        version: e.version as number,
        type: e.type as string,
        data: JSON.parse(e.data as string) as unknown,
        ts: e.ts as number,
      }));
      return { events };
    },
    async sqlQuery(i, o) {
      const params = i.params === undefined ? undefined : JSON.stringify(i.params);
      const r = await unary(clients.SQL, 'Query', { sql: i.sql, params, limit: i.limit, cursor: i.cursor, consistency: i.consistency, at_least: i.atLeast }, o);
      const result: OperationOutputs['sql.query'] = { columns: r.columns as string[], rows: (r.rows as string[]).map((row) => JSON.parse(row) as unknown[]) };
      if (r.cursor !== undefined) result.cursor = r.cursor as string;
      return result;
    },
    async status(o) {
      const r = await unary(clients.Cluster, 'Status', {}, o);
      return {
        nodeId: r.node_id as number,
        role: r.role as ClusterStatus['role'],
        leader: r.leader === undefined ? null : (r.leader as number),
        term: r.term as number,
        commit: r.commit as number,
        applied: r.applied as number,
        members: (r.members as Message[]).map((m) => ({ id: m.id as number, role: m.role as string })),
      };
    },
    watch(subject, options = {}) {
      const call = (clients.Watch as unknown as { Watch(r: Message, m: grpc.Metadata): grpc.ClientReadableStream<Message> }).Watch(
        { subject, from_seq: options.fromSeq },
        metadata(),
      );
      let closed = false;
      // A watch closed before anyone iterates it still gets its CANCELLED status: without a
      // listener, that 'error' event would be thrown. The stream keeps the error for iteration.
      call.on('error', () => undefined);
      async function* changes(): AsyncGenerator<Change> {
        try {
          // The stream's async iterator reads only as fast as we consume: HTTP/2 flow control then
          // holds the server back, which is what the server's own flow control relies on.
          for await (const message of call) yield changeOf(message as Message);
        } catch (err) {
          if (closed && (err as grpc.ServiceError).code === grpc.status.CANCELLED) return;
          throw doorError(err as grpc.ServiceError);
        }
      }
      const iterator = changes();
      return {
        [Symbol.asyncIterator]: () => iterator,
        close() {
          closed = true;
          call.cancel();
        },
      };
    },
    close() {
      for (const client of Object.values(clients)) client.close();
    },
  };
}

function changeOf(m: Message): Change {
  const common = { seq: m.seq as number, subject: m.subject as string, ts: m.ts as number };
  if (m.change === 'kv') {
    const kv = m.kv as Message;
    return { kind: 'kv', ...common, op: kv.op as 'PUT' | 'DEL', bucket: kv.bucket as string, key: kv.key as string, value: new Uint8Array(kv.value as Buffer) };
  }
  const ev = m.event as Message;
  return { kind: 'event', ...common, stream: ev.stream as string, type: ev.type as string, version: ev.version as number, data: JSON.parse(ev.data as string) as unknown };
}
