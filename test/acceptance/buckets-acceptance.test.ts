// Acceptance tests of Buckets (blob storage) through the public surface only: real `loom serve`
// processes driven over HTTP (node:http), gRPC (@grpc/grpc-js), NATS (the `nats` client), SQL and
// the client SDK, plus one embedded node (openNode) for on-demand chunk collection, which `loom
// serve` only runs after its 24 h orphan age. Each test asserts what a user relies on; the
// contract is /work/shared/CONTRACT.md and docs/buckets.md.
//
// Written by an independent tester; the block "what the first run of this suite found missing" holds
// the defects it found, fixed since (session 9).

import { createHash, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { connect as natsConnect, createInbox, type Msg, type NatsConnection } from 'nats';
import { loadLoomProto } from '../../src/api/grpc';
import { connect, type LoomClient, type WatchChange } from '../../src/client';
import { openNode, type EmbeddedNode } from '../../src';
import { LoomError } from '../../src/util';
import { metadataHeaderBytes, objectMetadataBytesMax } from '../../src/util/names';
import { runLoom, startServe, stopServe, type ServeProcess } from '../support/cli';
import { httpRequest, type HttpAnswer } from '../support/http';
import { freePort } from '../support/ports';
import { makeTempDir, removeDir } from '../support/tmp';

const KiB = 1024;
const MiB = 1024 * 1024;
/** docs/buckets.md: chunkBytesDefault 256 KiB, chunkBytesMax 1 MiB, chunkBytesMin 4 KiB; objectMetadataBytesMax 8 KiB as HTTP headers. */
const chunk = 256 * KiB;
const chunkMax = MiB;
const metadataMax = objectMetadataBytesMax;

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// HTTP

/** The object's URL path: the whole name percent-encoded (so `/` travels as %2F and comes back as `/`). */
const objectUrl = (bucket: string, name: string): string => `/v1/buckets/${bucket}/objects/${encodeURIComponent(name)}`;
const json = (answer: HttpAnswer): Record<string, unknown> => JSON.parse(answer.body.toString('utf8')) as Record<string, unknown>;

/** A raw HTTP/1.1 exchange over a socket: `finish` 'end' half-closes after the bytes, 'reset' destroys the socket. */
function rawExchange(port: number, head: string, body: Buffer, finish: 'end' | 'reset'): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(head);
      socket.write(body, () => {
        if (finish === 'end') socket.end();
        else setTimeout(() => socket.destroy(), 100);
      });
    });
    let out = '';
    socket.on('data', (d: Buffer) => (out += d.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(out));
  });
}

// ---------------------------------------------------------------------------------------------
// gRPC

type Ctor = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => grpc.Client;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type GrpcClient = grpc.Client & Record<string, (...args: any[]) => any>;
interface GrpcInfo {
  bucket: string;
  name: string;
  size: number;
  sha256: string;
  content_type: string;
  metadata: Record<string, string>;
  rev: number;
  updated_at: number;
  chunk_bytes: number;
  chunk_count: number;
}

function grpcClient(service: string, port: number): GrpcClient {
  const loaded = grpc.loadPackageDefinition(loadLoomProto()) as unknown as { loom: { v1: Record<string, Ctor> } };
  return new loaded.loom.v1[service](`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc-node.flow_control_window': 8 * MiB }) as GrpcClient;
}

function grpcPut(client: GrpcClient, header: Record<string, unknown>, pieces: Iterable<Buffer>): Promise<GrpcInfo> {
  return new Promise((resolve, reject) => {
    const call = client.Put((err: grpc.ServiceError | null, info: GrpcInfo) => (err ? reject(err) : resolve(info))) as grpc.ClientWritableStream<unknown>;
    void (async () => {
      call.write({ header });
      for (const data of pieces) if (!call.write({ data })) await new Promise((r) => call.once('drain', r));
      call.end();
    })();
  });
}

async function grpcGet(client: GrpcClient, request: Record<string, unknown>): Promise<{ info: GrpcInfo; data: Buffer }> {
  const call = client.Get(request) as grpc.ClientReadableStream<{ info?: GrpcInfo; data: Buffer }>;
  let info: GrpcInfo | undefined;
  const parts: Buffer[] = [];
  for await (const message of call) {
    if (message.info) info = message.info;
    if (message.data.length) parts.push(message.data);
  }
  return { info: info as GrpcInfo, data: Buffer.concat(parts) };
}

function grpcUnary<T>(client: GrpcClient, method: string, request: Record<string, unknown>): Promise<T> {
  return new Promise((resolve, reject) => client[method](request, (err: grpc.ServiceError | null, reply: T) => (err ? reject(err) : resolve(reply))));
}

/** The loom code of a failed gRPC call (trailer `loom-error`), or 'resolved'. */
async function grpcCode(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'resolved';
  } catch (err) {
    return String((err as grpc.ServiceError).metadata?.get('loom-error')[0] ?? (err as Error).message);
  }
}

function* pieces(bytes: Buffer, size = MiB): Generator<Buffer> {
  for (let at = 0; at < bytes.length; at += size) yield bytes.subarray(at, at + size);
}

// ---------------------------------------------------------------------------------------------
// SDK, NATS, SQL

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const piece of stream) parts.push(piece as Buffer);
  return Buffer.concat(parts);
}

/** The LoomError code a promise fails with, or 'resolved'. */
async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'resolved';
  } catch (err) {
    return err instanceof LoomError ? err.code : `not a LoomError: ${String(err)}`;
  }
}

async function natsCall(nc: NatsConnection, subject: string, body: unknown): Promise<{ error?: string; json: Record<string, unknown> }> {
  const reply = await nc.request(subject, typeof body === 'string' ? body : JSON.stringify(body), { timeout: 5000 });
  return { error: reply.headers?.get('Loom-Error') || undefined, json: JSON.parse(reply.string()) as Record<string, unknown> };
}

async function sqlRows(port: number, sql: string, params: unknown[] = []): Promise<unknown[][]> {
  const answer = await httpRequest(port, 'POST', '/v1/sql', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sql, params }) });
  expect(answer.status).toBe(200);
  return (json(answer) as { rows: unknown[][] }).rows;
}

/** Chunks in the SQL view's bookkeeping (docs/buckets.md "SQL"): how many, references, and unreferenced ones. */
async function chunkBook(port: number): Promise<{ chunks: number; refs: number; orphans: number }> {
  const [[chunks, refs, orphans]] = (await sqlRows(port, 'SELECT count(*), coalesce(sum(refs), 0), coalesce(sum(refs = 0), 0) FROM _loom_chunks')) as number[][];
  return { chunks, refs, orphans };
}

const chunkDigests = (bytes: Buffer, size = chunk): string[] => {
  const out: string[] = [];
  for (let at = 0; at < bytes.length; at += size) out.push(sha256(bytes.subarray(at, at + size)));
  return out;
};

/** Every name of a listing, following cursors; `page` fetches one page. */
async function listAll(page: (cursor: string | undefined) => Promise<{ items: Array<{ name: string }>; cursor?: string }>): Promise<{ names: string[]; pages: number }> {
  const names: string[] = [];
  let cursor: string | undefined;
  let pages = 0;
  do {
    const p = await page(cursor);
    names.push(...p.items.map((i) => i.name));
    cursor = p.cursor;
    pages++;
    if (pages > 1000) throw new Error('listing does not end');
  } while (cursor !== undefined);
  return { names, pages };
}

const byUtf8 = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

// =============================================================================================

describe('Buckets acceptance: a loom serve process with default limits', () => {
  let dir: string;
  let serve: ServeProcess;
  let httpPort: number;
  let nc: NatsConnection;
  let sdk: LoomClient;
  let buckets: GrpcClient;
  let watchService: GrpcClient;

  beforeAll(async () => {
    dir = makeTempDir('loom-accept-');
    serve = await startServe(dir, ['--sync', 'none']);
    httpPort = serve.ports.http;
    nc = await natsConnect({ port: serve.ports.nats });
    sdk = await connect({ servers: `nats://127.0.0.1:${serve.ports.nats}`, http: `http://127.0.0.1:${httpPort}` });
    buckets = grpcClient('Buckets', serve.ports.grpc);
    watchService = grpcClient('Watch', serve.ports.grpc);
  });
  afterAll(async () => {
    buckets?.close();
    watchService?.close();
    await sdk?.close();
    await nc?.close();
    if (serve) await stopServe(serve);
    removeDir(dir);
  });

  const put = (bucket: string, name: string, body: Buffer | string, headers: Record<string, string> = {}): Promise<HttpAnswer> =>
    httpRequest(httpPort, 'PUT', objectUrl(bucket, name), { body, headers });
  const get = (bucket: string, name: string, headers: Record<string, string> = {}): Promise<HttpAnswer> => httpRequest(httpPort, 'GET', objectUrl(bucket, name), { headers });

  describe('round trips', () => {
    it.each([0, 1, chunk - 1, chunk, chunk + 1])('stores %i bytes put over HTTP and over gRPC byte for byte, read back over HTTP, gRPC and the SDK with one info on every door', async (size) => {
      const bytes = randomBytes(size);
      const sha = sha256(bytes);
      // HTTP in, every door out.
      const name = `rt/http/${size}`;
      const putAnswer = await put('rt', name, bytes, { 'content-type': 'application/x-test', 'x-loom-meta-size': String(size), 'x-loom-sha256': sha });
      expect(putAnswer.status).toBe(200);
      expect(putAnswer.headers.etag).toBe(`"${sha}"`);
      const info = json(putAnswer);
      expect(info).toMatchObject({ bucket: 'rt', name, size, sha256: sha, contentType: 'application/x-test', metadata: { size: String(size) }, chunkBytes: chunk, chunkCount: Math.ceil(size / chunk) });
      const viaGrpc = await grpcGet(buckets, { bucket: 'rt', name });
      expect(viaGrpc.data.equals(bytes)).toBe(true);
      expect(viaGrpc.info).toMatchObject({ bucket: 'rt', name, size, sha256: sha, content_type: 'application/x-test', metadata: { size: String(size) }, rev: info.rev, updated_at: info.updatedAt, chunk_bytes: chunk, chunk_count: info.chunkCount });
      expect((await collect(await sdk.objects.get('rt', name))).equals(bytes)).toBe(true);
      expect((await natsCall(nc, '$LOOM.API.OBJ.INFO.rt', { name })).json).toEqual(info);
      expect(await sdk.objects.info('rt', name)).toEqual(info);
      expect(await sqlRows(httpPort, 'SELECT size, sha256, content_type, metadata, updated_at, rev FROM objects WHERE bucket = ? AND name = ?', ['rt', name])).toEqual([
        [size, sha, 'application/x-test', JSON.stringify({ size: String(size) }), info.updatedAt, info.rev],
      ]);

      // gRPC in, HTTP out, with the headers a GET promises.
      const grpcName = `rt/grpc/${size}`;
      const stored = await grpcPut(buckets, { bucket: 'rt', name: grpcName, content_type: 'text/plain', metadata: { via: 'grpc' }, size, sha256: sha }, pieces(bytes, 100_000));
      expect(stored).toMatchObject({ size, sha256: sha, content_type: 'text/plain', chunk_bytes: chunk });
      const viaHttp = await get('rt', grpcName);
      expect(viaHttp.status).toBe(200);
      expect(viaHttp.body.equals(bytes)).toBe(true);
      expect(viaHttp.headers).toMatchObject({ etag: `"${sha}"`, 'content-type': 'text/plain', 'content-length': String(size), 'x-loom-meta-via': 'grpc', 'loom-rev': String(stored.rev), 'accept-ranges': 'bytes' });
    });

    it('round-trips 50 MiB uploaded over gRPC and downloaded over the SDK (sha-checked) and HTTP', async () => {
      const bytes = randomBytes(50 * MiB);
      const sha = sha256(bytes);
      const info = await grpcPut(buckets, { bucket: 'big', name: 'fifty', size: bytes.length, sha256: sha }, pieces(bytes));
      expect(info).toMatchObject({ size: bytes.length, sha256: sha, chunk_count: 200 });
      const viaSdk = await collect(await sdk.objects.get('big', 'fifty'));
      expect(viaSdk.length).toBe(bytes.length);
      expect(viaSdk.equals(bytes)).toBe(true);
      const tail = await get('big', 'fifty', { range: 'bytes=-3' });
      expect(tail.status).toBe(206);
      expect(tail.body.equals(bytes.subarray(bytes.length - 3))).toBe(true);
    });

    it('stores and serves 1 MiB chunks (chunkBytesMax) asked per upload over HTTP and gRPC, at chunk-1, chunk and chunk+1 bytes', async () => {
      for (const size of [chunkMax - 1, chunkMax, chunkMax + 1]) {
        const bytes = randomBytes(size);
        const viaHttp = await put('c1m', `http-${size}`, bytes, { 'x-loom-chunk-bytes': String(chunkMax) });
        expect(viaHttp.status).toBe(200);
        expect(json(viaHttp)).toMatchObject({ size, chunkBytes: chunkMax, chunkCount: Math.ceil(size / chunkMax) });
        expect((await grpcGet(buckets, { bucket: 'c1m', name: `http-${size}` })).data.equals(bytes)).toBe(true);
        const viaGrpc = await grpcPut(buckets, { bucket: 'c1m', name: `grpc-${size}`, chunk_bytes: chunkMax }, pieces(bytes, 300_000));
        expect(viaGrpc).toMatchObject({ size, chunk_bytes: chunkMax, chunk_count: Math.ceil(size / chunkMax) });
        expect((await get('c1m', `grpc-${size}`)).body.equals(bytes)).toBe(true);
        // A range across the 1 MiB boundary.
        if (size > chunkMax) {
          const range = await get('c1m', `grpc-${size}`, { range: `bytes=${chunkMax - 2}-${chunkMax}` });
          expect(range.body.equals(bytes.subarray(chunkMax - 2, chunkMax + 1))).toBe(true);
        }
      }
    });

    it('takes data in the gRPC Put header message too, and refuses a second header or no header', async () => {
      const bytes = randomBytes(chunk + 3);
      const info = await new Promise<GrpcInfo>((resolve, reject) => {
        const call = buckets.Put((err: grpc.ServiceError | null, reply: GrpcInfo) => (err ? reject(err) : resolve(reply))) as grpc.ClientWritableStream<unknown>;
        call.write({ header: { bucket: 'hd', name: 'with-data' }, data: bytes.subarray(0, 10) });
        call.write({ data: bytes.subarray(10) });
        call.end();
      });
      expect(info).toMatchObject({ size: bytes.length, sha256: sha256(bytes) });
      expect((await get('hd', 'with-data')).body.equals(bytes)).toBe(true);
      const rawPut = (messages: object[]): Promise<string> =>
        grpcCode(
          new Promise((resolve, reject) => {
            const call = buckets.Put((err: grpc.ServiceError | null, reply: GrpcInfo) => (err ? reject(err) : resolve(reply))) as grpc.ClientWritableStream<unknown>;
            for (const m of messages) call.write(m);
            call.end();
          }),
        );
      expect(await rawPut([{ header: { bucket: 'hd', name: 'two' } }, { header: { bucket: 'hd', name: 'two' } }])).toBe('INVALID_ARGUMENT');
      expect(await rawPut([{ data: Buffer.from('x') }])).toBe('INVALID_ARGUMENT');
      expect(await rawPut([])).toBe('INVALID_ARGUMENT');
      expect((await get('hd', 'two')).status).toBe(404);
    });

    it('refuses chunk sizes outside 4 KiB..1 MiB on HTTP and gRPC with INVALID_ARGUMENT, storing nothing', async () => {
      for (const value of [String(chunkMax + 1), '4095', '0', 'abc', '-4096']) {
        const answer = await put('cbad', 'x', 'bytes', { 'x-loom-chunk-bytes': value });
        expect([value, answer.status]).toEqual([value, 400]);
        expect(json(answer).code).toBe('INVALID_ARGUMENT');
      }
      expect(await grpcCode(grpcPut(buckets, { bucket: 'cbad', name: 'x', chunk_bytes: chunkMax + 1 }, [Buffer.from('bytes')]))).toBe('INVALID_ARGUMENT');
      expect(await grpcCode(grpcPut(buckets, { bucket: 'cbad', name: 'x', chunk_bytes: 4095 }, [Buffer.from('bytes')]))).toBe('INVALID_ARGUMENT');
      expect(await codeOf(sdk.objects.put('cbad', 'x', 'bytes', { chunkBytes: chunkMax + 1 }))).toBe('INVALID_ARGUMENT');
      expect((await get('cbad', 'x')).status).toBe(404);
      // The smallest allowed chunk works.
      const small = randomBytes(10_000);
      expect(json(await put('cbad', 'min', small, { 'x-loom-chunk-bytes': '4096' }))).toMatchObject({ chunkBytes: 4096, chunkCount: 3 });
      expect((await get('cbad', 'min')).body.equals(small)).toBe(true);
    });
  });

  describe('deduplication and chunk references (SQL view bookkeeping)', () => {
    it('stores the same bytes under two names once, and leaves the chunks of an overwritten and a deleted object unreferenced for collection', async () => {
      const bytes = randomBytes(3 * chunk + 10);
      const digests = chunkDigests(bytes);
      const refsOf = async (): Promise<number[]> => {
        const rows = await sqlRows(httpPort, `SELECT sha256, refs FROM _loom_chunks WHERE sha256 IN (${digests.map(() => '?').join(',')})`, digests);
        const byDigest = new Map(rows.map(([d, r]) => [d as string, r as number]));
        return digests.map((d) => byDigest.get(d) ?? -1);
      };
      const before = await chunkBook(httpPort);
      expect((await put('dedup', 'one', bytes)).status).toBe(200);
      const afterOne = await chunkBook(httpPort);
      expect(afterOne.chunks - before.chunks).toBe(4);
      expect(await refsOf()).toEqual([1, 1, 1, 1]);
      // The same bytes under another name, over another door: no new chunk, one more reference each.
      await grpcPut(buckets, { bucket: 'dedup', name: 'two' }, pieces(bytes, 123_456));
      expect((await chunkBook(httpPort)).chunks).toBe(afterOne.chunks);
      expect(await refsOf()).toEqual([1, 1, 1, 1].map((n) => n + 1));
      // And in another bucket.
      expect((await sdk.objects.put('dedup2', 'three', bytes)).sha256).toBe(sha256(bytes));
      expect((await chunkBook(httpPort)).chunks).toBe(afterOne.chunks);
      expect(await refsOf()).toEqual([3, 3, 3, 3]);
      // Overwrite and delete release their references; the chunks stay until a collection.
      await put('dedup', 'one', 'something else');
      await sdk.objects.delete('dedup2', 'three');
      expect(await refsOf()).toEqual([1, 1, 1, 1]);
      await grpcUnary(buckets, 'Delete', { bucket: 'dedup', name: 'two' });
      expect(await refsOf()).toEqual([0, 0, 0, 0]);
      expect((await get('dedup', 'two')).status).toBe(404);
      expect((await get('dedup', 'one')).body.toString()).toBe('something else');
    });
  });

  describe('object names', () => {
    const names = [
      'ünï/日本語/ファイル.txt',
      'a/b/c.txt',
      'a//b',
      'trailing/',
      '/leading',
      'x/../y',
      '..',
      '.',
      'a%2Fb',
      '100%',
      'q?x=1&y=2#frag',
      'plus+sign and space',
      'tab\there',
      'new\nline',
      'n'.repeat(1024),
      `${'€'.repeat(341)}a`, // 1024 bytes of UTF-8
    ];

    it('keeps any UTF-8 name of 1-1024 bytes exactly, on every door, with base64url subject tokens', async () => {
      expect(Buffer.byteLength(names[names.length - 1])).toBe(1024);
      const heard: string[] = [];
      const sub = nc.subscribe('$OBJ.names.>', { callback: (_e, msg) => heard.push(msg.subject) });
      await nc.flush();
      for (const name of names) {
        const answer = await put('names', name, `bytes of ${name}`);
        expect([name, answer.status]).toEqual([name, 200]);
        expect(json(answer).name).toBe(name);
      }
      for (const name of names) {
        expect([name, (await get('names', name)).body.toString()]).toEqual([name, `bytes of ${name}`]);
        expect((await grpcGet(buckets, { bucket: 'names', name })).data.toString()).toBe(`bytes of ${name}`);
        expect((await collect(await sdk.objects.get('names', name))).toString()).toBe(`bytes of ${name}`);
        expect((await natsCall(nc, '$LOOM.API.OBJ.INFO.names', { name })).json.name).toBe(name);
      }
      // '..' and '.' segments were not resolved: x/../y is not y.
      expect((await get('names', 'y')).status).toBe(404);
      const sqlNames = (await sqlRows(httpPort, "SELECT name FROM objects WHERE bucket = 'names'")).map((r) => r[0] as string);
      expect(sqlNames.sort()).toEqual([...names].sort());
      await nc.flush();
      await sleep(100);
      sub.unsubscribe();
      expect(heard).toEqual(names.map((n) => `$OBJ.names.${Buffer.from(n).toString('base64url')}`));
      for (const name of names) expect((await natsCall(nc, '$LOOM.API.OBJ.DEL.names', { name })).json).toMatchObject({ deleted: true });
    });

    it('refuses empty, NUL-bearing and over-1024-byte names with INVALID_ARGUMENT (field name) on every door', async () => {
      const bad = ['', 'a\u0000b', 'n'.repeat(1025), '€'.repeat(342)];
      for (const name of bad) {
        const label = JSON.stringify(name.slice(0, 10));
        const answer = await put('badnames', name, 'x');
        expect([label, answer.status]).toEqual([label, 400]);
        expect(json(answer)).toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'name' } });
        expect([label, await grpcCode(grpcPut(buckets, { bucket: 'badnames', name }, [Buffer.from('x')]))]).toEqual([label, 'INVALID_ARGUMENT']);
        expect([label, await codeOf(sdk.objects.put('badnames', name, 'x'))]).toEqual([label, 'INVALID_ARGUMENT']);
        expect([label, (await natsCall(nc, '$LOOM.API.OBJ.INFO.badnames', { name })).error]).toEqual([label, 'INVALID_ARGUMENT']);
      }
      // A lone surrogate has no UTF-8 form.
      expect((await natsCall(nc, '$LOOM.API.OBJ.INFO.badnames', '{"name":"a\\ud800"}')).error).toBe('INVALID_ARGUMENT');
      expect(await sqlRows(httpPort, "SELECT count(*) FROM objects WHERE bucket = 'badnames'")).toEqual([[0]]);
      // Bad bucket names too.
      expect((await httpRequest(httpPort, 'PUT', '/v1/buckets/bad.bucket/objects/x', { body: 'x' })).status).toBe(400);
      expect((await httpRequest(httpPort, 'GET', `/v1/buckets/${'b'.repeat(65)}/objects`)).status).toBe(400);
      expect(await grpcCode(grpcPut(buckets, { bucket: 'bad bucket', name: 'x' }, [Buffer.from('x')]))).toBe('INVALID_ARGUMENT');
    });
  });

  describe('metadata and content type', () => {
    it('accepts metadata up to objectMetadataBytesMax as HTTP headers and refuses more with TOO_LARGE, keeping the old object', async () => {
      // `x-loom-meta-k: <value>\r\n`: 17 bytes besides the value.
      const fits = { k: 'v'.repeat(metadataMax - 17) };
      expect(metadataHeaderBytes(fits)).toBe(metadataMax);
      const stored = await grpcPut(buckets, { bucket: 'meta', name: 'limit', metadata: fits }, [Buffer.from('first')]);
      expect(stored.metadata).toEqual(fits);
      expect((await natsCall(nc, '$LOOM.API.OBJ.INFO.meta', { name: 'limit' })).json.metadata).toEqual(fits);
      const over = { k: 'v'.repeat(metadataMax - 16) };
      const err = await grpcPut(buckets, { bucket: 'meta', name: 'limit', metadata: over }, [Buffer.from('second')]).catch((e: grpc.ServiceError) => e);
      expect((err as grpc.ServiceError).code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect((err as grpc.ServiceError).metadata.get('loom-error')[0]).toBe('TOO_LARGE');
      expect(JSON.parse(String((err as grpc.ServiceError).metadata.get('loom-error-details')[0]))).toMatchObject({ limit: 'objectMetadataBytesMax', max: metadataMax });
      expect(await codeOf(sdk.objects.put('meta', 'limit', 'second', { metadata: over }))).toBe('TOO_LARGE');
      expect((await grpcGet(buckets, { bucket: 'meta', name: 'limit' })).data.toString()).toBe('first');
    });

    it('refuses bad metadata keys and values with INVALID_ARGUMENT naming metadata.<key>, on HTTP, gRPC and the SDK', async () => {
      expect(json(await put('meta', 'keys', 'x', { 'x-loom-meta-a+b': 'v' }))).toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'metadata.a+b' } });
      const badMetadata: Array<Record<string, string>> = [{ 'a b': 'v' }, { k: 'a\u0001b' }, { k: ' lead' }, { k: 'trail\t' }, { K: '1', k: '2' }, { ['k'.repeat(129)]: 'v' }];
      for (const metadata of badMetadata) {
        const label = JSON.stringify(metadata).slice(0, 40);
        expect([label, await grpcCode(grpcPut(buckets, { bucket: 'meta', name: 'keys', metadata }, [Buffer.from('x')]))]).toEqual([label, 'INVALID_ARGUMENT']);
        await expect(sdk.objects.put('meta', 'keys', 'x', { metadata })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: expect.stringMatching(/^metadata\./) } });
      }
      expect((await get('meta', 'keys')).status).toBe(404);
      // What the rule admits comes back unchanged: any script, a tab inside, an empty value; keys lower-cased over HTTP.
      const stored = json(await put('meta', 'ok', 'x', { 'x-loom-meta-Camera': Buffer.from('X100 — ü 日本\tend', 'utf8').toString('latin1'), 'x-loom-meta-empty': '' }));
      expect(stored.metadata).toEqual({ camera: 'X100 — ü 日本\tend', empty: '' });
      expect((await grpcUnary<GrpcInfo>(buckets, 'Stat', { bucket: 'meta', name: 'ok' })).metadata).toEqual({ camera: 'X100 — ü 日本\tend', empty: '' });
      expect(JSON.parse((await sqlRows(httpPort, "SELECT metadata FROM objects WHERE bucket = 'meta' AND name = 'ok'"))[0][0] as string)).toEqual({ camera: 'X100 — ü 日本\tend', empty: '' });
      expect(await sqlRows(httpPort, "SELECT json_extract(metadata, '$.camera') FROM objects WHERE bucket = 'meta' AND name = 'ok'")).toEqual([['X100 — ü 日本\tend']]);
    });

    it('keeps content types exactly, defaults to application/octet-stream, and refuses over 256 bytes (TOO_LARGE) or control characters (INVALID_ARGUMENT)', async () => {
      expect(json(await put('ct', 'plain', 'x', { 'content-type': 'text/plain; charset=utf-8' })).contentType).toBe('text/plain; charset=utf-8');
      expect((await get('ct', 'plain')).headers['content-type']).toBe('text/plain; charset=utf-8');
      expect((await grpcUnary<GrpcInfo>(buckets, 'Stat', { bucket: 'ct', name: 'plain' })).content_type).toBe('text/plain; charset=utf-8');
      expect(json(await put('ct', 'none', 'x')).contentType).toBe('application/octet-stream');
      expect((await grpcPut(buckets, { bucket: 'ct', name: 'grpc-none' }, [Buffer.from('x')])).content_type).toBe('application/octet-stream');
      expect((await sdk.objects.put('ct', 'sdk-none', 'x')).contentType).toBe('application/octet-stream');
      const longest = `a/${'b'.repeat(254)}`;
      expect(json(await put('ct', 'long', 'x', { 'content-type': longest })).contentType).toBe(longest);
      const tooLong = await put('ct', 'plain', 'y', { 'content-type': `${longest}c` });
      expect(tooLong.status).toBe(413);
      expect(json(tooLong)).toMatchObject({ code: 'TOO_LARGE', details: { field: 'contentType', limit: 'contentTypeBytesMax', max: 256 } });
      expect(await grpcCode(grpcPut(buckets, { bucket: 'ct', name: 'plain', content_type: 'text/plain\r\nx-evil: 1' }, [Buffer.from('y')]))).toBe('INVALID_ARGUMENT');
      expect((await get('ct', 'plain')).body.toString()).toBe('x');
    });
  });

  describe('reads: Range, HEAD and ETags', () => {
    let bytes: Buffer;
    let etag: string;
    beforeAll(async () => {
      bytes = randomBytes(1000);
      etag = `"${sha256(bytes)}"`;
      expect((await put('rng', 'k', bytes, { 'content-type': 'application/x-k' })).headers.etag).toBe(etag);
      expect((await put('rng', 'empty', Buffer.alloc(0))).status).toBe(200);
    });

    it.each([
      ['bytes=0-0', 206, 0, 0],
      ['bytes=-1', 206, 999, 999],
      ['bytes=-2000', 206, 0, 999],
      ['bytes=990-', 206, 990, 999],
      ['bytes=990-5000', 206, 990, 999],
      ['bytes=999-999', 206, 999, 999],
      ['bytes=0-', 206, 0, 999],
      ['BYTES = 2 - 4', 206, 2, 4],
      ['bytes=1000-', 416, 0, 0],
      ['bytes=5000-6000', 416, 0, 0],
      ['bytes=-0', 416, 0, 0],
      ['bytes=5-3', 200, 0, 999],
      ['bytes=0-1,5-6', 200, 0, 999],
      ['items=0-1', 200, 0, 999],
    ] as const)('answers Range %s with %i (bytes %i-%i)', async (range, status, first, last) => {
      const answer = await get('rng', 'k', { range });
      expect(answer.status).toBe(status);
      if (status === 416) {
        expect(answer.headers['content-range']).toBe('bytes */1000');
        expect(json(answer)).toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'range' } });
        return;
      }
      expect(answer.body.equals(bytes.subarray(first, last + 1))).toBe(true);
      expect(answer.headers['content-length']).toBe(String(last - first + 1));
      if (status === 206) expect(answer.headers['content-range']).toBe(`bytes ${first}-${last}/1000`);
      else expect(answer.headers['content-range']).toBeUndefined();
      // HEAD answers the same status and headers with no body.
      const head = await httpRequest(httpPort, 'HEAD', objectUrl('rng', 'k'), { headers: { range } });
      expect([head.status, head.headers['content-length'], head.headers['content-range'], head.body.length]).toEqual([status, answer.headers['content-length'], answer.headers['content-range'], 0]);
    });

    it('serves a 0-byte object whole (200, no bytes), a suffix Range of it whole too, and any other Range 416', async () => {
      const whole = await get('rng', 'empty');
      expect([whole.status, whole.headers['content-length'], whole.body.length, whole.headers.etag]).toEqual([200, '0', 0, `"${sha256(Buffer.alloc(0))}"`]);
      for (const range of ['bytes=0-', 'bytes=0-0', 'bytes=-0']) {
        const answer = await get('rng', 'empty', { range });
        expect([range, answer.status, answer.headers['content-range']]).toEqual([range, 416, 'bytes */0']);
      }
      // RFC 9110 §14.1.1: a suffix of non-zero length is satisfiable, and of nothing it is nothing.
      const suffix = await get('rng', 'empty', { range: 'bytes=-1' });
      expect([suffix.status, suffix.headers['content-length'], suffix.body.length]).toEqual([200, '0', 0]);
      const head = await httpRequest(httpPort, 'HEAD', objectUrl('rng', 'empty'));
      expect([head.status, head.headers['content-length']]).toEqual([200, '0']);
      // gRPC: offset 0 of an empty object is an empty read; past it is INVALID_ARGUMENT.
      expect((await grpcGet(buckets, { bucket: 'rng', name: 'empty', offset: 0 })).data.length).toBe(0);
      expect(await grpcCode(grpcGet(buckets, { bucket: 'rng', name: 'empty', offset: 1 }))).toBe('INVALID_ARGUMENT');
    });

    it('serves gRPC ranges by offset and length, clamped at the end, and refuses an offset at or past the end', async () => {
      expect((await grpcGet(buckets, { bucket: 'rng', name: 'k', offset: 995, length: 100 })).data.equals(bytes.subarray(995))).toBe(true);
      expect((await grpcGet(buckets, { bucket: 'rng', name: 'k', offset: 10, length: 0 })).data.length).toBe(0);
      expect((await grpcGet(buckets, { bucket: 'rng', name: 'k', length: 3 })).data.equals(bytes.subarray(0, 3))).toBe(true);
      expect(await grpcCode(grpcGet(buckets, { bucket: 'rng', name: 'k', offset: 1000 }))).toBe('INVALID_ARGUMENT');
      expect(await grpcCode(grpcGet(buckets, { bucket: 'rng', name: 'k', offset: 5000 }))).toBe('INVALID_ARGUMENT');
      const sdkRange = await collect(await sdk.objects.get('rng', 'k', { offset: 995, length: 100 }));
      expect(sdkRange.equals(bytes.subarray(995))).toBe(true);
    });

    it.each([
      ['the strong ETag', 304, (e: string) => e],
      ['the weak ETag (If-None-Match compares weakly)', 304, (e: string) => `W/${e}`],
      ['a list holding it', 304, (e: string) => `"aaa", W/"bbb", ${e}`],
      ['a list without spaces', 304, (e: string) => `"aaa",${e}`],
      ['*', 304, () => '*'],
      ['another ETag', 200, () => '"0000"'],
      ['another weak ETag', 200, () => 'W/"0000"'],
      ['the ETag unquoted', 200, (e: string) => e.slice(1, -1)],
    ] as const)('answers If-None-Match with %s: %i', async (_label, status, header) => {
      for (const method of ['GET', 'HEAD']) {
        const answer = await httpRequest(httpPort, method, objectUrl('rng', 'k'), { headers: { 'if-none-match': header(etag) } });
        expect([method, answer.status]).toEqual([method, status]);
        if (status === 304) {
          expect(answer.body.length).toBe(0);
          expect(answer.headers.etag).toBe(etag);
        } else if (method === 'GET') expect(answer.body.equals(bytes)).toBe(true);
      }
    });

    it('stops answering 304 for an old ETag once the object is overwritten, and HEAD/GET of a missing object is 404', async () => {
      const first = await put('rng', 'changing', 'one');
      const oldEtag = first.headers.etag as string;
      expect((await get('rng', 'changing', { 'if-none-match': oldEtag })).status).toBe(304);
      const second = await put('rng', 'changing', 'two');
      const answer = await get('rng', 'changing', { 'if-none-match': oldEtag });
      expect([answer.status, answer.body.toString(), answer.headers.etag]).toEqual([200, 'two', second.headers.etag]);
      const head = await httpRequest(httpPort, 'HEAD', objectUrl('rng', 'missing'));
      expect([head.status, head.body.length]).toEqual([404, 0]);
      const missing = await get('rng', 'missing');
      expect([missing.status, json(missing).code]).toEqual([404, 'NOT_FOUND']);
    });
  });

  describe('writes: concurrency, deletes and digests', () => {
    it('leaves exactly one whole upload visible after concurrent overwrites over HTTP and gRPC, the one with the highest rev, on every door', async () => {
      const bodies = Array.from({ length: 8 }, (_, i) => randomBytes(200_000 + i * 70_000));
      const results = await Promise.all(
        bodies.map(async (body, i) => {
          if (i % 2 === 0) return json(await put('conc', 'same', body, { 'x-loom-meta-i': String(i) })) as { rev: number; sha256: string };
          const info = await grpcPut(buckets, { bucket: 'conc', name: 'same', metadata: { i: String(i) } }, pieces(body, 64 * KiB));
          return { rev: info.rev, sha256: info.sha256 };
        }),
      );
      results.forEach((r, i) => expect(r.sha256).toBe(sha256(bodies[i])));
      const revs = results.map((r) => r.rev);
      expect(new Set(revs).size).toBe(8);
      const winner = revs.indexOf(Math.max(...revs));
      const answer = await get('conc', 'same');
      expect(answer.body.equals(bodies[winner])).toBe(true);
      expect(answer.headers).toMatchObject({ 'loom-rev': String(revs[winner]), 'x-loom-meta-i': String(winner) });
      expect((await natsCall(nc, '$LOOM.API.OBJ.INFO.conc', { name: 'same' })).json).toMatchObject({ rev: revs[winner], sha256: sha256(bodies[winner]) });
      expect(await sqlRows(httpPort, "SELECT rev, sha256 FROM objects WHERE bucket = 'conc'")).toEqual([[revs[winner], sha256(bodies[winner])]]);
      // Only the winner's chunks are referenced by this object.
      const winnerDigests = chunkDigests(bodies[winner]);
      const referenced = await sqlRows(httpPort, `SELECT count(*) FROM _loom_chunks WHERE refs > 0 AND sha256 IN (${bodies.flatMap((b) => chunkDigests(b)).map((d) => `'${d}'`).join(',')})`);
      expect(referenced).toEqual([[new Set(winnerDigests).size]]);
    });

    it('answers a delete of a missing object deleted: false on every door and publishes no change for it', async () => {
      const heard: Array<[string, string | undefined]> = [];
      const sub = nc.subscribe('$OBJ.del.>', { callback: (_e, msg) => heard.push([msg.subject, msg.headers?.get('Loom-Op')]) });
      await nc.flush();
      const viaHttp = await httpRequest(httpPort, 'DELETE', objectUrl('del', 'ghost'));
      expect([viaHttp.status, json(viaHttp).deleted]).toEqual([200, false]);
      expect(await grpcUnary(buckets, 'Delete', { bucket: 'del', name: 'ghost' })).toMatchObject({ deleted: false });
      expect((await natsCall(nc, '$LOOM.API.OBJ.DEL.del', { name: 'ghost' })).json).toMatchObject({ deleted: false });
      expect(await sdk.objects.delete('del', 'ghost')).toMatchObject({ deleted: false });
      // A real object, put and deleted: PUT then DEL are the only changes heard.
      await put('del', 'real', 'x');
      const deleted = await httpRequest(httpPort, 'DELETE', objectUrl('del', 'real'));
      expect(json(deleted)).toMatchObject({ deleted: true });
      expect(json(await httpRequest(httpPort, 'DELETE', objectUrl('del', 'real')))).toMatchObject({ deleted: false });
      expect((await get('del', 'real')).status).toBe(404);
      expect(await grpcCode(grpcUnary(buckets, 'Stat', { bucket: 'del', name: 'real' }))).toBe('NOT_FOUND');
      expect(await grpcCode(grpcGet(buckets, { bucket: 'del', name: 'real' }))).toBe('NOT_FOUND');
      expect((await natsCall(nc, '$LOOM.API.OBJ.INFO.del', { name: 'real' })).error).toBe('NOT_FOUND');
      expect(await codeOf(sdk.objects.get('del', 'real'))).toBe('NOT_FOUND');
      expect(await sqlRows(httpPort, "SELECT count(*) FROM objects WHERE bucket = 'del'")).toEqual([[0]]);
      await nc.flush();
      await sleep(100);
      sub.unsubscribe();
      const token = Buffer.from('real').toString('base64url');
      expect(heard).toEqual([
        [`$OBJ.del.${token}`, 'PUT'],
        [`$OBJ.del.${token}`, 'DEL'],
      ]);
    });

    it('rejects an upload whose client digest does not match (x-loom-sha256, Digest, gRPC sha256, SDK) and keeps the old object', async () => {
      const old = randomBytes(chunk + 5);
      await put('dig', 'obj', old);
      const refsBefore = (await chunkBook(httpPort)).refs;
      const fresh = randomBytes(2 * chunk + 7);
      const wrong = sha256(Buffer.from('not it'));
      const attempts: Array<[string, Promise<string>]> = [
        ['x-loom-sha256', put('dig', 'obj', fresh, { 'x-loom-sha256': wrong }).then((a) => `${a.status} ${String(json(a).code)}`)],
        ['Digest', put('dig', 'obj', fresh, { digest: `sha-256=${Buffer.from(wrong, 'hex').toString('base64')}` }).then((a) => `${a.status} ${String(json(a).code)}`)],
        ['both disagree', put('dig', 'obj', fresh, { 'x-loom-sha256': sha256(fresh), digest: `sha-256=${Buffer.from(wrong, 'hex').toString('base64')}` }).then((a) => `${a.status} ${String(json(a).code)}`)],
        ['not hex', put('dig', 'obj', fresh, { 'x-loom-sha256': 'xyz' }).then((a) => `${a.status} ${String(json(a).code)}`)],
        ['gRPC', grpcCode(grpcPut(buckets, { bucket: 'dig', name: 'obj', sha256: wrong }, pieces(fresh, 100_000))).then((c) => `400 ${c}`)],
        ['SDK', codeOf(sdk.objects.put('dig', 'obj', fresh, { sha256: wrong })).then((c) => `400 ${c}`)],
      ];
      for (const [label, attempt] of attempts) expect([label, await attempt]).toEqual([label, '400 INVALID_ARGUMENT']);
      const still = await get('dig', 'obj');
      expect(still.body.equals(old)).toBe(true);
      expect((await chunkBook(httpPort)).refs).toBe(refsBefore);
      // The right digest, in either header and any case, is accepted.
      expect((await put('dig', 'obj', fresh, { 'x-loom-sha256': sha256(fresh).toUpperCase() })).status).toBe(200);
      expect((await put('dig', 'obj2', fresh, { digest: `SHA-256=${createHash('sha256').update(fresh).digest('base64')}` })).status).toBe(200);
      expect((await get('dig', 'obj')).body.equals(fresh)).toBe(true);
    });

    it('commits nothing from an interrupted upload (short body, unterminated chunked body, reset, gRPC cancel) and keeps the object it would have replaced', async () => {
      const old = Buffer.from('the old bytes');
      await put('cut', 'victim', old);
      const refsBefore = (await chunkBook(httpPort)).refs;
      const head = (name: string, framing: string): string => `PUT ${objectUrl('cut', name)} HTTP/1.1\r\nHost: x\r\n${framing}\r\n\r\n`;
      const chunked = (bytes: Buffer): Buffer => Buffer.concat([Buffer.from(`${bytes.length.toString(16)}\r\n`), bytes, Buffer.from('\r\n')]);
      // Short of its Content-Length, then a FIN: the node answers 400 and stores nothing.
      const short = await rawExchange(httpPort, head('victim', 'Content-Length: 900000'), randomBytes(600_000), 'end');
      expect(short.split('\r\n')[0]).toMatch(/^HTTP\/1\.1 4\d\d /);
      await rawExchange(httpPort, head('victim', 'Transfer-Encoding: chunked'), chunked(randomBytes(600_000)), 'end');
      await rawExchange(httpPort, head('victim', 'Transfer-Encoding: chunked'), chunked(randomBytes(600_000)), 'reset');
      await rawExchange(httpPort, head('fresh', 'Content-Length: 900000'), randomBytes(600_000), 'reset');
      // gRPC: announced size, cancelled after part of it.
      const call = buckets.Put(() => undefined) as grpc.ClientWritableStream<unknown>;
      call.write({ header: { bucket: 'cut', name: 'victim', size: 4 * chunk } });
      call.write({ data: randomBytes(2 * chunk) });
      await sleep(100);
      call.cancel();
      await sleep(300);
      expect((await get('cut', 'victim')).body.equals(old)).toBe(true);
      expect((await get('cut', 'fresh')).status).toBe(404);
      expect((await natsCall(nc, '$LOOM.API.OBJ.LIST.cut', {})).json.items).toEqual([expect.objectContaining({ name: 'victim', size: old.length })]);
      expect((await chunkBook(httpPort)).refs).toBe(refsBefore);
    });

    it('keeps serving the bytes a download started with while the object is overwritten and deleted mid-download', async () => {
      const old = randomBytes(6 * MiB);
      await put('dl', 'moving', old);
      const received: Buffer[] = [];
      const done = new Promise<void>((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port: httpPort, path: objectUrl('dl', 'moving'), agent: false }, (res) => {
          let paused = false;
          res.on('data', (d: Buffer) => {
            received.push(d);
            if (!paused) {
              paused = true;
              res.pause();
              void (async () => {
                await put('dl', 'moving', randomBytes(3 * MiB));
                await httpRequest(httpPort, 'DELETE', objectUrl('dl', 'moving'));
                res.resume();
              })().catch(reject);
            }
          });
          res.on('end', resolve);
          res.on('error', reject);
        });
        req.on('error', reject);
      });
      await done;
      expect(Buffer.concat(received).equals(old)).toBe(true);
      expect((await get('dl', 'moving')).status).toBe(404);
    });
  });

  describe('listings', () => {
    const expected: string[] = [];
    beforeAll(async () => {
      for (let i = 0; i < 150; i++) expected.push(`pg/${String(i).padStart(3, '0')}${i % 7 === 0 ? '/nested' : ''}`);
      expected.push('pg/ü', 'pg/日本', 'pg/a b', 'pg/Z');
      expected.sort(byUtf8);
      const all = [...expected, 'other/1', 'other/2', 'pga'];
      for (let i = 0; i < all.length; i += 16) await Promise.all(all.slice(i, i + 16).map((name) => put('list', name, name)));
    });

    it('reaches every object of a prefix exactly once, in UTF-8 byte order, following cursors on HTTP, gRPC, NATS and the SDK', async () => {
      const viaHttp = await listAll(async (cursor) => json(await httpRequest(httpPort, 'GET', `/v1/buckets/list/objects?prefix=pg%2F&limit=7${cursor ? `&cursor=${cursor}` : ''}`)) as { items: Array<{ name: string }>; cursor?: string });
      const viaGrpc = await listAll((cursor) => grpcUnary(buckets, 'List', { bucket: 'list', prefix: 'pg/', limit: 11, ...(cursor ? { cursor } : {}) }));
      const viaNats = await listAll(async (cursor) => (await natsCall(nc, '$LOOM.API.OBJ.LIST.list', { prefix: 'pg/', limit: 13, ...(cursor ? { cursor } : {}) })).json as { items: Array<{ name: string }>; cursor?: string });
      const viaSdk = await listAll((cursor) => sdk.objects.list('list', { prefix: 'pg/', limit: 17, ...(cursor ? { cursor } : {}) }));
      for (const [door, result, limit] of [['http', viaHttp, 7], ['grpc', viaGrpc, 11], ['nats', viaNats, 13], ['sdk', viaSdk, 17]] as const) {
        expect([door, result.names]).toEqual([door, expected]);
        expect([door, result.pages]).toEqual([door, Math.ceil(expected.length / limit)]);
      }
      const sqlNames = (await sqlRows(httpPort, "SELECT name FROM objects WHERE bucket = 'list' AND name LIKE 'pg/%'")).map((r) => r[0] as string);
      expect(sqlNames.sort(byUtf8)).toEqual(expected);
    });

    it('pages on consistently under concurrent writes: names added behind the cursor are skipped, ahead of it shown, deleted ones gone', async () => {
      const first = json(await httpRequest(httpPort, 'GET', '/v1/buckets/list/objects?prefix=pg%2F&limit=10')) as { items: Array<{ name: string }>; cursor: string };
      await put('list', 'pg/000-behind', 'x');
      await put('list', 'pg/zzz-ahead', 'x');
      await httpRequest(httpPort, 'DELETE', objectUrl('list', expected[20]));
      const rest = await listAll(async (cursor) => json(await httpRequest(httpPort, 'GET', `/v1/buckets/list/objects?prefix=pg%2F&limit=50&cursor=${cursor ?? first.cursor}`)) as { items: Array<{ name: string }>; cursor?: string });
      const names = [...first.items.map((i) => i.name), ...rest.names];
      expect(names).toEqual([...expected.filter((n) => n !== expected[20]), 'pg/zzz-ahead'].sort(byUtf8));
      await httpRequest(httpPort, 'DELETE', objectUrl('list', 'pg/000-behind'));
      await httpRequest(httpPort, 'DELETE', objectUrl('list', 'pg/zzz-ahead'));
      await put('list', expected[20], expected[20]);
    });

    it('answers an empty prefix page without a cursor, and refuses cursors it could not have issued or from another prefix', async () => {
      expect(json(await httpRequest(httpPort, 'GET', '/v1/buckets/list/objects?prefix=nothing-here'))).toEqual({ items: [] });
      expect(json(await httpRequest(httpPort, 'GET', '/v1/buckets/never-used/objects'))).toEqual({ items: [] });
      const otherPrefix = Buffer.from('other/1').toString('base64url');
      for (const cursor of [otherPrefix, 'not base64!', 'QQ==', '']) {
        const answer = await httpRequest(httpPort, 'GET', `/v1/buckets/list/objects?prefix=pg%2F&cursor=${encodeURIComponent(cursor)}`);
        expect([cursor, answer.status, json(answer).code]).toEqual([cursor, 400, 'INVALID_ARGUMENT']);
      }
      expect(await grpcCode(grpcUnary(buckets, 'List', { bucket: 'list', prefix: 'pg/', cursor: otherPrefix }))).toBe('INVALID_ARGUMENT');
      expect((await natsCall(nc, '$LOOM.API.OBJ.LIST.list', { prefix: 'pg/', cursor: otherPrefix })).error).toBe('INVALID_ARGUMENT');
      for (const limit of ['0', '10001', '-1', 'x']) expect([limit, (await httpRequest(httpPort, 'GET', `/v1/buckets/list/objects?limit=${limit}`)).status]).toEqual([limit, 400]);
    });
  });

  describe('change events', () => {
    it('publishes PUT, PUT and DEL in commit order on $OBJ.<bucket>.<token>, with the INFO answer as a PUT payload, the same on NATS, $LOOM.API.WATCH replay and gRPC Watch', async () => {
      const name = 'docs/ünï ✓.txt';
      const token = Buffer.from(name).toString('base64url');
      const live: Msg[] = [];
      const sub = nc.subscribe('$OBJ.ev.>', { callback: (_e, msg) => live.push(msg) });
      await nc.flush();
      const first = json(await put('ev', name, 'v1', { 'content-type': 'text/plain', 'x-loom-meta-n': '1' }));
      const second = await grpcPut(buckets, { bucket: 'ev', name, metadata: { n: '2' } }, [Buffer.from('version two')]);
      const secondInfo = (await natsCall(nc, '$LOOM.API.OBJ.INFO.ev', { name })).json;
      const del = (await natsCall(nc, '$LOOM.API.OBJ.DEL.ev', { name })).json as { rev: number };
      await sdk.objects.delete('ev', name); // deletes nothing: no change
      const marker = json(await put('ev', 'marker', 'end'));
      await nc.flush();
      for (let i = 0; i < 50 && live.length < 4; i++) await sleep(20);
      sub.unsubscribe();
      const revs = [first.rev, second.rev, del.rev, marker.rev] as number[];
      expect(live.map((m) => [m.subject, m.headers?.get('Loom-Op'), Number(m.headers?.get('Loom-Rev')), Number(m.headers?.get('Loom-Seq'))])).toEqual([
        [`$OBJ.ev.${token}`, 'PUT', revs[0], revs[0]],
        [`$OBJ.ev.${token}`, 'PUT', revs[1], revs[1]],
        [`$OBJ.ev.${token}`, 'DEL', revs[2], revs[2]],
        [`$OBJ.ev.${Buffer.from('marker').toString('base64url')}`, 'PUT', revs[3], revs[3]],
      ]);
      expect(JSON.parse(live[0].string())).toEqual(first);
      expect(JSON.parse(live[1].string())).toEqual(secondInfo);
      expect(JSON.parse(live[2].string())).toEqual({ bucket: 'ev', name, rev: revs[2], updatedAt: expect.any(Number), deleted: true });

      // Replayed over $LOOM.API.WATCH from before the first change: the same changes.
      const deliver = createInbox();
      const replayed: Msg[] = [];
      const replaySub = nc.subscribe(deliver, { callback: (_e, msg) => replayed.push(msg) });
      expect((await natsCall(nc, '$LOOM.API.WATCH', { subject: '$OBJ.ev.>', fromSeq: revs[0] - 1, deliver })).json).toEqual({ ok: true });
      for (let i = 0; i < 50 && replayed.length < 4; i++) await sleep(20);
      replaySub.unsubscribe();
      expect(replayed.map((m) => [m.headers?.get('Loom-Op'), Number(m.headers?.get('Loom-Seq'))])).toEqual(live.map((m) => [m.headers?.get('Loom-Op'), Number(m.headers?.get('Loom-Seq'))]));
      expect(replayed.map((m) => m.string())).toEqual(live.map((m) => m.string()));

      // gRPC Watch carries the same info.
      const call = watchService.Watch({ subject: '$OBJ.ev.>', from_seq: revs[0] - 1 }) as grpc.ClientReadableStream<{ seq: number; object: { op: string; name: string; info: GrpcInfo } }>;
      const viaGrpc: Array<{ seq: number; object: { op: string; name: string; info: GrpcInfo } }> = [];
      for await (const change of call) {
        viaGrpc.push(change);
        if (viaGrpc.length === 4) break;
      }
      call.cancel();
      expect(viaGrpc.map((c) => [c.seq, c.object.op, c.object.name])).toEqual([
        [revs[0], 'PUT', name],
        [revs[1], 'PUT', name],
        [revs[2], 'DEL', name],
        [revs[3], 'PUT', 'marker'],
      ]);
      expect(viaGrpc[1].object.info).toMatchObject({ size: 11, sha256: second.sha256, metadata: { n: '2' }, rev: revs[1] });
    });
  });

  describe('the SDK', () => {
    it('puts a Node Readable and gets a Node Readable back, byte for byte, and fails a put whose source fails without touching the old object', async () => {
      const bytes = randomBytes(2 * MiB + 3);
      const info = await sdk.objects.put('sdk', 'stream.bin', Readable.from(pieces(bytes, 65_536)), { contentType: 'application/x-bin', metadata: { Source: 'readable' } });
      expect(info).toMatchObject({ size: bytes.length, sha256: sha256(bytes), contentType: 'application/x-bin', metadata: { source: 'readable' } });
      const stream = await sdk.objects.get('sdk', 'stream.bin');
      expect(stream).toBeInstanceOf(Readable);
      expect((await collect(stream)).equals(bytes)).toBe(true);
      // A source that fails part-way: the put fails, and the object stays as it was.
      const failing = new Readable({ read() {} });
      failing.push(randomBytes(300_000));
      setTimeout(() => failing.destroy(new Error('source failed')), 100);
      // The source's own error, not the network's.
      await expect(sdk.objects.put('sdk', 'stream.bin', failing)).rejects.toThrow('source failed');
      await sleep(200);
      expect(await sdk.objects.info('sdk', 'stream.bin')).toEqual(info);
      expect((await collect(await sdk.objects.get('sdk', 'stream.bin', { offset: 2 * MiB }))).equals(bytes.subarray(2 * MiB))).toBe(true);
    });
  });

  describe('what the first run of this suite found missing', () => {
    it('lists objects whose names have characters beyond U+FFFF (emoji) on every door', async () => {
      // CONTRACT.md "Names": an object name is any UTF-8 string of 1-1024 bytes without NUL.
      const names = ['emo/a.png', 'emo/😀.png', 'emo/\u{10348}', 'emo/\uffff'];
      for (const name of names) expect((await put('emoji', name, name)).status).toBe(200);
      for (const name of names) expect((await get('emoji', name)).status).toBe(200);
      expect((await sqlRows(httpPort, "SELECT count(*) FROM objects WHERE bucket = 'emoji'"))[0][0]).toBe(4);
      const viaHttp = json(await httpRequest(httpPort, 'GET', '/v1/buckets/emoji/objects?prefix=emo%2F')) as { items: Array<{ name: string }> };
      const viaGrpc = await grpcUnary<{ items: Array<{ name: string }> }>(buckets, 'List', { bucket: 'emoji' });
      const viaNats = (await natsCall(nc, '$LOOM.API.OBJ.LIST.emoji', { prefix: 'emo/' })).json as { items: Array<{ name: string }> };
      const sorted = [...names].sort(byUtf8);
      expect(viaHttp.items.map((i) => i.name)).toEqual(sorted);
      expect(viaGrpc.items.map((i) => i.name)).toEqual(sorted);
      expect(viaNats.items.map((i) => i.name)).toEqual(sorted);
    });

    it('serves over HTTP and the SDK an object whose metadata is within objectMetadataBytesMax', async () => {
      // docs/buckets.md: metadata crosses every door; the rule "admits what every door carries back unchanged".
      const metadata = { note: 'n'.repeat(metadataMax - 100) };
      expect(metadataHeaderBytes(metadata)).toBeLessThanOrEqual(metadataMax);
      await grpcPut(buckets, { bucket: 'meta', name: 'wide', metadata }, [Buffer.from('payload')]);
      expect((await natsCall(nc, '$LOOM.API.OBJ.INFO.meta', { name: 'wide' })).json.metadata).toEqual(metadata);
      const viaSdk = await sdk.objects.get('meta', 'wide').then(collect, (err: Error) => err);
      expect(viaSdk instanceof Error ? viaSdk.message : viaSdk.toString()).toBe('payload');
      const viaHttp = await get('meta', 'wide').then(
        (a) => a.status,
        (err: Error) => err.message,
      );
      expect(viaHttp).toBe(200);
    });

    it('the SDK reads an empty object from offset 0, as gRPC and the node API do', async () => {
      // docs/buckets.md: get(…, {offset, length}) is one Range; the node's API accepts an offset at most the size.
      await sdk.objects.put('sdk', 'empty', Buffer.alloc(0));
      expect((await grpcGet(buckets, { bucket: 'sdk', name: 'empty', offset: 0, length: 10 })).data.length).toBe(0);
      const read = await sdk.objects.get('sdk', 'empty', { offset: 0, length: 10 }).then(collect, (err: LoomError) => err);
      expect(read instanceof Error ? `${read.code}: ${read.message}` : read.length).toBe(0);
      const fromZero = await sdk.objects.get('sdk', 'empty', { offset: 0 }).then(collect, (err: LoomError) => err);
      expect(fromZero instanceof Error ? `${fromZero.code}: ${fromZero.message}` : fromZero.length).toBe(0);
    });

    it('the SDK watch reports object changes as object changes, not as KV changes', async () => {
      const watch = sdk.watch('$OBJ.sdkwatch.>', { fromSeq: 0 });
      const info = await sdk.objects.put('sdkwatch', 'w', 'x');
      const { value } = (await watch.next()) as IteratorResult<WatchChange>;
      watch.close();
      expect(value.seq).toBe(info.rev);
      expect(value.subject).toBe(`$OBJ.sdkwatch.${Buffer.from('w').toString('base64url')}`);
      expect(value.kind).not.toBe('kv');
    });
  });
});

// =============================================================================================

describe('Buckets acceptance: limits on a loom serve process with --chunk-bytes 1 MiB --object-bytes-max 3000000', () => {
  const limit = 3_000_000;
  let dir: string;
  let serve: ServeProcess;
  let httpPort: number;
  let sdk: LoomClient;
  let buckets: GrpcClient;

  beforeAll(async () => {
    dir = makeTempDir('loom-accept-limits-');
    serve = await startServe(dir, ['--sync', 'none', '--chunk-bytes', String(chunkMax), '--object-bytes-max', String(limit)]);
    httpPort = serve.ports.http;
    sdk = await connect({ servers: `nats://127.0.0.1:${serve.ports.nats}`, http: `http://127.0.0.1:${httpPort}` });
    buckets = grpcClient('Buckets', serve.ports.grpc);
  });
  afterAll(async () => {
    buckets?.close();
    await sdk?.close();
    if (serve) await stopServe(serve);
    removeDir(dir);
  });

  it('uses the configured 1 MiB chunks, and stores an object of exactly objectBytesMax', async () => {
    const bytes = randomBytes(limit);
    const answer = await httpRequest(httpPort, 'PUT', objectUrl('lim', 'exact'), { body: Readable.from(pieces(bytes, 100_000)) });
    expect(answer.status).toBe(200);
    expect(json(answer)).toMatchObject({ size: limit, chunkBytes: chunkMax, chunkCount: 3 });
    expect((await grpcGet(buckets, { bucket: 'lim', name: 'exact' })).data.equals(bytes)).toBe(true);
  });

  it('refuses an object over objectBytesMax with TOO_LARGE, declared or streamed, on every door, and keeps the old object and its references', async () => {
    const old = randomBytes(1000);
    await httpRequest(httpPort, 'PUT', objectUrl('lim', 'victim'), { body: old });
    const refsBefore = (await chunkBook(httpPort)).refs;
    const over = randomBytes(limit + 1);
    // Declared by Content-Length: answered before the body is sent.
    const declared = await new Promise<HttpAnswer>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: httpPort, method: 'PUT', path: objectUrl('lim', 'victim'), headers: { 'content-length': String(limit + 1) }, agent: false });
      req.on('response', (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
      });
      req.on('error', reject);
      req.write(over.subarray(0, 16));
    });
    expect([declared.status, json(declared)]).toEqual([413, expect.objectContaining({ code: 'TOO_LARGE', details: { limit: 'objectBytesMax', max: limit } })]);
    // Streamed without a Content-Length (chunked).
    const streamed = await httpRequest(httpPort, 'PUT', objectUrl('lim', 'victim'), { body: Readable.from(pieces(over, 64 * KiB)) });
    expect([streamed.status, json(streamed)]).toEqual([413, expect.objectContaining({ code: 'TOO_LARGE', details: { limit: 'objectBytesMax', max: limit } })]);
    // gRPC streamed, and announced in the header.
    const grpcErr = await grpcPut(buckets, { bucket: 'lim', name: 'victim' }, pieces(over, 256 * KiB)).catch((e: grpc.ServiceError) => e);
    expect([(grpcErr as grpc.ServiceError).code, (grpcErr as grpc.ServiceError).metadata.get('loom-error')[0]]).toEqual([grpc.status.RESOURCE_EXHAUSTED, 'TOO_LARGE']);
    expect(await grpcCode(grpcPut(buckets, { bucket: 'lim', name: 'victim', size: limit + 1 }, [Buffer.from('x')]))).toBe('TOO_LARGE');
    // The SDK, from a Buffer and from a stream.
    await expect(sdk.objects.put('lim', 'victim', over)).rejects.toMatchObject({ code: 'TOO_LARGE', details: { limit: 'objectBytesMax', max: limit } });
    await expect(sdk.objects.put('lim', 'victim', Readable.from(pieces(over, 64 * KiB)))).rejects.toMatchObject({ code: 'TOO_LARGE' });
    await sleep(200);
    expect((await httpRequest(httpPort, 'GET', objectUrl('lim', 'victim'))).body.equals(old)).toBe(true);
    expect((await chunkBook(httpPort)).refs).toBe(refsBefore);
    // The node still takes uploads on the same connections' successors.
    expect((await httpRequest(httpPort, 'PUT', objectUrl('lim', 'after'), { body: 'fine' })).status).toBe(200);
  });

  it('refuses to start with a chunk size over 1 MiB or one whose entries do not fit --entry-bytes-max, naming chunkBytes', () => {
    const tmp = makeTempDir('loom-accept-refuse-');
    try {
      for (const args of [['--chunk-bytes', String(2 * MiB)], ['--chunk-bytes', '4095'], ['--chunk-bytes', String(MiB), '--entry-bytes-max', String(MiB)]]) {
        const result = runLoom(['serve', '--data', tmp, '--http-port', '0', '--nats-port', '0', '--grpc-port', '0', ...args]);
        expect([args.join(' '), result.status === 0]).toEqual([args.join(' '), false]);
        expect(result.stderr + result.stdout).toMatch(/chunkBytes/);
      }
    } finally {
      removeDir(tmp);
    }
  });

  it('answers an upload asking for a chunk too big for --entry-bytes-max with TOO_LARGE, storing nothing', async () => {
    const tmp = makeTempDir('loom-accept-entry-');
    const small = await startServe(tmp, ['--sync', 'none', '--entry-bytes-max', '600000']);
    try {
      const answer = await httpRequest(small.ports.http, 'PUT', objectUrl('e', 'x'), { body: randomBytes(700_000), headers: { 'x-loom-chunk-bytes': String(MiB) } });
      expect([answer.status, json(answer).code]).toEqual([413, 'TOO_LARGE']);
      expect((await httpRequest(small.ports.http, 'GET', objectUrl('e', 'x'))).status).toBe(404);
      expect((await httpRequest(small.ports.http, 'PUT', objectUrl('e', 'y'), { body: randomBytes(700_000) })).status).toBe(200);
    } finally {
      await stopServe(small);
      removeDir(tmp);
    }
  });
});

// =============================================================================================

describe('Buckets acceptance: a loom serve process killed and restarted', () => {
  let dir: string;
  let natsPort: number;
  let httpPort: number;
  let serve: ServeProcess;
  let sdk: LoomClient;

  const start = async (): Promise<void> => {
    rmSync(path.join(dir, 'ports.json'), { force: true });
    serve = await startServe(dir, ['--nats-port', String(natsPort), '--http-port', String(httpPort)]);
  };

  beforeAll(async () => {
    dir = makeTempDir('loom-accept-restart-');
    natsPort = await freePort();
    httpPort = await freePort();
    await start();
    sdk = await connect({ servers: `nats://127.0.0.1:${natsPort}`, http: `http://127.0.0.1:${httpPort}`, timeoutMs: 3000 });
  });
  afterAll(async () => {
    await sdk?.close();
    if (serve) await stopServe(serve);
    removeDir(dir);
  });

  it('keeps committed objects, drops uploads cut by the crash, and resumes an SDK watch with no gap and no duplicate', async () => {
    const watch = sdk.watch('$OBJ.rs.>', { fromSeq: 0 });
    const seen: WatchChange[] = [];
    const take = async (n: number): Promise<void> => {
      const deadline = Date.now() + 20_000;
      while (seen.length < n) {
        if (Date.now() > deadline) throw new Error(`only ${seen.length} of ${n} changes`);
        const { value, done } = await watch.next();
        if (done) throw new Error('watch ended');
        seen.push(value);
      }
    };
    const kept = [randomBytes(chunk + 1), randomBytes(10), randomBytes(3 * chunk)];
    const before = [];
    for (let i = 0; i < kept.length; i++) before.push(await sdk.objects.put('rs', `kept-${i}`, kept[i]));
    await take(3);
    // Uploads in flight when the node dies: a new name and an overwrite of kept-0.
    const inFlight = [objectUrl('rs', 'partial'), objectUrl('rs', 'kept-0')].map(
      (urlPath) =>
        new Promise<void>((resolve) => {
          const req = http.request({ host: '127.0.0.1', port: httpPort, method: 'PUT', path: urlPath, headers: { 'content-length': String(4 * chunk) }, agent: false });
          req.on('error', () => resolve());
          req.on('close', () => resolve());
          req.write(randomBytes(2 * chunk));
        }),
    );
    await sleep(200);
    await stopServe(serve, 'SIGKILL');
    await Promise.all(inFlight);
    await start();
    // After the restart: every committed object whole, nothing of the cut uploads.
    for (let i = 0; i < kept.length; i++) {
      const answer = await httpRequest(httpPort, 'GET', objectUrl('rs', `kept-${i}`));
      expect([i, answer.status, answer.body.equals(kept[i])]).toEqual([i, 200, true]);
    }
    expect((await httpRequest(httpPort, 'GET', objectUrl('rs', 'partial'))).status).toBe(404);
    // Changes after the restart reach the same watch (the client reconnects by itself).
    const after: number[] = [];
    for (const name of ['new-1', 'kept-1']) {
      for (let attempt = 0; ; attempt++) {
        try {
          after.push((await sdk.objects.put('rs', name, `after ${name}`)).rev);
          break;
        } catch (err) {
          if (attempt > 50) throw err;
          await sleep(100);
        }
      }
    }
    after.push((await sdk.objects.delete('rs', 'kept-2')).rev);
    await take(6);
    watch.close();
    expect(seen.map((c) => c.seq)).toEqual([...before.map((b) => b.rev), ...after]);
    expect(seen.map((c) => c.subject)).toEqual(['kept-0', 'kept-1', 'kept-2', 'new-1', 'kept-1', 'kept-2'].map((n) => `$OBJ.rs.${Buffer.from(n).toString('base64url')}`));
    expect(seen.map((c) => (c as { op?: string }).op)).toEqual(['PUT', 'PUT', 'PUT', 'PUT', 'PUT', 'DEL']);
  });
});

// =============================================================================================

describe('Buckets acceptance: chunk collection on an embedded node with its doors open', () => {
  let node: EmbeddedNode;
  let httpPort: number;
  let buckets: GrpcClient;

  beforeAll(async () => {
    node = await openNode({ memory: true, doors: true, sync: 'none' });
    httpPort = node.ports.http as number;
    buckets = grpcClient('Buckets', node.ports.grpc as number);
  });
  afterAll(async () => {
    buckets?.close();
    await node?.close();
  });

  it('frees the chunks of overwritten, deleted and interrupted uploads after GC, keeps shared ones, and stores a collected chunk again when it comes back', async () => {
    const shared = randomBytes(chunk);
    const a = Buffer.concat([shared, randomBytes(chunk)]);
    const b = Buffer.concat([shared, randomBytes(100)]);
    await httpRequest(httpPort, 'PUT', objectUrl('gc', 'a'), { body: a });
    await grpcPut(buckets, { bucket: 'gc', name: 'b' }, [b]);
    // Overwrite a, delete b, and cut an upload short.
    await httpRequest(httpPort, 'PUT', objectUrl('gc', 'a'), { body: 'small' });
    await httpRequest(httpPort, 'DELETE', objectUrl('gc', 'b'));
    await new Promise<void>((resolve) => {
      const req = http.request({ host: '127.0.0.1', port: httpPort, method: 'PUT', path: objectUrl('gc', 'cut'), headers: { 'content-length': String(4 * chunk) }, agent: false });
      req.on('error', () => resolve());
      req.on('close', () => resolve());
      req.write(randomBytes(2 * chunk), () => setTimeout(() => req.destroy(), 200));
    });
    await sleep(200);
    const before = await chunkBook(httpPort);
    // a's and b's old chunks (shared, a's second, b's tail) and the cut upload's chunks wait as orphans.
    expect(before.orphans).toBeGreaterThanOrEqual(3);
    expect(node.db.objects.chunkStats()).toMatchObject({ chunks: before.chunks, unreferenced: before.orphans });
    await sleep(5);
    const { collected } = await node.db.objects.collectGarbage({ olderThanMs: 0 });
    expect(collected).toBe(before.orphans);
    const after = await chunkBook(httpPort);
    expect(after).toEqual({ chunks: 1, refs: 1, orphans: 0 });
    expect(node.db.objects.chunkStats()).toMatchObject({ chunks: 1, unreferenced: 0, bytes: 5 });
    expect((await httpRequest(httpPort, 'GET', objectUrl('gc', 'a'))).body.toString()).toBe('small');
    // The shared chunk comes back in a new object: stored again, served byte for byte on both doors.
    const c = Buffer.concat([shared, randomBytes(10)]);
    await httpRequest(httpPort, 'PUT', objectUrl('gc', 'b-again'), { body: b });
    await grpcPut(buckets, { bucket: 'gc', name: 'c' }, [c]);
    expect((await httpRequest(httpPort, 'GET', objectUrl('gc', 'b-again'))).body.equals(b)).toBe(true);
    expect((await grpcGet(buckets, { bucket: 'gc', name: 'c' })).data.equals(c)).toBe(true);
    // A chunk shared by a live object survives a collection.
    await httpRequest(httpPort, 'DELETE', objectUrl('gc', 'c'));
    await sleep(5);
    await node.db.objects.collectGarbage({ olderThanMs: 0 });
    expect((await httpRequest(httpPort, 'GET', objectUrl('gc', 'b-again'))).body.equals(b)).toBe(true);
    expect(await chunkBook(httpPort)).toMatchObject({ orphans: 0, chunks: node.db.objects.chunkStats().chunks });
  });

  it('keeps every chunk a live object needs through collections after concurrent same-content uploads, an identical overwrite and a repeated chunk', async () => {
    const bytes = randomBytes(3 * chunk + 5);
    // Both uploads may propose the same new chunks at once.
    await Promise.all([httpRequest(httpPort, 'PUT', objectUrl('gc2', 'x'), { body: bytes }), grpcPut(buckets, { bucket: 'gc2', name: 'y' }, pieces(bytes, 100_000))]);
    await httpRequest(httpPort, 'DELETE', objectUrl('gc2', 'x'));
    await sleep(5);
    await node.db.objects.collectGarbage({ olderThanMs: 0 });
    expect((await httpRequest(httpPort, 'GET', objectUrl('gc2', 'y'))).body.equals(bytes)).toBe(true);
    // The same bytes again under the same name.
    await httpRequest(httpPort, 'PUT', objectUrl('gc2', 'y'), { body: bytes });
    await sleep(5);
    await node.db.objects.collectGarbage({ olderThanMs: 0 });
    expect((await grpcGet(buckets, { bucket: 'gc2', name: 'y' })).data.equals(bytes)).toBe(true);
    // One chunk three times in an object, and in a second object; the first deleted.
    const c = randomBytes(chunk);
    const thrice = Buffer.concat([c, c, c]);
    await httpRequest(httpPort, 'PUT', objectUrl('gc2', 't1'), { body: thrice });
    await grpcPut(buckets, { bucket: 'gc2', name: 't2' }, [thrice]);
    expect(await sqlRows(httpPort, 'SELECT refs FROM _loom_chunks WHERE sha256 = ?', [sha256(c)])).toEqual([[6]]);
    await httpRequest(httpPort, 'DELETE', objectUrl('gc2', 't1'));
    await sleep(5);
    await node.db.objects.collectGarbage({ olderThanMs: 0 });
    expect(await sqlRows(httpPort, 'SELECT refs FROM _loom_chunks WHERE sha256 = ?', [sha256(c)])).toEqual([[3]]);
    expect((await httpRequest(httpPort, 'GET', objectUrl('gc2', 't2'))).body.equals(thrice)).toBe(true);
    expect(node.db.objects.chunkStats().unreferenced).toBe(0);
  });
});

// =============================================================================================

describe('Buckets acceptance: a loom serve process with --nats-max-payload-bytes 4096', () => {
  let dir: string;
  let serve: ServeProcess;
  let nc: NatsConnection;

  beforeAll(async () => {
    dir = makeTempDir('loom-accept-payload-');
    serve = await startServe(dir, ['--sync', 'none', '--nats-max-payload-bytes', '4096']);
    nc = await natsConnect({ port: serve.ports.nats });
  });
  afterAll(async () => {
    await nc?.close();
    if (serve) await stopServe(serve);
    removeDir(dir);
  });

  it('keeps applying writes after an object whose info is over maxPayloadBytes is put while $OBJ.> has a subscriber', async () => {
    // docs/buckets.md: metadata may be up to 16 KiB, and an OBJ.INFO too big for one message is TOO_LARGE: read it over HTTP or gRPC.
    const heard: string[] = [];
    const sub = nc.subscribe('$OBJ.>', { callback: (_e, msg) => heard.push(msg.subject) });
    await nc.flush();
    const port = serve.ports.http;
    expect((await httpRequest(port, 'PUT', objectUrl('p', 'small'), { body: 'x' })).status).toBe(200);
    const big = await httpRequest(port, 'PUT', objectUrl('p', 'big'), { body: 'x', headers: { 'x-loom-meta-note': 'n'.repeat(6000) } });
    expect(big.status).toBe(200);
    const info = await natsCall(nc, '$LOOM.API.OBJ.INFO.p', { name: 'big' });
    expect([info.error, info.json.details]).toEqual(['TOO_LARGE', { limit: 'maxPayloadBytes', max: 4096 }]);
    // The node goes on: later writes succeed and it stays ready.
    const after = await httpRequest(port, 'PUT', objectUrl('p', 'after'), { body: 'y' });
    const ready = json(await httpRequest(port, 'GET', '/readyz'));
    sub.unsubscribe();
    expect([after.status, json(after).code]).toEqual([200, undefined]);
    expect(ready).toMatchObject({ ready: true });
  });
});

describe('Buckets acceptance: chunk collection on a loom serve process with --orphan-chunk-age-ms 1000 --chunk-gc-interval-ms 200', () => {
  let dir: string;
  let serve: ServeProcess;

  beforeAll(async () => {
    dir = makeTempDir('loom-accept-gc-');
    serve = await startServe(dir, ['--sync', 'none', '--orphan-chunk-age-ms', '1000', '--chunk-gc-interval-ms', '200']);
  });
  afterAll(async () => {
    if (serve) await stopServe(serve);
    removeDir(dir);
  });

  it('collects the chunks of a deleted and an overwritten object once they are past the age, and keeps those still referenced', async () => {
    const port = serve.ports.http;
    const put = (name: string, body: Buffer): Promise<HttpAnswer> => httpRequest(port, 'PUT', objectUrl('gc', name), { body });
    const shared = randomBytes(chunk);
    expect((await put('doomed', Buffer.concat([randomBytes(chunk), shared]))).status).toBe(200);
    const kept = Buffer.concat([shared, randomBytes(10)]);
    expect((await put('kept', kept)).status).toBe(200);
    expect((await put('overwritten', randomBytes(chunk + 5))).status).toBe(200);
    expect(await chunkBook(port)).toEqual({ chunks: 5, refs: 6, orphans: 0 });
    expect((await httpRequest(port, 'DELETE', objectUrl('gc', 'doomed'))).status).toBe(200);
    expect((await put('overwritten', Buffer.from('small now'))).status).toBe(200);
    // doomed's own chunk and overwritten's two are orphans; the shared one is still kept's.
    expect(await chunkBook(port)).toEqual({ chunks: 6, refs: 3, orphans: 3 });
    const deadline = Date.now() + 15_000;
    while ((await chunkBook(port)).orphans > 0 && Date.now() < deadline) await sleep(200);
    expect(await chunkBook(port)).toEqual({ chunks: 3, refs: 3, orphans: 0 });
    expect((await httpRequest(port, 'GET', objectUrl('gc', 'kept'))).body.equals(kept)).toBe(true);
  });
});
