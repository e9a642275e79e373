// The SQL view inside a node: KV buckets and events as tables, a developer projection registered
// through openNode, read-your-writes with atLeast, and `loom replay --projection sql`.

import * as path from 'node:path';
import { defineSqlProjection, openNode } from '../../src';
import { runLoom } from '../support/cli';
import { makeTempDir, removeDir } from '../support/tmp';

const totals = defineSqlProjection({
  name: 'totals',
  version: 1,
  tables: ['totals'],
  handles: ['event.append'],
  migrate: (db) => db.exec('CREATE TABLE IF NOT EXISTS totals (stream TEXT PRIMARY KEY, n INTEGER NOT NULL)'),
  apply(entries, db) {
    const bump = db.prepare('INSERT INTO totals (stream, n) VALUES (?, 1) ON CONFLICT(stream) DO UPDATE SET n = n + 1');
    for (const entry of entries) if (entry.mutation.type === 'event.append') bump.run(entry.mutation.body.stream);
  },
});

describe('the SQL view in a node', () => {
  let dir: string;
  beforeEach(() => {
    dir = makeTempDir();
  });
  afterEach(() => removeDir(dir));

  it('answers json_extract over a KV bucket, events and a developer projection', async () => {
    const node = await openNode({ data: dir, projections: [totals] });
    try {
      await node.kv.put('users', 'alice', JSON.stringify({ age: 31, city: 'Oslo' }));
      await node.kv.put('users', 'bob', JSON.stringify({ age: 25, city: 'Rome' }));
      await node.events.append('orders-1', { type: 'order.created', data: { id: 1 } });
      const { seq } = await node.events.append('orders-1', { type: 'order.paid', data: { id: 1 } });
      const adults = await node.sql.query({ sql: "SELECT key FROM kv_users WHERE json_extract(value, '$.age') > ? ORDER BY key", params: [30] }, { atLeast: seq });
      expect(adults.rows).toEqual([['alice']]);
      const events = await node.sql.query({ sql: 'SELECT stream, version, type FROM events ORDER BY seq' });
      expect(events.rows).toEqual([
        ['orders-1', 1, 'order.created'],
        ['orders-1', 2, 'order.paid'],
      ]);
      expect((await node.sql.query({ sql: 'SELECT n FROM totals' })).rows).toEqual([[2]]);
      await expect(node.sql.query({ sql: 'DELETE FROM kv_users' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    } finally {
      await node.close();
    }
  });

  it('rebuilds the SQL view with loom replay --projection sql', async () => {
    const node = await openNode({ data: dir });
    for (let i = 0; i < 50; i++) await node.kv.put('items', `i${i}`, JSON.stringify({ i }));
    await node.close();
    const result = runLoom(['replay', '--projection', 'sql', '--data', dir]);
    expect(result.stdout).toMatch(/replayed sql: 50 entries/);
    expect(result.status).toBe(0);
    const reopened = await openNode({ data: dir });
    try {
      expect((await reopened.sql.query({ sql: "SELECT count(*), sum(json_extract(value, '$.i')) FROM kv_items" })).rows).toEqual([[50, 1225]]);
    } finally {
      await reopened.close();
    }
    expect(path.isAbsolute(dir)).toBe(true);
  });

  it('rebuilds views of a compacted log from the newest snapshot plus the log after it', async () => {
    const node = await openNode({ data: dir, snapshots: { entries: 40, catchUpEntries: 5 } });
    for (let i = 0; i < 100; i++) await node.kv.put('items', `i${i}`, JSON.stringify({ i }));
    const deadline = Date.now() + 10_000;
    while (node.db.core.log.firstIndex() === 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const first = node.db.core.log.firstIndex();
    expect(first).toBeGreaterThan(40);
    await node.close();
    for (const projection of ['kv', 'sql']) {
      const result = runLoom(['replay', '--projection', projection, '--data', dir]);
      expect(result.status).toBe(0);
      expect(result.stdout).toMatch(new RegExp(`replayed ${projection}: \\d+ entries up to 100`));
    }
    const reopened = await openNode({ data: dir });
    try {
      expect((await reopened.sql.query({ sql: "SELECT count(*), sum(json_extract(value, '$.i')) FROM kv_items" })).rows).toEqual([[100, 4950]]);
      expect(Buffer.from((await reopened.kv.get('items', 'i3')).value).toString()).toBe('{"i":3}');
      const page = await reopened.kv.list('items', { limit: 1000 });
      expect(page.items.length).toBe(100);
    } finally {
      await reopened.close();
    }
  });
});
