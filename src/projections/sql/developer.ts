// Developer projections over the SQL view: a migration and an apply function become a Projection
// run by the same ProjectionRunner and SqlStore as the built-in view, with its own checkpoint.

import type { LogEntry } from '../../eventlog';
import { LoomError } from '../../util';
import { decodeMutation, mutationTypes, type Mutation, type MutationType } from '../entries';
import type { Projection } from '../projection';
import { projectionNamePattern, tableNamePattern } from './limits';
import { conflictsTable, eventsTable, kvTablePrefix, sqlProjectionName } from './sql-projection';
import { checkpointsTable, quoteIdentifier, type SqlDatabase } from './sql-store';

/** One accepted mutation: entries whose outcome was CONFLICT never reach a developer projection. */
export interface SqlProjectionEntry {
  /** The entry's log index: its seq/rev everywhere in the API. */
  seq: number;
  /** The leader's timestamp (ms since the epoch): the only clock a projection may read. */
  ts: number;
  mutation: Mutation;
}

export interface SqlProjectionDefinition {
  /** Stable id and checkpoint name: 1-64 of A-Z a-z 0-9 _ -, not `sql`. */
  name: string;
  /** Bump it to drop the projection's tables and rebuild them from the log. */
  version: number;
  /** Every table and view `migrate` creates: a rebuild drops exactly these (their indexes and triggers go with them). */
  tables: string[];
  /** Mutation types it consumes; default all. */
  handles?: MutationType[];
  /** Creates the tables; runs at every start, so it must be idempotent (CREATE TABLE IF NOT EXISTS). */
  migrate(db: SqlDatabase): void;
  /** Deterministic, no I/O beyond `db`, no clock, no randomness: applies accepted mutations in log order. */
  apply(entries: SqlProjectionEntry[], db: SqlDatabase): void;
}

interface SchemaObject {
  type: string;
  name: string;
  tbl_name: string;
}

const reservedTableNames = [eventsTable];
const reservedTablePrefixes = [kvTablePrefix, '_loom_', 'sqlite_'];

/** Turns a developer's definition into a Projection for `new ProjectionRunner(p, sqlStore, logger)`. */
export function defineSqlProjection(definition: SqlProjectionDefinition): Projection<SqlDatabase> {
  const def = checkDefinition(definition);
  const owned = new Set(def.tables.map((t) => t.toLowerCase()));
  return {
    name: def.name,
    version: def.version,
    handles: def.handles,
    setup(db: SqlDatabase): void {
      const before = new Set(schemaObjects(db).map(objectKey));
      def.migrate(db);
      for (const object of schemaObjects(db)) {
        if (before.has(objectKey(object))) continue;
        // An undeclared table would survive a rebuild and keep stale rows; an object on another
        // projection's table (a trigger on `events`, say) would act inside that projection's writes.
        if (!owned.has(object.tbl_name.toLowerCase())) {
          throw new LoomError(
            'INVALID_ARGUMENT',
            `projection ${def.name}: migrate created ${object.type} ${object.name} on table ${object.tbl_name}, which is not in its tables [${def.tables.join(', ')}]; declare every table it creates so a rebuild can drop it`,
            { field: 'tables', projection: def.name },
          );
        }
      }
    },
    reset(db: SqlDatabase): void {
      for (const object of schemaObjects(db)) {
        if (object.name.toLowerCase() !== object.tbl_name.toLowerCase() || !owned.has(object.name.toLowerCase())) continue;
        if (object.type === 'table') db.exec(`DROP TABLE ${quoteIdentifier(object.name)}`);
        else if (object.type === 'view') db.exec(`DROP VIEW ${quoteIdentifier(object.name)}`);
      }
    },
    apply(entries: LogEntry[], db: SqlDatabase): void {
      const first = entries[0].index;
      const last = entries[entries.length - 1].index;
      // The built-in view records which entries were CONFLICTs; it must have seen this batch first.
      const builtIn = db.prepare<[string], number>(`SELECT idx FROM ${checkpointsTable} WHERE name = ?`).pluck().get(sqlProjectionName);
      if (builtIn === undefined || builtIn < last) {
        throw new LoomError(
          'UNAVAILABLE',
          `projection ${def.name} needs the built-in sql view applied up to entry ${last}, but it is at ${builtIn ?? 'none'}: register SqlProjection on the same SqlStore before developer projections`,
          { projection: def.name, index: first },
        );
      }
      const conflicts = new Set(
        db.prepare<[number, number], number>(`SELECT seq FROM ${conflictsTable} WHERE seq BETWEEN ? AND ?`).pluck().all(first, last),
      );
      const accepted: SqlProjectionEntry[] = [];
      for (const entry of entries) {
        if (conflicts.has(entry.index)) continue;
        const mutation = decodeMutation(entry);
        if (mutation) accepted.push({ seq: entry.index, ts: entry.ts, mutation });
      }
      if (accepted.length > 0) def.apply(accepted, db);
    },
  };
}

function checkDefinition(def: SqlProjectionDefinition): SqlProjectionDefinition {
  const invalid = (field: string, why: string): LoomError =>
    new LoomError('INVALID_ARGUMENT', `SQL projection ${JSON.stringify(def?.name)}: ${field} ${why}`, { field });
  if (typeof def?.name !== 'string' || !projectionNamePattern.test(def.name)) throw invalid('name', 'must be 1-64 of A-Z a-z 0-9 _ -');
  if (def.name === sqlProjectionName) throw invalid('name', `must not be ${sqlProjectionName}, the built-in view's name`);
  if (!Number.isSafeInteger(def.version) || def.version < 1) throw invalid('version', 'must be a positive integer');
  if (!Array.isArray(def.tables) || def.tables.length === 0) throw invalid('tables', 'must list the tables migrate creates');
  for (const table of def.tables) {
    if (typeof table !== 'string' || !tableNamePattern.test(table)) {
      throw invalid('tables', `has ${JSON.stringify(table)}: a table name is 1-64 of A-Z a-z 0-9 _, not starting with a digit`);
    }
    const lower = table.toLowerCase();
    if (reservedTableNames.includes(lower) || reservedTablePrefixes.some((p) => lower.startsWith(p))) {
      throw invalid('tables', `has ${table}: events, kv_*, _loom_* and sqlite_* belong to loom and SQLite`);
    }
  }
  for (const type of def.handles ?? []) {
    if (!mutationTypes.includes(type)) throw invalid('handles', `has ${JSON.stringify(type)}; expected some of ${mutationTypes.join(', ')}`);
  }
  if (typeof def.migrate !== 'function') throw invalid('migrate', 'must be a function');
  if (typeof def.apply !== 'function') throw invalid('apply', 'must be a function');
  return def;
}

function schemaObjects(db: SqlDatabase): SchemaObject[] {
  return db.prepare<[], SchemaObject>(`SELECT type, name, tbl_name FROM sqlite_schema`).all();
}

function objectKey(o: SchemaObject): string {
  return `${o.type}\0${o.name.toLowerCase()}`;
}
