// The order-totals example projection: given order events (one of them a CONFLICT), when the SQL
// view and the projection apply them, then totals are right, queryable, and equal after a rebuild.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { orderTotals, orderTotalsDefinition } from '../../examples/order-totals/projection';
import { ProjectionRunner } from '../../src/projections/projection';
import { SqlProjection, SqlQueryService, SqlStore, defineSqlProjection, type SqlDatabase } from '../../src/projections/sql';
import { silentLogger } from '../../src/util';
import { LogBuilder, tempDir } from '../projections/sql/log-builder';

const logger = silentLogger();
let dir: string;

beforeEach(() => {
  dir = tempDir('order-totals');
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function orderLog(): LogBuilder {
  return new LogBuilder()
    .append('order-1', 'order.created', { orderId: 'o1', customer: 'ada' }, 0)
    .append('order-1', 'order.line-added', { orderId: 'o1', sku: 'tea', qty: 2, priceCents: 350 }, 1)
    .append('order-1', 'order.line-added', { orderId: 'o1', sku: 'cake', qty: 1, priceCents: 425 }, 2)
    // A stale writer: expectVersion 2 but the stream is at 3 → CONFLICT, must not count.
    .append('order-1', 'order.line-added', { orderId: 'o1', sku: 'tea', qty: 100, priceCents: 350 }, 2)
    .append('order-2', 'order.created', { orderId: 'o2', customer: 'alan' })
    .append('order-2', 'order.line-added', { orderId: 'o2', sku: 'tea', qty: 1, priceCents: 350 })
    .put('unrelated', 'k', '{"a":1}')
    .append('order-3', 'order.created', { orderId: 'o3', customer: 'ada' })
    .append('order-3', 'order.line-added', { orderId: 'o3', sku: 'pie', qty: 3, priceCents: 500 })
    .append('order-2', 'order.cancelled', { orderId: 'o2' })
    .append('order-2', 'order.line-added', { orderId: 'o2', sku: 'tea', qty: 5, priceCents: 350 })
    .append('order-9', 'order.line-added', { orderId: 'o9', sku: 'ghost', qty: 1, priceCents: 1 })
    .append('order-4', 'order.created', { customer: 'no id' });
}

/** Feeds the log to the built-in view first, then the developer projection: the applier's order. */
function run(store: SqlStore, log: LogBuilder, projection = orderTotals, batchSize = 4): ProjectionRunner<SqlDatabase> {
  const builtIn = new ProjectionRunner(new SqlProjection(), store, logger);
  const developer = new ProjectionRunner(projection, store, logger);
  for (const batch of log.batches(batchSize)) {
    if (builtIn.appliedIndex() < batch[batch.length - 1].index) builtIn.apply(batch.filter((e) => e.index > builtIn.appliedIndex()));
    const fresh = batch.filter((e) => e.index > developer.appliedIndex());
    if (fresh.length > 0) developer.apply(fresh);
  }
  return developer;
}

const expectedTotals = [
  { order_id: 'o1', customer: 'ada', status: 'open', line_count: 2, total_cents: 1125 },
  { order_id: 'o2', customer: 'alan', status: 'cancelled', line_count: 1, total_cents: 350 },
  { order_id: 'o3', customer: 'ada', status: 'open', line_count: 1, total_cents: 1500 },
];

describe('order-totals example projection', () => {
  it('computes order totals from order events, skipping the CONFLICT append and malformed events', () => {
    const store = new SqlStore(path.join(dir, 'view.sqlite'));
    try {
      run(store, orderLog());
      expect(store.db.prepare(`SELECT order_id, customer, status, line_count, total_cents FROM order_totals ORDER BY order_id`).all()).toEqual(expectedTotals);
      expect(store.db.prepare(`SELECT order_id, sku, qty FROM order_lines ORDER BY order_id, sku`).all()).toEqual([
        { order_id: 'o1', sku: 'cake', qty: 1 },
        { order_id: 'o1', sku: 'tea', qty: 2 },
        { order_id: 'o2', sku: 'tea', qty: 1 },
        { order_id: 'o3', sku: 'pie', qty: 3 },
      ]);
      expect(store.readCheckpoint('order-totals')).toEqual({ index: orderLog().entries.length, version: 1 });
    } finally {
      store.close();
    }
  });

  it('is queryable through the SQL query service, view included', async () => {
    const file = path.join(dir, 'view.sqlite');
    const store = new SqlStore(file);
    run(store, orderLog());
    const service = new SqlQueryService({ file, logger });
    try {
      const result = await service.query({ sql: 'SELECT customer, orders, total_cents FROM customer_totals WHERE customer = ?', params: ['ada'] });
      expect(result).toEqual({ columns: ['customer', 'orders', 'total_cents'], rows: [['ada', 2, 2625]] });
    } finally {
      await service.close();
      store.close();
    }
  });

  it('drops its tables and rebuilds them from the log when its version is bumped, ending equal', () => {
    const file = path.join(dir, 'view.sqlite');
    const log = orderLog();
    let store = new SqlStore(file);
    run(store, log);
    const before = store.dump();
    store.close();

    store = new SqlStore(file);
    try {
      const bumped = defineSqlProjection({ ...orderTotalsDefinition, version: 2 });
      const runner = new ProjectionRunner(bumped, store, logger);
      expect(runner.status()).toMatchObject({ state: 'REBUILDING', appliedIndex: 0 });
      expect(store.db.prepare(`SELECT count(*) FROM order_totals`).pluck().get()).toBe(0);
      // The built-in view is already at the end of the log: only the developer projection replays.
      for (const batch of log.batches(5)) runner.apply(batch);
      const after = store.dump();
      const withoutCheckpoints = (d: typeof before) => d.tables.filter((t) => t.name !== '_loom_checkpoints');
      expect(withoutCheckpoints(after)).toEqual(withoutCheckpoints(before));
      expect(after.schema).toEqual(before.schema);
      expect(store.readCheckpoint('order-totals')).toEqual({ index: log.entries.length, version: 2 });
    } finally {
      store.close();
    }
  });
});
