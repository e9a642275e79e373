// SqlQueryService over a populated SQL view: parameters, limits and cursor pagination, writes and
// bad SQL refused with clear errors, and a runaway query stopped without blocking the main thread
// or the other query process.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { ProjectionRunner } from '../../../src/projections/projection';
import { SqlProjection, SqlQueryService, SqlStore, queryLimitDefault, queryLimitMax, type SqlQueryResult } from '../../../src/projections/sql';
import { LoomError, silentLogger } from '../../../src/util';
import { LogBuilder, tempDir } from './log-builder';

const logger = silentLogger();
const itemCount = 2_500;
let dir: string;
let file: string;
let store: SqlStore;
let service: SqlQueryService;

beforeAll(() => {
  dir = tempDir('sql-query');
  file = path.join(dir, 'view.sqlite');
  store = new SqlStore(file);
  const runner = new ProjectionRunner(new SqlProjection(), store, logger);
  const log = new LogBuilder();
  for (let i = 0; i < itemCount; i++) log.put('items', `item-${String(i).padStart(5, '0')}`, JSON.stringify({ n: i, even: i % 2 === 0 }));
  log.put('files', 'logo', new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0xff]));
  for (const batch of log.batches(1000)) runner.apply(batch);
  service = new SqlQueryService({ file, logger, timeoutMs: 1_500 });
});

afterAll(async () => {
  await service.close();
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function rejection(promise: Promise<unknown>): Promise<LoomError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(LoomError);
    return err as LoomError;
  }
  throw new Error('expected the query to fail');
}

describe('SqlQueryService', () => {
  it('answers json_extract over a KV bucket with positional and named parameters', async () => {
    const positional = await service.query({ sql: `SELECT key, json_extract(value, '$.n') AS n FROM kv_items WHERE json_extract(value, '$.n') BETWEEN ? AND ? ORDER BY key`, params: [10, 12] });
    expect(positional).toEqual({ columns: ['key', 'n'], rows: [['item-00010', 10], ['item-00011', 11], ['item-00012', 12]] });
    const named = await service.query({ sql: `SELECT count(*) AS c FROM kv_items WHERE json_extract(value, '$.even') = :even`, params: { even: true } });
    expect(named.rows).toEqual([[itemCount / 2]]);
  });

  it('returns integers exactly: numbers while they fit a double, decimal strings beyond', async () => {
    const result = await service.query({ sql: 'SELECT 9007199254740991, -9007199254740991, 9007199254740993, -9223372036854775808, 1.5, count(*) FROM kv_items' });
    expect(result.rows).toEqual([[9007199254740991, -9007199254740991, '9007199254740993', '-9223372036854775808', 1.5, itemCount]]);
  });

  it('returns BLOBs as base64 strings', async () => {
    const result = await service.query({ sql: `SELECT key, typeof(value), value FROM kv_files` });
    expect(result.rows).toEqual([['logo', 'blob', Buffer.from([0x89, 0x50, 0x4e, 0x47, 0xff]).toString('base64')]]);
  });

  it('returns at most the default limit, and refuses a limit over the maximum', async () => {
    const page = await service.query({ sql: 'SELECT key FROM kv_items ORDER BY key' });
    expect(page.rows).toHaveLength(queryLimitDefault);
    expect(page.cursor).toEqual(expect.any(String));
    const error = await rejection(service.query({ sql: 'SELECT 1', limit: queryLimitMax + 1 }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toMatch(/limit must be an integer from 1 to 10000/);
  });

  it('pages through every row exactly once with the cursor, and ends without one', async () => {
    const sql = `SELECT key, rev FROM kv_items WHERE rev > ? ORDER BY key`;
    const seen: string[] = [];
    let page: SqlQueryResult = await service.query({ sql, params: [0], limit: 700 });
    let pages = 1;
    for (;;) {
      seen.push(...page.rows.map((r) => r[0] as string));
      if (!page.cursor) break;
      page = await service.query({ sql, params: [0], limit: 700, cursor: page.cursor });
      pages++;
    }
    expect(pages).toBe(Math.ceil(itemCount / 700));
    expect(seen).toHaveLength(itemCount);
    expect(new Set(seen).size).toBe(itemCount);
    expect(seen).toEqual([...seen].sort());
  });

  it('refuses a cursor sent with a different query', async () => {
    const page = await service.query({ sql: 'SELECT key FROM kv_items ORDER BY key', limit: 10 });
    const error = await rejection(service.query({ sql: 'SELECT key FROM kv_items ORDER BY key DESC', limit: 10, cursor: page.cursor }));
    expect(error).toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'cursor' } });
    expect(error.message).toMatch(/different query/);
    expect((await rejection(service.query({ sql: 'SELECT 1', cursor: 'garbage' }))).code).toBe('INVALID_ARGUMENT');
  });

  it.each([
    ['INSERT', `INSERT INTO kv_items (key, value, rev, updated_at) VALUES ('x', 1, 1, 1)`, /writes are not allowed/],
    ['UPDATE', `UPDATE kv_items SET rev = 0`, /writes are not allowed/],
    ['DELETE … RETURNING', `DELETE FROM kv_items RETURNING key`, /writes are not allowed/],
    ['DROP', `DROP TABLE kv_items`, /writes are not allowed/],
    ['CREATE', `CREATE TABLE t (x)`, /writes are not allowed/],
    ['ATTACH', `ATTACH DATABASE '${'/tmp/loom-attach.sqlite'}' AS other`, /only statements that return rows/],
    ['BEGIN', `BEGIN`, /only statements that return rows/],
    ['PRAGMA write', `PRAGMA user_version = 7`, /PRAGMA statements are not allowed/],
    ['PRAGMA setter that returns a row', `/* sneaky */ pragma hard_heap_limit = 0`, /PRAGMA statements are not allowed/],
  ])('refuses %s with INVALID_ARGUMENT naming why', async (_name, sql, why) => {
    const error = await rejection(service.query({ sql }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toMatch(why);
    expect(store.db.prepare('SELECT count(*) FROM kv_items').pluck().get()).toBe(itemCount);
  });

  it('still reads pragmas through their table-valued functions', async () => {
    const result = await service.query({ sql: `SELECT name FROM pragma_table_info('kv_items') ORDER BY cid` });
    expect(result.rows).toEqual([['key'], ['value'], ['rev'], ['updated_at']]);
  });

  it('answers malformed SQL with INVALID_ARGUMENT carrying SQLite’s message', async () => {
    const syntax = await rejection(service.query({ sql: 'SELEC key FROM kv_items' }));
    expect(syntax.code).toBe('INVALID_ARGUMENT');
    expect(syntax.message).toMatch(/^SQL error: near "SELEC": syntax error/);
    const table = await rejection(service.query({ sql: 'SELECT * FROM kv_nope' }));
    expect(table.message).toMatch(/no such table: kv_nope/);
    const two = await rejection(service.query({ sql: 'SELECT 1; SELECT 2' }));
    expect(two.message).toMatch(/more than one statement/);
    const params = await rejection(service.query({ sql: 'SELECT ?', params: [] }));
    expect(params.code).toBe('INVALID_ARGUMENT');
    expect((await rejection(service.query({ sql: '' }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(service.query({ sql: 'SELECT ?', params: [{}] as never }))).details).toEqual({ field: 'params[0]' });
  });

  it('stops a runaway query at its time limit while the main thread and the other query process keep serving', async () => {
    const started = Date.now();
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 50);
    const runaway = service.query({ sql: 'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c' });
    let runawaySettled = false;
    runaway.catch(() => undefined).finally(() => (runawaySettled = true));
    // The second query process answers while the first one spins.
    const beside = await service.query({ sql: 'SELECT count(*) FROM kv_items' });
    expect(beside.rows).toEqual([[itemCount]]);
    expect(runawaySettled).toBe(false);
    const queued = service.query({ sql: 'SELECT 1' });
    const error = await rejection(runaway);
    clearInterval(ticker);
    const elapsedMs = Date.now() - started;
    expect(error.code).toBe('TIMEOUT');
    expect(error.message).toMatch(/within 1500 ms/);
    expect(elapsedMs).toBeGreaterThanOrEqual(1_400);
    expect(elapsedMs).toBeLessThan(4_000);
    // The event loop kept turning while SQLite spun in the other process.
    expect(ticks).toBeGreaterThan(15);
    expect((await queued).rows).toEqual([[1]]);
    const after = await service.query({ sql: 'SELECT count(*) FROM kv_items' });
    expect(after.rows).toEqual([[itemCount]]);
  });

  it('refuses a number of query processes out of range, naming it', () => {
    for (const processes of [0, 17, 1.5]) {
      expect(() => new SqlQueryService({ file, logger, processes })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', details: { field: 'processes' } }));
    }
  });

  it('fails with UNAVAILABLE, not a crash, when the view file does not exist yet', async () => {
    const missing = new SqlQueryService({ file: path.join(dir, 'missing.sqlite'), logger });
    try {
      const error = await rejection(missing.query({ sql: 'SELECT 1' }));
      expect(error.code).toBe('UNAVAILABLE');
    } finally {
      await missing.close();
    }
    expect((await rejection(missing.query({ sql: 'SELECT 1' }))).code).toBe('UNAVAILABLE');
  });

  it('cuts a page short at the result byte budget and refuses a single row over it', async () => {
    const small = new SqlQueryService({ file, logger, resultBytesMax: 2_000 });
    try {
      const page = await small.query({ sql: `SELECT key, value FROM kv_items ORDER BY key`, limit: 500 });
      expect(page.rows.length).toBeGreaterThan(5);
      expect(page.rows.length).toBeLessThan(100);
      expect(page.cursor).toEqual(expect.any(String));
      const next = await small.query({ sql: `SELECT key, value FROM kv_items ORDER BY key`, limit: 500, cursor: page.cursor });
      expect(next.rows[0][0]).toBe(`item-${String(page.rows.length).padStart(5, '0')}`);
      const error = await rejection(small.query({ sql: `SELECT zeroblob(5000)` }));
      expect(error.code).toBe('TOO_LARGE');
    } finally {
      await small.close();
    }
  });
});
