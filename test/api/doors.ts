// One client shape over the four ways into loom — the embedded API, the NATS door through the raw
// `nats` client, gRPC, and HTTP through fetch — so that one conformance suite runs against all.

import { connect as natsConnect, createInbox, headers as natsHeaders, type MsgHdrs, type NatsConnection } from 'nats';
import type { EmbeddedNode } from '../../src';
import type { ClusterStatus } from '../../src/api';
import { grpcDoor } from './grpc/adapter';

export interface DoorError extends Error {
  code: string;
  details?: Record<string, unknown>;
}

export interface ReadOpts {
  atLeast?: number;
  timeoutMs?: number;
}

export interface Door {
  name: string;
  put(bucket: string, key: string, value: Buffer, opts?: { expectRev?: number; create?: boolean }): Promise<{ rev: number }>;
  get(bucket: string, key: string, opts?: ReadOpts): Promise<{ value: Buffer; rev: number }>;
  del(bucket: string, key: string, opts?: { expectRev?: number }): Promise<{ rev: number }>;
  list(bucket: string, opts?: { prefix?: string; limit?: number; cursor?: string }): Promise<{ items: Array<{ key: string; rev: number }>; cursor?: string }>;
  append(stream: string, event: { type: string; data: unknown; expectVersion?: number }): Promise<{ seq: number; version: number }>;
  read(stream: string, opts?: { fromVersion?: number; limit?: number }): Promise<Array<{ seq: number; version: number; type: string; data: unknown }>>;
  sql(query: { sql: string; params?: unknown[]; limit?: number; cursor?: string }): Promise<{ columns: string[]; rows: unknown[][]; cursor?: string }>;
  status(): Promise<ClusterStatus>;
  /** The first `count` changes matching `subject` after `fromSeq`, as seq:subject. */
  watch(subject: string, fromSeq: number, count: number): Promise<string[]>;
  close(): Promise<void>;
}

function doorError(code: string, message: string, details?: Record<string, unknown>): DoorError {
  return Object.assign(new Error(message), { code, details });
}

/** Runs a call, turning whatever error it throws into a plain DoorError with the same code. */
async function wrap<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const e = err as DoorError;
    throw doorError(e.code, e.message, e.details);
  }
}

/** The embedded API: the same calls the doors make, with no network. */
export function embeddedDoor(node: EmbeddedNode): Door {
  return {
    name: 'embedded',
    put: (b, k, v, o = {}) => wrap(() => node.kv.put(b, k, v, o)),
    get: (b, k, o = {}) => wrap(async () => {
      const entry = await node.kv.get(b, k, o);
      return { value: Buffer.from(entry.value), rev: entry.rev };
    }),
    del: (b, k, o = {}) => wrap(() => node.kv.delete(b, k, o)),
    list: (b, o = {}) => wrap(() => node.kv.list(b, o)),
    append: (s, e) => wrap(() => node.events.append(s, e)),
    read: (s, o = {}) => wrap(() => node.events.read(s, o)),
    sql: (q) => wrap(() => node.sql.query(q)),
    status: () => wrap(async () => {
      const status = node.db.core.status();
      return { nodeId: 1, role: status.leader ? 'leader' : 'follower', leader: 1, term: status.term, commit: status.commitIndex, applied: status.appliedIndex, members: [{ id: 1, role: 'voter' }] } as ClusterStatus;
    }),
    watch: (subject, fromSeq, count) => wrap(async () => {
      const out: string[] = [];
      const watch = node.watch(subject, { fromSeq });
      for await (const change of watch) {
        out.push(`${change.seq}:${change.subject}`);
        if (out.length === count) break;
      }
      return out;
    }),
    close: async () => undefined,
  };
}

/** The NATS door through the raw `nats` client: subjects, headers and JSON as CONTRACT.md says. */
export async function natsDoor(port: number, token?: string): Promise<Door> {
  const nc: NatsConnection = await natsConnect({ servers: `127.0.0.1:${port}`, ...(token ? { token } : {}) });
  const call = async (subject: string, data: Uint8Array = new Uint8Array(0), headers?: Record<string, string>) => {
    let h: MsgHdrs | undefined;
    if (headers) {
      h = natsHeaders();
      for (const [k, v] of Object.entries(headers)) h.set(k, v);
    }
    const reply = await nc.request(subject, data, { timeout: 10_000, ...(h ? { headers: h } : {}) });
    const code = reply.headers?.get('Loom-Error');
    if (code) {
      const body = JSON.parse(reply.string()) as { message: string; details: Record<string, unknown> };
      throw doorError(code, body.message, body.details);
    }
    return reply;
  };
  const json = (v: unknown) => Buffer.from(JSON.stringify(v));
  const readHeaders = (o: ReadOpts = {}): Record<string, string> | undefined => {
    const h: Record<string, string> = {};
    if (o.atLeast !== undefined) h['Loom-At-Least'] = String(o.atLeast);
    if (o.timeoutMs !== undefined) h['Loom-Timeout-Ms'] = String(o.timeoutMs);
    return Object.keys(h).length ? h : undefined;
  };
  return {
    name: 'nats',
    put: async (b, k, v, o = {}) => {
      const h: Record<string, string> = {};
      if (o.expectRev !== undefined) h['Loom-Expect-Rev'] = String(o.expectRev);
      if (o.create) h['Loom-Create'] = '1';
      return (await call(`$LOOM.API.KV.PUT.${b}.${k}`, v, Object.keys(h).length ? h : undefined)).json();
    },
    get: async (b, k, o) => {
      const reply = await call(`$LOOM.API.KV.GET.${b}.${k}`, undefined, readHeaders(o));
      return { value: Buffer.from(reply.data), rev: Number(reply.headers?.get('Loom-Rev')) };
    },
    del: async (b, k, o = {}) => (await call(`$LOOM.API.KV.DEL.${b}.${k}`, undefined, o.expectRev !== undefined ? { 'Loom-Expect-Rev': String(o.expectRev) } : undefined)).json(),
    list: async (b, o = {}) => (await call(`$LOOM.API.KV.LIST.${b}`, json(o))).json(),
    append: async (s, e) => (await call(`$LOOM.API.EV.APPEND.${s}`, json(e))).json(),
    read: async (s, o = {}) => (await call(`$LOOM.API.EV.READ.${s}`, json(o))).json<{ events: never[] }>().events,
    sql: async (q) => (await call('$LOOM.API.SQL.QUERY', json(q))).json(),
    status: async () => (await call('$LOOM.API.CLUSTER.STATUS')).json(),
    watch: async (subject, fromSeq, count) => {
      const deliver = createInbox();
      const sub = nc.subscribe(deliver, { max: count });
      await call('$LOOM.API.WATCH', json({ subject, fromSeq, deliver }));
      const out: string[] = [];
      for await (const msg of sub) {
        const code = msg.headers?.get('Loom-Error');
        if (code) throw doorError(code, msg.string());
        out.push(`${msg.headers?.get('Loom-Seq')}:${msg.headers?.get('Loom-Subject')}`);
      }
      return out;
    },
    close: () => nc.close(),
  };
}

/** The gRPC door through @grpc/grpc-js. */
export function grpcAdapterDoor(port: number, token?: string): Door {
  const g = grpcDoor(port, token);
  return {
    name: 'grpc',
    put: (b, k, v, o = {}) => wrap(() => g.kvPut({ bucket: b, key: k, value: new Uint8Array(v), ...o })),
    get: (b, k, o = {}) =>
      wrap(async () => {
        const { timeoutMs, ...rest } = o;
        const entry = await g.kvGet({ bucket: b, key: k, ...rest }, timeoutMs !== undefined ? { deadlineMs: timeoutMs } : {});
        return { value: Buffer.from(entry.value), rev: entry.rev };
      }),
    del: (b, k, o = {}) => wrap(() => g.kvDel({ bucket: b, key: k, ...o })),
    list: (b, o = {}) => wrap(() => g.kvList({ bucket: b, ...o })),
    append: (s, e) => wrap(() => g.evAppend({ stream: s, ...e })),
    read: (s, o = {}) => wrap(async () => (await g.evRead({ stream: s, ...o })).events),
    sql: (q) => wrap(() => g.sqlQuery(q)),
    status: () => wrap(() => g.status()),
    watch: (subject, fromSeq, count) =>
      wrap(async () => {
        const out: string[] = [];
        const watch = g.watch(subject, { fromSeq });
        for await (const change of watch) {
          out.push(`${change.seq}:${change.subject}`);
          if (out.length === count) break;
        }
        watch.close();
        return out;
      }),
    close: async () => g.close(),
  };
}

/** The HTTP door through fetch. */
export function httpDoor(port: number, token?: string): Door {
  const base = `http://127.0.0.1:${port}`;
  const auth: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  // Responses are JSON of the shape the Door method promises; the suite checks the values.
  const call = async (method: string, path: string, body?: Buffer | unknown, raw = false): Promise<{ json(): Promise<never>; arrayBuffer(): Promise<ArrayBuffer>; headers: Headers }> => {
    const init: RequestInit = { method, headers: { ...auth } };
    if (body !== undefined) {
      init.body = raw ? new Uint8Array(body as Buffer) : JSON.stringify(body);
      (init.headers as Record<string, string>)['content-type'] = raw ? 'application/octet-stream' : 'application/json';
    }
    const response = await fetch(`${base}${path}`, init);
    if (!response.ok) {
      const error = (await response.json()) as { code: string; message: string; details: Record<string, unknown> };
      throw doorError(error.code, error.message, error.details);
    }
    return response as unknown as { json(): Promise<never>; arrayBuffer(): Promise<ArrayBuffer>; headers: Headers };
  };
  const qs = (o: Record<string, unknown>): string => {
    const entries = Object.entries(o).filter(([, v]) => v !== undefined);
    return entries.length ? `?${new URLSearchParams(entries.map(([k, v]): [string, string] => [k, String(v)])).toString()}` : '';
  };
  return {
    name: 'http',
    put: async (b, k, v, o = {}) => (await call('PUT', `/v1/kv/${b}/${encodeURI(k)}${qs({ expectRev: o.expectRev, create: o.create ? 1 : undefined })}`, v, true)).json(),
    get: async (b, k, o = {}) => {
      const response = await call('GET', `/v1/kv/${b}/${encodeURI(k)}${qs({ ...o })}`);
      return { value: Buffer.from(await response.arrayBuffer()), rev: Number(response.headers.get('loom-rev')) };
    },
    del: async (b, k, o = {}) => (await call('DELETE', `/v1/kv/${b}/${encodeURI(k)}${qs({ ...o })}`)).json(),
    list: async (b, o = {}) => (await call('GET', `/v1/kv/${b}${qs({ ...o })}`)).json(),
    append: async (s, e) => (await call('POST', `/v1/events/${s}`, e)).json(),
    read: async (s, o = {}) => ((await (await call('GET', `/v1/events/${s}${qs({ ...o })}`)).json()) as { events: never[] }).events,
    sql: async (q) => (await call('POST', '/v1/sql', q)).json(),
    status: async () => (await call('GET', '/v1/cluster/status')).json(),
    watch: async (subject, fromSeq, count) => {
      const controller = new AbortController();
      const response = await fetch(`${base}/v1/watch${qs({ subject, fromSeq })}`, { headers: auth, signal: controller.signal });
      if (!response.ok) {
        const error = (await response.json()) as { code: string; message: string };
        throw doorError(error.code, error.message);
      }
      const out: string[] = [];
      const decoder = new TextDecoder();
      let buffered = '';
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      while (out.length < count) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += decoder.decode(value, { stream: true });
        let end: number;
        while ((end = buffered.indexOf('\n\n')) >= 0 && out.length < count) {
          const event = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const id = /^id: (\d+)$/m.exec(event)?.[1];
          const data = /^data: (.*)$/m.exec(event)?.[1];
          if (/^event: error$/m.test(event) && data) {
            const error = JSON.parse(data) as { code: string; message: string };
            throw doorError(error.code, error.message);
          }
          if (id && data) out.push(`${id}:${(JSON.parse(data) as { subject: string }).subject}`);
        }
      }
      controller.abort();
      return out;
    },
    close: async () => undefined,
  };
}
