// The code of the query process: a child Node process with its own read-only better-sqlite3
// connection, answering one query at a time over IPC. Kept as a string so it runs the same from
// the TypeScript sources (ts-jest) and from dist/, with no file to locate at run time.
//
// Why a process and not a worker thread: SQLite runs a query inside one native call, and
// better-sqlite3 exposes no sqlite3_interrupt, so Worker.terminate() cannot stop it (measured: a
// recursive CTE kept the worker thread busy, and even process.exit() waited for it). Killing a
// process always works, and its memory and CPU go with it.

/** Sent to the query process. */
export interface QueryMessage {
  id: number;
  sql: string;
  params: unknown;
  limit: number;
  offset: number;
  resultBytesMax: number;
}

/** Answered by the query process. */
export type QueryReply =
  | { id: number; ok: true; columns: string[]; rows: unknown[][]; more: boolean }
  | { id: number; ok: false; code: 'INVALID_ARGUMENT' | 'TOO_LARGE' | 'UNAVAILABLE' | 'CORRUPT' | 'INTERNAL'; message: string };

export interface QueryProcessConfig {
  betterSqlite3Path: string;
  file: string;
  heapBytesMax: number;
}

export const queryProcessCode = String.raw`
'use strict';
const config = JSON.parse(process.argv[1]);
const Database = require(config.betterSqlite3Path);
let db;

// PRAGMA statements can change the connection (hard_heap_limit, busy_timeout …) and some of them
// return a row, so "readonly and returns rows" does not make them safe. The pragma_* table-valued
// functions exist only for pragmas without side effects, so they stay available.
const leadingPragma = /^(?:\s|--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*pragma\b/i;

function open() {
  if (db === undefined) {
    const conn = new Database(config.file, { readonly: true, fileMustExist: true });
    conn.pragma('hard_heap_limit = ' + Number(config.heapBytesMax));
    conn.pragma('query_only = ON');
    db = conn;
  }
  return db;
}

function fail(id, code, message) {
  return { id: id, ok: false, code: code, message: message };
}

function classify(id, err) {
  const code = err && typeof err.code === 'string' ? err.code : '';
  const message = err && err.message ? err.message : String(err);
  if (code.startsWith('SQLITE_READONLY')) return fail(id, 'INVALID_ARGUMENT', 'writes are not allowed: queries run on a read-only connection (' + message + ')');
  if (code === 'SQLITE_NOMEM' || code === 'SQLITE_TOOBIG' || code === 'SQLITE_FULL') {
    return fail(id, 'TOO_LARGE', 'the query needs more memory than the query process allows (' + config.heapBytesMax + ' bytes): ' + message);
  }
  if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB') return fail(id, 'CORRUPT', 'the SQL view file is damaged: ' + message);
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED') || code.startsWith('SQLITE_IOERR') || code.startsWith('SQLITE_CANTOPEN')) {
    return fail(id, 'UNAVAILABLE', 'the SQL view cannot be read now: ' + message);
  }
  if (code.startsWith('SQLITE_')) return fail(id, 'INVALID_ARGUMENT', 'SQL error: ' + message);
  if (err instanceof TypeError || err instanceof RangeError) return fail(id, 'INVALID_ARGUMENT', 'parameters do not fit the query: ' + message);
  return fail(id, 'INTERNAL', message);
}

const maxSafe = BigInt(Number.MAX_SAFE_INTEGER);
const minSafe = -maxSafe;

function bindable(value) {
  return value instanceof Uint8Array ? Buffer.from(value.buffer, value.byteOffset, value.byteLength) : value;
}

function bindArgs(params) {
  if (params === undefined || params === null) return [];
  if (Array.isArray(params)) return params.map(bindable);
  const named = {};
  for (const name of Object.keys(params)) named[name] = bindable(params[name]);
  return [named];
}

function run(m) {
  let conn;
  try {
    conn = open();
  } catch (err) {
    return fail(m.id, 'UNAVAILABLE', 'cannot open the SQL view ' + config.file + ' read-only: ' + (err && err.message));
  }
  if (leadingPragma.test(m.sql)) {
    return fail(m.id, 'INVALID_ARGUMENT', 'PRAGMA statements are not allowed: they can change the connection; read with the pragma_* table-valued functions, e.g. SELECT * FROM pragma_table_info(\'events\')');
  }
  let stmt;
  try {
    stmt = conn.prepare(m.sql);
  } catch (err) {
    // Anything prepare rejects is the query's fault (syntax, unknown table, several statements),
    // unless the file itself cannot be read.
    const reply = classify(m.id, err);
    if (reply.code === 'INVALID_ARGUMENT' || reply.code === 'INTERNAL') return fail(m.id, 'INVALID_ARGUMENT', 'SQL error: ' + (err && err.message));
    return reply;
  }
  if (!stmt.readonly) {
    return fail(m.id, 'INVALID_ARGUMENT', 'writes are not allowed: this statement would change the database, and SQL queries are read-only (change data through the KV and event APIs or a projection)');
  }
  if (!stmt.reader) {
    return fail(m.id, 'INVALID_ARGUMENT', 'only statements that return rows are allowed (SELECT, WITH, VALUES, EXPLAIN); this one returns none (ATTACH, DETACH, BEGIN, SAVEPOINT …)');
  }
  stmt.raw(true);
  // Integers come back exact: as numbers while they fit a double exactly, as decimal strings beyond.
  stmt.safeIntegers(true);
  const columns = stmt.columns().map(function (c) { return c.name; });
  const rows = [];
  let bytes = 0;
  let skipped = 0;
  let more = false;
  try {
    // for-of returns the iterator when we stop early, which resets the statement and ends its read transaction.
    for (const row of stmt.iterate.apply(stmt, bindArgs(m.params))) {
      if (skipped < m.offset) {
        skipped++;
        continue;
      }
      if (rows.length === m.limit) {
        more = true;
        break;
      }
      let rowBytes = 2;
      for (let i = 0; i < row.length; i++) {
        const v = row[i];
        if (Buffer.isBuffer(v)) {
          row[i] = v.toString('base64');
          rowBytes += row[i].length + 3;
        } else if (typeof v === 'bigint') {
          row[i] = v >= minSafe && v <= maxSafe ? Number(v) : v.toString();
          rowBytes += 24;
        } else if (typeof v === 'string') {
          rowBytes += Buffer.byteLength(v) + 3;
        } else {
          rowBytes += 24;
        }
      }
      if (bytes + rowBytes > m.resultBytesMax) {
        if (rows.length === 0) {
          return fail(m.id, 'TOO_LARGE', 'row ' + (m.offset + 1) + ' of the result is about ' + rowBytes + ' bytes; resultBytesMax is ' + m.resultBytesMax);
        }
        more = true;
        break;
      }
      bytes += rowBytes;
      rows.push(row);
    }
  } catch (err) {
    return classify(m.id, err);
  }
  return { id: m.id, ok: true, columns: columns, rows: rows, more: more };
}

process.on('message', function (m) {
  let reply;
  try {
    reply = run(m);
  } catch (err) {
    reply = fail(m.id, 'INTERNAL', 'query process: ' + (err && err.stack ? err.stack : String(err)));
  }
  process.send(reply);
});
// The parent went away: nothing will read our answers.
process.on('disconnect', function () { process.exit(0); });
`;
