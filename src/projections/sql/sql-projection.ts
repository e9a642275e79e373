// The built-in SQL view: every KV bucket as a table kv_<bucket>(key, value, rev, updated_at) and
// every event as a row of `events`, with CAS outcomes decided by decide.ts like the KV view.

import type { Statement } from 'better-sqlite3';
import type { LogEntry } from '../../eventlog';
import { LoomError } from '../../util';
import { decideEventAppend, decideKvDel, decideKvPut, type Outcome } from '../decide';
import { decodeMutation, type EventAppend, type KvDel, type KvPut } from '../entries';
import { bucketNamePattern } from '../names';
import type { Projection } from '../projection';
import { quoteIdentifier, type SqlDatabase } from './sql-store';
import { kvValueForSql } from './sql-value';

export const sqlProjectionName = 'sql';
export const sqlProjectionVersion = 1;
export const eventsTable = 'events';
/** bucket → table name. Usually kv_<bucket>; see `tableNameFor` for buckets differing only in case. */
export const kvTablesTable = '_loom_kv_tables';
/** The seq of every entry whose outcome was CONFLICT: developer projections skip them. */
export const conflictsTable = '_loom_conflicts';
export const kvTablePrefix = 'kv_';

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
  readonly handles = ['kv.put', 'kv.del', 'kv.bucket', 'event.append'];
  private prepared: Prepared | undefined;

  setup(db: SqlDatabase): void {
    db.exec(`
      CREATE TABLE IF NOT EXISTS ${kvTablesTable} (bucket TEXT PRIMARY KEY, table_name TEXT NOT NULL UNIQUE COLLATE NOCASE);
      CREATE TABLE IF NOT EXISTS ${eventsTable} (
        seq INTEGER PRIMARY KEY, stream TEXT NOT NULL, version INTEGER NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL, ts INTEGER NOT NULL);
      CREATE UNIQUE INDEX IF NOT EXISTS events_stream_version ON ${eventsTable} (stream, version);
      CREATE TABLE IF NOT EXISTS ${conflictsTable} (seq INTEGER PRIMARY KEY);
    `);
  }

  reset(db: SqlDatabase): void {
    const hasRegistry = db.prepare(`SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?`).pluck().get(kvTablesTable) === 1;
    const registered = hasRegistry ? (db.prepare(`SELECT table_name FROM ${kvTablesTable}`).pluck().all() as string[]) : [];
    for (const table of registered) db.exec(`DROP TABLE IF EXISTS ${quoteIdentifier(table)}`);
    db.exec(`DROP TABLE IF EXISTS ${kvTablesTable}; DROP TABLE IF EXISTS ${eventsTable}; DROP TABLE IF EXISTS ${conflictsTable};`);
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
        default:
          // blob.* entries: objects are handled below; chunks and collections change no table.
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
      tables: new Map(),
    };
    return this.prepared;
  }
}
