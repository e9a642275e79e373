// Read-only SQL queries over the SQL view, run off the main thread in a few child processes, each
// with its own read-only connection and one query at a time, under a time limit that kills the
// process if its query runs over. A slow query holds one process; the others keep answering.

import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { LoomError, assert, type Logger } from '../../util';
import { queryHeapBytesMax, queryProcessesDefault, queryProcessesMax, queryQueueLengthMax, queryResultBytesMaxDefault, queryTimeoutMsDefault } from './limits';
import { queryProcessCode, type QueryMessage, type QueryProcessConfig, type QueryReply } from './query-process';
import { checkQueryRequest, encodeCursor, type SqlQueryRequest } from './query-request';

export interface SqlQueryServiceOptions {
  /** The SqlStore's file. It may not exist yet: queries answer UNAVAILABLE until it does. */
  file: string;
  logger: Logger;
  /** Time limit of one query, counted from the call (time waiting in the queue included). */
  timeoutMs?: number;
  /** Budget of one page of results; see queryResultBytesMaxDefault. */
  resultBytesMax?: number;
  /** Query processes, so queries run side by side (default queryProcessesDefault). */
  processes?: number;
}

export interface SqlQueryResult {
  columns: string[];
  /** One array per row, in column order. BLOBs come back as base64 strings. */
  rows: unknown[][];
  /** Present when more rows follow: send it back with the same sql and params for the next page. */
  cursor?: string;
}

interface Job {
  message: QueryMessage;
  queryId: string;
  timer: NodeJS.Timeout;
  resolve: (result: SqlQueryResult) => void;
  reject: (err: Error) => void;
}

/** One query process and the query it runs, if any. */
interface Worker {
  child: ChildProcess | undefined;
  running: Job | undefined;
}

export class SqlQueryService {
  private readonly file: string;
  private readonly logger: Logger;
  private readonly timeoutMs: number;
  private readonly resultBytesMax: number;
  private readonly queue: Job[] = [];
  private readonly workers: Worker[] = [];
  private nextId = 1;
  private closed = false;

  constructor(options: SqlQueryServiceOptions) {
    this.file = path.resolve(options.file);
    this.logger = options.logger.child({ component: 'sql-query' });
    this.timeoutMs = positiveInteger(options.timeoutMs, 'timeoutMs', queryTimeoutMsDefault);
    this.resultBytesMax = positiveInteger(options.resultBytesMax, 'resultBytesMax', queryResultBytesMaxDefault);
    const processes = positiveInteger(options.processes, 'processes', queryProcessesDefault);
    if (processes > queryProcessesMax) {
      throw new LoomError('INVALID_ARGUMENT', `processes must be at most ${queryProcessesMax}, got ${processes}`, { field: 'processes' });
    }
    for (let i = 0; i < processes; i++) {
      const worker: Worker = { child: undefined, running: undefined };
      this.workers.push(worker);
      this.spawnChild(worker);
    }
  }

  /** Runs a read-only query; rejects with a LoomError (INVALID_ARGUMENT, TIMEOUT, TOO_LARGE, UNAVAILABLE …). */
  query(request: SqlQueryRequest): Promise<SqlQueryResult> {
    if (this.closed) return Promise.reject(new LoomError('UNAVAILABLE', 'the SQL query service is closed'));
    let checked: ReturnType<typeof checkQueryRequest>;
    try {
      checked = checkQueryRequest(request);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.queue.length >= queryQueueLengthMax) {
      return Promise.reject(
        new LoomError('UNAVAILABLE', `${this.queue.length} SQL queries are already waiting; queryQueueLengthMax is ${queryQueueLengthMax}`, {
          limit: 'queryQueueLengthMax',
          max: queryQueueLengthMax,
        }),
      );
    }
    return new Promise<SqlQueryResult>((resolve, reject) => {
      const message: QueryMessage = {
        id: this.nextId++,
        sql: checked.sql,
        params: checked.params,
        limit: checked.limit,
        offset: checked.offset,
        resultBytesMax: this.resultBytesMax,
      };
      const job: Job = { message, queryId: checked.queryId, resolve, reject, timer: setTimeout(() => this.timedOut(job), this.timeoutMs) };
      this.queue.push(job);
      this.pump();
    });
  }

  /** Stops the query processes; pending queries fail with UNAVAILABLE. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const pending = [...this.workers.flatMap((w) => (w.running ? [w.running] : [])), ...this.queue.splice(0)];
    for (const worker of this.workers) worker.running = undefined;
    for (const job of pending) this.settle(job, new LoomError('UNAVAILABLE', 'the SQL query service closed before the query finished'));
    await Promise.all(this.workers.map((w) => this.killChild(w)));
  }

  /** Hands waiting queries, oldest first, to idle processes. */
  private pump(): void {
    if (this.closed) return;
    for (const worker of this.workers) {
      if (worker.running) continue;
      const job = this.queue.shift();
      if (!job) {
        this.setActive(worker, false);
        continue;
      }
      const child = worker.child ?? this.spawnChild(worker);
      worker.running = job;
      this.setActive(worker, true);
      child.send(job.message);
    }
  }

  private received(worker: Worker, child: ChildProcess, reply: QueryReply): void {
    if (child !== worker.child) return; // a killed process's last words
    const job = worker.running;
    assert(job !== undefined && job.message.id === reply.id, `the query process answered query ${reply.id}, which is not the one it runs`);
    worker.running = undefined;
    if (reply.ok) {
      const result: SqlQueryResult = { columns: reply.columns, rows: reply.rows };
      if (reply.more) result.cursor = encodeCursor(job.queryId, job.message.offset + reply.rows.length);
      this.settle(job, undefined, result);
    } else {
      this.settle(job, new LoomError(reply.code, reply.message, { sql: abbreviate(job.message.sql) }));
    }
    this.pump();
  }

  private timedOut(job: Job): void {
    const error = new LoomError('TIMEOUT', `the SQL query did not finish within ${this.timeoutMs} ms and was stopped`, {
      timeoutMs: this.timeoutMs,
      sql: abbreviate(job.message.sql),
    });
    const worker = this.workers.find((w) => w.running === job);
    if (worker) {
      // The only way to stop a query inside SQLite from here: kill its process, start a fresh one.
      this.logger.warn({ sql: abbreviate(job.message.sql), timeoutMs: this.timeoutMs }, 'SQL query over its time limit: killing its query process');
      worker.running = undefined;
      void this.killChild(worker);
      this.spawnChild(worker);
    } else {
      const at = this.queue.indexOf(job);
      if (at >= 0) this.queue.splice(at, 1);
    }
    this.settle(job, error);
    this.pump();
  }

  private exited(worker: Worker, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null, stderr: string): void {
    if (child !== worker.child) return;
    worker.child = undefined;
    this.logger.error({ code, signal, stderr: stderr.slice(-4096) }, 'an SQL query process exited unexpectedly');
    const job = worker.running;
    worker.running = undefined;
    if (job) {
      this.settle(job, new LoomError('INTERNAL', `the SQL query process exited (code ${code}, signal ${signal}) while running the query`, { sql: abbreviate(job.message.sql) }));
    }
    // The next query (if any) starts a fresh process; a process that cannot start fails each query, not a loop.
    this.pump();
  }

  private settle(job: Job, error: Error | undefined, result?: SqlQueryResult): void {
    clearTimeout(job.timer);
    if (error) job.reject(error);
    else job.resolve(result as SqlQueryResult);
  }

  private spawnChild(worker: Worker): ChildProcess {
    const config: QueryProcessConfig = { betterSqlite3Path: require.resolve('better-sqlite3'), file: this.file, heapBytesMax: queryHeapBytesMax };
    const child = spawn(process.execPath, ['-e', queryProcessCode, JSON.stringify(config)], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'advanced',
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    let stderr = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-8192);
    });
    child.on('message', (reply) => this.received(worker, child, reply as QueryReply));
    child.on('exit', (code, signal) => this.exited(worker, child, code, signal, stderr));
    child.on('error', (err) => this.logger.error({ err }, 'an SQL query process failed'));
    worker.child = child;
    this.setActive(worker, worker.running !== undefined);
    return child;
  }

  private killChild(worker: Worker): Promise<void> {
    const child = worker.child;
    worker.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      child.once('exit', () => resolve());
      // An idle child is unref'd; waiting for its exit must keep the program alive, or a close()
      // awaited as the program's last step never returns (and what follows it never runs).
      child.ref();
      child.kill('SIGKILL');
    });
  }

  /** An idle query process must not keep the embedding program alive. */
  private setActive(worker: Worker, active: boolean): void {
    const child = worker.child;
    if (!child) return;
    const handles = [child.channel, child.stderr] as unknown as Array<{ ref?: () => void; unref?: () => void } | null | undefined>;
    if (active) child.ref();
    else child.unref();
    for (const handle of handles) {
      if (active) handle?.ref?.();
      else handle?.unref?.();
    }
  }
}

function positiveInteger(value: number | undefined, field: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1) throw new LoomError('INVALID_ARGUMENT', `${field} must be a positive integer, got ${String(value)}`, { field });
  return value;
}

function abbreviate(sql: string): string {
  return sql.length > 200 ? `${sql.slice(0, 200)}…` : sql;
}
