// The built-in LMDB views: KV buckets (current value, optional history, TTL index) and event
// streams, plus the set of entries whose outcome was CONFLICT (so replays of the change feed skip
// them). One projection, one checkpoint, one LMDB transaction per applied batch.

import { open, type Database, type RootDatabase } from 'lmdb';
import * as path from 'node:path';
import type { LogEntry } from '../../eventlog';
import { decideEventAppend, decideKvDel, decideKvPut, type Outcome } from '../decide';
import { asciiString, copyRange, decodeMutationTransient, readKvPutFields, RepeatedName, type EventAppend, type KvDel, type KvPut, type KvPutFields } from '../entries';
import type { Projection, ProjectionStore } from '../projection';
import { watchMappedFile } from '../../util';

export interface KvRecord {
  value: Uint8Array;
  rev: number;
  createRev: number;
  updatedAt: number;
  expiresAt?: number;
}

export interface HistoryRecord {
  rev: number;
  op: 'PUT' | 'DEL';
  value?: Uint8Array;
  updatedAt: number;
}

export interface StoredEvent {
  seq: number;
  stream: string;
  version: number;
  type: string;
  data: unknown;
  ts: number;
}

interface BucketSettings {
  history: number;
}

type Key = [string, string];

export const kvProjectionName = 'kv';
export const kvProjectionVersion = 2;

/** The LMDB environment that holds the built-in views; a view may skip fsync since the log can rebuild it. */
export class ViewStore implements ProjectionStore<void> {
  readonly env: RootDatabase;
  /** Current values, as binary records (see encodeKvRecord): msgpack per record costs too much on replay. */
  readonly kvRaw: Database<Buffer, Key>;
  /**
   * The same database keyed by a put read in place (KvPutFields), for the apply path: its key
   * encoder writes the key's bytes straight from the entry's, with no string made (putFieldsKeys).
   */
  readonly kvByPutFields: Database<Buffer, Key>;
  readonly history: Database<HistoryRecord, [string, string, number]>;
  readonly buckets: Database<BucketSettings, string>;
  readonly ttl: Database<number, [number, string, string]>;
  readonly streams: Database<{ version: number }, string>;
  readonly events: Database<StoredEvent, number>;
  readonly streamEvents: Database<number, [string, number]>;
  readonly conflicts: Database<true, number>;
  private readonly checkpoints: Database<{ index: number; version: number }, string>;
  /** Stops giving back the pages of this map that reads touched (see util/mapped-memory.ts). */
  private readonly unwatchMap: () => void;

  constructor(dir: string, options: { sync?: boolean } = {}) {
    this.env = open({ path: path.resolve(dir), maxDbs: 32, noSync: !options.sync, compression: false, cache: false, mapSize: 64 * 1024 ** 3 });
    const db = <V, K extends import('lmdb').Key>(name: string): Database<V, K> =>
      this.env.openDB<V, K>({ name, encoding: 'msgpack', cache: false });
    this.kvRaw = this.env.openDB<Buffer, Key>({ name: 'kv', encoding: 'binary', cache: false });
    // lmdb-js takes per-database encoders although its typings list them only for the root.
    const byPutFieldsOptions = { name: 'kv', encoding: 'binary' as const, keyEncoder: putFieldsKeys, cache: false };
    this.kvByPutFields = this.env.openDB<Buffer, Key>(byPutFieldsOptions);
    this.history = db('kv-history');
    this.buckets = db('buckets');
    this.ttl = db('ttl');
    this.streams = db('streams');
    this.events = db('events');
    this.streamEvents = db('stream-events');
    this.conflicts = db('conflicts');
    this.checkpoints = db('checkpoints');
    this.unwatchMap = watchMappedFile(path.join(path.resolve(dir), 'data.mdb'));
  }

  getKv(bucket: string, key: string): KvRecord | undefined {
    const raw = this.kvRaw.getBinary([bucket, key]);
    return raw === undefined ? undefined : decodeKvRecord(raw);
  }

  transaction<T>(fn: (tx: void) => T): T {
    return this.env.transactionSync(() => fn(undefined));
  }

  readCheckpoint(name: string): { index: number; version: number } | undefined {
    return this.checkpoints.get(name);
  }

  writeCheckpoint(_tx: void, name: string, index: number, version: number): void {
    this.checkpoints.putSync(name, { index, version });
  }

  /** Every key/value pair of every view database, in order: for comparing two replicas byte for byte. */
  *dump(): Generator<[string, Buffer, Buffer]> {
    for (const name of ['kv', 'kv-history', 'buckets', 'ttl', 'streams', 'events', 'stream-events', 'conflicts']) {
      const raw = this.env.openDB<Buffer, Buffer>({ name, encoding: 'binary', keyEncoding: 'binary' });
      for (const { key, value } of raw.getRange({})) yield [name, Buffer.from(key), Buffer.from(value)];
    }
  }

  async close(): Promise<void> {
    try {
      await this.env.close();
    } finally {
      this.unwatchMap();
    }
  }
}

/** The KV and event-stream projection over a ViewStore. */
export class KvProjection implements Projection<void> {
  readonly name = kvProjectionName;
  readonly version = kvProjectionVersion;
  readonly handles = ['kv.put', 'kv.del', 'kv.bucket', 'event.append'];

  /** Bucket settings read on every put: cached, and changed only by kv.bucket entries applied here. */
  private readonly historyByBucket = new Map<string, number>();
  private readonly bucketNames = new RepeatedName();

  constructor(private readonly store: ViewStore) {}

  rolledBack(): void {
    // A kv.bucket entry of the rolled-back transaction may have set a setting it never stored.
    this.historyByBucket.clear();
  }

  reset(): void {
    this.historyByBucket.clear();
    const s = this.store;
    for (const db of [s.kvRaw, s.history, s.buckets, s.ttl, s.streams, s.events, s.streamEvents, s.conflicts] as Array<Database<unknown, import('lmdb').Key>>) {
      db.clearSync();
    }
  }

  apply(entries: LogEntry[]): Array<Outcome | undefined> {
    const outcomes: Array<Outcome | undefined> = new Array(entries.length);
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i];
      if (entry.type === 'kv.put') {
        // Most entries: read in place, no msgpackr, no strings (see putFields).
        const fields = readKvPutFields(entry.data);
        const outcome = fields === undefined ? undefined : this.putFields(entry, fields);
        if (outcome !== undefined) {
          outcomes[i] = outcome;
          if (!outcome.ok) this.store.conflicts.putSync(entry.index, true);
          continue;
        }
      }
      // Every byte field is copied into LMDB before the next entry is decoded (see put and remember).
      const mutation = decodeMutationTransient(entry);
      if (!mutation) continue;
      switch (mutation.type) {
        case 'kv.put':
          outcomes[i] = this.put(entry, mutation.body);
          break;
        case 'kv.del':
          outcomes[i] = this.del(entry, mutation.body);
          break;
        case 'kv.bucket':
          this.store.buckets.putSync(mutation.body.bucket, { history: mutation.body.history });
          this.historyByBucket.set(mutation.body.bucket, mutation.body.history);
          outcomes[i] = { ok: true, seq: entry.index };
          break;
        case 'event.append':
          outcomes[i] = this.append(entry, mutation.body);
          break;
      }
      if (outcomes[i] && !outcomes[i]?.ok) this.store.conflicts.putSync(entry.index, true);
    }
    return outcomes;
  }

  private put(entry: LogEntry, put: KvPut): Outcome {
    const s = this.store;
    const key: Key = [put.bucket, put.key];
    const current = readKvHeader(s.kvRaw.getBinaryFast(key));
    const outcome = decideKvPut(entry.index, current, put);
    if (!outcome.ok) return outcome;
    if (current?.expiresAt !== undefined) s.ttl.removeSync([current.expiresAt, put.bucket, put.key]);
    let expiresAt: number | undefined;
    if (put.ttlMs !== undefined) {
      expiresAt = entry.ts + put.ttlMs;
      s.ttl.putSync([expiresAt, put.bucket, put.key], entry.index);
    }
    s.kvRaw.putSync(key, kvRecordInScratch(entry.index, current?.createRev ?? entry.index, entry.ts, expiresAt, put.value, 0, put.value.byteLength));
    if (this.keepsHistory(put.bucket)) this.remember(put.bucket, put.key, { rev: entry.index, op: 'PUT', value: put.value, updatedAt: entry.ts });
    return outcome;
  }

  /**
   * A put read in place (readKvPutFields), for a bucket without history and a put without TTL;
   * undefined sends the entry the usual way (put), which gives the same outcome and the same bytes.
   */
  private putFields(entry: LogEntry, f: KvPutFields): Outcome | undefined {
    if (f.ttlMs !== undefined) return undefined;
    const bucket = this.bucketNames.of(f.bytes, f.bucketStart, f.bucketEnd);
    if (this.keepsHistory(bucket)) return undefined;
    const s = this.store;
    // The encoder of kvByPutFields takes the fields for a key (putFieldsKeys).
    const key = f as unknown as Key;
    const current = readKvHeader(s.kvByPutFields.getBinaryFast(key));
    const conditional = f.create !== undefined || f.expectRev !== undefined;
    const outcome = decideKvPut(entry.index, current, conditional ? this.conditionsOf(f, bucket) : unconditionalPut);
    if (!outcome.ok) return outcome;
    if (current?.expiresAt !== undefined) s.ttl.removeSync([current.expiresAt, bucket, asciiString(f.bytes, f.keyStart, f.keyEnd)]);
    const record = kvRecordInScratch(entry.index, current?.createRev ?? entry.index, entry.ts, undefined, f.bytes, f.valueStart, f.valueEnd);
    s.kvByPutFields.putSync(key, record);
    return outcome;
  }

  private conditionsOf(f: KvPutFields, bucket: string): KvPut {
    const put: KvPut = { v: 1, bucket, key: asciiString(f.bytes, f.keyStart, f.keyEnd), value: empty };
    if (f.expectRev !== undefined) put.expectRev = f.expectRev;
    if (f.create !== undefined) put.create = f.create;
    return put;
  }

  private del(entry: LogEntry, del: KvDel): Outcome {
    const s = this.store;
    const key: Key = [del.bucket, del.key];
    const current = readKvHeader(s.kvRaw.getBinaryFast(key));
    const outcome = decideKvDel(entry.index, current, del);
    if (!outcome.ok || !current) return outcome;
    if (current.expiresAt !== undefined) s.ttl.removeSync([current.expiresAt, del.bucket, del.key]);
    s.kvRaw.removeSync(key);
    if (this.keepsHistory(del.bucket)) this.remember(del.bucket, del.key, { rev: entry.index, op: 'DEL', updatedAt: entry.ts });
    return outcome;
  }

  private append(entry: LogEntry, append: EventAppend): Outcome {
    const s = this.store;
    const version = s.streams.get(append.stream)?.version ?? 0;
    const outcome = decideEventAppend(entry.index, version, append);
    if (!outcome.ok) return outcome;
    const next = version + 1;
    s.streams.putSync(append.stream, { version: next });
    s.events.putSync(entry.index, { seq: entry.index, stream: append.stream, version: next, type: append.type, data: append.data, ts: entry.ts });
    s.streamEvents.putSync([append.stream, next], entry.index);
    return outcome;
  }

  /** How many revisions of each key `bucket` keeps, the current one included. */
  private historyOf(bucket: string): number {
    let history = this.historyByBucket.get(bucket);
    if (history === undefined) {
      history = this.store.buckets.get(bucket)?.history ?? 1;
      this.historyByBucket.set(bucket, history);
    }
    return history;
  }

  private keepsHistory(bucket: string): boolean {
    return this.historyOf(bucket) > 1;
  }

  /** Keeps the last `history` revisions of a key when its bucket asks for more than the current one. */
  private remember(bucket: string, key: string, record: HistoryRecord): void {
    const s = this.store;
    const history = this.historyOf(bucket);
    s.history.putSync([bucket, key, record.rev], record);
    const revs: number[] = [];
    for (const k of s.history.getKeys({ start: [bucket, key, 0], end: [bucket, key, Number.MAX_SAFE_INTEGER] })) revs.push(k[2]);
    for (let i = 0; i < revs.length - history; i++) s.history.removeSync([bucket, key, revs[i]]);
  }
}

/**
 * Keys of the kv database given as a put read in place: the key [bucket, key] as lmdb-js writes
 * an array of two strings (ordered-binary: the strings' bytes with a 0 between them; names of
 * printable ASCII, all readKvPutFields lets through, are written as they are), followed by four
 * zero bytes that are not part of the key. lmdb-js compares the keys of a database opened with
 * its default key encoding (as `kv` first is) 32 bits at a time and counts on that padding, which
 * its ordered-binary writer adds; without it a lookup could miss a key that is there.
 */
const putFieldsKeys = {
  writeKey(f: KvPutFields, target: Uint8Array, start: number): number {
    const bytes = f.bytes;
    let at = start;
    for (let i = f.bucketStart; i < f.bucketEnd; i++) target[at++] = bytes[i];
    target[at++] = 0;
    for (let i = f.keyStart; i < f.keyEnd; i++) target[at++] = bytes[i];
    target[at] = 0;
    target[at + 1] = 0;
    target[at + 2] = 0;
    target[at + 3] = 0;
    return at;
  },
  readKey(): never {
    throw new Error('kvByPutFields is for gets and puts by a put read in place, not for reading keys');
  },
};

/** What decideKvPut needs of a put with neither `create` nor `expectRev`: nothing, so no names. */
const unconditionalPut: KvPut = { v: 1, bucket: '', key: '', value: new Uint8Array(0) };
const empty = new Uint8Array(0);

// Binary layout of a KV record: [u8 layout version][u8 flags][f64 rev][f64 createRev]
// [f64 updatedAt][f64 expiresAt, when flag 1][value bytes]. Numbers are safe integers as doubles.
const recordLayoutVersion = 1;
const hasExpiry = 1;
const headerBytes = 2 + 8 * 3;

export function encodeKvRecord(rev: number, createRev: number, updatedAt: number, expiresAt: number | undefined, value: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(headerBytes + (expiresAt === undefined ? 0 : 8) + value.byteLength);
  return writeKvRecord(out, rev, createRev, updatedAt, expiresAt, value, 0, value.byteLength);
}

/** Where kvRecordInScratch writes: lmdb-js copies a value into LMDB within a synchronous put, so one buffer serves every put. */
let recordScratch = Buffer.allocUnsafe(4096);

/** The record of `value[start, end)`, in a buffer the next call overwrites: only for a synchronous put. */
function kvRecordInScratch(rev: number, createRev: number, updatedAt: number, expiresAt: number | undefined, value: Uint8Array, start: number, end: number): Buffer {
  const length = headerBytes + (expiresAt === undefined ? 0 : 8) + end - start;
  if (recordScratch.length < length) recordScratch = Buffer.allocUnsafe(Math.max(length, 2 * recordScratch.length));
  return writeKvRecord(recordScratch.subarray(0, length), rev, createRev, updatedAt, expiresAt, value, start, end);
}

function writeKvRecord(out: Buffer, rev: number, createRev: number, updatedAt: number, expiresAt: number | undefined, value: Uint8Array, start: number, end: number): Buffer {
  const extra = expiresAt === undefined ? 0 : 8;
  out[0] = recordLayoutVersion;
  out[1] = expiresAt === undefined ? 0 : hasExpiry;
  out.writeDoubleBE(rev, 2);
  out.writeDoubleBE(createRev, 10);
  out.writeDoubleBE(updatedAt, 18);
  if (expiresAt !== undefined) out.writeDoubleBE(expiresAt, headerBytes);
  copyRange(value, start, end, out, headerBytes + extra);
  return out;
}

/** Decodes a whole record; `raw` must be a buffer the caller owns (its value is a view into it). */
export function decodeKvRecord(raw: Buffer): KvRecord {
  const header = readKvHeader(raw);
  if (!header) throw new Error('empty KV record');
  const record: KvRecord = {
    value: raw.subarray(headerBytes + (header.expiresAt === undefined ? 0 : 8)),
    rev: header.rev,
    createRev: header.createRev,
    updatedAt: header.updatedAt,
  };
  if (header.expiresAt !== undefined) record.expiresAt = header.expiresAt;
  return record;
}

/** The revision of a stored record, without decoding the rest. */
export function kvRecordRev(raw: Buffer): number {
  return raw.readDoubleBE(2);
}

function readKvHeader(raw: Buffer | undefined): Omit<KvRecord, 'value'> | undefined {
  if (raw === undefined) return undefined;
  if (raw[0] !== recordLayoutVersion) throw new Error(`KV record has unknown layout ${raw[0]}`);
  const header: Omit<KvRecord, 'value'> = { rev: raw.readDoubleBE(2), createRev: raw.readDoubleBE(10), updatedAt: raw.readDoubleBE(18) };
  if (raw[1] & hasExpiry) header.expiresAt = raw.readDoubleBE(headerBytes);
  return header;
}
