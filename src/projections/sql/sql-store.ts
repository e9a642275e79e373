// The SQLite file that holds the SQL views (the built-in kv_<bucket> and events tables, developer
// projections' tables) and their checkpoints: one write connection, one transaction per batch.

import Database from 'better-sqlite3';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { assert } from '../../util';
import type { ProjectionStore } from '../projection';
import { storeCacheBytesMax, storeWalBytesMax, storeWalCheckpointPages } from './limits';

export type SqlDatabase = Database.Database;

export const checkpointsTable = '_loom_checkpoints';

export interface SqlStoreOptions {
  /**
   * true: fsync every commit (`synchronous = FULL`). Default false: `synchronous = NORMAL`, which in
   * WAL mode fsyncs only at WAL checkpoints. A power loss may then drop the last few commits, but
   * never half of one: view rows and their checkpoint go together, so the view restarts from an
   * older checkpoint and the log replays the rest. We do not use OFF, because in WAL mode an OS
   * crash with OFF can corrupt the file, and a corrupt view is not "equal to a clean replay".
   */
  sync?: boolean;
}

/** One schema object of the file, as SQLite stores it. */
export interface SqlSchemaObject {
  type: string;
  name: string;
  tableName: string;
  sql: string | null;
}

export interface SqlTableDump {
  name: string;
  columns: string[];
  rows: unknown[][];
}

/** Everything in the file in a fixed order: two replicas fed the same log dump equal. */
export interface SqlDump {
  schema: SqlSchemaObject[];
  tables: SqlTableDump[];
}

/** Double-quotes an SQL identifier; bucket names contain `-`, which SQL only accepts quoted. */
export function quoteIdentifier(name: string): string {
  assert(!name.includes('\0'), 'an SQL identifier has no NUL');
  return `"${name.replace(/"/g, '""')}"`;
}

export class SqlStore implements ProjectionStore<SqlDatabase> {
  readonly file: string;
  readonly db: SqlDatabase;
  private readonly selectCheckpoint: Database.Statement<[string], { idx: number; version: number }>;
  private readonly upsertCheckpoint: Database.Statement<[string, number, number]>;

  constructor(file: string, options: SqlStoreOptions = {}) {
    this.file = path.resolve(file);
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    this.db = new Database(this.file);
    const mode = this.db.pragma('journal_mode = WAL', { simple: true });
    // Readers (the query process) need WAL to read while the applier writes.
    assert(mode === 'wal', `SQLite file ${this.file} must be in WAL mode, got ${String(mode)}`);
    this.db.pragma(`synchronous = ${options.sync ? 'FULL' : 'NORMAL'}`);
    // A negative cache_size is in KiB.
    this.db.pragma(`cache_size = ${-Math.floor(storeCacheBytesMax / 1024)}`);
    // Fewer, larger checkpoints: each one fsyncs, and apply throughput is what the WAL buys us.
    this.db.pragma(`wal_autocheckpoint = ${storeWalCheckpointPages}`);
    this.db.pragma(`journal_size_limit = ${storeWalBytesMax}`);
    this.db.exec(`CREATE TABLE IF NOT EXISTS ${checkpointsTable} (name TEXT PRIMARY KEY, idx INTEGER NOT NULL, version INTEGER NOT NULL)`);
    this.selectCheckpoint = this.db.prepare(`SELECT idx, version FROM ${checkpointsTable} WHERE name = ?`);
    this.upsertCheckpoint = this.db.prepare(
      `INSERT INTO ${checkpointsTable} (name, idx, version) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET idx = excluded.idx, version = excluded.version`,
    );
  }

  transaction<T>(fn: (tx: SqlDatabase) => T): T {
    // IMMEDIATE takes the write lock up front, so a batch never fails half-way on a lock upgrade.
    return this.db.transaction(fn).immediate(this.db);
  }

  readCheckpoint(name: string): { index: number; version: number } | undefined {
    const row = this.selectCheckpoint.get(name);
    return row ? { index: row.idx, version: row.version } : undefined;
  }

  writeCheckpoint(tx: SqlDatabase, name: string, index: number, version: number): void {
    assert(tx === this.db, 'a checkpoint is written in the transaction of its own store');
    assert(tx.inTransaction, 'a checkpoint is written inside the transaction of its view writes');
    this.upsertCheckpoint.run(name, index, version);
  }

  /** Every schema object and every table's rows in primary-key order: for comparing replicas. */
  dump(): SqlDump {
    const schema = this.db
      .prepare<[], SqlSchemaObject>(
        `SELECT type, name, tbl_name AS tableName, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name`,
      )
      .all();
    const tables = schema
      .filter((o) => o.type === 'table')
      .map((o) => {
        const info = this.db.prepare<[], { name: string; pk: number }>(`SELECT name, pk FROM pragma_table_info(${quoteString(o.name)})`).all();
        const pk = info.filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk);
        // A table without a primary key is ordered by every column: equal rows are interchangeable.
        const order = (pk.length > 0 ? pk : info).map((c) => quoteIdentifier(c.name)).join(', ');
        const rows = this.db.prepare(`SELECT * FROM ${quoteIdentifier(o.name)} ORDER BY ${order}`).raw(true).all() as unknown[][];
        return { name: o.name, columns: info.map((c) => c.name), rows };
      });
    return { schema, tables };
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

function quoteString(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}
