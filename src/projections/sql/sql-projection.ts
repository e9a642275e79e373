// The built-in SQL view: every KV bucket as a table kv_<bucket>(key, value, rev, updated_at), every
// event as a row of `events`, every object as a row of `objects`, with outcomes decided by the same
// functions as the KV and blob views (decide.ts, decideBlobCommit).

import type { Statement } from 'better-sqlite3';
import type { LogEntry } from '../../eventlog';
import { LoomError } from '../../util';
import { decideEventAppend, decideKvDel, decideKvPut, type Outcome } from '../decide';
import { chunkAt, decideBlobCommit, decideObjectCondition } from '../blob/blob-view';
import { decodeMutation, type BlobChunk, type BlobCommit, type BlobDel, type BlobGc, type EventAppend, type KvDel, type KvPut } from '../entries';
import { bucketNamePattern } from '../../util/names';
import type { Projection } from '../projection';
import { quoteIdentifier, type SqlDatabase } from './sql-store';
import { kvValueForSql } from './sql-value';

export const sqlProjectionName = 'sql';
// 2: the objects table (and the chunk bookkeeping that decides its commits).
export const sqlProjectionVersion = 2;
export const eventsTable = 'events';
/** bucket → table name. Usually kv_<bucket>; see `tableNameFor` for buckets differing only in case. */
export const kvTablesTable = '_loom_kv_tables';
/** The seq of every entry whose outcome was CONFLICT: developer projections skip them. */
export const conflictsTable = '_loom_conflicts';
export const kvTablePrefix = 'kv_';
/** objects(bucket, name, size, sha256, content_type, metadata, updated_at, rev): metadata is JSON. */
export const objectsTable = 'objects';
/**
 * Chunk lengths and reference counts, kept exactly as the blob view keeps them (docs/buckets.md),
 * so that this view decides every blob.commit as the blob view does and collects the same chunks.
 */
export const chunksTable = '_loom_chunks';
/** The chunk digests of each object, to release them when it is replaced or deleted. */
export const objectChunksTable = '_loom_object_chunks';

interface ChunkRow {
  length: number;
  refs: number;
  since: number;
}

interface TableStatements {
  rev: Statement<[string], number>;
  upsert: Statement<[string, string | Buffer, number, number]>;
  remove: Statement<[string]>;
}

interface Prepared {
  db: SqlDatabase;
  findTable: Statement<[string], string>;
  tableNameTaken: Statement<[string, string], number>;
  registerTable: Statement<[string, string]>;
  streamVersion: Statement<[string], number | null>;
  insertEvent: Statement<[number, string, number, string, string, number]>;
  insertConflict: Statement<[number]>;
  chunk: Statement<[string], ChunkRow>;
  insertChunk: Statement<[string, number, number, number]>;
  updateChunk: Statement<[number, number, string]>;
  orphansBefore: Statement<[number, number], string>;
  removeChunk: Statement<[string]>;
  objectChunks: Statement<[string, string], Buffer>;
  objectRev: Statement<[string, string], number>;
  upsertObject: Statement<[string, string, number, string, string, string, number, number]>;
  upsertObjectChunks: Statement<[string, string, Buffer]>;
  removeObject: Statement<[string, string]>;
  removeObjectChunks: Statement<[string, string]>;
  tables: Map<string, TableStatements>;
}

/** What one batch has learnt, valid only inside its transaction (a rollback would make it stale). */
interface BatchState {
  tables: Map<string, string>;
  streams: Map<string, number>;
}

export class SqlProjection implements Projection<SqlDatabase> {
  readonly name = sqlProjectionName;
  readonly version = sqlProjectionVersion;
  readonly handles = ['kv.put', 'kv.del', 'kv.bucket', 'event.append', 'blob.chunk', 'blob.commit', 'blob.del', 'blob.gc'];
  private prepared: Prepared | undefined;

  setup(db: SqlDatabase): void {
    db.exec(`
      CREATE TABLE IF NOT EXISTS ${kvTablesTable} (bucket TEXT PRIMARY KEY, table_name TEXT NOT NULL UNIQUE COLLATE NOCASE);
      CREATE TABLE IF NOT EXISTS ${eventsTable} (
        seq INTEGER PRIMARY KEY, stream TEXT NOT NULL, version INTEGER NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL, ts INTEGER NOT NULL);
      CREATE UNIQUE INDEX IF NOT EXISTS events_stream_version ON ${eventsTable} (stream, version);
      CREATE TABLE IF NOT EXISTS ${conflictsTable} (seq INTEGER PRIMARY KEY);
      CREATE TABLE IF NOT EXISTS ${objectsTable} (
        bucket TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL, content_type TEXT NOT NULL,
        metadata TEXT NOT NULL, updated_at INTEGER NOT NULL, rev INTEGER NOT NULL, PRIMARY KEY (bucket, name));
      CREATE TABLE IF NOT EXISTS ${objectChunksTable} (bucket TEXT NOT NULL, name TEXT NOT NULL, chunks BLOB NOT NULL, PRIMARY KEY (bucket, name));
      CREATE TABLE IF NOT EXISTS ${chunksTable} (sha256 TEXT PRIMARY KEY, length INTEGER NOT NULL, refs INTEGER NOT NULL, since INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS ${chunksTable}_orphans ON ${chunksTable} (since, sha256) WHERE refs = 0;
    `);
  }

  reset(db: SqlDatabase): void {
    const hasRegistry = db.prepare(`SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?`).pluck().get(kvTablesTable) === 1;
    const registered = hasRegistry ? (db.prepare(`SELECT table_name FROM ${kvTablesTable}`).pluck().all() as string[]) : [];
    for (const table of registered) db.exec(`DROP TABLE IF EXISTS ${quoteIdentifier(table)}`);
    db.exec(`DROP TABLE IF EXISTS ${kvTablesTable}; DROP TABLE IF EXISTS ${eventsTable}; DROP TABLE IF EXISTS ${conflictsTable};`);
    db.exec(`DROP TABLE IF EXISTS ${objectsTable}; DROP TABLE IF EXISTS ${objectChunksTable}; DROP TABLE IF EXISTS ${chunksTable};`);
    // Statements of dropped tables would only fail: forget them.
    this.prepared = undefined;
  }

  apply(entries: LogEntry[], db: SqlDatabase): Array<Outcome | undefined> {
    const p = this.prepare(db);
    const batch: BatchState = { tables: new Map(), streams: new Map() };
    const outcomes: Array<Outcome | undefined> = new Array(entries.length);
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i];
      const mutation = decodeMutation(entry);
      if (!mutation) continue;
      let outcome: Outcome | undefined;
      switch (mutation.type) {
        case 'kv.put':
          outcome = this.put(p, batch, entry, mutation.body);
          break;
        case 'kv.del':
          outcome = this.del(p, batch, entry, mutation.body);
          break;
        case 'kv.bucket':
          // Declaring a bucket makes its (empty) table queryable; history is the KV view's business.
          this.bucketTable(p, batch, entry, mutation.body.bucket, true);
          outcome = { ok: true, seq: entry.index };
          break;
        case 'event.append':
          outcome = this.append(p, batch, entry, mutation.body);
          break;
        case 'blob.chunk':
          outcome = this.storeChunk(p, entry, mutation.body);
          break;
        case 'blob.commit':
          outcome = this.commitObject(p, entry, mutation.body);
          break;
        case 'blob.del':
          outcome = this.deleteObject(p, entry, mutation.body);
          break;
        case 'blob.gc':
          outcome = this.collectChunks(p, entry, mutation.body);
          break;
        default:
          break;
      }
      if (outcome === undefined) continue;
      if (!outcome.ok) p.insertConflict.run(entry.index);
      outcomes[i] = outcome;
    }
    return outcomes;
  }

  private put(p: Prepared, batch: BatchState, entry: LogEntry, put: KvPut): Outcome {
    const table = this.bucketTable(p, batch, entry, put.bucket, true) as TableStatements;
    const rev = table.rev.get(put.key);
    const outcome = decideKvPut(entry.index, rev === undefined ? undefined : { rev }, put);
    if (outcome.ok) table.upsert.run(put.key, kvValueForSql(put.value), entry.index, entry.ts);
    return outcome;
  }

  private del(p: Prepared, batch: BatchState, entry: LogEntry, del: KvDel): Outcome {
    // A bucket that was never written has no table, and no key in it exists.
    const table = this.bucketTable(p, batch, entry, del.bucket, false);
    const rev = table?.rev.get(del.key);
    const outcome = decideKvDel(entry.index, rev === undefined ? undefined : { rev }, del);
    if (outcome.ok && rev !== undefined) table?.remove.run(del.key);
    return outcome;
  }

  private append(p: Prepared, batch: BatchState, entry: LogEntry, append: EventAppend): Outcome {
    const version = batch.streams.get(append.stream) ?? p.streamVersion.get(append.stream) ?? 0;
    const outcome = decideEventAppend(entry.index, version, append);
    if (!outcome.ok) return outcome;
    const data = JSON.stringify(append.data);
    if (data === undefined) {
      throw new LoomError('CORRUPT', `entry ${entry.index} (event.append) carries no JSON data`, { index: entry.index });
    }
    p.insertEvent.run(entry.index, append.stream, version + 1, append.type, data, entry.ts);
    batch.streams.set(append.stream, version + 1);
    return outcome;
  }

  // The blob entries, step for step as BlobProjection applies them (src/projections/blob/blob-view.ts).

  private storeChunk(p: Prepared, entry: LogEntry, chunk: BlobChunk): Outcome {
    const sha = Buffer.from(chunk.sha256.buffer, chunk.sha256.byteOffset, 32).toString('hex');
    const row = p.chunk.get(sha);
    if (row === undefined) p.insertChunk.run(sha, chunk.bytes.byteLength, 0, entry.ts);
    else if (row.refs === 0) p.updateChunk.run(0, entry.ts, sha);
    return { ok: true, seq: entry.index };
  }

  private commitObject(p: Prepared, entry: LogEntry, commit: BlobCommit): Outcome {
    const count = commit.chunks.byteLength / 32;
    const lengths: Array<number | undefined> = new Array(count);
    for (let i = 0; i < count; i++) lengths[i] = p.chunk.get(chunkAt(commit.chunks, i))?.length;
    const outcome = decideBlobCommit(entry.index, this.currentRev(p, commit), lengths, commit);
    if (!outcome.ok) return outcome;
    const previous = p.objectChunks.get(commit.bucket, commit.name);
    // Reference the new chunks before releasing the old ones, so a chunk both share never drops to 0.
    for (let i = 0; i < count; i++) this.reference(p, chunkAt(commit.chunks, i), +1, entry.ts);
    if (previous !== undefined) this.release(p, previous, entry.ts);
    const sha256 = Buffer.from(commit.sha256.buffer, commit.sha256.byteOffset, 32).toString('hex');
    p.upsertObject.run(commit.bucket, commit.name, commit.size, sha256, commit.contentType, JSON.stringify(commit.metadata), entry.ts, entry.index);
    p.upsertObjectChunks.run(commit.bucket, commit.name, Buffer.from(commit.chunks.buffer, commit.chunks.byteOffset, commit.chunks.byteLength));
    return outcome;
  }

  private deleteObject(p: Prepared, entry: LogEntry, del: BlobDel): Outcome {
    const unmet = decideObjectCondition(entry.index, this.currentRev(p, del), del);
    if (unmet) return unmet;
    const previous = p.objectChunks.get(del.bucket, del.name);
    if (previous === undefined) return { ok: true, seq: entry.index, rev: entry.index, deleted: false };
    this.release(p, previous, entry.ts);
    p.removeObject.run(del.bucket, del.name);
    p.removeObjectChunks.run(del.bucket, del.name);
    return { ok: true, seq: entry.index, rev: entry.index, deleted: true };
  }

  /** The object's rev for a conditional write (0: absent); unconditional ones need no lookup. */
  private currentRev(p: Prepared, write: BlobCommit | BlobDel): number {
    return write.expectRev === undefined ? 0 : (p.objectRev.get(write.bucket, write.name) ?? 0);
  }

  private collectChunks(p: Prepared, entry: LogEntry, gc: BlobGc): Outcome {
    const doomed = p.orphansBefore.all(gc.beforeTs, gc.limit);
    for (const sha of doomed) p.removeChunk.run(sha);
    return { ok: true, seq: entry.index, collected: doomed.length };
  }

  private release(p: Prepared, chunks: Uint8Array, ts: number): void {
    const count = chunks.byteLength / 32;
    for (let i = 0; i < count; i++) this.reference(p, chunkAt(chunks, i), -1, ts);
  }

  private reference(p: Prepared, sha: string, delta: 1 | -1, ts: number): void {
    const row = p.chunk.get(sha);
    if (row === undefined) throw new Error(`chunk ${sha} has no reference count`);
    const refs = row.refs + delta;
    if (refs < 0) throw new Error(`chunk ${sha} would have a negative reference count`);
    p.updateChunk.run(refs, refs === 0 ? ts : 0, sha);
  }

  /** The statements of a bucket's table, creating the table first when `create` is set. */
  private bucketTable(p: Prepared, batch: BatchState, entry: LogEntry, bucket: string, create: boolean): TableStatements | undefined {
    let name = batch.tables.get(bucket) ?? p.findTable.get(bucket);
    if (name === undefined) {
      if (!create) return undefined;
      if (!bucketNamePattern.test(bucket)) {
        // The door validates names, so a bad one here means the log holds something it should not.
        throw new LoomError('CORRUPT', `entry ${entry.index} names an invalid bucket ${JSON.stringify(bucket)}`, { index: entry.index });
      }
      name = this.tableNameFor(p, bucket);
      p.db.exec(
        `CREATE TABLE ${quoteIdentifier(name)} (key TEXT PRIMARY KEY, value, rev INTEGER NOT NULL, updated_at INTEGER NOT NULL)`,
      );
      p.registerTable.run(bucket, name);
    }
    batch.tables.set(bucket, name);
    let statements = p.tables.get(name);
    if (!statements) {
      const t = quoteIdentifier(name);
      statements = {
        rev: p.db.prepare<[string], number>(`SELECT rev FROM ${t} WHERE key = ?`).pluck(),
        upsert: p.db.prepare(
          `INSERT INTO ${t} (key, value, rev, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value, rev = excluded.rev, updated_at = excluded.updated_at`,
        ),
        remove: p.db.prepare(`DELETE FROM ${t} WHERE key = ?`),
      };
      p.tables.set(name, statements);
    }
    return statements;
  }

  /**
   * kv_<bucket>, unless another bucket already owns that name up to case (SQL names ignore case,
   * bucket names do not): then kv_<bucket>~2, ~3 … (`~` never appears in a bucket name, so this
   * cannot collide with another bucket's plain name). Depends only on the log, so every replica agrees.
   */
  private tableNameFor(p: Prepared, bucket: string): string {
    const plain = `${kvTablePrefix}${bucket}`;
    let name = plain;
    for (let n = 2; p.tableNameTaken.get(name, name) !== undefined; n++) name = `${plain}~${n}`;
    return name;
  }

  private prepare(db: SqlDatabase): Prepared {
    if (this.prepared?.db === db) return this.prepared;
    this.prepared = {
      db,
      findTable: db.prepare<[string], string>(`SELECT table_name FROM ${kvTablesTable} WHERE bucket = ?`).pluck(),
      tableNameTaken: db
        .prepare<[string, string], number>(
          `SELECT 1 FROM ${kvTablesTable} WHERE table_name = ? COLLATE NOCASE UNION ALL SELECT 1 FROM sqlite_schema WHERE name = ? COLLATE NOCASE`,
        )
        .pluck(),
      registerTable: db.prepare(`INSERT INTO ${kvTablesTable} (bucket, table_name) VALUES (?, ?)`),
      streamVersion: db.prepare<[string], number | null>(`SELECT max(version) FROM ${eventsTable} WHERE stream = ?`).pluck(),
      insertEvent: db.prepare(`INSERT INTO ${eventsTable} (seq, stream, version, type, data, ts) VALUES (?, ?, ?, ?, ?, ?)`),
      insertConflict: db.prepare(`INSERT INTO ${conflictsTable} (seq) VALUES (?)`),
      chunk: db.prepare<[string], ChunkRow>(`SELECT length, refs, since FROM ${chunksTable} WHERE sha256 = ?`),
      insertChunk: db.prepare(`INSERT INTO ${chunksTable} (sha256, length, refs, since) VALUES (?, ?, ?, ?)`),
      updateChunk: db.prepare(`UPDATE ${chunksTable} SET refs = ?, since = ? WHERE sha256 = ?`),
      // The blob view walks its orphans in [since, sha256] order; so does this.
      orphansBefore: db.prepare<[number, number], string>(`SELECT sha256 FROM ${chunksTable} WHERE refs = 0 AND since < ? ORDER BY since, sha256 LIMIT ?`).pluck(),
      removeChunk: db.prepare(`DELETE FROM ${chunksTable} WHERE sha256 = ?`),
      objectChunks: db.prepare<[string, string], Buffer>(`SELECT chunks FROM ${objectChunksTable} WHERE bucket = ? AND name = ?`).pluck(),
      objectRev: db.prepare<[string, string], number>(`SELECT rev FROM ${objectsTable} WHERE bucket = ? AND name = ?`).pluck(),
      upsertObject: db.prepare(
        `INSERT INTO ${objectsTable} (bucket, name, size, sha256, content_type, metadata, updated_at, rev) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(bucket, name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, content_type = excluded.content_type,
         metadata = excluded.metadata, updated_at = excluded.updated_at, rev = excluded.rev`,
      ),
      upsertObjectChunks: db.prepare(
        `INSERT INTO ${objectChunksTable} (bucket, name, chunks) VALUES (?, ?, ?) ON CONFLICT(bucket, name) DO UPDATE SET chunks = excluded.chunks`,
      ),
      removeObject: db.prepare(`DELETE FROM ${objectsTable} WHERE bucket = ? AND name = ?`),
      removeObjectChunks: db.prepare(`DELETE FROM ${objectChunksTable} WHERE bucket = ? AND name = ?`),
      tables: new Map(),
    };
    return this.prepared;
  }
}
