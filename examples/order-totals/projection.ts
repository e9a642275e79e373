// A developer projection, worked end to end: order totals computed from order.* events into two
// SQL tables and a view, rebuilt from the log whenever `version` changes.

import type { Statement } from 'better-sqlite3';
import type { Projection } from '../../src/projections/projection';
import { defineSqlProjection, type SqlDatabase, type SqlProjectionDefinition, type SqlProjectionEntry } from '../../src/projections/sql';

// The events this projection reads (any stream), as the application appends them:
//   order.created     {orderId, customer}
//   order.line-added  {orderId, sku, qty, priceCents}
//   order.cancelled   {orderId}
interface OrderCreated {
  orderId: string;
  customer: string;
}
interface LineAdded {
  orderId: string;
  sku: string;
  qty: number;
  priceCents: number;
}
interface OrderCancelled {
  orderId: string;
}

interface Statements {
  createOrder: Statement<{ orderId: string; customer: string; ts: number }>;
  addLine: Statement<{ orderId: string; sku: string; qty: number; priceCents: number }>;
  addToTotal: Statement<{ orderId: string; cents: number; ts: number }>;
  cancel: Statement<{ orderId: string; ts: number }>;
}

// Statements are prepared once per connection: preparing per event would dominate the apply time.
const prepared = new WeakMap<SqlDatabase, Statements>();

function statements(db: SqlDatabase): Statements {
  let s = prepared.get(db);
  if (!s) {
    s = {
      createOrder: db.prepare(
        `INSERT INTO order_totals (order_id, customer, status, line_count, total_cents, created_at, updated_at)
         VALUES (:orderId, :customer, 'open', 0, 0, :ts, :ts) ON CONFLICT(order_id) DO NOTHING`,
      ),
      addLine: db.prepare(
        `INSERT INTO order_lines (order_id, sku, qty, price_cents) VALUES (:orderId, :sku, :qty, :priceCents)
         ON CONFLICT(order_id, sku) DO UPDATE SET qty = qty + excluded.qty, price_cents = excluded.price_cents`,
      ),
      addToTotal: db.prepare(
        `UPDATE order_totals SET line_count = line_count + 1, total_cents = total_cents + :cents, updated_at = :ts WHERE order_id = :orderId AND status = 'open'`,
      ),
      cancel: db.prepare(`UPDATE order_totals SET status = 'cancelled', updated_at = :ts WHERE order_id = :orderId AND status = 'open'`),
    };
    prepared.set(db, s);
  }
  return s;
}

/** The definition, exported so an application (or a test) can derive a new version from it. */
export const orderTotalsDefinition: SqlProjectionDefinition = {
  name: 'order-totals',
  version: 1,
  tables: ['order_totals', 'order_lines', 'customer_totals'],
  handles: ['event.append'],
  migrate(db) {
    // Runs at every start: IF NOT EXISTS keeps it idempotent.
    db.exec(`
      CREATE TABLE IF NOT EXISTS order_totals (
        order_id TEXT PRIMARY KEY, customer TEXT NOT NULL, status TEXT NOT NULL,
        line_count INTEGER NOT NULL, total_cents INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS order_totals_customer ON order_totals (customer);
      CREATE TABLE IF NOT EXISTS order_lines (
        order_id TEXT NOT NULL, sku TEXT NOT NULL, qty INTEGER NOT NULL, price_cents INTEGER NOT NULL, PRIMARY KEY (order_id, sku));
      CREATE VIEW IF NOT EXISTS customer_totals AS
        SELECT customer, count(*) AS orders, sum(total_cents) AS total_cents FROM order_totals WHERE status = 'open' GROUP BY customer;
    `);
  },
  apply(entries, db) {
    const s = statements(db);
    for (const entry of entries) applyEvent(s, entry);
  },
};

/** Register it after the built-in SqlProjection: `new ProjectionRunner(orderTotals, sqlStore, logger)`. */
export const orderTotals: Projection<SqlDatabase> = defineSqlProjection(orderTotalsDefinition);

function applyEvent(s: Statements, entry: SqlProjectionEntry): void {
  if (entry.mutation.type !== 'event.append') return;
  const { type, data } = entry.mutation.body;
  // Event data is any JSON the application appended. A projection must treat every shape the same
  // way on every replay, so events that do not fit are skipped rather than thrown on (a throw would
  // stop the projection at that entry until a new version handles it).
  switch (type) {
    case 'order.created':
      if (isOrderCreated(data)) s.createOrder.run({ orderId: data.orderId, customer: data.customer, ts: entry.ts });
      return;
    case 'order.line-added':
      // A line for an unknown or cancelled order changes nothing: addToTotal matches no row, so the line is skipped too.
      if (isLineAdded(data) && s.addToTotal.run({ orderId: data.orderId, cents: data.qty * data.priceCents, ts: entry.ts }).changes === 1) {
        s.addLine.run({ orderId: data.orderId, sku: data.sku, qty: data.qty, priceCents: data.priceCents });
      }
      return;
    case 'order.cancelled':
      if (isOrderCancelled(data)) s.cancel.run({ orderId: data.orderId, ts: entry.ts });
      return;
  }
}

function isRecord(data: unknown): data is Record<string, unknown> {
  return typeof data === 'object' && data !== null && !Array.isArray(data);
}

function isOrderCreated(data: unknown): data is OrderCreated {
  return isRecord(data) && typeof data.orderId === 'string' && typeof data.customer === 'string';
}

function isLineAdded(data: unknown): data is LineAdded {
  return (
    isRecord(data) &&
    typeof data.orderId === 'string' &&
    typeof data.sku === 'string' &&
    Number.isSafeInteger(data.qty) &&
    (data.qty as number) > 0 &&
    Number.isSafeInteger(data.priceCents) &&
    (data.priceCents as number) >= 0
  );
}

function isOrderCancelled(data: unknown): data is OrderCancelled {
  return isRecord(data) && typeof data.orderId === 'string';
}
