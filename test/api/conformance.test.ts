// One conformance suite — the same cases and expected results — against all four ways into loom:
// the embedded openNode API, the NATS door (raw nats client), gRPC and HTTP (fetch). Each door gets
// its own bucket and stream names on one shared node, so the cases are independent.

import * as http from 'node:http';
import { openNode, type EmbeddedNode } from '../../src';
import { makeTempDir, removeDir } from '../support/tmp';
import { embeddedDoor, grpcAdapterDoor, httpDoor, natsDoor, type Door, type DoorError } from './doors';

async function fails(promise: Promise<unknown>, code: string): Promise<DoorError> {
  const err = (await promise.then(
    () => undefined,
    (e: unknown) => e,
  )) as DoorError | undefined;
  if (!err) throw new Error(`expected ${code}, but the call succeeded`);
  expect(err.code).toBe(code);
  return err;
}

const doorNames = ['embedded', 'nats', 'grpc', 'http'] as const;
let dir: string;
let node: EmbeddedNode;
const doors: Record<string, Door> = {};

beforeAll(async () => {
  dir = makeTempDir();
  node = await openNode({ data: dir, doors: true });
  const ports = node.ports as Required<typeof node.ports>;
  doors.embedded = embeddedDoor(node);
  doors.nats = await natsDoor(ports.nats);
  doors.grpc = grpcAdapterDoor(ports.grpc);
  doors.http = httpDoor(ports.http);
});

afterAll(async () => {
  for (const door of Object.values(doors)) await door.close();
  await node.close();
  removeDir(dir);
});

describe.each(doorNames)('conformance through the %s door', (name) => {
  const door = (): Door => doors[name];
  const bucket = `kv-${name}`;
  const stream = `ev-${name}`;

  it('puts and gets bytes exactly, with increasing revisions', async () => {
    const value = Buffer.from([0, 1, 2, 255, 254, 10, 13]);
    const first = await door().put(bucket, 'bin', value);
    const got = await door().get(bucket, 'bin', { atLeast: first.rev });
    expect(got.value.equals(value)).toBe(true);
    expect(got.rev).toBe(first.rev);
    const second = await door().put(bucket, 'bin', Buffer.from('{"json":true}'));
    expect(second.rev).toBeGreaterThan(first.rev);
    expect((await door().get(bucket, 'bin')).value.toString()).toBe('{"json":true}');
    await door().put(bucket, 'path/to/a.b', Buffer.from('dotted'));
    expect((await door().get(bucket, 'path/to/a.b')).value.toString()).toBe('dotted');
  });

  it('answers CONFLICT for a stale expected revision or a create over an existing key', async () => {
    const { rev } = await door().put(bucket, 'cas', Buffer.from('1'));
    const conflict = await fails(door().put(bucket, 'cas', Buffer.from('2'), { expectRev: rev - 1 }), 'CONFLICT');
    expect(conflict.details).toMatchObject({ currentRev: rev });
    await fails(door().put(bucket, 'cas', Buffer.from('2'), { create: true }), 'CONFLICT');
    const next = await door().put(bucket, 'cas', Buffer.from('2'), { expectRev: rev });
    expect((await door().get(bucket, 'cas')).rev).toBe(next.rev);
    await door().put(bucket, 'fresh', Buffer.from('x'), { create: true });
  });

  it('deletes, then answers NOT_FOUND; a stale delete is a CONFLICT', async () => {
    const { rev } = await door().put(bucket, 'gone', Buffer.from('x'));
    await fails(door().del(bucket, 'gone', { expectRev: rev + 1000 }), 'CONFLICT');
    await door().del(bucket, 'gone', { expectRev: rev });
    await fails(door().get(bucket, 'gone'), 'NOT_FOUND');
    await fails(door().get(bucket, 'never-was'), 'NOT_FOUND');
  });

  it('lists by prefix in pages, every key exactly once', async () => {
    for (let i = 0; i < 5; i++) await door().put(bucket, `page/${i}`, Buffer.from(String(i)));
    const keys: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await door().list(bucket, { prefix: 'page/', limit: 2, ...(cursor ? { cursor } : {}) });
      expect(page.items.length).toBeLessThanOrEqual(2);
      keys.push(...page.items.map((i) => i.key));
      cursor = page.cursor;
    } while (cursor);
    expect(keys).toEqual(['page/0', 'page/1', 'page/2', 'page/3', 'page/4']);
    await fails(door().list(bucket, { limit: 0 }), 'INVALID_ARGUMENT');
  });

  it('appends events with expected versions and reads them back', async () => {
    const a = await door().append(stream, { type: 'order.created', data: { id: 1 }, expectVersion: 0 });
    const b = await door().append(stream, { type: 'order.paid', data: { cents: 250 }, expectVersion: 1 });
    expect([a.version, b.version]).toEqual([1, 2]);
    const conflict = await fails(door().append(stream, { type: 'order.paid', data: {}, expectVersion: 1 }), 'CONFLICT');
    expect(conflict.details).toMatchObject({ currentVersion: 2 });
    const events = await door().read(stream, { fromVersion: 2 });
    expect(events).toEqual([expect.objectContaining({ seq: b.seq, version: 2, type: 'order.paid', data: { cents: 250 } })]);
  });

  it('queries SQL with parameters and pages, and refuses writes and bad SQL', async () => {
    const sqlBucket = `sql_${name}`;
    for (let i = 0; i < 5; i++) await door().put(sqlBucket, `u${i}`, Buffer.from(JSON.stringify({ age: 20 + i })));
    const sql = `SELECT key, json_extract(value, '$.age') AS age FROM "kv_${sqlBucket}" WHERE json_extract(value, '$.age') >= ? ORDER BY key`;
    const first = await door().sql({ sql, params: [21], limit: 2 });
    expect(first.columns).toEqual(['key', 'age']);
    expect(first.rows).toEqual([
      ['u1', 21],
      ['u2', 22],
    ]);
    const second = await door().sql({ sql, params: [21], limit: 2, cursor: first.cursor });
    expect(second.rows).toEqual([
      ['u3', 23],
      ['u4', 24],
    ]);
    expect(second.cursor).toBeUndefined();
    await fails(door().sql({ sql: `DELETE FROM "kv_${sqlBucket}"` }), 'INVALID_ARGUMENT');
    const syntax = await fails(door().sql({ sql: 'SELEKT 1' }), 'INVALID_ARGUMENT');
    expect(syntax.message).toMatch(/syntax/i);
  });

  it('refuses invalid names with INVALID_ARGUMENT and oversized values with TOO_LARGE', async () => {
    await fails(door().put('bad!bucket', 'k', Buffer.from('v')), 'INVALID_ARGUMENT');
    // A name every door can carry to the server (it is a valid subject token and URL segment).
    await fails(door().put(bucket, 'bad:key', Buffer.from('v')), 'INVALID_ARGUMENT');
    await fails(door().append('bad:stream', { type: 't', data: {} }), 'INVALID_ARGUMENT');
    await fails(door().append(stream, { type: 't', data: undefined }), 'INVALID_ARGUMENT');
    await fails(door().put(bucket, 'big', Buffer.alloc(1024 * 1024 - 1000)), 'TOO_LARGE');
  });

  it('answers TIMEOUT when a read waits for a seq this node has not applied', async () => {
    const status = await door().status();
    await fails(door().get(bucket, 'bin', { atLeast: status.applied + 1_000_000, timeoutMs: 200 }), 'TIMEOUT');
  });

  it('watches from a seq and resumes from the middle with exactly the rest', async () => {
    const watchBucket = `watch-${name}`;
    const start = (await door().status()).applied;
    for (let i = 0; i < 6; i++) await door().put(watchBucket, `k${i}`, Buffer.from(String(i)));
    const all = await door().watch(`$KV.${watchBucket}.>`, start, 6);
    expect(all.map((c) => c.split(':')[1])).toEqual(Array.from({ length: 6 }, (_, i) => `$KV.${watchBucket}.k${i}`));
    const middle = Number(all[2].split(':')[0]);
    expect(await door().watch(`$KV.${watchBucket}.>`, middle, 3)).toEqual(all.slice(3));
    await fails(door().watch('$KV..bad', 0, 1), 'INVALID_ARGUMENT');
  });

  it('reports cluster status', async () => {
    expect(await door().status()).toMatchObject({ role: 'leader', commit: expect.any(Number), applied: expect.any(Number) });
  });
});

describe('auth on every door', () => {
  let authDir: string;
  let authNode: EmbeddedNode;
  beforeAll(async () => {
    authDir = makeTempDir();
    authNode = await openNode({ data: authDir, doors: true, authToken: 's3cret-token' });
  });
  afterAll(async () => {
    await authNode.close();
    removeDir(authDir);
  });

  it('rejects calls without the token and accepts them with it', async () => {
    const ports = authNode.ports as Required<typeof authNode.ports>;
    await expect(natsDoor(ports.nats)).rejects.toThrow(/Authorization Violation/i);
    const nats = await natsDoor(ports.nats, 's3cret-token');
    expect((await nats.put('a', 'k', Buffer.from('v'))).rev).toBeGreaterThan(0);
    await nats.close();

    const grpcDenied = grpcAdapterDoor(ports.grpc);
    await fails(grpcDenied.get('a', 'k'), 'UNAUTHENTICATED');
    await grpcDenied.close();
    const grpcOk = grpcAdapterDoor(ports.grpc, 's3cret-token');
    expect((await grpcOk.get('a', 'k')).value.toString()).toBe('v');
    await grpcOk.close();

    await fails(httpDoor(ports.http).get('a', 'k'), 'UNAUTHENTICATED');
    await fails(httpDoor(ports.http, 'wrong').get('a', 'k'), 'UNAUTHENTICATED');
    expect((await httpDoor(ports.http, 's3cret-token').get('a', 'k')).value.toString()).toBe('v');
    expect((await fetch(`http://127.0.0.1:${ports.http}/healthz`)).status).toBe(200);
  });

  it('answers an upload that announces more than objectBytesMax with 401 without the token, 413 with it', async () => {
    const ports = authNode.ports as Required<typeof authNode.ports>;
    const over = String(authNode.db.objects.objectBytesMax + 1);
    // Expect: 100-continue gets its answer before any body is sent: the limit goes only to a caller with the token.
    const answer = (headers: Record<string, string>): Promise<{ status: number; code: string }> =>
      new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port: ports.http, method: 'PUT', path: '/v1/buckets/b/objects/huge', headers: { 'content-length': over, expect: '100-continue', ...headers } });
        req.on('response', (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, code: (JSON.parse(body) as { code: string }).code }));
        });
        req.on('error', reject);
        req.flushHeaders();
      });
    expect(await answer({})).toEqual({ status: 401, code: 'UNAUTHENTICATED' });
    expect(await answer({ authorization: 'Bearer wrong' })).toEqual({ status: 401, code: 'UNAUTHENTICATED' });
    expect(await answer({ authorization: 'Bearer s3cret-token' })).toEqual({ status: 413, code: 'TOO_LARGE' });
  });
});
