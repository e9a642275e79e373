// The database's operations as one API — KV, event streams, SQL queries, watch — used unchanged by
// embedders and by every door. Writes become log entries; reads go to the views at a named
// consistency level; CONFLICT outcomes become LoomErrors with the current revision.

import {
  type BlobReader,
  checkBucket,
  checkKey,
  checkLimit,
  checkSeq,
  checkStream,
  encodeMutation,
  listLimitDefault,
  listLimitMax,
  readLimitDefault,
  readLimitMax,
  type KvListPage,
  type KvReader,
  type MutationType,
  type Outcome,
  type StoredEvent,
} from '../projections';
import { LoomError } from '../util';
import type { Core } from './core';
import type { ClusterMembership } from './replicator';
import { ObjectsApi, type ObjectsLimits } from './objects';
import { watchChanges, type ChangeFeed, type Watch } from './watch';

export type Consistency = 'local' | 'linearizable';

export interface ReadOptions {
  consistency?: Consistency;
  /** Wait until this node has applied at least this seq (read-your-writes). */
  atLeast?: number;
  /** Longest wait for `atLeast` or `linearizable`, in ms. */
  timeoutMs?: number;
}

export interface PutOptions {
  expectRev?: number;
  create?: boolean;
  ttlMs?: number;
}

export interface KvEntry {
  bucket: string;
  key: string;
  value: Uint8Array;
  rev: number;
  createRev: number;
  updatedAt: number;
  expiresAt?: number;
}

export interface AppendInput {
  type: string;
  data: unknown;
  expectVersion?: number;
}

export interface EventRecord {
  seq: number;
  stream: string;
  version: number;
  type: string;
  data: unknown;
  ts: number;
}

export interface SqlQueryInput {
  sql: string;
  params?: unknown[] | Record<string, unknown>;
  limit?: number;
  cursor?: string;
}

export interface SqlResult {
  columns: string[];
  rows: unknown[][];
  cursor?: string;
}

/** The SQL side, provided by the SQL view (absent in nodes built without it). */
export interface SqlQueries {
  query(input: SqlQueryInput): Promise<SqlResult>;
}

/** What reads the views; replaced as a whole when a snapshot replaces the views. */
export interface ViewReaders {
  reader: KvReader;
  /** The blob view's reads (Buckets); absent in databases built without it. */
  blobs?: BlobReader;
  sql?: SqlQueries;
}

export interface DatabaseParts {
  core: Core;
  /** The current views' readers; throws UNAVAILABLE while a snapshot replaces them. */
  views: () => ViewReaders;
  feed: ChangeFeed;
  objectLimits?: ObjectsLimits;
  /** Runtime membership of the replicated group; absent on a single voter. */
  membership?: ClusterMembership;
}

export class Database {
  readonly kv: KvApi;
  readonly events: EventsApi;
  private readonly parts: DatabaseParts;
  private readonly objectsApi: ObjectsApi | undefined;

  constructor(parts: DatabaseParts) {
    this.parts = parts;
    this.kv = new KvApi(this);
    this.events = new EventsApi(this);
    this.objectsApi = parts.views().blobs ? new ObjectsApi(this, () => parts.views().blobs as BlobReader, parts.objectLimits) : undefined;
  }

  /** Buckets: chunked, content-addressed objects (docs/buckets.md). */
  get objects(): ObjectsApi {
    if (!this.objectsApi) throw new LoomError('UNAVAILABLE', 'this database has no blob view');
    return this.objectsApi;
  }

  get core(): Core {
    return this.parts.core;
  }

  /** Membership changes and leadership transfer; INVALID_ARGUMENT on a node without --peers. */
  get membership(): ClusterMembership {
    if (!this.parts.membership) throw new LoomError('INVALID_ARGUMENT', 'this node is not part of a replicated group (started without --peers)');
    return this.parts.membership;
  }

  get reader(): KvReader {
    return this.parts.views().reader;
  }

  /** Proposes a validated mutation and turns a CONFLICT outcome into a LoomError. */
  async mutate(type: MutationType, input: unknown): Promise<Outcome & { ok: true }> {
    const { data } = encodeMutation(type, input);
    const { outcome } = await this.parts.core.propose({ type, data });
    const result = outcome as Outcome | undefined;
    if (!result) throw new LoomError('INTERNAL', `no view decided the outcome of a ${type}`);
    if (!result.ok) throw new LoomError('CONFLICT', result.message, { ...result.details, seq: result.seq });
    return result;
  }

  /** Waits as the read's consistency level asks before the view is read. */
  async settle(options: ReadOptions = {}): Promise<void> {
    const consistency = options.consistency ?? 'local';
    if (consistency !== 'local' && consistency !== 'linearizable') {
      throw new LoomError('INVALID_ARGUMENT', `consistency must be local or linearizable, got ${JSON.stringify(consistency)}`, { field: 'consistency' });
    }
    let target = 0;
    if (options.atLeast !== undefined) target = checkSeq(options.atLeast, 'atLeast');
    // ReadIndex: the leader confirms with a quorum that it still leads and names its commit index;
    // once this node (leader or follower) has applied that far, the read is linearizable.
    if (consistency === 'linearizable') target = Math.max(target, await this.parts.core.readIndex());
    if (target > 0) await this.parts.core.waitApplied(target, options.timeoutMs);
  }

  async sqlQuery(input: SqlQueryInput, options: ReadOptions = {}): Promise<SqlResult> {
    if (!this.parts.views().sql) throw new LoomError('UNAVAILABLE', 'this node has no SQL view');
    await this.settle(options);
    const sql = this.parts.views().sql as SqlQueries;
    return sql.query(input);
  }

  /** Every committed change matching `subject` with seq > fromSeq, then live ones. */
  watch(subject: string, options: { fromSeq?: number } = {}): Watch {
    const parts = this.parts;
    return watchChanges(
      subject,
      { fromSeq: options.fromSeq ?? parts.core.status().appliedIndex },
      {
        log: parts.core.log,
        get reader() {
          return parts.views().reader;
        },
        feed: parts.feed,
        appliedIndex: () => parts.core.status().appliedIndex,
      },
    );
  }
}

export class KvApi {
  constructor(private readonly db: Database) {}

  async put(bucket: string, key: string, value: Uint8Array | string, options: PutOptions = {}): Promise<{ rev: number }> {
    const bytes = typeof value === 'string' ? Buffer.from(value) : value;
    const outcome = await this.db.mutate('kv.put', { bucket, key, value: bytes, ...definedOnly(options) });
    return { rev: outcome.seq };
  }

  async delete(bucket: string, key: string, options: { expectRev?: number } = {}): Promise<{ rev: number }> {
    const outcome = await this.db.mutate('kv.del', { bucket, key, ...definedOnly(options) });
    return { rev: outcome.seq };
  }

  /** Sets how many revisions of each key the bucket keeps (1 = only the current one). */
  async setHistory(bucket: string, history: number): Promise<{ seq: number }> {
    const outcome = await this.db.mutate('kv.bucket', { bucket, history });
    return { seq: outcome.seq };
  }

  async get(bucket: string, key: string, options: ReadOptions = {}): Promise<KvEntry> {
    checkBucket(bucket);
    checkKey(key);
    await this.db.settle(options);
    const record = this.db.reader.get(bucket, key);
    if (!record) throw new LoomError('NOT_FOUND', `key ${key} not found in bucket ${bucket}`, { bucket, key });
    const entry: KvEntry = { bucket, key, value: record.value, rev: record.rev, createRev: record.createRev, updatedAt: record.updatedAt };
    if (record.expiresAt !== undefined) entry.expiresAt = record.expiresAt;
    return entry;
  }

  async getRevision(bucket: string, key: string, rev: number, options: ReadOptions = {}): Promise<{ rev: number; op: 'PUT' | 'DEL'; value?: Uint8Array; updatedAt: number }> {
    checkBucket(bucket);
    checkKey(key);
    checkSeq(rev, 'rev');
    await this.db.settle(options);
    const record = this.db.reader.getRevision(bucket, key, rev);
    if (!record) throw new LoomError('NOT_FOUND', `revision ${rev} of key ${key} in bucket ${bucket} is not kept (see the bucket's history setting)`, { bucket, key, rev });
    return record;
  }

  async list(bucket: string, options: { prefix?: string; limit?: number; cursor?: string } & ReadOptions = {}): Promise<KvListPage> {
    checkBucket(bucket);
    const prefix = options.prefix ?? '';
    if (typeof prefix !== 'string' || prefix.length > 1024) throw new LoomError('INVALID_ARGUMENT', 'prefix must be a string of at most 1024 characters', { field: 'prefix' });
    const limit = checkLimit(options.limit, 'limit', listLimitDefault, listLimitMax);
    await this.db.settle(options);
    return this.db.reader.list(bucket, prefix, limit, options.cursor);
  }
}

export class EventsApi {
  constructor(private readonly db: Database) {}

  async append(stream: string, input: AppendInput): Promise<{ seq: number; version: number }> {
    const outcome = await this.db.mutate('event.append', { stream, ...definedOnly(input as unknown as Record<string, unknown>) });
    return { seq: outcome.seq, version: outcome.version ?? 0 };
  }

  /** Events of one stream from `fromVersion` (default 1), oldest first. */
  async read(stream: string, options: { fromVersion?: number; limit?: number } & ReadOptions = {}): Promise<EventRecord[]> {
    checkStream(stream);
    const fromVersion = options.fromVersion === undefined ? 1 : checkSeq(options.fromVersion, 'fromVersion');
    const limit = checkLimit(options.limit, 'limit', readLimitDefault, readLimitMax);
    await this.db.settle(options);
    return this.db.reader.readStream(stream, fromVersion, limit).map(toRecord);
  }

  /** Events of every stream with seq > fromSeq, in log order. */
  async readAll(options: { fromSeq?: number; limit?: number } & ReadOptions = {}): Promise<EventRecord[]> {
    const fromSeq = options.fromSeq === undefined ? 0 : checkSeq(options.fromSeq, 'fromSeq');
    const limit = checkLimit(options.limit, 'limit', readLimitDefault, readLimitMax);
    await this.db.settle(options);
    return this.db.reader.readAll(fromSeq + 1, limit).map(toRecord);
  }

  async version(stream: string, options: ReadOptions = {}): Promise<number> {
    checkStream(stream);
    await this.db.settle(options);
    return this.db.reader.streamVersion(stream);
  }
}

function toRecord(event: StoredEvent): EventRecord {
  return { seq: event.seq, stream: event.stream, version: event.version, type: event.type, data: event.data, ts: event.ts };
}

function definedOnly<T extends object>(value: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(value)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
