// The `loom` command line: serve a node, inspect and verify the log, ask a node for its status.
// Output for people goes to stdout/stderr here; everything else in loom logs through pino.

import { parseArgs } from 'node:util';
import * as path from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { LmdbLog, type LogEntry } from '../eventlog';
import { configSchema, keyToFlag, loadConfig, replayProjection, startNode, type LoomNode } from '../node';
import { LoomError, collectGarbageOnRelease, createLogger } from '../util';

const usage = `loom — an embeddable, replicated, event-sourced database

usage:
  loom serve   [--config FILE] [--data DIR] [--host H] [--nats-port P] [--grpc-port P] [--http-port P]
               [--service NAME] [--id ID] [--channel alpha|beta|stable] [--node-id N] [--raft-port P]
               [--peers ID=HOST:PORT,...] [--join] [--cluster-secret S] [--auth-token T] [--sync full|none]
               [--tls-cert FILE --tls-key FILE] [--peer-tls-cert FILE --peer-tls-key FILE --peer-tls-ca FILE]
               [--role db|disco] [--log-level LEVEL] [--entry-bytes-max N] [--chunk-bytes N] [--object-bytes-max N]
               [--nats-user U --nats-password P] [--nats-max-payload-bytes N] [--http-body-idle-timeout-ms N]
               [--orphan-chunk-age-ms N] [--chunk-gc-interval-ms N]
  loom log stat   [--data DIR]
  loom log tail   [--data DIR] [--from N] [--follow]
  loom log verify [--data DIR]
  loom replay  --projection NAME [--data DIR]     drop one view (kv, sql) and rebuild it from the log
  loom status  [--http URL]
  loom cluster status [--http URL]                 role, leader, term, commit and members of the node's group
  loom cluster add --node-id N --host H --raft-port P [--learner] [--http URL]
                                                   add a member (as a learner, promoted to voter once caught up)
  loom cluster remove --node-id N [--http URL]     remove a member
  loom cluster transfer-leader --to N [--http URL] hand leadership to voter N
  (add, remove and transfer-leader go to the leader; a follower's NOT_LEADER answer is followed once)

Every serve flag also reads from LOOM_<FLAG> (e.g. LOOM_HTTP_PORT). A port of 0 picks a free one;
chosen ports are written to <data>/ports.json ("raft" is null without --peers: no raft listener).
--sync none skips fsync: for tests and benchmarks only, an acknowledged write may be lost in a crash.
`;

class UsageError extends Error {}

type Flags = Record<string, string | boolean | undefined>;

function parse(args: string[], options: Record<string, { type: 'string' | 'boolean' }>): Flags {
  try {
    return parseArgs({ args, options: { ...options, help: { type: 'boolean' } }, strict: true, allowPositionals: false }).values as Flags;
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/^Unknown option '(.*)'.*$/s, 'unknown flag $1'));
  }
}

async function serve(args: string[]): Promise<void> {
  const options: Record<string, { type: 'string' }> = { config: { type: 'string' } };
  for (const key of Object.keys(configSchema.shape)) options[keyToFlag(key).slice(2)] = { type: 'string' };
  // Each value flag takes a string; --join alone means true.
  const flagArgs = args.map((a) => (a === '--join' ? '--join=true' : a));
  const flags = parse(flagArgs, options);
  if (flags.help) {
    process.stdout.write(usage);
    return;
  }
  const { config: file, ...rest } = flags as Record<string, string | undefined>;
  const config = loadConfig({ flags: rest, env: process.env, file: file ?? process.env.LOOM_CONFIG });
  const logger = createLogger({ level: config.logLevel });
  // After a large transfer the node collects its garbage once it is quiet (docs/decisions.md §16).
  // V8 hands `gc` only to contexts made after --expose-gc: this process's own stays without it.
  setFlagsFromString('--expose-gc');
  collectGarbageOnRelease(runInNewContext('gc') as () => void);
  const node: LoomNode = await startNode(config, { logger });
  const stop = (signal: string): void => {
    logger.info({ signal }, 'shutting down');
    node.close().then(
      () => process.exit(0),
      (err) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

function openLogReadOnly(dataDir: string): LmdbLog {
  const dir = path.join(path.resolve(dataDir), 'log');
  try {
    return LmdbLog.open({ path: dir, readOnly: true });
  } catch (err) {
    if (err instanceof LoomError) throw err;
    throw new LoomError('NOT_FOUND', `no loom log at ${dir}: ${(err as Error).message}`, { path: dir });
  }
}

function describeEntry(entry: LogEntry): string {
  const data = Buffer.from(entry.data);
  const preview = data.length <= 64 && /^[\x20-\x7e]*$/.test(data.toString('latin1')) ? JSON.stringify(data.toString()) : `${data.length} bytes`;
  return `${entry.index}\tterm ${entry.term}\t${new Date(entry.ts).toISOString()}\t${entry.type}\t${preview}`;
}

async function logCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const flags = parse(rest, { data: { type: 'string' }, from: { type: 'string' }, follow: { type: 'boolean' } });
  const dataDir = (flags.data as string | undefined) ?? process.env.LOOM_DATA ?? './data';
  if (flags.help || !sub) {
    process.stdout.write(usage);
    return sub ? 0 : 2;
  }
  const log = openLogReadOnly(dataDir);
  try {
    switch (sub) {
      case 'stat': {
        const stats = log.stats();
        process.stdout.write(
          `${JSON.stringify({ path: log.file, firstIndex: stats.firstIndex, lastIndex: stats.lastIndex, lastTerm: stats.lastTerm, sizeBytes: stats.sizeBytes, hardState: log.hardState() }, null, 2)}\n`,
        );
        return 0;
      }
      case 'verify': {
        const report = log.verify((checked, total) => process.stderr.write(`verify: ${checked}/${total} entries checked\n`));
        if (report.ok) {
          process.stdout.write(`ok: ${report.checked} entries [${report.firstIndex}, ${report.lastIndex}] verified in ${log.file}\n`);
          return 0;
        }
        process.stdout.write(`CORRUPT: entry ${report.bad?.index}: ${report.bad?.reason} (${report.checked} good entries before it)\n`);
        return 1;
      }
      case 'tail': {
        const from = flags.from !== undefined ? Number(flags.from) : Math.max(log.firstIndex(), log.lastIndex() - 9);
        if (!Number.isSafeInteger(from) || from < 1) throw new UsageError(`--from must be a positive integer, got ${String(flags.from)}`);
        let next = Math.max(from, log.firstIndex());
        for (;;) {
          while (next <= log.lastIndex()) {
            const batch = log.entries(next, log.lastIndex() + 1, 1024 * 1024);
            for (const entry of batch) process.stdout.write(`${describeEntry(entry)}\n`);
            next += batch.length;
          }
          if (!flags.follow) return 0;
          // A read-only handle sees new entries once it is reopened; poll gently.
          await new Promise((resolve) => setTimeout(resolve, 500));
          await log.close();
          return logCommand(['tail', '--data', dataDir, '--from', String(next), '--follow']);
        }
      }
      default:
        throw new UsageError(`unknown log command "${sub}"; expected stat, tail or verify`);
    }
  } finally {
    await log.close();
  }
}

async function replay(args: string[]): Promise<number> {
  const flags = parse(args, { data: { type: 'string' }, projection: { type: 'string' } });
  if (flags.help) {
    process.stdout.write(usage);
    return 0;
  }
  const name = flags.projection as string | undefined;
  if (!name) throw new UsageError('replay needs --projection NAME');
  const dataDir = path.resolve((flags.data as string | undefined) ?? process.env.LOOM_DATA ?? './data');
  const width = 30;
  const summary = await replayProjection(dataDir, name, ({ applied, total, elapsedMs }) => {
    const done = total === 0 ? 1 : applied / total;
    const bar = '#'.repeat(Math.round(done * width)).padEnd(width, '.');
    const rate = Math.round(applied / Math.max(elapsedMs / 1000, 0.001));
    process.stderr.write(`\rreplay ${name} [${bar}] ${applied}/${total} entries, ${rate}/s`);
  });
  process.stderr.write('\n');
  process.stdout.write(
    `replayed ${summary.projection}: ${summary.entries} entries up to ${summary.lastIndex} in ${(summary.elapsedMs / 1000).toFixed(2)} s (${Math.round(summary.entriesPerSecond)} entries/s)\n`,
  );
  return 0;
}

async function status(args: string[]): Promise<number> {
  const flags = parse(args, { http: { type: 'string' } });
  const base = (flags.http as string | undefined) ?? process.env.LOOM_HTTP ?? 'http://127.0.0.1:8080';
  const response = await fetch(new URL('/readyz', base));
  process.stdout.write(`${JSON.stringify(await response.json(), null, 2)}\n`);
  return response.ok ? 0 : 1;
}

async function cluster(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const flags = parse(rest, {
    http: { type: 'string' },
    'node-id': { type: 'string' },
    host: { type: 'string' },
    'raft-port': { type: 'string' },
    learner: { type: 'boolean' },
    to: { type: 'string' },
  });
  const base = (flags.http as string | undefined) ?? process.env.LOOM_HTTP ?? 'http://127.0.0.1:8080';
  const int = (name: string): number => {
    const value = flags[name];
    const n = Number(value);
    if (typeof value !== 'string' || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`cluster ${sub}: --${name} must be a positive integer`);
    return n;
  };
  switch (sub) {
    case 'status': {
      const response = await fetch(new URL('/v1/cluster/status', base));
      process.stdout.write(`${JSON.stringify(await response.json(), null, 2)}\n`);
      return response.ok ? 0 : 1;
    }
    case 'add': {
      if (typeof flags.host !== 'string') throw new UsageError('cluster add: --host is required (the new node\'s raft host)');
      const body = { nodeId: int('node-id'), host: flags.host, raftPort: int('raft-port'), ...(flags.learner ? { learner: true } : {}) };
      return clusterRequest(base, 'POST', '/v1/cluster/members', body);
    }
    case 'remove':
      return clusterRequest(base, 'DELETE', `/v1/cluster/members/${int('node-id')}`, undefined);
    case 'transfer-leader':
      return clusterRequest(base, 'POST', '/v1/cluster/transfer-leader', { to: int('to') });
    default:
      throw new UsageError(`unknown cluster command "${sub ?? ''}"; expected status, add, remove or transfer-leader`);
  }
}

/**
 * Sends a membership request to a node's HTTP door. Changes are leader-only: a follower answers
 * NOT_LEADER (421) naming the leader's HTTP address, which is followed once.
 */
async function clusterRequest(base: string, method: string, route: string, body: unknown): Promise<number> {
  let url = new URL(route, base);
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(url, {
      method,
      ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(clusterRequestMsMax),
    });
    const answer = (await response.json()) as { code?: string; details?: { http?: string } };
    if (answer.code === 'NOT_LEADER' && typeof answer.details?.http === 'string' && attempt === 0) {
      url = new URL(route, `http://${answer.details.http}`);
      process.stderr.write(`loom: not the leader; following to ${url.origin}\n`);
      continue;
    }
    process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
    return response.ok ? 0 : 1;
  }
}

/** A membership change waits for a new learner to catch up (learnerCatchUpMsMax) and then commits. */
const clusterRequestMsMax = 120_000;

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  switch (command) {
    case 'serve':
      await serve(args);
      return -1; // keeps running until a signal
    case 'log':
      return logCommand(args);
    case 'replay':
      return replay(args);
    case 'status':
      return status(args);
    case 'cluster':
      return cluster(args);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(usage);
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`loom: ${err.message}\nrun "loom --help" for usage\n`);
      process.exitCode = 2;
    } else if (err instanceof LoomError) {
      process.stderr.write(`loom: ${err.code}: ${err.message}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`loom: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    }
  },
);
