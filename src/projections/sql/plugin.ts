// The SQL view as a family of projections the node plugs in: the built-in tables first (so that
// developer projections see only accepted mutations), then developer projections, all in one
// SQLite file under the views directory, and the read-only query service over that file.

import * as path from 'node:path';
import type { Logger } from '../../util';
import { ProjectionRunner, type Projection } from '../projection';
import { SqlProjection } from './sql-projection';
import { SqlStore, type SqlDatabase } from './sql-store';
import { SqlQueryService } from './query-service';

export const sqlFileName = 'sql.db';

export interface SqlViewOptions {
  logger: Logger;
  /** Developer projections (defineSqlProjection), applied after the built-in tables. */
  projections?: Array<Projection<SqlDatabase>>;
  sync?: boolean;
  queryTimeoutMs?: number;
  /** Largest result page; keep it under the bus payload limit for the NATS door. */
  resultBytesMax?: number;
  /** Query processes running queries side by side. */
  queryProcesses?: number;
}

export interface SqlView {
  runners: Array<ProjectionRunner<SqlDatabase>>;
  queries: SqlQueryService;
  store: SqlStore;
  close(): Promise<void>;
}

export function openSqlView(viewsDir: string, options: SqlViewOptions): SqlView {
  const file = path.join(viewsDir, sqlFileName);
  const store = new SqlStore(file, { sync: options.sync });
  const runners = [new SqlProjection(), ...(options.projections ?? [])].map(
    (projection) => new ProjectionRunner(projection, store, options.logger.child({ projection: projection.name })),
  );
  const queries = new SqlQueryService({
    file,
    logger: options.logger,
    timeoutMs: options.queryTimeoutMs,
    resultBytesMax: options.resultBytesMax,
    processes: options.queryProcesses,
  });
  return {
    runners,
    queries,
    store,
    async close() {
      await queries.close();
      store.close();
    },
  };
}
