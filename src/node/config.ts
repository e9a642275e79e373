// One zod schema for a node's configuration, merged from defaults, an optional JSON file, LOOM_*
// environment variables and command-line flags (later wins). A bad value names its field and source.

import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { httpBodyIdleTimeoutMsDefault } from '../api/http/connections';
import { chunkGcIntervalMsDefault, orphanChunkAgeMsDefault, snapshotCatchUpEntriesDefault } from '../core';
import { entryBytesMaxDefault, entryOverheadBytes } from '../eventlog';
import { blobChunkHeaderBytesMax } from '../projections/entries';
import { queryProcessesDefault, queryProcessesMax } from '../projections/sql/limits';
import { LoomError, names } from '../util';

const port = z.coerce.number({ error: 'expected a port number 0-65535 (0 picks a free port)' }).int().min(0).max(65535);
const nameRule = /^[A-Za-z0-9_-]{1,64}$/;

const peerForm = 'expected ID=HOST:PORT,… (e.g. 1=127.0.0.1:7000,2=127.0.0.1:7001)';
export const peerSchema = z.object(
  { id: z.number().int().min(1), host: z.string().min(1), port: z.number().int().min(1).max(65535) },
  { error: peerForm },
);
export type Peer = z.infer<typeof peerSchema>;

/** `1=host:7000,2=host:7001` → peers; also accepts an already-parsed array (config file). */
const peers = z.preprocess((value) => {
  if (typeof value !== 'string') return value;
  if (value.trim() === '') return [];
  return value.split(',').map((part) => {
    const match = /^(\d+)=([^:]+):(\d+)$/.exec(part.trim());
    if (!match) return part;
    return { id: Number(match[1]), host: match[2], port: Number(match[3]) };
  });
}, z.array(peerSchema, { error: peerForm }));

export const configSchema = z
  .object({
    data: z.string().min(1).default('./data'),
    host: z.string().min(1).default('127.0.0.1'),
    natsPort: port.default(4222),
    grpcPort: port.default(50051),
    httpPort: port.default(8080),
    service: z.string().regex(nameRule, 'expected 1-64 of A-Z a-z 0-9 _ -').default('default'),
    id: z.string().regex(nameRule, 'expected 1-64 of A-Z a-z 0-9 _ -').default('001'),
    channel: z.enum(['alpha', 'beta', 'stable']).default('alpha'),
    nodeId: z.coerce.number().int().min(1).default(1),
    raftPort: port.default(7000),
    peers: peers.default([]),
    /**
     * This node joins a running group: it is not one of the genesis voters even though --peers
     * names it, and it neither votes nor campaigns until `loom cluster add` has added it.
     */
    join: z.preprocess((v) => (typeof v === 'string' ? ['1', 'true', 'yes'].includes(v.toLowerCase()) : v), z.boolean()).default(false),
    clusterSecret: z.string().min(8, 'expected at least 8 characters').optional(),
    /** PEM files for mutual TLS between peers: this node's certificate and key, and the CA that signs every peer's. */
    peerTlsCert: z.string().min(1).optional(),
    peerTlsKey: z.string().min(1).optional(),
    peerTlsCa: z.string().min(1).optional(),
    /** Raft heartbeat (tick) interval; raise both timers together for cross-data-centre links. */
    heartbeatMs: z.coerce.number().int().min(5).max(60_000).default(100),
    /** Raft election timeout (randomized within [timeout, 2·timeout)); at least two heartbeats. */
    electionTimeoutMs: z.coerce.number().int().min(10).max(600_000).default(1000),
    /**
     * Snapshot the views and compact the log every this many applied entries; 0 never compacts.
     * Default: 100,000 in a replicated group (--peers), 0 on a single node (docs/snapshots.md).
     */
    snapshotEntries: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
    /** Largest snapshot taken, in bytes: a cap on the disk a snapshot needs (it is never held in memory); default: none. */
    snapshotBytesMax: z.coerce.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
    /** Entries kept in the log below a snapshot, so a follower a little behind catches up from the log. */
    snapshotCatchUpEntries: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(snapshotCatchUpEntriesDefault),
    authToken: z.string().min(1).optional(),
    /** PEM certificate (chain) and key: the NATS, gRPC and HTTP doors then serve TLS only. */
    tlsCert: z.string().min(1).optional(),
    tlsKey: z.string().min(1).optional(),
    /** User and password NATS clients may CONNECT with, beside (or instead of) --auth-token. */
    natsUser: z.string().min(1).optional(),
    natsPassword: z.string().min(1).optional(),
    /** Largest message a NATS client may publish (announced as max_payload in INFO). */
    natsMaxPayloadBytes: z.coerce.number().int().min(1024).max(64 * 1024 * 1024).default(1024 * 1024),
    /** An HTTP request body (an upload) on which no byte arrives for this long is cut off, storing nothing. */
    httpBodyIdleTimeoutMs: z.coerce.number().int().min(1000).max(24 * 3600 * 1000).default(httpBodyIdleTimeoutMsDefault),
    sync: z.enum(['full', 'none']).default('full'),
    role: z.enum(['db', 'disco']).default('db'),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    entryBytesMax: z.coerce.number().int().min(1024).max(64 * 1024 * 1024).default(entryBytesMaxDefault),
    /** Default chunk size of object uploads (a chunk and its framing fit the default entryBytesMax). */
    chunkBytes: z.coerce.number().int().min(names.chunkBytesMin).max(names.chunkBytesMax).default(names.chunkBytesDefault),
    /** Processes running SQL queries side by side (each a Node process of some 40 MiB). */
    sqlQueryProcesses: z.coerce.number().int().min(1).max(queryProcessesMax).default(queryProcessesDefault),
    /** Largest object an upload may store. */
    objectBytesMax: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(names.objectBytesMaxDefault),
    /**
     * A chunk no object references (after a delete, an overwrite or an abandoned upload) is collected
     * this long after it became so; an upload must finish within it (docs/buckets.md).
     */
    orphanChunkAgeMs: z.coerce.number().int().min(1000).max(Number.MAX_SAFE_INTEGER).default(orphanChunkAgeMsDefault),
    /** How often the leader looks for chunks past the orphan age, and proposes their collection. */
    chunkGcIntervalMs: z.coerce.number().int().min(100).max(24 * 3600 * 1000).default(chunkGcIntervalMsDefault),
  })
  .strict();

export type Config = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;

export const configKeys = Object.keys(configSchema.shape) as Array<keyof Config>;

/** `http-port` → `httpPort`. */
export function flagToKey(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** `httpPort` → `--http-port`. */
export function keyToFlag(key: string): string {
  return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** `httpPort` → `LOOM_HTTP_PORT`. */
export function keyToEnv(key: string): string {
  return `LOOM_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

export interface ConfigSources {
  /** Values below every other source (embedders' options). */
  defaults?: ConfigInput;
  /** Flags already split into `{ 'http-port': '8080' }` (kebab-case names, string values). */
  flags?: Record<string, string | undefined>;
  env?: NodeJS.ProcessEnv;
  /** Path of a JSON config file, if any (flag --config or LOOM_CONFIG). */
  file?: string;
}

export function loadConfig(sources: ConfigSources): Config {
  const merged: Record<string, unknown> = {};
  const origin: Record<string, string> = {};
  for (const [key, value] of Object.entries(sources.defaults ?? {})) {
    if (value === undefined) continue;
    merged[key] = value;
    origin[key] = 'options';
  }

  if (sources.file) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(sources.file, 'utf8'));
    } catch (err) {
      throw new LoomError('INVALID_ARGUMENT', `cannot read config file ${sources.file}: ${(err as Error).message}`, { field: 'config' });
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new LoomError('INVALID_ARGUMENT', `config file ${sources.file} must hold a JSON object`, { field: 'config' });
    }
    for (const [key, value] of Object.entries(parsed)) {
      merged[key] = value;
      origin[key] = `config file ${sources.file}`;
    }
  }
  for (const key of configKeys) {
    const value = sources.env?.[keyToEnv(key)];
    if (value !== undefined && value !== '') {
      merged[key] = value;
      origin[key] = `environment ${keyToEnv(key)}`;
    }
  }
  for (const [flag, value] of Object.entries(sources.flags ?? {})) {
    if (value === undefined) continue;
    const key = flagToKey(flag);
    merged[key] = value;
    origin[key] = `flag --${flag}`;
  }

  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0];
    if (issue.code === 'unrecognized_keys') {
      const key = issue.keys[0];
      throw new LoomError('INVALID_ARGUMENT', `unknown configuration field "${key}" (from ${origin[key] ?? 'input'}); known fields: ${configKeys.join(', ')}`, {
        field: key,
      });
    }
    const key = String(issue.path[0] ?? 'config');
    const given = merged[key];
    throw new LoomError(
      'INVALID_ARGUMENT',
      `invalid configuration ${key} = ${JSON.stringify(given)} (from ${origin[key] ?? 'default'}): ${issue.message}`,
      { field: key },
    );
  }
  const config = result.data;
  // A chunk travels in one log entry: one that cannot fit would be refused at every upload.
  const chunkEntryBytes = config.chunkBytes + blobChunkHeaderBytesMax + Buffer.byteLength('blob.chunk') + entryOverheadBytes;
  if (chunkEntryBytes > config.entryBytesMax) {
    throw new LoomError(
      'INVALID_ARGUMENT',
      `chunkBytes ${config.chunkBytes} (from ${origin.chunkBytes ?? 'default'}) makes ${chunkEntryBytes}-byte log entries, over entryBytesMax ${config.entryBytesMax} (from ${origin.entryBytesMax ?? 'default'})`,
      { field: 'chunkBytes' },
    );
  }
  return config;
}
