// Replies through a real bus with a small maxPayloadBytes and the official `nats` client: no reply
// is ever over the limit, a read or a listing too big is cut after its last whole item, and what
// cannot be cut answers TOO_LARGE naming the limit and the door that can serve it, logging no error.

import { Writable } from 'node:stream';
import { connect, headers as natsHeaders, type NatsConnection } from 'nats';
import pino from 'pino';
import { loadConfig, startNode, type LoomNode } from '../../../src/node';
import { makeTempDir, removeDir } from '../../support/tmp';

const payloadBytesMax = 4096;

/** A logger that keeps what the node logs at warn and above, to check that it logged no error. */
function recordingLogger(): { logger: pino.Logger; errors: () => string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  return { logger: pino({ level: 'warn' }, stream), errors: () => lines.filter((line) => (JSON.parse(line) as { level: number }).level >= 50) };
}

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
  const log = recordingLogger();

  beforeAll(async () => {
    dir = makeTempDir();
    const flags = { data: dir, sync: 'none', 'nats-max-payload-bytes': String(payloadBytesMax), 'http-port': '0', 'nats-port': '0', 'grpc-port': '0', 'raft-port': '0' };
    node = await startNode(loadConfig({ flags }), { logger: log.logger });
    nc = await connect({ port: node.ports.nats });
  });
  afterEach(() => expect(log.errors()).toEqual([]));
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

  it('answers KV.GET with a value that fits, and TOO_LARGE naming maxPayloadBytes and HTTP or gRPC for one that does not with its headers', async () => {
    await node.db.kv.put('blobs', 'half', Buffer.alloc(payloadBytesMax / 2, 'h'));
    // Under the limit alone, over it with the Loom-Rev, Loom-Create-Rev and Loom-Updated-At headers.
    await node.db.kv.put('blobs', 'brim', Buffer.alloc(payloadBytesMax - 16, 'b'));
    await node.db.kv.put('blobs', 'over', Buffer.alloc(payloadBytesMax * 4, 'o'));

    const half = await nc.request('$LOOM.API.KV.GET.blobs.half', '', { timeout: 5000 });
    expect(half.headers?.get('Loom-Error')).toBe('');
    expect(half.data.length).toBe(payloadBytesMax / 2);
    expect(half.headers?.get('Loom-Rev')).toMatch(/^\d+$/);

    for (const key of ['brim', 'over']) {
      // The fast path (no request headers) and the general one (with headers) answer alike.
      for (const h of [undefined, natsHeaders()]) {
        h?.set('Loom-Consistency', 'local');
        const reply = await nc.request(`$LOOM.API.KV.GET.blobs.${key}`, '', { timeout: 5000, headers: h });
        expect(reply.headers?.get('Loom-Error')).toBe('TOO_LARGE');
        const json = JSON.parse(reply.string()) as Record<string, unknown>;
        expect(json).toMatchObject({ code: 'TOO_LARGE', details: { limit: 'maxPayloadBytes', max: payloadBytesMax } });
        expect(json.message).toMatch(/the value with its headers is \d+ bytes, larger than a NATS reply.*maxPayloadBytes 4096.*HTTP or gRPC/);
      }
    }
    // The HTTP door, named in the error, serves it.
    const http = await fetch(`http://127.0.0.1:${node.ports.http}/v1/kv/blobs/over`);
    expect(http.status).toBe(200);
    expect((await http.arrayBuffer()).byteLength).toBe(payloadBytesMax * 4);
  });

  it('answers OBJ.INFO with info that fits, and TOO_LARGE naming maxPayloadBytes and HTTP or gRPC for metadata too big for a reply', async () => {
    await node.db.objects.put('files', 'small', Buffer.from('s'), { metadata: { owner: 'ann' } });
    await node.db.objects.put('files', 'tagged', Buffer.from('t'), { metadata: { notes: 'n'.repeat(payloadBytesMax + 1000) } });

    const small = await call('$LOOM.API.OBJ.INFO.files', { name: 'small' });
    expect(small.error).toBeUndefined();
    expect(small.json).toMatchObject({ bucket: 'files', name: 'small', size: 1, metadata: { owner: 'ann' } });

    const tagged = await call('$LOOM.API.OBJ.INFO.files', { name: 'tagged' });
    expect(tagged.error).toBe('TOO_LARGE');
    expect(tagged.bytes).toBeLessThanOrEqual(payloadBytesMax);
    expect(tagged.json).toMatchObject({ code: 'TOO_LARGE', details: { limit: 'maxPayloadBytes', max: payloadBytesMax } });
    expect(tagged.json.message).toMatch(/object's info is \d+ bytes, larger than a NATS reply.*maxPayloadBytes 4096.*HTTP or gRPC/);
  });

  it('cuts an OBJ.LIST page to fit with a cursor, and answers TOO_LARGE for one object info too big alone', async () => {
    for (let i = 0; i < 12; i++) await node.db.objects.put('docs', `d${String(i).padStart(2, '0')}`, Buffer.from('d'), { metadata: { pad: 'p'.repeat(900) } });
    const names: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await call('$LOOM.API.OBJ.LIST.docs', cursor ? { cursor } : {});
      expect(page.error).toBeUndefined();
      expect(page.bytes).toBeLessThanOrEqual(payloadBytesMax);
      names.push(...(page.json.items as Array<{ name: string }>).map((item) => item.name));
      cursor = page.json.cursor as string | undefined;
      pages++;
    } while (cursor !== undefined);
    expect(names).toEqual(Array.from({ length: 12 }, (_, i) => `d${String(i).padStart(2, '0')}`));
    expect(pages).toBeGreaterThan(1);

    const tagged = await call('$LOOM.API.OBJ.LIST.files', {});
    expect(tagged.error).toBeUndefined();
    expect((tagged.json.items as Array<{ name: string }>).map((item) => item.name)).toEqual(['small']);
    const alone = await call('$LOOM.API.OBJ.LIST.files', { cursor: tagged.json.cursor });
    expect(alone.error).toBe('TOO_LARGE');
    expect(alone.json).toMatchObject({ code: 'TOO_LARGE', details: { limit: 'maxPayloadBytes', max: payloadBytesMax } });
    expect(alone.json.message).toMatch(/maxPayloadBytes 4096.*HTTP or gRPC/);
  });
});

describe('NATS cluster replies that would be over the smallest maxPayloadBytes', () => {
  const smallestPayloadBytesMax = 1024;
  let dir: string;
  let node: LoomNode;
  let nc: NatsConnection;
  const log = recordingLogger();

  const call = async (subject: string, body?: unknown): Promise<Reply> => {
    const reply = await nc.request(subject, body === undefined ? '' : JSON.stringify(body), { timeout: 5000 });
    return { error: reply.headers?.get('Loom-Error') || undefined, bytes: reply.data.length, json: JSON.parse(reply.string()) as Record<string, unknown> };
  };
  const httpStatus = async (): Promise<{ members: Array<{ id: number; role: string }> }> =>
    (await (await fetch(`http://127.0.0.1:${node.ports.http}/v1/cluster/status`)).json()) as { members: Array<{ id: number; role: string }> };

  beforeAll(async () => {
    dir = makeTempDir();
    const flags = {
      data: dir,
      sync: 'none',
      'nats-max-payload-bytes': String(smallestPayloadBytesMax),
      'node-id': '1',
      peers: '1=127.0.0.1:7000',
      'cluster-secret': 'a secret of the group',
      'http-port': '0',
      'nats-port': '0',
      'grpc-port': '0',
      'raft-port': '0',
    };
    node = await startNode(loadConfig({ flags }), { logger: log.logger });
    nc = await connect({ port: node.ports.nats });
    // A one-voter group elects itself; then enough learners (nobody listens at their port) that
    // the status is over the limit as JSON.
    for (let i = 0; ; i++) {
      const status = await call('$LOOM.API.CLUSTER.STATUS');
      if (status.json.leader === 1) break;
      if (i > 100) throw new Error('the node did not elect itself');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    for (let id = 2; id <= 60; id++) await node.db.membership.add({ nodeId: id, host: '127.0.0.1', raftPort: 1, learner: true });
    expect(Buffer.byteLength(JSON.stringify(await httpStatus()))).toBeGreaterThan(smallestPayloadBytesMax);
  });
  afterEach(() => expect(log.errors()).toEqual([]));
  afterAll(async () => {
    await nc.close();
    await node.close();
    removeDir(dir);
  });

  const expectTooLarge = (reply: Reply, message: RegExp, done?: true): void => {
    expect(reply.error).toBe('TOO_LARGE');
    expect(reply.bytes).toBeLessThanOrEqual(smallestPayloadBytesMax);
    expect(reply.json).toMatchObject({ code: 'TOO_LARGE', details: { limit: 'maxPayloadBytes', max: smallestPayloadBytesMax } });
    expect((reply.json.details as Record<string, unknown>).done).toBe(done);
    expect(reply.json.message).toMatch(message);
  };

  it('answers CLUSTER.STATUS TOO_LARGE naming maxPayloadBytes and the HTTP or gRPC status', async () => {
    expectTooLarge(await call('$LOOM.API.CLUSTER.STATUS'), /cluster status .* larger than a NATS reply.*maxPayloadBytes 1024.*HTTP.*gRPC/);
  });

  it('makes a CLUSTER.ADD, REMOVE or TRANSFER whose status answer is too big, and says so in its TOO_LARGE', async () => {
    expectTooLarge(await call('$LOOM.API.CLUSTER.ADD', { nodeId: 61, host: '127.0.0.1', raftPort: 1, learner: true }), /CLUSTER.ADD is done.*maxPayloadBytes 1024.*HTTP.*gRPC/, true);
    expect((await httpStatus()).members).toContainEqual({ id: 61, role: 'learner' });
    expectTooLarge(await call('$LOOM.API.CLUSTER.REMOVE', { nodeId: 61 }), /CLUSTER.REMOVE is done.*maxPayloadBytes 1024/, true);
    expect((await httpStatus()).members.map((m) => m.id)).not.toContain(61);
    expectTooLarge(await call('$LOOM.API.CLUSTER.TRANSFER', { to: 1 }), /CLUSTER.TRANSFER is done.*maxPayloadBytes 1024/, true);
  });

  it('answers an error whose message is too big for a reply with its code, not with silence', async () => {
    const name = 'n'.repeat(1000);
    const reply = await call('$LOOM.API.OBJ.INFO.files', { name });
    expect(reply.error).toBe('NOT_FOUND');
    expect(reply.bytes).toBeLessThanOrEqual(smallestPayloadBytesMax);
    expect(reply.json).toMatchObject({ code: 'NOT_FOUND', message: expect.stringMatching(/larger than a NATS reply.*maxPayloadBytes 1024.*HTTP and gRPC/) });
  });
});
