// defineSqlProjection: a developer's migration and apply run by ProjectionRunner on the shared
// SqlStore, with its own checkpoint, its declared tables dropped on a rebuild, and guard rails.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { ProjectionRunner } from '../../../src/projections/projection';
import { SqlProjection, SqlStore, defineSqlProjection, sqlProjectionVersion, type SqlProjectionDefinition } from '../../../src/projections/sql';
import { LoomError, silentLogger } from '../../../src/util';
import { LogBuilder, tempDir } from './log-builder';

const logger = silentLogger();
let dir: string;
let store: SqlStore;

beforeEach(() => {
  dir = tempDir('sql-dev');
  store = new SqlStore(path.join(dir, 'view.sqlite'));
});
afterEach(() => {
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Counts accepted kv.put entries per bucket. */
function putCounter(version: number, extra: Partial<SqlProjectionDefinition> = {}): SqlProjectionDefinition {
  return {
    name: 'put-counter',
    version,
    tables: ['put_counts'],
    handles: ['kv.put'],
    migrate: (db) => db.exec(`CREATE TABLE IF NOT EXISTS put_counts (bucket TEXT PRIMARY KEY, puts INTEGER NOT NULL, last_seq INTEGER NOT NULL)`),
    apply: (entries, db) => {
      const bump = db.prepare(
        `INSERT INTO put_counts (bucket, puts, last_seq) VALUES (?, 1, ?) ON CONFLICT(bucket) DO UPDATE SET puts = puts + 1, last_seq = excluded.last_seq`,
      );
      for (const e of entries) if (e.mutation.type === 'kv.put') bump.run(e.mutation.body.bucket, e.seq);
    },
    ...extra,
  };
}

const log = (): LogBuilder =>
  new LogBuilder()
    .put('a', 'k', '1')
    .put('a', 'k', '2', { expectRev: 99 }) // CONFLICT: never reaches the developer projection
    .put('b', 'k', '3')
    .append('s', 't', {})
    .put('a', 'j', '4');

function feed(entries: LogBuilder, ...runners: Array<ProjectionRunner<import('../../../src/projections/sql').SqlDatabase>>): void {
  for (const batch of entries.batches(2)) {
    for (const runner of runners) {
      const fresh = batch.filter((e) => e.index > runner.appliedIndex());
      if (fresh.length > 0) runner.apply(fresh);
    }
  }
}

describe('developer SQL projections', () => {
  it('sees only accepted mutations of the types it handles, and keeps its own checkpoint', () => {
    const builtIn = new ProjectionRunner(new SqlProjection(), store, logger);
    const counter = new ProjectionRunner(defineSqlProjection(putCounter(1)), store, logger);
    feed(log(), builtIn, counter);
    expect(store.db.prepare(`SELECT bucket, puts, last_seq FROM put_counts ORDER BY bucket`).all()).toEqual([
      { bucket: 'a', puts: 2, last_seq: 5 },
      { bucket: 'b', puts: 1, last_seq: 3 },
    ]);
    expect(store.readCheckpoint('put-counter')).toEqual({ index: 5, version: 1 });
  });

  it('drops only its declared tables on a version bump and rebuilds them, leaving the built-in view alone', () => {
    const builtIn = new ProjectionRunner(new SqlProjection(), store, logger);
    feed(log(), builtIn, new ProjectionRunner(defineSqlProjection(putCounter(1)), store, logger));
    const events = store.db.prepare(`SELECT * FROM events`).all();
    store.db.prepare(`INSERT INTO put_counts VALUES ('stale', 1, 1)`).run();
    // Version 2 counts differently: the rebuild must start from empty tables.
    const v2 = putCounter(2, {
      migrate: (db) => db.exec(`CREATE TABLE IF NOT EXISTS put_counts (bucket TEXT PRIMARY KEY, puts INTEGER NOT NULL, last_seq INTEGER NOT NULL, doubled INTEGER)`),
    });
    const counter = new ProjectionRunner(defineSqlProjection(v2), store, logger);
    expect(counter.status()).toMatchObject({ state: 'REBUILDING', appliedIndex: 0 });
    expect(store.db.prepare(`SELECT name FROM pragma_table_info('put_counts')`).pluck().all()).toContain('doubled');
    feed(log(), builtIn, counter);
    expect(counter.status()).toMatchObject({ state: 'RUNNING', appliedIndex: 5 });
    expect(store.db.prepare(`SELECT bucket FROM put_counts ORDER BY bucket`).pluck().all()).toEqual(['a', 'b']);
    expect(store.db.prepare(`SELECT * FROM events`).all()).toEqual(events);
    expect(store.readCheckpoint('sql')).toEqual({ index: 5, version: sqlProjectionVersion });
  });

  it('refuses a migration that creates a table it did not declare, or touches a table it does not own', () => {
    const undeclared = putCounter(1, {
      migrate: (db) => db.exec(`CREATE TABLE IF NOT EXISTS put_counts (bucket TEXT PRIMARY KEY); CREATE TABLE IF NOT EXISTS sneaky (x)`),
    });
    expect(() => new ProjectionRunner(defineSqlProjection(undeclared), store, logger)).toThrow(/created table sneaky .* not in its tables \[put_counts\]/);
    new ProjectionRunner(new SqlProjection(), store, logger);
    const trigger = putCounter(1, {
      migrate: (db) => db.exec(`CREATE TABLE IF NOT EXISTS put_counts (bucket TEXT PRIMARY KEY); CREATE TRIGGER IF NOT EXISTS t AFTER INSERT ON events BEGIN SELECT 1; END`),
    });
    expect(() => new ProjectionRunner(defineSqlProjection(trigger), store, logger)).toThrow(/created trigger t on table events/);
    // Both migrations rolled back with their transaction.
    expect(store.db.prepare(`SELECT name FROM sqlite_schema WHERE name IN ('sneaky', 't', 'put_counts')`).pluck().all()).toEqual([]);
  });

  it('stops with a clear error when it runs ahead of the built-in view, whose conflict record it needs', () => {
    const counter = new ProjectionRunner(defineSqlProjection(putCounter(1)), store, logger);
    expect(() => counter.apply(log().entries)).toThrow(/needs the built-in sql view applied up to entry 5, but it is at none/);
    expect(counter.status()).toMatchObject({ state: 'FAILED', appliedIndex: 0 });
  });

  it.each([
    ['a bad name', { name: 'no spaces' }, /name must be/],
    ['the built-in name', { name: 'sql' }, /must not be sql/],
    ['a zero version', { version: 0 }, /version must be a positive integer/],
    ['no tables', { tables: [] }, /tables must list/],
    ['a reserved table', { tables: ['kv_mine'] }, /belong to loom/],
    ['the events table', { tables: ['Events'] }, /belong to loom/],
    ['a quoted-only table name', { tables: ['my-table'] }, /a table name is/],
    ['an unknown entry type', { handles: ['kv.nope' as never] }, /handles has "kv.nope"/],
  ])('rejects a definition with %s', (_what, change, message) => {
    const attempt = (): unknown => defineSqlProjection({ ...putCounter(1), ...change });
    expect(attempt).toThrow(LoomError);
    expect(attempt).toThrow(message);
  });
});
