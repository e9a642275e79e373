// EV.READ and SQL.QUERY replies through a real bus with a small maxPayloadBytes and the official
// `nats` client: no reply is ever over the limit, a read too big is cut after its last whole event,
// and what cannot be cut answers TOO_LARGE naming the limit.

import { connect, type NatsConnection } from 'nats';
import { loadConfig, startNode, type LoomNode } from '../../../src/node';
import { silentLogger } from '../../../src/util';
import { makeTempDir, removeDir } from '../../support/tmp';

const payloadBytesMax = 4096;

interface Reply {
  error?: string;
  bytes: number;
  json: Record<string, unknown>;
}

interface EventRecord {
  version: number;
  type: string;
  data: { i: number; note: string };
}

describe('NATS replies that would be over maxPayloadBytes', () => {
  let dir: string;
  let node: LoomNode;
  let nc: NatsConnection;

  beforeAll(async () => {
    dir = makeTempDir();
    const flags = { data: dir, sync: 'none', 'nats-max-payload-bytes': String(payloadBytesMax), 'http-port': '0', 'nats-port': '0', 'grpc-port': '0', 'raft-port': '0' };
    node = await startNode(loadConfig({ flags }), { logger: silentLogger() });
    nc = await connect({ port: node.ports.nats });
  });
  afterAll(async () => {
    await nc.close();
    await node.close();
    removeDir(dir);
  });

  const call = async (subject: string, body: unknown): Promise<Reply> => {
    const reply = await nc.request(subject, JSON.stringify(body), { timeout: 5000 });
    return { error: reply.headers?.get('Loom-Error') || undefined, bytes: reply.data.length, json: JSON.parse(reply.string()) as Record<string, unknown> };
  };

  /** Reads a stream from version 1 the way a client pages it: on from the last version + 1 until a page is empty. */
  const readAll = async (stream: string, body: Record<string, unknown>): Promise<{ versions: number[]; pages: number }> => {
    const versions: number[] = [];
    let fromVersion = 1;
    let pages = 0;
    for (;;) {
      const reply = await call(`$LOOM.API.EV.READ.${stream}`, { ...body, fromVersion });
      expect(reply.error).toBeUndefined();
      expect(reply.bytes).toBeLessThanOrEqual(payloadBytesMax);
      const events = (reply.json as { events: EventRecord[] }).events;
      if (events.length === 0) return { versions, pages };
      pages++;
      versions.push(...events.map((e) => e.version));
      fromVersion = events[events.length - 1].version + 1;
    }
  };

  it('cuts an EV.READ too big for one reply after its last whole event; reading on reaches every event once, in order', async () => {
    // 40 events of some 300-600 bytes as JSON (multi-byte and escaped characters included): over 4 KiB together.
    for (let i = 0; i < 40; i++) {
      await node.db.events.append('orders', { type: 'order.created', data: { i, note: `${'é"'.repeat(i * 3)}${'x'.repeat(200)}` } });
    }
    const expected = Array.from({ length: 40 }, (_, i) => i + 1);
    const whole = await readAll('orders', {});
    expect(whole.versions).toEqual(expected);
    expect(whole.pages).toBeGreaterThan(1);
    const limited = await readAll('orders', { limit: 7 });
    expect(limited.versions).toEqual(expected);

    const first = await call('$LOOM.API.EV.READ.orders', {});
    const events = (first.json as { events: EventRecord[] }).events;
    expect(events.map((e) => e.data.i)).toEqual(events.map((_, i) => i));
    // The page is the longest that fits: one more event would have been over the limit.
    const rest = await call('$LOOM.API.EV.READ.orders', { fromVersion: events.length + 1, limit: 1 });
    const longer = { events: [...events, ...(rest.json as { events: EventRecord[] }).events] };
    expect(Buffer.byteLength(JSON.stringify(longer))).toBeGreaterThan(payloadBytesMax);
  });

  it('answers TOO_LARGE naming maxPayloadBytes for an event too big for any reply, and serves the events around it', async () => {
    await node.db.events.append('mixed', { type: 'small', data: { i: 0, note: 'before' } });
    await node.db.events.append('mixed', { type: 'huge', data: { i: 1, note: 'h'.repeat(payloadBytesMax) } });
    await node.db.events.append('mixed', { type: 'small', data: { i: 2, note: 'after' } });

    const before = await call('$LOOM.API.EV.READ.mixed', {});
    expect(before.error).toBeUndefined();
    expect((before.json as { events: EventRecord[] }).events.map((e) => e.version)).toEqual([1]);

    const huge = await call('$LOOM.API.EV.READ.mixed', { fromVersion: 2 });
    expect(huge.error).toBe('TOO_LARGE');
    expect(huge.json).toMatchObject({ code: 'TOO_LARGE', details: { limit: 'maxPayloadBytes', max: payloadBytesMax } });
    expect(huge.json.message).toMatch(/version 2 .*maxPayloadBytes 4096.*HTTP or gRPC/);

    const after = await call('$LOOM.API.EV.READ.mixed', { fromVersion: 3 });
    expect((after.json as { events: EventRecord[] }).events.map((e) => e.version)).toEqual([3]);
  });

  it('answers TOO_LARGE for an SQL.QUERY result over maxPayloadBytes, and answers a query that fits', async () => {
    for (let i = 0; i < 40; i++) await node.db.kv.put('things', `k${String(i).padStart(2, '0')}`, Buffer.from('v'.repeat(300)));
    await node.db.sqlQuery({ sql: 'SELECT 1' }, { atLeast: node.db.core.status().commitIndex });

    const big = await call('$LOOM.API.SQL.QUERY', { sql: 'SELECT key, value FROM kv_things ORDER BY key' });
    expect(big.error).toBe('TOO_LARGE');
    expect(big.bytes).toBeLessThanOrEqual(payloadBytesMax);
    expect(big.json).toMatchObject({ code: 'TOO_LARGE', details: { limit: 'maxPayloadBytes', max: payloadBytesMax } });
    expect(big.json.message).toMatch(/larger than a NATS reply.*maxPayloadBytes 4096.*LIMIT.*HTTP or gRPC/);

    const small = await call('$LOOM.API.SQL.QUERY', { sql: 'SELECT key FROM kv_things ORDER BY key LIMIT 3' });
    expect(small.error).toBeUndefined();
    expect(small.json).toEqual({ columns: ['key'], rows: [['k00'], ['k01'], ['k02']] });
  });

  it('serves the same SQL result over NATS in pages a client asks for with limit, following the cursor', async () => {
    const rows: unknown[][] = [];
    let cursor: string | undefined;
    do {
      const page = await call('$LOOM.API.SQL.QUERY', { sql: 'SELECT key, value FROM kv_things ORDER BY key', limit: 5, ...(cursor ? { cursor } : {}) });
      expect(page.error).toBeUndefined();
      rows.push(...(page.json.rows as unknown[][]));
      cursor = page.json.cursor as string | undefined;
    } while (cursor !== undefined);
    expect(rows.map((r) => r[0])).toEqual(Array.from({ length: 40 }, (_, i) => `k${String(i).padStart(2, '0')}`));
  });
});
