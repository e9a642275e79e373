// Object metadata and content type follow one rule on every door (src/util/names.ts): what one door
// accepts, every other door returns unchanged (HTTP lower-cases keys, as header names); what no door
// can carry is refused at write time with INVALID_ARGUMENT naming the field, and nothing is stored.

import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { errorDetailsTrailer, errorTrailer, loadLoomProto } from '../../src/api/grpc';
import { openNode, type EmbeddedNode } from '../../src';
import { connect, type LoomClient } from '../../src/client';
import { LoomError } from '../../src/util';
import { metadataHeaderBytes, objectMetadataBytesMax } from '../../src/util/names';
import { drain } from '../support/streams';
import { makeTempDir, removeDir } from '../support/tmp';

type Ctor = new (address: string, credentials: grpc.ChannelCredentials) => grpc.Client;
type BucketsClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;
type Refusal = { code?: string; field?: unknown };

function bucketsClient(port: number): BucketsClient {
  const loaded = grpc.loadPackageDefinition(loadLoomProto()) as unknown as { loom: { v1: Record<string, Ctor> } };
  return new loaded.loom.v1.Buckets(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as BucketsClient;
}

function unary<T>(client: BucketsClient, method: string, request: Record<string, unknown>): Promise<T> {
  return new Promise((resolve, reject) => client[method](request, (err: Error | null, r: T) => (err ? reject(err) : resolve(r))));
}

function grpcRefusal(err: unknown): Refusal {
  const metadata = (err as grpc.ServiceError).metadata;
  const details = metadata?.get(errorDetailsTrailer)[0];
  return { code: metadata?.get(errorTrailer)[0] as string | undefined, field: details === undefined ? undefined : (JSON.parse(String(details)) as { field?: unknown }).field };
}

function loomRefusal(err: unknown): Refusal {
  return err instanceof LoomError ? { code: err.code, field: err.details.field } : { code: String(err) };
}

/**
 * An HTTP request written byte by byte, so header values may hold bytes that Node's own client
 * refuses to send (anything above 0xFF). String lines go as UTF-8, Buffers as they are.
 */
function rawHttp(port: number, method: string, path: string, headerLines: Array<string | Buffer>, body: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const parts: Buffer[] = [];
    socket.on('data', (d: Buffer) => parts.push(d));
    socket.on('error', reject);
    socket.on('end', () => {
      const text = Buffer.concat(parts).toString('utf8');
      const status = Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 0);
      resolve({ status, body: text.slice(text.indexOf('\r\n\r\n') + 4) });
    });
    const lines = [`${method} ${path} HTTP/1.1`, 'host: 127.0.0.1', 'connection: close', `content-length: ${Buffer.byteLength(body)}`, ...headerLines];
    // Written, not ended: the node answers before it closes the connection (`connection: close`).
    socket.write(Buffer.concat([...lines.map((line) => Buffer.concat([Buffer.from(line), Buffer.from('\r\n')])), Buffer.from('\r\n'), Buffer.from(body)]));
  });
}

/** Metadata and content types no door can carry unchanged, with the field each refusal names. */
const refused: Array<{ what: string; metadata?: Record<string, string>; contentType?: string; field: string }> = [
  { what: 'a value with a control character', metadata: { k: 'bell\u0007' }, field: 'metadata.k' },
  { what: 'a value with a line feed', metadata: { k: 'line1\nline2' }, field: 'metadata.k' },
  { what: 'a value with a carriage return', metadata: { k: 'a\rb' }, field: 'metadata.k' },
  { what: 'a value with a space at its end', metadata: { k: 'v ' }, field: 'metadata.k' },
  { what: 'a key with a space', metadata: { 'a b': 'v' }, field: 'metadata.a b' },
  { what: 'keys that differ only in case', metadata: { K: 'v', k: 'w' }, field: 'metadata.k' },
  { what: 'the empty key', metadata: { '': 'v' }, field: 'metadata.' },
  { what: 'a key of 129 characters', metadata: { ['k'.repeat(129)]: 'v' }, field: `metadata.${'k'.repeat(129)}` },
  { what: 'a content type with CR LF', contentType: 'text/plain\r\nX-Evil: 1', field: 'contentType' },
  { what: 'a non-ASCII content type', contentType: 'text/plain; name="é"', field: 'contentType' },
];

/** Accepted: every printable ASCII character, a tab inside, an empty value, and the longest key. */
const accepted = {
  contentType: 'text/plain; charset=utf-8; name="a b.txt"',
  metadata: {
    'content-disposition': 'attachment; filename="a b.txt"',
    printable: '!"#$%&\'()*+,-./0-9:;<=>?@A-Z[\\]^_`a-z{|}~',
    tabbed: 'a\tb',
    empty: '',
    'x_y-1': 'v',
    ['k'.repeat(128)]: 'long key',
  },
};

describe('object metadata and content type across the doors', () => {
  let dir: string;
  let node: EmbeddedNode;
  let buckets: BucketsClient;
  let client: LoomClient;
  let nc: NatsConnection;
  let httpPort: number;

  beforeAll(async () => {
    dir = makeTempDir();
    node = await openNode({ data: dir, doors: true, sync: 'none' });
    httpPort = node.ports.http as number;
    buckets = bucketsClient(node.ports.grpc as number);
    client = await connect({ servers: `nats://127.0.0.1:${node.ports.nats}`, http: `http://127.0.0.1:${httpPort}` });
    nc = await natsConnect({ port: node.ports.nats });
  });
  afterAll(async () => {
    await nc.close();
    await client.close();
    buckets.close();
    await node.close();
    removeDir(dir);
  });

  function grpcPut(name: string, header: Record<string, unknown>): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const call = buckets.Put((err: grpc.ServiceError | null, info: Record<string, unknown>) => (err ? reject(err) : resolve(info))) as grpc.ClientWritableStream<unknown>;
      call.write({ header: { bucket: 'meta', name, ...header } });
      call.write({ data: Buffer.from('body') });
      call.end();
    });
  }

  async function expectNothingStored(name: string, chunksBefore: unknown): Promise<void> {
    expect(loomRefusal(await node.db.objects.stat('meta', name).catch((e: unknown) => e))).toEqual({ code: 'NOT_FOUND', field: undefined });
    // Refused before the first byte was read: no chunk was proposed either.
    expect(node.db.objects.chunkStats()).toEqual(chunksBefore);
  }

  describe.each(refused)('refuses $what', ({ metadata, contentType, field }) => {
    it('in db.objects.put', async () => {
      const before = node.db.objects.chunkStats();
      const err = await node.db.objects.put('meta', 'embedded', 'body', { metadata, contentType }).catch((e: unknown) => e);
      expect(loomRefusal(err)).toEqual({ code: 'INVALID_ARGUMENT', field });
      await expectNothingStored('embedded', before);
    });

    it('in a gRPC Put header', async () => {
      const before = node.db.objects.chunkStats();
      const err = await grpcPut('grpc', { metadata: metadata ?? {}, content_type: contentType ?? '' }).catch((e: unknown) => e);
      expect(grpcRefusal(err)).toEqual({ code: 'INVALID_ARGUMENT', field });
      await expectNothingStored('grpc', before);
    });

    it('in the SDK', async () => {
      const before = node.db.objects.chunkStats();
      const err = await client.objects.put('meta', 'sdk', 'body', { metadata, contentType }).catch((e: unknown) => e);
      expect(loomRefusal(err)).toEqual({ code: 'INVALID_ARGUMENT', field });
      await expectNothingStored('sdk', before);
    });
  });

  // HTTP lower-cases header names and cannot carry CR or LF in a value, so only these reach it.
  it.each<[string, Array<string | Buffer>, string]>([
    ['a metadata value that is not UTF-8 (Latin-1)', [Buffer.from('x-loom-meta-k: caf\xe9', 'latin1')], 'metadata.k'],
    ['a UTF-8 content type', ['content-type: text/plain; name="é"'], 'contentType'],
    ['the empty metadata key', ['x-loom-meta-: v'], 'metadata.'],
  ])('refuses %s in an HTTP PUT with 400 and stores nothing', async (_what, headerLines, field) => {
    const before = node.db.objects.chunkStats();
    const res = await rawHttp(httpPort, 'PUT', '/v1/buckets/meta/objects/http', headerLines, 'body');
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body)).toMatchObject({ code: 'INVALID_ARGUMENT', details: { field } });
    await expectNothingStored('http', before);
  });

  it('carries values in any script and keys in any case unchanged, over HTTP as UTF-8 bytes', async () => {
    const metadata = { Author: 'Zoë ✓', 'note.v2': '日本語 text' };
    await grpcPut('unicode', { metadata });
    const stat = await unary<{ metadata: Record<string, string> }>(buckets, 'Stat', { bucket: 'meta', name: 'unicode' });
    expect(stat.metadata).toEqual(metadata);
    const info = JSON.parse((await nc.request('$LOOM.API.OBJ.INFO.meta', JSON.stringify({ name: 'unicode' }), { timeout: 5000 })).string()) as { metadata: unknown };
    expect(info.metadata).toEqual(metadata);
    // HTTP: header names in lower case (as HTTP has them), values as their UTF-8 bytes.
    const get = await fetch(`http://127.0.0.1:${httpPort}/v1/buckets/meta/objects/unicode`);
    const utf8 = (header: string | null): string => Buffer.from(header ?? '', 'latin1').toString('utf8');
    expect(utf8(get.headers.get('x-loom-meta-author'))).toBe('Zoë ✓');
    expect(utf8(get.headers.get('x-loom-meta-note.v2'))).toBe('日本語 text');
    // An HTTP PUT whose header carries UTF-8 bytes stores the text, as the SDK sends it.
    expect((await rawHttp(httpPort, 'PUT', '/v1/buckets/meta/objects/unicode-http', ['x-loom-meta-author: Zoë ✓'], 'body')).status).toBe(200);
    expect((await node.db.objects.stat('meta', 'unicode-http')).metadata).toEqual({ author: 'Zoë ✓' });
    await client.objects.put('meta', 'unicode-sdk', 'body', { metadata: { author: 'Zoë ✓' } });
    expect((await node.db.objects.stat('meta', 'unicode-sdk')).metadata).toEqual({ author: 'Zoë ✓' });
  });

  const viaDoors: Array<[string, (name: string) => Promise<unknown>]> = [
    ['db.objects.put', (name) => node.db.objects.put('meta', name, 'body', accepted)],
    ['gRPC Put', (name) => grpcPut(name, { metadata: accepted.metadata, content_type: accepted.contentType })],
    ['the SDK (HTTP PUT)', (name) => client.objects.put('meta', name, 'body', accepted)],
  ];

  it.each(viaDoors)('returns what %s stored unchanged over HTTP GET, gRPC Stat, NATS INFO and SQL', async (_door, putVia) => {
    const name = `ok-${_door.replace(/\W/g, '')}`;
    await putVia(name);

    const get = await fetch(`http://127.0.0.1:${httpPort}/v1/buckets/meta/objects/${name}`);
    expect(get.status).toBe(200);
    expect(get.headers.get('content-type')).toBe(accepted.contentType);
    const fromHttp: Record<string, string> = {};
    get.headers.forEach((value, key) => {
      if (key.startsWith('x-loom-meta-')) fromHttp[key.slice('x-loom-meta-'.length)] = value;
    });
    expect(fromHttp).toEqual(accepted.metadata);
    expect(await get.text()).toBe('body');

    const stat = await unary<{ content_type: string; metadata: Record<string, string> }>(buckets, 'Stat', { bucket: 'meta', name });
    expect({ contentType: stat.content_type, metadata: stat.metadata }).toEqual(accepted);

    const info = JSON.parse((await nc.request('$LOOM.API.OBJ.INFO.meta', JSON.stringify({ name }), { timeout: 5000 })).string()) as Record<string, unknown>;
    expect({ contentType: info.contentType, metadata: info.metadata }).toEqual(accepted);

    const sql = await node.sql.query({ sql: 'SELECT content_type, metadata FROM objects WHERE bucket = ? AND name = ?', params: ['meta', name] }, { atLeast: Number(info.rev) });
    const [[contentType, metadata]] = sql.rows as Array<[string, string]>;
    expect({ contentType, metadata: JSON.parse(metadata) as unknown }).toEqual(accepted);
  });

  it.each([
    ['one value', 0],
    ['200 short entries and one value', 200],
  ])('carries metadata of objectMetadataBytesMax (%s) through HTTP both ways and the SDK, and refuses a byte more on every door', async (_what, entries) => {
    const largest: Record<string, string> = Object.fromEntries(Array.from({ length: entries }, (_, i) => [`k${i}`, 'v']));
    largest.last = '';
    largest.last = 'x'.repeat(objectMetadataBytesMax - metadataHeaderBytes(largest));
    expect(metadataHeaderBytes(largest)).toBe(objectMetadataBytesMax);
    const tag = `largest-${entries}`;
    const headers = Object.entries(largest).map(([key, value]) => `x-loom-meta-${key}: ${value}`);
    expect((await rawHttp(httpPort, 'PUT', `/v1/buckets/meta/objects/${tag}-http`, headers, 'body')).status).toBe(200);
    await client.objects.put('meta', `${tag}-sdk`, 'body', { metadata: largest });
    await grpcPut(`${tag}-grpc`, { metadata: largest });
    for (const name of [`${tag}-http`, `${tag}-sdk`, `${tag}-grpc`]) {
      const get = await fetch(`http://127.0.0.1:${httpPort}/v1/buckets/meta/objects/${name}`);
      expect(get.status).toBe(200);
      expect(await get.text()).toBe('body');
      const { bytes } = await drain(await client.objects.get('meta', name));
      expect(bytes.toString()).toBe('body');
    }
    expect((await node.db.objects.stat('meta', `${tag}-grpc`)).metadata).toEqual(largest);

    const over = { ...largest, last: `${largest.last}x` };
    expect(loomRefusal(await node.db.objects.put('meta', 'over', 'body', { metadata: over }).catch((e: unknown) => e))).toEqual({ code: 'TOO_LARGE', field: 'metadata' });
    expect(grpcRefusal(await grpcPut('over', { metadata: over }).catch((e: unknown) => e))).toEqual({ code: 'TOO_LARGE', field: 'metadata' });
    expect(loomRefusal(await client.objects.put('meta', 'over', 'body', { metadata: over }).catch((e: unknown) => e))).toEqual({ code: 'TOO_LARGE', field: 'metadata' });
  });
});
