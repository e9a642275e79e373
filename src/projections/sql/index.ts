// The SQL view: the SQLite store and its built-in projection (KV buckets and events as tables),
// developer projections with their own tables, and the read-only query service.

export * from './limits';
export { SqlStore, quoteIdentifier, checkpointsTable } from './sql-store';
export type { SqlDatabase, SqlStoreOptions, SqlDump, SqlTableDump, SqlSchemaObject } from './sql-store';
export { SqlProjection, sqlProjectionName, sqlProjectionVersion, eventsTable, kvTablesTable, conflictsTable, kvTablePrefix } from './sql-projection';
export { kvValueForSql } from './sql-value';
export { defineSqlProjection } from './developer';
export type { SqlProjectionDefinition, SqlProjectionEntry } from './developer';
export { SqlQueryService } from './query-service';
export type { SqlQueryServiceOptions, SqlQueryResult } from './query-service';
export { checkQueryRequest, encodeCursor } from './query-request';
export type { SqlQueryRequest, SqlParam, SqlParams, CheckedQuery } from './query-request';
export { openSqlView, sqlFileName } from './plugin';
export type { SqlView, SqlViewOptions } from './plugin';
