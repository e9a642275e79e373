// A real database in a temp dir (LMDB log, KV and SQL views) behind a gRPC server on 127.0.0.1,
// port 0, and a client door to it; close() shuts all of it down.

import * as path from 'node:path';
import { createGrpcServer, type GrpcServer, type GrpcServerLimits } from '../../../src/api/grpc';
import { openDatabase, type Database, type OpenDatabase, type ViewPlugin } from '../../../src/core';
import { LmdbLog, type LogStore } from '../../../src/eventlog';
import { ProjectionRunner } from '../../../src/projections';
import { SqlProjection, SqlQueryService, SqlStore } from '../../../src/projections/sql';
import { silentLogger, type Logger } from '../../../src/util';
import { makeTempDir, removeDir } from '../../support/tmp';
import { grpcDoor, type GrpcDoor } from './adapter';

export interface GrpcHarness {
  port: number;
  door: GrpcDoor;
  opened?: OpenDatabase;
  server: GrpcServer;
  close(): Promise<void>;
}

export interface HarnessOptions {
  authToken?: string;
  limits?: GrpcServerLimits;
  /** Open the SQL view too (it runs queries in a child process). */
  sql?: boolean;
  /** Serve this instead of a real database (for error-mapping tests). */
  db?: Database;
  /** Serve a wrapper of the real database (to observe what the server asks of it). */
  wrapDb?: (db: Database) => Database;
  logger?: Logger;
  /** False: serve every call on grpc-js, without the lean path of lean-unary.ts. */
  leanUnary?: boolean;
}

function sqlPlugin(logger: Logger): (viewsDir: string) => ViewPlugin {
  return (viewsDir) => {
    const file = path.join(viewsDir, 'sql.sqlite');
    const store = new SqlStore(file);
    const runner = new ProjectionRunner(new SqlProjection(), store, logger);
    const service = new SqlQueryService({ file, logger });
    return {
      consumers: [runner],
      sql: service,
      async close() {
        await service.close();
        store.close();
      },
    };
  };
}

export async function startGrpc(options: HarnessOptions = {}): Promise<GrpcHarness> {
  const logger = options.logger ?? silentLogger();
  let dir: string | undefined;
  let log: LogStore | undefined;
  let opened: OpenDatabase | undefined;
  let db = options.db;
  if (!db) {
    dir = makeTempDir('loom-grpc-');
    log = LmdbLog.open({ path: `${dir}/log` });
    opened = await openDatabase({ log, viewsDir: `${dir}/views`, logger, ttlScanIntervalMs: 60_000, plugins: options.sql ? [sqlPlugin(logger)] : [] });
    db = options.wrapDb ? options.wrapDb(opened.db) : opened.db;
  }
  const server = createGrpcServer({ host: '127.0.0.1', port: 0, db, nodeId: 1, logger, authToken: options.authToken, limits: options.limits, leanUnary: options.leanUnary });
  const port = await server.listen();
  const door = grpcDoor(port, options.authToken);
  return {
    port,
    door,
    opened,
    server,
    async close() {
      door.close();
      await server.close();
      await opened?.close();
      await log?.close();
      if (dir) removeDir(dir);
    },
  };
}

/** The rejection of a call, which must fail. */
export async function failure(promise: Promise<unknown>): Promise<import('./adapter').GrpcDoorError> {
  const outcome = await promise.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (outcome === undefined) throw new Error('expected the call to fail');
  return outcome as import('./adapter').GrpcDoorError;
}
