// Checks an SQL query request at the door (text, parameters, limit) and encodes the opaque
// pagination cursor. Pure: the query service and the API adapters share it.

import { createHash } from 'node:crypto';
import { LoomError } from '../../util';
import { checkLimit } from '../../util/names';
import { queryLimitDefault, queryLimitMax, queryParamsMax, querySqlBytesMax } from './limits';

export type SqlParam = string | number | bigint | boolean | null | Uint8Array;
/** Positional (`?`, `?NNN`) as an array, or named (`:name`, `@name`, `$name`) as an object. */
export type SqlParams = SqlParam[] | { [name: string]: SqlParam };

export interface SqlQueryRequest {
  sql: string;
  params?: SqlParams;
  /** Rows per page: default queryLimitDefault (1,000), at most queryLimitMax (10,000). */
  limit?: number;
  /** The `cursor` of the previous page, sent with the same sql and params. */
  cursor?: string;
}

/** What the query process is asked to run: bound values are SQLite's own types. */
export interface CheckedQuery {
  sql: string;
  params: Array<string | number | bigint | null | Uint8Array> | { [name: string]: string | number | bigint | null | Uint8Array } | undefined;
  limit: number;
  offset: number;
  /** Ties a cursor to its query: a hash of the sql text and the parameters. */
  queryId: string;
}

const cursorVersion = 1;

export function checkQueryRequest(request: SqlQueryRequest): CheckedQuery {
  if (typeof request !== 'object' || request === null) throw new LoomError('INVALID_ARGUMENT', 'a query is an object {sql, params?, limit?, cursor?}', { field: 'body' });
  const { sql } = request;
  if (typeof sql !== 'string' || sql.trim() === '') throw new LoomError('INVALID_ARGUMENT', 'sql must be a non-empty string', { field: 'sql' });
  const sqlBytes = Buffer.byteLength(sql);
  if (sqlBytes > querySqlBytesMax) {
    throw new LoomError('TOO_LARGE', `sql is ${sqlBytes} bytes; querySqlBytesMax is ${querySqlBytesMax}`, { field: 'sql', limit: 'querySqlBytesMax', max: querySqlBytesMax });
  }
  const params = checkParams(request.params);
  const limit = checkLimit(request.limit, 'limit', queryLimitDefault, queryLimitMax);
  const queryId = hashQuery(sql, params);
  const offset = request.cursor === undefined || request.cursor === null ? 0 : decodeCursor(request.cursor, queryId);
  return { sql, params, limit, offset, queryId };
}

export function encodeCursor(queryId: string, offset: number): string {
  return Buffer.from(JSON.stringify({ v: cursorVersion, q: queryId, o: offset })).toString('base64url');
}

function decodeCursor(cursor: unknown, queryId: string): number {
  const bad = (why: string): LoomError => new LoomError('INVALID_ARGUMENT', `cursor ${why}`, { field: 'cursor' });
  if (typeof cursor !== 'string' || cursor.length > 256) throw bad('must be the string a previous page returned');
  let parsed: { v?: unknown; q?: unknown; o?: unknown };
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as typeof parsed;
  } catch {
    throw bad('is not one loom returned');
  }
  if (parsed?.v !== cursorVersion || typeof parsed.q !== 'string' || !Number.isSafeInteger(parsed.o) || (parsed.o as number) < 0) {
    throw bad('is not one loom returned');
  }
  if (parsed.q !== queryId) throw bad('belongs to a different query: send the same sql and params as for the first page');
  return parsed.o as number;
}

function checkParams(params: unknown): CheckedQuery['params'] {
  if (params === undefined || params === null) return undefined;
  if (Array.isArray(params)) {
    if (params.length > queryParamsMax) throw new LoomError('TOO_LARGE', `${params.length} params; queryParamsMax is ${queryParamsMax}`, { field: 'params', max: queryParamsMax });
    return params.map((value, i) => checkParam(value, `params[${i}]`));
  }
  if (typeof params !== 'object' || params instanceof Uint8Array) {
    throw new LoomError('INVALID_ARGUMENT', 'params must be an array (positional) or an object (named)', { field: 'params' });
  }
  const entries = Object.entries(params);
  if (entries.length > queryParamsMax) throw new LoomError('TOO_LARGE', `${entries.length} params; queryParamsMax is ${queryParamsMax}`, { field: 'params', max: queryParamsMax });
  const named: { [name: string]: string | number | bigint | null | Uint8Array } = {};
  for (const [name, value] of entries) named[name] = checkParam(value, `params.${name}`);
  return named;
}

function checkParam(value: unknown, field: string): string | number | bigint | null | Uint8Array {
  if (value === null || typeof value === 'string' || typeof value === 'bigint') return value;
  // A plain Uint8Array view (not a Buffer), so equal bytes hash equal whichever door they came by.
  if (value instanceof Uint8Array) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new LoomError('INVALID_ARGUMENT', `${field} must be a finite number`, { field });
    return value;
  }
  // SQLite has no boolean type: like its own TRUE and FALSE keywords, they are 1 and 0.
  if (typeof value === 'boolean') return value ? 1 : 0;
  throw new LoomError('INVALID_ARGUMENT', `${field} must be a string, number, boolean, null or bytes; got ${value === undefined ? 'undefined' : typeof value}`, { field });
}

function hashQuery(sql: string, params: CheckedQuery['params']): string {
  const canonical = JSON.stringify([sql, params], (_key, value: unknown) => {
    if (typeof value === 'bigint') return { bigint: value.toString() };
    if (value instanceof Uint8Array) return { bytes: Buffer.from(value).toString('base64') };
    return value;
  });
  return createHash('sha256').update(canonical).digest('base64url').slice(0, 22);
}
