// The gRPC door over a real database: every operation, CAS conflicts, pagination, deadlines, auth,
// malformed and oversized requests — each answered with the status and loom trailer CONTRACT.md names.

import * as grpc from '@grpc/grpc-js';
import { GrpcDoorError, grpcDoor } from './adapter';
import { failure, startGrpc, type GrpcHarness } from './harness';

const text = (value: Uint8Array): string => Buffer.from(value).toString();

describe('the gRPC door', () => {
  let h: GrpcHarness;
  beforeAll(async () => {
    h = await startGrpc({ sql: true });
  });
  afterAll(async () => {
    await h.close();
  });

  it('puts, gets, lists and deletes keys with their revisions', async () => {
    const { door } = h;
    const first = await door.kvPut({ bucket: 'users', key: 'alice', value: Buffer.from('v1') });
    const second = await door.kvPut({ bucket: 'users', key: 'alice', value: Buffer.from('v2') });
    expect(second.rev).toBeGreaterThan(first.rev);
    const got = await door.kvGet({ bucket: 'users', key: 'alice' });
    expect(text(got.value)).toBe('v2');
    expect(got).toMatchObject({ bucket: 'users', key: 'alice', rev: second.rev, createRev: first.rev });
    expect(got.updatedAt).toBeGreaterThan(0);
    expect(got.expiresAt).toBeUndefined();
    const page = await door.kvList({ bucket: 'users' });
    expect(page.items).toEqual([{ key: 'alice', rev: second.rev }]);
    expect(page.cursor).toBeUndefined();
    const deleted = await door.kvDel({ bucket: 'users', key: 'alice' });
    expect(deleted.rev).toBeGreaterThan(second.rev);
    const err = await failure(door.kvGet({ bucket: 'users', key: 'alice' }));
    expect(err).toMatchObject({ code: 'NOT_FOUND', grpcCode: grpc.status.NOT_FOUND, fromTrailer: true, details: { bucket: 'users', key: 'alice' } });
  });

  it('keeps empty values, binary values and an expiry apart from absent ones', async () => {
    const { door } = h;
    const bytes = Buffer.from([0, 255, 1, 254]);
    await door.kvPut({ bucket: 'bin', key: 'empty', value: Buffer.alloc(0) });
    await door.kvPut({ bucket: 'bin', key: 'raw', value: bytes, ttlMs: 3_600_000 });
    expect((await door.kvGet({ bucket: 'bin', key: 'empty' })).value).toEqual(new Uint8Array(0));
    const raw = await door.kvGet({ bucket: 'bin', key: 'raw', consistency: 'linearizable' });
    expect(Buffer.from(raw.value).equals(bytes)).toBe(true);
    expect(raw.expiresAt).toBeGreaterThan(raw.updatedAt);
  });

  it('rejects a put whose expected revision is stale, with the current revision in the details', async () => {
    const { door } = h;
    const { rev } = await door.kvPut({ bucket: 'cas', key: 'k', value: Buffer.from('1'), create: true });
    await door.kvPut({ bucket: 'cas', key: 'k', value: Buffer.from('2'), expectRev: rev });
    const stale = await failure(door.kvPut({ bucket: 'cas', key: 'k', value: Buffer.from('3'), expectRev: rev }));
    expect(stale).toMatchObject({ code: 'CONFLICT', grpcCode: grpc.status.FAILED_PRECONDITION, fromTrailer: true });
    expect(stale.details).toMatchObject({ bucket: 'cas', key: 'k', currentRev: rev + 1 });
    const exists = await failure(door.kvPut({ bucket: 'cas', key: 'k', value: Buffer.from('x'), create: true }));
    expect(exists.code).toBe('CONFLICT');
    // expect_rev 0 is "must not exist", not "no check": presence survives the wire.
    const zero = await failure(door.kvPut({ bucket: 'cas', key: 'k', value: Buffer.from('x'), expectRev: 0 }));
    expect(zero.code).toBe('CONFLICT');
    const del = await failure(door.kvDel({ bucket: 'cas', key: 'k', expectRev: rev }));
    expect(del.code).toBe('CONFLICT');
    expect(text((await door.kvGet({ bucket: 'cas', key: 'k' })).value)).toBe('2');
  });

  it('lists by prefix page by page with a cursor, every key exactly once', async () => {
    const { door } = h;
    for (let i = 0; i < 23; i++) await door.kvPut({ bucket: 'pages', key: `app/${String(i).padStart(2, '0')}`, value: Buffer.from(`${i}`) });
    await door.kvPut({ bucket: 'pages', key: 'other', value: Buffer.from('x') });
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await door.kvList({ bucket: 'pages', prefix: 'app/', limit: 5, cursor });
      expect(page.items.length).toBeLessThanOrEqual(5);
      seen.push(...page.items.map((item) => item.key));
      cursor = page.cursor;
      pages++;
    } while (cursor !== undefined && pages < 10);
    expect(seen).toEqual(Array.from({ length: 23 }, (_, i) => `app/${String(i).padStart(2, '0')}`));
    expect(pages).toBe(5);
  });

  it('appends events with an expected version and reads them back with their JSON data', async () => {
    const { door } = h;
    const data = { id: 7, tags: ['a', 'é'], nested: { ok: true, n: null } };
    const first = await door.evAppend({ stream: 'orders', type: 'created', data, expectVersion: 0 });
    expect(first.version).toBe(1);
    const second = await door.evAppend({ stream: 'orders', type: 'note', data: 'just a string' });
    expect(second).toEqual({ seq: first.seq + 1, version: 2 });
    await door.evAppend({ stream: 'orders', type: 'zero', data: 0 });
    const stale = await failure(door.evAppend({ stream: 'orders', type: 'late', data: {}, expectVersion: 1 }));
    expect(stale).toMatchObject({ code: 'CONFLICT', grpcCode: grpc.status.FAILED_PRECONDITION });
    const { events } = await door.evRead({ stream: 'orders' });
    expect(events.map((e) => [e.version, e.type, e.data])).toEqual([
      [1, 'created', data],
      [2, 'note', 'just a string'],
      [3, 'zero', 0],
    ]);
    expect(events[0]).toMatchObject({ seq: first.seq, stream: 'orders' });
    const tail = await door.evRead({ stream: 'orders', fromVersion: 2, limit: 1, atLeast: second.seq });
    expect(tail.events.map((e) => e.version)).toEqual([2]);
  });

  it('answers SQL queries with JSON params, rows and a cursor', async () => {
    const { door } = h;
    const writes = [];
    for (let i = 0; i < 6; i++) writes.push(await door.kvPut({ bucket: 'items', key: `i${i}`, value: Buffer.from(JSON.stringify({ n: i })) }));
    const atLeast = writes[writes.length - 1].rev;
    const result = await door.sqlQuery({ sql: `SELECT key, json_extract(value, '$.n') AS n FROM kv_items WHERE json_extract(value, '$.n') >= ? ORDER BY key`, params: [2], limit: 3, atLeast });
    expect(result.columns).toEqual(['key', 'n']);
    expect(result.rows).toEqual([['i2', 2], ['i3', 3], ['i4', 4]]);
    expect(result.cursor).toEqual(expect.any(String));
    const next = await door.sqlQuery({ sql: `SELECT key, json_extract(value, '$.n') AS n FROM kv_items WHERE json_extract(value, '$.n') >= ? ORDER BY key`, params: [2], limit: 3, cursor: result.cursor });
    expect(next.rows).toEqual([['i5', 5]]);
    expect(next.cursor).toBeUndefined();
    const named = await door.sqlQuery({ sql: `SELECT count(*) AS c FROM kv_items WHERE json_extract(value, '$.n') < :max`, params: { max: 3 } });
    expect(named.rows).toEqual([[3]]);
    const write = await failure(door.sqlQuery({ sql: `DELETE FROM kv_items` }));
    expect(write).toMatchObject({ code: 'INVALID_ARGUMENT', grpcCode: grpc.status.INVALID_ARGUMENT, fromTrailer: true });
  });

  it('reports the cluster status', async () => {
    await h.door.kvPut({ bucket: 's', key: 'k', value: Buffer.from('v') });
    const status = await h.door.status();
    expect(status).toMatchObject({ nodeId: 1, role: 'leader', leader: 1, members: [{ id: 1, role: 'voter' }] });
    expect(status.applied).toBeGreaterThan(0);
    expect(status.commit).toBeGreaterThanOrEqual(status.applied);
  });

  describe('malformed input', () => {
    it.each([
      ['an invalid bucket name', () => h.door.kvPut({ bucket: 'no spaces', key: 'k', value: Buffer.from('v') }), 'bucket'],
      ['an empty key', () => h.door.kvGet({ bucket: 'b', key: '' }), 'key'],
      ['a key ending with a dot', () => h.door.kvDel({ bucket: 'b', key: 'k.' }), 'key'],
      ['an unknown consistency', () => h.door.kvGet({ bucket: 'b', key: 'k', consistency: 'eventual' as 'local' }), 'consistency'],
      ['a revision beyond 2^53', () => h.door.kvPut({ bucket: 'b', key: 'k', value: Buffer.from('v'), expectRev: 2 ** 60 }), 'expectRev'],
      ['an invalid stream name', () => h.door.evAppend({ stream: 'a.b', type: 't', data: 1 }), 'stream'],
      ['missing event data', () => h.door.evAppend({ stream: 's', type: 't', data: undefined }), 'data'],
      ['a list limit over the maximum', () => h.door.kvList({ bucket: 'b', limit: 1_000_000 }), 'limit'],
      ['SQL params that are neither array nor object', () => h.door.sqlQuery({ sql: 'SELECT 1', params: 5 as unknown as unknown[] }), 'params'],
    ])('rejects %s as INVALID_ARGUMENT naming the field', async (_name, call, field) => {
      const err = await failure(call());
      expect(err).toBeInstanceOf(GrpcDoorError);
      expect(err).toMatchObject({ code: 'INVALID_ARGUMENT', grpcCode: grpc.status.INVALID_ARGUMENT, fromTrailer: true });
      expect(err.details.field).toBe(field);
    });

    it('rejects event data that is not JSON text, naming the field', async () => {
      const err = await rawUnary(h.door.clients.Events, 'Append', { stream: 's', type: 't', data: '{not json' });
      expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(err?.metadata.get('loom-error')).toEqual(['INVALID_ARGUMENT']);
      expect(JSON.parse(String(err?.metadata.get('loom-error-details')[0]))).toMatchObject({ field: 'data' });
    });

    it('rejects bytes that are not a protobuf message, and keeps serving', async () => {
      const client = h.door.clients.KV;
      const err = await new Promise<grpc.ServiceError | null>((resolve) => {
        client.makeUnaryRequest(
          '/loom.v1.KV/Put',
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.from([0x0a, 0xff]),
          (e) => resolve(e),
        );
      });
      expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(err?.metadata.get('loom-error')).toEqual(['INVALID_ARGUMENT']);
      const { rev } = await h.door.kvPut({ bucket: 'alive', key: 'k', value: Buffer.from('v') });
      expect(rev).toBeGreaterThan(0);
    });
  });

  it('answers DEADLINE_EXCEEDED when a read cannot finish before the call deadline', async () => {
    const started = Date.now();
    const err = await failure(h.door.kvGet({ bucket: 'b', key: 'k', atLeast: 1_000_000 }, { deadlineMs: 300 }));
    expect(err).toMatchObject({ code: 'TIMEOUT', grpcCode: grpc.status.DEADLINE_EXCEEDED });
    expect(Date.now() - started).toBeLessThan(5_000);
    // The server is not stuck on the abandoned wait.
    await h.door.kvPut({ bucket: 'b', key: 'after-deadline', value: Buffer.from('v') });
  });

  it('refuses a request larger than messageBytesMax with RESOURCE_EXHAUSTED, and a value over valueBytesMax as TOO_LARGE', async () => {
    const small = await startGrpc({ limits: { messageBytesMax: 64 * 1024 } });
    try {
      const err = await failure(small.door.kvPut({ bucket: 'b', key: 'k', value: Buffer.alloc(100 * 1024, 1) }));
      expect(err).toMatchObject({ code: 'TOO_LARGE', grpcCode: grpc.status.RESOURCE_EXHAUSTED });
      await small.door.kvPut({ bucket: 'b', key: 'k', value: Buffer.alloc(1024, 1) });
    } finally {
      await small.close();
    }
    const big = await failure(h.door.kvPut({ bucket: 'b', key: 'big', value: Buffer.alloc(2 * 1024 * 1024, 1) }));
    expect(big).toMatchObject({ code: 'TOO_LARGE', grpcCode: grpc.status.RESOURCE_EXHAUSTED, fromTrailer: true, details: { field: 'value', limit: 'valueBytesMax' } });
  });
});

describe('the gRPC door with an auth token', () => {
  let h: GrpcHarness;
  beforeAll(async () => {
    h = await startGrpc({ authToken: 's3cret' });
  });
  afterAll(async () => {
    await h.close();
  });

  it('serves calls that carry the bearer token', async () => {
    const { rev } = await h.door.kvPut({ bucket: 'b', key: 'k', value: Buffer.from('v') });
    expect((await h.door.kvGet({ bucket: 'b', key: 'k' })).rev).toBe(rev);
  });

  it('rejects calls without a token or with a wrong one as UNAUTHENTICATED, watches included', async () => {
    for (const token of [undefined, 'wrong', '']) {
      const door = grpcDoor(h.port, token);
      try {
        const err = await failure(door.kvGet({ bucket: 'b', key: 'k' }));
        expect(err).toMatchObject({ code: 'UNAUTHENTICATED', grpcCode: grpc.status.UNAUTHENTICATED, fromTrailer: true });
        expect((await failure(door.status())).code).toBe('UNAUTHENTICATED');
        const watch = door.watch('>', { fromSeq: 0 });
        const watchErr = await failure((async () => {
          for await (const change of watch) return change;
        })());
        expect(watchErr.code).toBe('UNAUTHENTICATED');
      } finally {
        door.close();
      }
    }
  });
});

/** A unary call with a request object as given (snake_case), returning the error or null. */
function rawUnary(client: grpc.Client, method: string, request: Record<string, unknown>): Promise<grpc.ServiceError | null> {
  return new Promise((resolve) => {
    const fn = (client as unknown as Record<string, (r: unknown, cb: (e: grpc.ServiceError | null) => void) => void>)[method].bind(client);
    fn(request, (e) => resolve(e));
  });
}
