// The composition root: builds a running node from a validated config — data-directory lock, log,
// core, doors — and takes it down again in reverse order. Used by `loom serve` and by embedders.

import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { NatsApi, createGrpcServer, createHttpServer, listenError, type HttpServer } from '../api';
import { Bus, NatsServer } from '../bus';
import { openDatabase, type Database, type OpenDatabase, type ViewPlugin } from '../core';
import { LmdbLog, MemoryLog, type LogStore } from '../eventlog';
import { openSqlView, sqlFileName, type Projection, type SqlDatabase } from '../projections';
import { LoomError, createLogger, lockDir, type DirLock, type Logger } from '../util';
import type { Config } from './config';
import { startReplication, type Replication } from './cluster';
import { createMetrics } from './metrics';
import { checkUsable, readTlsFiles } from './tls-files';

/** Entries between snapshots (and log compactions) in a replicated group, unless --snapshot-entries says otherwise. */
export const snapshotEntriesClusterDefault = 100_000;

/** The ports a node listens on; empty for an embedded node without network doors. */
export interface Ports {
  nats?: number;
  grpc?: number;
  http?: number;
  raft?: number;
}

export interface LoomNode {
  readonly config: Config;
  readonly db: Database;
  readonly opened: OpenDatabase;
  readonly bus: Bus;
  readonly log: LogStore;
  readonly ports: Ports;
  readonly logger: Logger;
  close(): Promise<void>;
}

export interface StartNodeOptions {
  logger?: Logger;
  /** Listen on the network doors (NATS, HTTP); false runs the node inside the caller's process only. */
  doors?: boolean;
  /** Keep the log in memory: nothing survives close (tests, throwaway embedded nodes). */
  memoryLog?: boolean;
  /** Developer SQL projections (defineSqlProjection), applied after the built-in SQL tables. */
  sqlProjections?: Array<Projection<SqlDatabase>>;
  /** Extra view families beside the built-in KV and SQL views. */
  plugins?: Array<(viewsDir: string) => ViewPlugin>;
}

/** A SQL result page must fit in one NATS reply (max_payload 1 MiB) with its JSON framing. */
const sqlResultBytesMax = 768 * 1024;


export async function startNode(config: Config, options: StartNodeOptions = {}): Promise<LoomNode> {
  const logger = options.logger ?? createLogger({ level: config.logLevel });
  if (config.role === 'disco') {
    throw new LoomError('UNAVAILABLE', '--role disco is not available in this version of loom yet; run --role db', { field: 'role' });
  }
  const dataDir = path.resolve(config.data);
  mkdirSync(dataDir, { recursive: true });
  // Undo stack: whatever has been opened is closed again if a later step fails.
  const undo: Array<() => Promise<void> | void> = [];
  const unwind = async (): Promise<void> => {
    for (const step of undo.reverse()) await step();
  };
  try {
    const lock: DirLock = lockDir(dataDir);
    undo.push(() => lock.release());
    if (config.sync === 'none') logger.warn('--sync none: the log does not fsync; acknowledged writes can be lost in a crash (tests and benchmarks only)');

    const metrics = createMetrics();
    const log: LogStore = options.memoryLog
      ? new MemoryLog({ entryBytesMax: config.entryBytesMax })
      : LmdbLog.open({ path: path.join(dataDir, 'log'), sync: config.sync, entryBytesMax: config.entryBytesMax, observer: metrics.logObserver });
    undo.push(() => log.close());
    const bus = new Bus({ logger: logger.child({ part: 'bus' }), maxPayloadBytes: config.natsMaxPayloadBytes });
    const sqlPlugin = (viewsDir: string): ViewPlugin => {
      const view = openSqlView(viewsDir, {
        logger: logger.child({ part: 'sql' }),
        projections: options.sqlProjections,
        resultBytesMax: sqlResultBytesMax,
        queryProcesses: config.sqlQueryProcesses,
      });
      return {
        consumers: view.runners,
        sql: view.queries,
        backup: async (dir) => {
          await view.store.db.backup(path.join(dir, sqlFileName));
        },
        close: () => view.close(),
      };
    };
    // With --peers the log sits behind Raft; without, the node stays a single voter.
    let replication: Replication | undefined;
    if (config.peers.length > 0) {
      replication = await startReplication(config, log, bus, logger.child({ part: 'raft' }));
      const transport = replication.transport;
      undo.push(() => transport.close());
    }
    const opened = await openDatabase({
      replicator: replication?.replicator,
      log,
      viewsDir: path.join(dataDir, 'views'),
      logger: logger.child({ part: 'core' }),
      bus,
      plugins: [sqlPlugin, ...(options.plugins ?? [])],
      objects: { chunkBytes: config.chunkBytes, objectBytesMax: config.objectBytesMax },
      orphanChunkAgeMs: config.orphanChunkAgeMs,
      chunkGcIntervalMs: config.chunkGcIntervalMs,
      snapshotsDir: path.join(dataDir, 'snapshots'),
      snapshotEntries: config.snapshotEntries ?? (config.peers.length > 0 ? snapshotEntriesClusterDefault : 0),
      snapshotCatchUpEntries: config.snapshotCatchUpEntries,
      ...(config.snapshotBytesMax !== undefined ? { snapshotBytesMax: config.snapshotBytesMax } : {}),
    });
    undo.push(() => opened.close());
    metrics.watchDatabase(opened);
    // Ticking starts once the applier listens for commits.
    replication?.replicator.start();

    const api = new NatsApi({ bus, db: opened.db, nodeId: config.nodeId, logger: logger.child({ door: 'nats-api' }) });
    api.start();
    undo.push(() => api.stop());

    let closing: Promise<void> | undefined;
    const node = (ports: Ports): LoomNode => ({
      config,
      db: opened.db,
      opened,
      bus,
      log,
      ports,
      logger,
      close: () => {
        // A leader first hands leadership over, while its doors still answer (NOT_LEADER names the new leader).
        closing ??= (replication?.replicator.handOffLeadership().catch(() => undefined) ?? Promise.resolve())
          .then(unwind)
          .then(() => logger.info('loom node stopped'));
        return closing;
      },
    });
    if (options.doors === false) return node({});

    if ((config.natsUser === undefined) !== (config.natsPassword === undefined)) {
      throw new LoomError('INVALID_ARGUMENT', '--nats-user and --nats-password go together', { field: 'natsUser' });
    }
    const pem = readTlsFiles({ tlsCert: config.tlsCert, tlsKey: config.tlsKey });
    const tls = pem && { cert: pem.tlsCert, key: pem.tlsKey };
    if (tls) checkUsable(tls, 'tlsCert');
    const nats = new NatsServer(bus, {
      host: config.host,
      port: config.natsPort,
      authToken: config.authToken,
      user: config.natsUser,
      password: config.natsPassword,
      maxPayloadBytes: config.natsMaxPayloadBytes,
      tls,
      logger,
    });
    let natsPort: number;
    try {
      natsPort = (await nats.listen()).port;
    } catch (err) {
      throw listenError(err, 'nats', config.host, config.natsPort);
    }
    undo.push(() => nats.close());

    const grpc = createGrpcServer({ host: config.host, port: config.grpcPort, db: opened.db, nodeId: config.nodeId, logger, authToken: config.authToken, tls });
    let grpcPort: number;
    try {
      grpcPort = await grpc.listen();
    } catch (err) {
      throw err instanceof LoomError ? err : listenError(err, 'grpc', config.host, config.grpcPort);
    }
    undo.push(() => grpc.close());

    const http: HttpServer = createHttpServer({
      host: config.host,
      port: config.httpPort,
      opened,
      registry: metrics.registry,
      logger,
      nodeId: config.nodeId,
      authToken: config.authToken,
      bodyIdleTimeoutMs: config.httpBodyIdleTimeoutMs,
      tls,
    });
    const httpPort = await http.listen();
    undo.push(() => http.close());

    const ports: Ports = { nats: natsPort, grpc: grpcPort, http: httpPort };
    if (replication) {
      ports.raft = replication.raftPort;
      replication.transport.setLocalInfo({ nats: `${config.host}:${natsPort}`, grpc: `${config.host}:${grpcPort}`, http: `${config.host}:${httpPort}` });
    }
    writePortsFile(dataDir, ports);
    logger.info({ data: dataDir, host: config.host, ports, lastIndex: log.lastIndex() }, 'loom node is serving');
    return node(ports);
  } catch (err) {
    await unwind();
    throw err;
  }
}

/**
 * Writes `<data>/ports.json` atomically, so a script polling for it never reads half a file. Every
 * key of CONTRACT.md is there; `raft` is null on a node without --peers, which has no Raft
 * transport and so listens on no raft port.
 */
function writePortsFile(dataDir: string, ports: Ports): void {
  const file = path.join(dataDir, 'ports.json');
  const tmp = `${file}.tmp`;
  const contents = { nats: ports.nats, grpc: ports.grpc, http: ports.http, raft: ports.raft ?? null };
  writeFileSync(tmp, `${JSON.stringify(contents)}\n`);
  renameSync(tmp, file);
}
