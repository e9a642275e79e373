// A grpc-js client of a loom node's Buckets and SQL services, built from proto/loom.proto with the
// proto-loader options every loom gRPC peer uses (loadLoomProto), and promise wrappers around its
// calls. The wrappers never throw on a failed call: they hand back the failure (gRPC status,
// details and the `loom-error` trailer) next to whatever arrived before it, for tests that assert
// on the failure itself or on the bytes a download delivered before failing.

import * as grpc from '@grpc/grpc-js';
import { errorTrailer, loadLoomProto } from '../../src/api/grpc';
import type { ObjectInfo } from '../../src/projections';

type Ctor = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => grpc.Client;

/** A client of one loom.v1 service; its methods go by their proto names (`Put`, `Stat`, `Query`). */
export type GrpcClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

/** A client of `service` on 127.0.0.1:`port`; `options` are channel options (a wider receive window, say). */
export function grpcClient(service: 'Buckets' | 'SQL', port: number, options: grpc.ChannelOptions = {}): GrpcClient {
  const loaded = grpc.loadPackageDefinition(loadLoomProto()) as unknown as { loom: { v1: Record<string, Ctor> } };
  return new loaded.loom.v1[service](`127.0.0.1:${port}`, grpc.credentials.createInsecure(), options) as GrpcClient;
}

/** A failed call: the gRPC status, its details and the loom code from the `loom-error` trailer. */
export interface GrpcFailure {
  code: grpc.status;
  details: string;
  loom: string | undefined;
}

/** `Name` in snake_case, as the .proto spells fields: `chunkBytes` → `chunk_bytes`. */
type SnakeCase<Name extends string> = Name extends `${infer Head}${infer Tail}` ? `${Head extends Lowercase<Head> ? Head : `_${Lowercase<Head>}`}${SnakeCase<Tail>}` : Name;

/** ObjectInfo as a grpc-js client decodes it: the node's ObjectInfo with snake_case field names. */
export type GrpcObjectInfo = { [Key in keyof ObjectInfo & string as SnakeCase<Key>]: ObjectInfo[Key] };

function failure(err: grpc.ServiceError): GrpcFailure {
  const trailer = err.metadata?.get(errorTrailer)[0];
  return { code: err.code, details: err.details, loom: trailer === undefined ? undefined : String(trailer) };
}

/** Buckets.Put: writes `messages` (header first, then data pieces, as given) and half-closes. */
export function put(client: GrpcClient, messages: Array<Record<string, unknown>>): Promise<{ err?: GrpcFailure; info?: GrpcObjectInfo }> {
  return new Promise((resolve) => {
    const call = client.Put((err: grpc.ServiceError | null, info: GrpcObjectInfo) => resolve(err ? { err: failure(err) } : { info })) as grpc.ClientWritableStream<unknown>;
    for (const message of messages) call.write(message);
    call.end();
  });
}

/** Buckets.Get: the info and the bytes received, and the failure that ended the download early, if any. */
export function get(client: GrpcClient, request: Record<string, unknown>): Promise<{ err?: GrpcFailure; info?: GrpcObjectInfo; data: Buffer }> {
  return new Promise((resolve) => {
    const call = client.Get(request) as grpc.ClientReadableStream<{ info?: GrpcObjectInfo | null; data?: Buffer }>;
    const pieces: Buffer[] = [];
    let info: GrpcObjectInfo | undefined;
    call.on('data', (m: { info?: GrpcObjectInfo | null; data?: Buffer }) => {
      if (m.info) info = m.info;
      if (m.data) pieces.push(m.data);
    });
    call.on('error', (err: grpc.ServiceError) => resolve({ err: failure(err), info, data: Buffer.concat(pieces) }));
    call.on('end', () => resolve({ info, data: Buffer.concat(pieces) }));
  });
}

/** A unary call by its proto name (`Stat`, `List`, `Delete`, `Query`). */
export function unary<T = Record<string, unknown>>(client: GrpcClient, method: string, request: Record<string, unknown>): Promise<{ err?: GrpcFailure; res?: T }> {
  return new Promise((resolve) => client[method](request, (err: grpc.ServiceError | null, res: T) => resolve(err ? { err: failure(err) } : { res })));
}

/** SQL.Query: the rows, each decoded from its JSON array; throws if the query fails. */
export async function sql(client: GrpcClient, query: string, params?: unknown[]): Promise<unknown[][]> {
  const { err, res } = await unary<{ rows: string[] }>(client, 'Query', { sql: query, params: params && JSON.stringify(params) });
  if (err) throw new Error(`SQL failed: ${err.details}`);
  return res!.rows.map((row) => JSON.parse(row) as unknown[]);
}
