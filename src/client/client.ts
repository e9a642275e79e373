// The TypeScript client SDK over the official `nats` client: KV, event streams, SQL and a watch
// that resumes by itself from the last seq it delivered after any disconnect. It speaks only the
// wire contract ($LOOM.API.*, CONTRACT.md), so it works against any loom node.

import { connect as natsConnect, createInbox, headers as natsHeaders, type ConnectionOptions, type MsgHdrs, type NatsConnection, type Subscription } from 'nats';
import { LoomError, errorCodes, names, type ErrorCode } from '../util';

export interface ClientOptions {
  /** NATS URLs of loom nodes, e.g. `nats://127.0.0.1:4222`. */
  servers: string | string[];
  token?: string;
  /** Per-request time limit. */
  timeoutMs?: number;
  /** Passed through to the nats client (reconnect settings, name, …). */
  nats?: Partial<ConnectionOptions>;
}

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

export type WatchChange =
  | { kind: 'kv'; seq: number; subject: string; op: 'PUT' | 'DEL'; value: Uint8Array }
  | { kind: 'event'; seq: number; subject: string; version: number; data: unknown };

export interface ClientWatch extends AsyncIterableIterator<WatchChange> {
  /** The seq of the last change delivered: resume from here. */
  readonly lastSeq: number;
  close(): void;
}

const json = (value: unknown): Uint8Array => Buffer.from(JSON.stringify(value));

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

  private constructor(
    readonly nc: NatsConnection,
    private readonly timeoutMs: number,
  ) {}

  static async connect(options: ClientOptions): Promise<LoomClient> {
    const nc = await natsConnect({
      servers: options.servers,
      ...(options.token ? { token: options.token } : {}),
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      ...options.nats,
    });
    return new LoomClient(nc, options.timeoutMs ?? 10_000);
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

  async close(): Promise<void> {
    await this.nc.drain();
  }

  /** Sends a request; a reply carrying `Loom-Error` becomes a LoomError with the same code. */
  async request(subject: string, data: Uint8Array, headers?: MsgHdrs): Promise<{ data: Uint8Array; headers?: MsgHdrs }> {
    let reply;
    try {
      reply = await this.nc.request(subject, data, { timeout: this.timeoutMs, ...(headers ? { headers } : {}) });
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
        const subject = msg.headers?.get('Loom-Subject') ?? '';
        const version = msg.headers?.get('Loom-Version');
        const change: WatchChange =
          version !== undefined && version !== ''
            ? { kind: 'event', seq, subject, version: Number(version), data: JSON.parse(Buffer.from(msg.data).toString('utf8')) }
            : { kind: 'kv', seq, subject, op: (msg.headers?.get('Loom-Op') as 'PUT' | 'DEL') ?? 'PUT', value: msg.data };
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
