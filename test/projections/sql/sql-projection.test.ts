// The built-in SQL view fed through ProjectionRunner: KV buckets as kv_<bucket> tables, events,
// CAS outcomes identical to decide.ts on every replay, and replicas that dump equal.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Outcome } from '../../../src/projections/decide';
import { KvProjection, ViewStore } from '../../../src/projections/kv/kv-view';
import { ProjectionRunner } from '../../../src/projections/projection';
import { SqlProjection, SqlStore, sqlProjectionVersion } from '../../../src/projections/sql';
import { silentLogger } from '../../../src/util';
import { LogBuilder, baseTs, tempDir } from './log-builder';

const logger = silentLogger();
let dir: string;
const stores: SqlStore[] = [];

beforeEach(() => {
  dir = tempDir('sql-view');
});
afterEach(() => {
  for (const store of stores.splice(0)) store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function openStore(name = 'view.sqlite'): SqlStore {
  const store = new SqlStore(path.join(dir, name));
  stores.push(store);
  return store;
}

/** Replays the log into a fresh store; returns the store and every entry's outcome. */
function replay(log: LogBuilder, name: string, batchSize = 3): { store: SqlStore; outcomes: Array<Outcome | undefined> } {
  const store = openStore(name);
  const runner = new ProjectionRunner(new SqlProjection(), store, logger);
  const outcomes = log.batches(batchSize).flatMap((batch) => runner.apply(batch));
  expect(runner.appliedIndex()).toBe(log.entries.length);
  return { store, outcomes };
}

describe('SQL view of KV buckets', () => {
  it('makes JSON values queryable with json_extract', () => {
    const log = new LogBuilder()
      .put('users', 'u1', JSON.stringify({ name: 'ada', age: 36 }))
      .put('users', 'u2', JSON.stringify({ name: 'alan', age: 41 }));
    const { store } = replay(log, 'a.sqlite');
    const rows = store.db.prepare(`SELECT key, json_extract(value, '$.name') AS name, rev, updated_at FROM kv_users WHERE json_extract(value, '$.age') > 40`).all();
    expect(rows).toEqual([{ key: 'u2', name: 'alan', rev: 2, updated_at: baseTs + 2000 }]);
  });

  it('stores valid JSON as text and anything else as a BLOB', () => {
    const binary = new Uint8Array([0xff, 0x00, 0x7b, 0x01]);
    const log = new LogBuilder()
      .put('b', 'json', '  [1, 2, 3]')
      .put('b', 'number', '42')
      .put('b', 'notjson', '{oops')
      .put('b', 'binary', binary)
      .put('b', 'badutf8', new Uint8Array([0x22, 0xc3, 0x28, 0x22]))
      .put('b', 'empty', new Uint8Array(0));
    const { store } = replay(log, 'a.sqlite');
    const rows = store.db.prepare(`SELECT key, typeof(value) AS kind, value FROM kv_b ORDER BY key`).all() as Array<{ key: string; kind: string; value: unknown }>;
    const byKey = Object.fromEntries(rows.map((r) => [r.key, r]));
    expect(byKey.json).toEqual({ key: 'json', kind: 'text', value: '  [1, 2, 3]' });
    expect(byKey.number.kind).toBe('text');
    expect(byKey.notjson).toEqual({ key: 'notjson', kind: 'blob', value: Buffer.from('{oops') });
    expect(byKey.binary).toEqual({ key: 'binary', kind: 'blob', value: Buffer.from(binary) });
    expect(byKey.badutf8.kind).toBe('blob');
    expect(byKey.empty.kind).toBe('blob');
    expect(store.db.prepare(`SELECT json_extract(value, '$[1]') FROM kv_b WHERE key = 'json'`).pluck().get()).toBe(2);
  });

  it('removes the row on delete and keeps the latest value and rev on overwrite', () => {
    const log = new LogBuilder().put('b', 'k1', '1').put('b', 'k2', '2').put('b', 'k1', '"one"').del('b', 'k2').del('b', 'never').del('nobucket', 'k');
    const { store, outcomes } = replay(log, 'a.sqlite');
    expect(store.db.prepare(`SELECT key, value, rev FROM kv_b`).all()).toEqual([{ key: 'k1', value: '"one"', rev: 3 }]);
    expect(outcomes[3]).toEqual({ ok: true, seq: 4, rev: 4, deleted: true });
    expect(outcomes[4]).toEqual({ ok: true, seq: 5, rev: 5, deleted: false });
    // A delete in a bucket never written creates no table.
    expect(store.db.prepare(`SELECT count(*) FROM sqlite_schema WHERE name = 'kv_nobucket'`).pluck().get()).toBe(0);
  });

  it('quotes bucket names that SQL only accepts quoted, and keeps buckets that differ only in case apart', () => {
    const log = new LogBuilder().put('my-bucket', 'k', '1').put('Users', 'k', '"upper"').put('users', 'k', '"lower"').add('kv.bucket', { bucket: 'empty', history: 1 });
    const { store } = replay(log, 'a.sqlite');
    expect(store.db.prepare(`SELECT value FROM "kv_my-bucket"`).pluck().all()).toEqual(['1']);
    expect(store.db.prepare(`SELECT bucket, table_name FROM _loom_kv_tables ORDER BY bucket`).all()).toEqual([
      { bucket: 'Users', table_name: 'kv_Users' },
      { bucket: 'empty', table_name: 'kv_empty' },
      { bucket: 'my-bucket', table_name: 'kv_my-bucket' },
      { bucket: 'users', table_name: 'kv_users~2' },
    ]);
    expect(store.db.prepare(`SELECT value FROM "kv_Users"`).pluck().all()).toEqual(['"upper"']);
    expect(store.db.prepare(`SELECT value FROM "kv_users~2"`).pluck().all()).toEqual(['"lower"']);
    expect(store.db.prepare(`SELECT count(*) FROM kv_empty`).pluck().get()).toBe(0);
  });
});

describe('SQL view of events', () => {
  it('stores each event with its stream version, JSON data and the leader timestamp', () => {
    const log = new LogBuilder().append('orders', 'order.created', { id: 'o1' }).add('raft.noop').append('orders', 'order.paid', { id: 'o1', cents: 1250 }).append('other', 'x', [1]);
    const { store } = replay(log, 'a.sqlite', 2);
    expect(store.db.prepare(`SELECT seq, stream, version, type, json_extract(data, '$.id') AS id, ts FROM events ORDER BY seq`).all()).toEqual([
      { seq: 1, stream: 'orders', version: 1, type: 'order.created', id: 'o1', ts: baseTs + 1000 },
      { seq: 3, stream: 'orders', version: 2, type: 'order.paid', id: 'o1', ts: baseTs + 3000 },
      { seq: 4, stream: 'other', version: 1, type: 'x', id: null, ts: baseTs + 4000 },
    ]);
  });
});

describe('CAS outcomes', () => {
  const casLog = (): LogBuilder =>
    new LogBuilder()
      .put('b', 'k', '1', { create: true }) // 1 ok
      .put('b', 'k', '2', { create: true }) // 2 CONFLICT: exists
      .put('b', 'k', '3', { expectRev: 1 }) // 3 ok
      .put('b', 'k', '4', { expectRev: 1 }) // 4 CONFLICT: at rev 3
      .del('b', 'k', { expectRev: 2 }) // 5 CONFLICT
      .append('s', 'e', {}, 0) // 6 ok, version 1
      .append('s', 'e', {}, 0) // 7 CONFLICT
      .append('s', 'e', {}, 1) // 8 ok, version 2
      .put('new', 'k', 'x', { expectRev: 5 }) // 9 CONFLICT, bucket table still created
      .del('b', 'k', { expectRev: 3 }); // 10 ok

  it('decides conflicts like decide.ts, and a CONFLICT changes no row', () => {
    const { store, outcomes } = replay(casLog(), 'a.sqlite');
    expect(outcomes.map((o) => (o?.ok ? 'ok' : o?.code))).toEqual(['ok', 'CONFLICT', 'ok', 'CONFLICT', 'CONFLICT', 'ok', 'CONFLICT', 'ok', 'CONFLICT', 'ok']);
    expect(outcomes[3]).toMatchObject({ ok: false, details: { bucket: 'b', key: 'k', currentRev: 3 } });
    expect(outcomes[6]).toMatchObject({ ok: false, details: { stream: 's', currentVersion: 1 } });
    expect(store.db.prepare(`SELECT count(*) FROM kv_b`).pluck().get()).toBe(0);
    expect(store.db.prepare(`SELECT seq, version FROM events`).all()).toEqual([
      { seq: 6, version: 1 },
      { seq: 8, version: 2 },
    ]);
    expect(store.db.prepare(`SELECT count(*) FROM kv_new`).pluck().get()).toBe(0);
    expect(store.db.prepare(`SELECT seq FROM _loom_conflicts`).pluck().all()).toEqual([2, 4, 5, 7, 9]);
  });

  it('reaches the same outcomes and the same dump whatever the batch size, on two fresh replicas', () => {
    const one = replay(casLog(), 'one.sqlite', 1);
    const two = replay(casLog(), 'two.sqlite', 10);
    expect(two.outcomes).toEqual(one.outcomes);
    expect(two.store.dump()).toEqual(one.store.dump());
  });
});

describe('replicas and rebuilds', () => {
  function mixedLog(): LogBuilder {
    // A fixed pseudo-random mix (LCG with a fixed seed): puts, overwrites, deletes, CAS, events.
    let seed = 42;
    const next = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const log = new LogBuilder();
    for (let i = 0; i < 600; i++) {
      const bucket = ['alpha', 'beta-2', 'Gamma'][next(3)];
      const key = `k${next(40)}`;
      switch (next(6)) {
        case 0:
        case 1:
          log.put(bucket, key, JSON.stringify({ i, n: next(1000) }));
          break;
        case 2:
          log.put(bucket, key, new Uint8Array([next(256), next(256), 0xff]), next(2) ? { expectRev: next(i + 1) } : {});
          break;
        case 3:
          log.del(bucket, key, next(3) === 0 ? { expectRev: next(i + 1) } : {});
          break;
        default:
          log.append(`stream-${next(4)}`, 'thing.happened', { i }, next(3) === 0 ? next(5) : undefined);
      }
    }
    return log;
  }

  it('gives identical dumps and outcomes for the same log replayed into two fresh stores', () => {
    const one = replay(mixedLog(), 'one.sqlite', 7);
    const two = replay(mixedLog(), 'two.sqlite', 64);
    expect(one.outcomes.filter((o) => o && !o.ok).length).toBeGreaterThan(10);
    expect(two.outcomes).toEqual(one.outcomes);
    expect(two.store.dump()).toEqual(one.store.dump());
  });

  it('decides every outcome exactly like the KV view does on the same log', async () => {
    const log = mixedLog();
    const sqlView = replay(log, 'sql.sqlite', 32);
    const kvStore = new ViewStore(path.join(dir, 'kv'));
    try {
      const kvRunner = new ProjectionRunner(new KvProjection(kvStore), kvStore, logger);
      const kvOutcomes = log.batches(32).flatMap((batch) => kvRunner.apply(batch));
      expect(sqlView.outcomes).toEqual(kvOutcomes);
    } finally {
      await kvStore.close();
    }
  });

  it('rebuilds from scratch when its checkpoint has another version, and comes back equal', () => {
    const log = mixedLog();
    const reference = replay(log, 'ref.sqlite', 50);
    const file = path.join(dir, 'rebuild.sqlite');
    let store = new SqlStore(file);
    let runner = new ProjectionRunner(new SqlProjection(), store, logger);
    for (const batch of log.batches(50)) runner.apply(batch);
    // Pretend the checkpoint was written by another version of the view.
    store.transaction((tx) => store.writeCheckpoint(tx, 'sql', log.entries.length, 99));
    store.close();
    store = openStore('rebuild.sqlite');
    runner = new ProjectionRunner(new SqlProjection(), store, logger);
    expect(runner.status()).toMatchObject({ state: 'REBUILDING', appliedIndex: 0 });
    expect(store.db.prepare(`SELECT count(*) FROM events`).pluck().get()).toBe(0);
    for (const batch of log.batches(50)) runner.apply(batch);
    expect(store.dump()).toEqual(reference.store.dump());
  });

  it('resumes from its checkpoint after a restart without applying anything twice', () => {
    const log = mixedLog();
    const reference = replay(log, 'ref.sqlite', 50);
    const file = path.join(dir, 'restart.sqlite');
    const first = new SqlStore(file);
    const batches = log.batches(50);
    let runner = new ProjectionRunner(new SqlProjection(), first, logger);
    for (const batch of batches.slice(0, 5)) runner.apply(batch);
    first.close();
    const store = openStore('restart.sqlite');
    runner = new ProjectionRunner(new SqlProjection(), store, logger);
    expect(runner.appliedIndex()).toBe(250);
    for (const batch of batches.slice(5)) runner.apply(batch);
    expect(store.dump()).toEqual(reference.store.dump());
  });

  it('rolls back a failing batch whole, leaving no half-created table behind', () => {
    const store = openStore();
    const runner = new ProjectionRunner(new SqlProjection(), store, logger);
    const log = new LogBuilder().put('fresh', 'k', '1').put('fresh', 'k2', '2');
    const corrupt = { ...log.entries[1], data: new Uint8Array([0xc1]) };
    expect(() => runner.apply([log.entries[0], corrupt])).toThrow(/entry 2/);
    expect(runner.status()).toMatchObject({ state: 'FAILED', failedIndex: 2, appliedIndex: 0 });
    expect(store.db.prepare(`SELECT count(*) FROM sqlite_schema WHERE name = 'kv_fresh'`).pluck().get()).toBe(0);
    expect(store.readCheckpoint('sql')).toEqual({ index: 0, version: sqlProjectionVersion });
  });
});
