// Malformed input through the HTTP and NATS doors (gRPC has its own in test/api/grpc): bad JSON,
// wrong types, unknown fields, oversized bodies, invalid names and subjects. Each is refused with
// INVALID_ARGUMENT (HTTP 400) or TOO_LARGE naming what was wrong, and the node keeps serving.

import { connect, headers as natsHeaders, type NatsConnection } from 'nats';
import { openNode, type EmbeddedNode } from '../../src';
import { makeTempDir, removeDir } from '../support/tmp';

let dir: string;
let node: EmbeddedNode;
let base: string;
let nc: NatsConnection;

beforeAll(async () => {
  dir = makeTempDir();
  node = await openNode({ data: dir, doors: true });
  base = `http://127.0.0.1:${node.ports.http}`;
  nc = await connect({ servers: `127.0.0.1:${node.ports.nats}` });
});
afterAll(async () => {
  await nc.close();
  await node.close();
  removeDir(dir);
});

async function http(method: string, path: string, body?: string | Uint8Array, contentType = 'application/json'): Promise<{ status: number; body: { code: string; message: string; details: { field?: string } } }> {
  const response = await fetch(`${base}${path}`, { method, ...(body !== undefined ? { body, headers: { 'content-type': contentType } } : {}) });
  return { status: response.status, body: (await response.json()) as never };
}

describe('malformed input through HTTP', () => {
  it.each([
    ['bad JSON', 'POST', '/v1/events/s', '{"type": "x", ', 400, 'INVALID_ARGUMENT', 'body'],
    ['a wrong type', 'POST', '/v1/events/s', '{"type": 5, "data": {}}', 400, 'INVALID_ARGUMENT', 'type'],
    ['an unknown field', 'POST', '/v1/events/s', '{"type": "x", "data": {}, "color": "red"}', 400, 'INVALID_ARGUMENT', 'color'],
    ['a JSON array body', 'POST', '/v1/sql', '[1, 2]', 400, 'INVALID_ARGUMENT', 'body'],
    ['a non-integer query parameter', 'PUT', '/v1/kv/b/k?expectRev=abc', 'v', 400, 'INVALID_ARGUMENT', 'expectRev'],
    ['an invalid bucket name', 'PUT', '/v1/kv/b%20b/k', 'v', 400, 'INVALID_ARGUMENT', 'bucket'],
    ['an invalid key', 'GET', '/v1/kv/b/a..b', undefined, 400, 'INVALID_ARGUMENT', 'key'],
    ['an invalid watch subject', 'GET', '/v1/watch?subject=a..b', undefined, 400, 'INVALID_ARGUMENT', 'subject'],
    ['a limit out of range', 'GET', '/v1/kv/b?limit=100000', undefined, 400, 'INVALID_ARGUMENT', 'limit'],
  ])('refuses %s', async (_what, method, path, body, status, code, field) => {
    const response = await http(method, path, body, path.startsWith('/v1/kv') ? 'application/octet-stream' : 'application/json');
    expect(response.status).toBe(status);
    expect(response.body.code).toBe(code);
    if (field) expect(response.body.details.field).toBe(field);
    expect(response.body.message.length).toBeGreaterThan(10);
  });

  it('refuses an oversized body with 413 TOO_LARGE', async () => {
    const response = await http('PUT', '/v1/kv/b/big', new Uint8Array(3 * 1024 * 1024), 'application/octet-stream');
    expect(response.status).toBe(413);
    expect(response.body.code).toBe('TOO_LARGE');
  });

  it('answers an unknown route with 404 NOT_FOUND', async () => {
    const response = await http('GET', '/v1/nothing');
    expect(response.status).toBe(404);
    expect(response.body.code).toBe('NOT_FOUND');
  });

  it('keeps serving after all of it', async () => {
    const response = await fetch(`${base}/v1/kv/b/k`, { method: 'PUT', body: 'fine' });
    expect(response.status).toBe(200);
  });
});

describe('malformed input through the NATS door', () => {
  async function request(subject: string, payload: string | Uint8Array, headers: Record<string, string> = {}) {
    const h = natsHeaders();
    for (const [k, v] of Object.entries(headers)) h.set(k, v);
    const reply = await nc.request(subject, typeof payload === 'string' ? Buffer.from(payload) : payload, { timeout: 5000, headers: h });
    return { code: reply.headers?.get('Loom-Error'), body: reply.string() ? (JSON.parse(reply.string()) as { message: string; details: { field?: string } }) : undefined };
  }

  it.each([
    ['bad JSON', '$LOOM.API.EV.APPEND.s', '{"type": ', {}, 'payload'],
    ['a wrong type', '$LOOM.API.EV.APPEND.s', '{"type": [], "data": 1}', {}, 'type'],
    ['an unknown field', '$LOOM.API.EV.APPEND.s', '{"type": "x", "data": 1, "color": "red"}', {}, 'color'],
    ['a non-integer header', '$LOOM.API.KV.PUT.b.k', 'v', { 'Loom-Expect-Rev': 'soon' }, 'Loom-Expect-Rev'],
    ['an invalid bucket', '$LOOM.API.KV.PUT.b!.k', 'v', {}, 'bucket'],
    ['an unknown operation', '$LOOM.API.KV.FROB.b.k', '', {}, 'subject'],
    ['a missing key token', '$LOOM.API.KV.GET.b', '', {}, 'subject'],
    ['a watch without a deliver subject', '$LOOM.API.WATCH', '{"subject": ">"}', {}, 'deliver'],
    ['a bad consistency level', '$LOOM.API.KV.GET.b.k', '', { 'Loom-Consistency': 'eventual-ish' }, 'consistency'],
  ])('refuses %s with INVALID_ARGUMENT naming the field', async (_what, subject, payload, headers, field) => {
    const reply = await request(subject, payload, headers);
    expect(reply.code).toBe('INVALID_ARGUMENT');
    expect(reply.body?.details.field).toBe(field);
  });

  it('refuses an oversized value with TOO_LARGE', async () => {
    const reply = await request('$LOOM.API.KV.PUT.b.big', new Uint8Array(1024 * 1024 - 100));
    expect(reply.code).toBe('TOO_LARGE');
  });

  it('keeps serving after all of it', async () => {
    const reply = await request('$LOOM.API.KV.PUT.b.k2', 'fine');
    expect(reply.code).toBeUndefined();
  });
});

describe('the OpenAPI document', () => {
  it('describes every /v1 route the HTTP door serves', async () => {
    const doc = (await (await fetch(`${base}/openapi.json`)).json()) as { paths: Record<string, Record<string, unknown>> };
    const served: Array<[string, string]> = [
      ['put', '/v1/kv/{bucket}/{key}'],
      ['get', '/v1/kv/{bucket}/{key}'],
      ['delete', '/v1/kv/{bucket}/{key}'],
      ['get', '/v1/kv/{bucket}'],
      ['post', '/v1/events/{stream}'],
      ['get', '/v1/events/{stream}'],
      ['post', '/v1/sql'],
      ['get', '/v1/watch'],
      ['get', '/v1/cluster/status'],
      ['post', '/v1/cluster/members'],
      ['delete', '/v1/cluster/members/{id}'],
      ['post', '/v1/cluster/transfer-leader'],
      ['put', '/v1/buckets/{bucket}/objects/{name}'],
      ['get', '/v1/buckets/{bucket}/objects/{name}'],
      ['delete', '/v1/buckets/{bucket}/objects/{name}'],
      ['get', '/v1/buckets/{bucket}/objects'],
    ];
    for (const [method, path] of served) expect(doc.paths[path]?.[method]).toBeDefined();
    // And every documented route answers something other than "no route" (watch streams forever).
    for (const [method, path] of served.filter(([, p]) => p !== '/v1/watch')) {
      const url = path.replace('{bucket}', 'b').replace('{key}', 'k').replace('{stream}', 's').replace('{name}', 'n').replace('{id}', '9');
      const response = await fetch(`${base}${url}`, { method: method.toUpperCase(), ...(method === 'get' || method === 'delete' ? {} : { body: '{}', headers: { 'content-type': 'application/json' } }) });
      const body = await response.text();
      expect(body).not.toMatch(/no route/);
    }
  });
});
