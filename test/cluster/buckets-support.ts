// Support for the buckets-* cluster suites: object writes and reads over a node's HTTP door that
// never throw (a node killed or cut off mid-request is part of the scenario), gRPC uploads with a
// deadline, SQL rows and listings over HTTP, change messages from the NATS door, and the checks
// that compare what every live replica holds.

import * as grpc from '@grpc/grpc-js';
import { createInbox, type Msg, type NatsConnection } from 'nats';
import type { OperationOutputs } from '../../src/api';
import type { ObjectInfo } from '../../src/projections';
import type { LoomError } from '../../src/util';
import { grpcClient, put, type GrpcClient, type GrpcFailure, type GrpcObjectInfo } from '../support/grpc-buckets';
import { httpRequest, type HttpAnswer } from '../support/http';
import type { TestCluster } from './cluster';

/** The SQL query whose rows are a replica's chunk bookkeeping, in a stable order. */
export const chunkTableQuery = 'SELECT sha256, length, refs, since FROM _loom_chunks ORDER BY sha256';

/** An object's URL path on the HTTP door (the whole name percent-encoded), with `query` appended. */
const objectPath = (bucket: string, name: string, query = ''): string => `/v1/buckets/${bucket}/objects/${encodeURIComponent(name)}${query}`;

/** httpRequest within `timeoutMs`; an exchange that fails or times out answers status -1 with the reason as its body. */
async function exchange(port: number, method: string, urlPath: string, options: Parameters<typeof httpRequest>[3] = {}, timeoutMs = 15_000): Promise<HttpAnswer> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)));
  try {
    return await Promise.race([httpRequest(port, method, urlPath, options), timeout]);
  } catch (err) {
    return { status: -1, headers: {}, body: Buffer.from((err as Error).message) };
  } finally {
    clearTimeout(timer);
  }
}

/** loom's error body: `{ code, message, details }` (NOT_LEADER details name the leader). */
export type ErrorBody = ReturnType<LoomError['toJSON']>;

/** A write's outcome: `result` on 200, loom's `error` body on any other answer, `failure` when no answer came (status -1). */
export interface WriteAnswer<T> {
  status: number;
  result?: T;
  error?: ErrorBody;
  failure?: string;
}

function writeAnswer<T>(answer: HttpAnswer): WriteAnswer<T> {
  if (answer.status === -1) return { status: -1, failure: answer.body.toString() };
  const text = answer.body.toString();
  try {
    const body = JSON.parse(text) as unknown;
    return answer.status === 200 ? { status: 200, result: body as T } : { status: answer.status, error: body as ErrorBody };
  } catch {
    return { status: answer.status, failure: text };
  }
}

/** HTTP PUT of an object on the node at `port`. */
export async function putObject(port: number, bucket: string, name: string, data: Buffer, timeoutMs = 20_000): Promise<WriteAnswer<ObjectInfo>> {
  return writeAnswer(await exchange(port, 'PUT', objectPath(bucket, name), { body: data }, timeoutMs));
}

/** HTTP DELETE of an object on the node at `port`. */
export async function deleteObject(port: number, bucket: string, name: string, timeoutMs = 10_000): Promise<WriteAnswer<OperationOutputs['obj.del']>> {
  return writeAnswer(await exchange(port, 'DELETE', objectPath(bucket, name), {}, timeoutMs));
}

/** HTTP GET of an object (`query` such as `?consistency=linearizable`): the whole answer, status -1 if none came. */
export function getObject(port: number, bucket: string, name: string, query = '', timeoutMs = 15_000): Promise<HttpAnswer> {
  return exchange(port, 'GET', objectPath(bucket, name, query), {}, timeoutMs);
}

/** The names of every object in `bucket` on the node at `port`, following cursors, sorted. */
export async function listNames(port: number, bucket: string, query = ''): Promise<string[]> {
  const names: string[] = [];
  let cursor: string | undefined;
  do {
    const sep = query ? '&' : '?';
    const answer = await httpRequest(port, 'GET', `/v1/buckets/${bucket}/objects${query}${cursor ? `${sep}cursor=${cursor}` : ''}`);
    if (answer.status !== 200) throw new Error(`listing ${bucket} on port ${port}: ${answer.status} ${answer.body.toString()}`);
    const page = JSON.parse(answer.body.toString()) as OperationOutputs['obj.list'];
    names.push(...page.items.map((i) => i.name));
    cursor = page.cursor;
  } while (cursor);
  return names.sort();
}

/** The rows of a read-only SQL query on the node at `port` (up to 10,000); throws if it fails. */
export async function sqlRows(port: number, sql: string): Promise<unknown[][]> {
  const answer = await httpRequest(port, 'POST', '/v1/sql', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sql, limit: 10_000 }) });
  if (answer.status !== 200) throw new Error(`SQL on port ${port} failed: ${answer.status} ${answer.body.toString()}`);
  return (JSON.parse(answer.body.toString()) as OperationOutputs['sql.query']).rows;
}

/** A Buckets client of the node at `port` whose every call fails DEADLINE_EXCEEDED after `deadlineMs` rather than hang. */
export function bucketsClient(port: number, deadlineMs = 20_000): GrpcClient {
  const deadline: grpc.Interceptor = (options, next) => new grpc.InterceptingCall(next({ ...options, deadline: options.deadline ?? Date.now() + deadlineMs }));
  return grpcClient('Buckets', port, { interceptors: [deadline] });
}

/** Buckets.Put of `data`: the header (with its size), then 1 MiB data pieces. */
export function grpcUpload(client: GrpcClient, bucket: string, name: string, data: Buffer): Promise<{ err?: GrpcFailure; info?: GrpcObjectInfo }> {
  const pieces: Array<Record<string, unknown>> = [];
  for (let at = 0; at < data.length; at += 1024 * 1024) pieces.push({ data: data.subarray(at, at + 1024 * 1024) });
  return put(client, [{ header: { bucket, name, size: data.length } }, ...pieces]);
}

/** A change message as delivered on a `$OBJ` subject or a watch inbox: its subject and Loom-* headers. */
export interface ChangeMessage {
  subject: string;
  op: string;
  rev: number;
  seq: number;
  /** Loom-Error: the message that ends a watch which cannot go on. */
  error?: string;
}

/** Records every message on `subject` in the returned array as it arrives; subscribed once the server has it. */
export async function recordChanges(nc: NatsConnection, subject: string): Promise<ChangeMessage[]> {
  const seen: ChangeMessage[] = [];
  const sub = nc.subscribe(subject);
  void (async () => {
    for await (const m of sub) {
      const h = m.headers;
      seen.push({ subject: m.subject, op: h?.get('Loom-Op') ?? '', rev: Number(h?.get('Loom-Rev')), seq: Number(h?.get('Loom-Seq')), error: h?.get('Loom-Error') || undefined });
    }
  })();
  await nc.flush();
  return seen;
}

/** Starts a `$LOOM.API.WATCH` of `filter` (from `fromSeq`, or live only) delivered to a fresh inbox: the reply and the recorded changes. */
export async function watchChanges(nc: NatsConnection, filter: string, fromSeq?: number): Promise<{ reply: Msg; changes: ChangeMessage[] }> {
  const inbox = createInbox();
  const changes = await recordChanges(nc, inbox);
  const reply = await nc.request('$LOOM.API.WATCH', Buffer.from(JSON.stringify({ subject: filter, fromSeq, deliver: inbox })), { timeout: 5000 });
  return { reply, changes };
}

/** Waits until every live node has applied what `leader` has committed. */
export async function waitCaughtUp(cluster: TestCluster, leader: number, timeoutMs = 30_000): Promise<void> {
  await cluster.waitConverged((await cluster.status(leader))!.commit, timeoutMs);
}

/** How many different answers `read` gets from the live nodes' HTTP ports (1 when the replicas agree). */
export async function distinctViews(cluster: TestCluster, read: (httpPort: number) => Promise<unknown>): Promise<number> {
  const views = new Set<string>();
  for (const n of cluster.live()) views.add(JSON.stringify(await read(n.ports.http)));
  return views.size;
}

/** Every way the live nodes differ from `expected` (bytes, or null for deleted: 404) in `bucket`, each labelled. */
export async function objectProblems(cluster: TestCluster, bucket: string, expected: Map<string, Buffer | null>, label = ''): Promise<string[]> {
  const problems: string[] = [];
  for (const n of cluster.live()) {
    for (const [name, data] of expected) {
      const got = await getObject(n.ports.http, bucket, name);
      const ok = data === null ? got.status === 404 : got.status === 200 && got.body.equals(data);
      if (!ok) problems.push(`${label}node${n.id} ${data === null ? 'deleted' : 'stored'} ${name}: ${got.status} ${got.body.toString().slice(0, 150)}`);
    }
  }
  return problems;
}
