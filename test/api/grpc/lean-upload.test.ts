// Buckets.Put on the lean path (lean-upload.ts): the same raw HTTP/2 uploads to a server with it and
// one without must store the same objects and get the same statuses; a grpc-js client uploads
// through it; a reset or a passed deadline commits nothing; and a stalled upload stops reading, so
// HTTP/2 flow control holds the client.

import { createHash, randomBytes } from 'node:crypto';
import * as http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { createGrpcServer, loadLoomProto, type GrpcServer } from '../../../src/api/grpc';
import { PutMessageParser } from '../../../src/api/grpc/put-parser';
import type { Database } from '../../../src/core';
import { silentLogger } from '../../../src/util';
import { startGrpc, type GrpcHarness } from './harness';
import { answerOf, frame, type Answer } from './raw-http2';

const token = 'secret';
const messageBytesMax = 256 * 1024;
type Method = { path: string; requestSerialize(m: object): Buffer; responseDeserialize(b: Buffer): Record<string, unknown> };
const put = (loadLoomProto()['loom.v1.Buckets'] as unknown as Record<string, Method>).Put;

/** The Put streams that reached grpc-js's own handler. */
let putsOnGrpcJs = 0;
type StreamHandler = (this: unknown, interceptors: unknown, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;
const serverPrototype = grpc.Server.prototype as unknown as { _streamHandler: StreamHandler };
const grpcJsHandler = serverPrototype._streamHandler;
const spy = jest.spyOn(serverPrototype, '_streamHandler').mockImplementation(function (this: unknown, interceptors, stream, headers) {
  if (headers[':path'] === put.path) putsOnGrpcJs++;
  grpcJsHandler.call(this, interceptors, stream, headers);
});
afterAll(() => spy.mockRestore());

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

describe('Buckets.Put on the lean path', () => {
  let lean: GrpcHarness;
  let plain: GrpcServer;
  let plainPort: number;
  let db: Database;
  const sessions = new Map<number, http2.ClientHttp2Session>();

  beforeAll(async () => {
    lean = await startGrpc({ authToken: token, limits: { messageBytesMax }, wrapDb: (inner) => (db = inner) });
    // The same database behind a server without the lean path: grpc-js answers every call there.
    plain = createGrpcServer({ host: '127.0.0.1', port: 0, db, nodeId: 1, logger: silentLogger(), authToken: token, limits: { messageBytesMax }, leanUnary: false });
    plainPort = await plain.listen();
  });
  afterAll(async () => {
    for (const session of sessions.values()) session.close();
    await plain.close();
    await lean.close();
  });

  function open(port: number, headers: http2.OutgoingHttpHeaders = {}): http2.ClientHttp2Stream {
    let session = sessions.get(port);
    if (session === undefined) sessions.set(port, (session = http2.connect(`http://127.0.0.1:${port}`)));
    const all: http2.OutgoingHttpHeaders = { ':method': 'POST', ':path': put.path, 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${token}`, ...headers };
    for (const key of Object.keys(all)) if (all[key] === undefined) delete all[key];
    return session.request(all);
  }

  /** Sends the request bytes (already framed), then half-closes; resolves with the whole answer. */
  function call(port: number, body: Buffer, headers: http2.OutgoingHttpHeaders = {}): Promise<Answer> {
    const stream = open(port, headers);
    stream.end(body);
    return answerOf(stream);
  }

  /** The messages of a Put, framed; `{name}` in a header is the object's name on each server. */
  function body(messages: object[], name: string): Buffer {
    return Buffer.concat(messages.map((m) => frame(put.requestSerialize(withName(m, name)))));
  }

  function withName(message: object, name: string): object {
    const header = (message as { header?: object }).header;
    return header === undefined ? message : { ...message, header: { ...header, name } };
  }

  /** The answer's ObjectInfo without what differs between two uploads of the same bytes. */
  function infoOf(answer: Answer): Record<string, unknown> {
    const info = put.responseDeserialize(answer.body.subarray(5));
    delete info.name;
    delete info.rev;
    delete info.updated_at;
    return info;
  }

  /** The same upload to both servers (as objects `name` and `name-plain`): equal answers, and only grpc-js's server used grpc-js. */
  async function same(make: (name: string) => Buffer, name: string, headers: http2.OutgoingHttpHeaders = {}): Promise<Answer> {
    const before = putsOnGrpcJs;
    const fromLean = await call(lean.port, make(name), headers);
    expect(putsOnGrpcJs).toBe(before);
    const fromGrpcJs = await call(plainPort, make(`${name}-plain`), headers);
    expect(putsOnGrpcJs).toBe(before + 1);
    // The bodies differ in the object's name (and its revision and time) only.
    expect({ ...fromLean, body: undefined }).toEqual({ ...fromGrpcJs, body: undefined });
    expect(fromLean.body.length > 0 ? infoOf(fromLean) : undefined).toEqual(fromGrpcJs.body.length > 0 ? infoOf(fromGrpcJs) : undefined);
    return fromLean;
  }

  async function stored(name: string): Promise<Buffer | undefined> {
    const info = await db.objects.stat('b', name).catch(() => undefined);
    if (info === undefined) return undefined;
    const download = await db.objects.get('b', name);
    const parts: Buffer[] = [];
    for await (const piece of download.stream) parts.push(Buffer.from(piece as Buffer));
    return Buffer.concat(parts);
  }

  it('stores an upload of several messages as grpc-js does, and answers with the same info', async () => {
    const parts = [randomBytes(100_000), randomBytes(0), randomBytes(150_000), randomBytes(7)];
    const whole = Buffer.concat(parts);
    const answer = await same(
      (name) => body([{ header: { bucket: 'b', name, content_type: 'image/png', metadata: { k: 'v' }, chunk_bytes: 64 * 1024 }, data: parts[0] }, ...parts.slice(1).map((data) => ({ data }))], name),
      'several',
    );
    expect(answer.trailers).toEqual({ 'grpc-status': '0', 'grpc-message': 'OK' });
    expect(infoOf(answer)).toMatchObject({ bucket: 'b', size: whole.length, sha256: sha256(whole), content_type: 'image/png', metadata: { k: 'v' }, chunk_count: 4 });
    expect((await stored('several'))?.equals(whole)).toBe(true);
    expect((await stored('several-plain'))?.equals(whole)).toBe(true);
  });

  it('answers no message, no header, a later header, a wrong digest, a wrong token and an oversized message as grpc-js', async () => {
    const header = { bucket: 'b', name: '' };
    const ten = randomBytes(10);
    const cases: Array<[string, (name: string) => Buffer, http2.OutgoingHttpHeaders?]> = [
      ['none', () => Buffer.alloc(0)],
      ['headless', (name) => body([{ data: ten }], name)],
      ['twice', (name) => body([{ header, data: ten }, { header, data: ten }], name)],
      ['digest', (name) => body([{ header: { ...header, sha256: 'ab'.repeat(32) }, data: ten }], name)],
      ['token', (name) => body([{ header, data: ten }], name), { authorization: 'Bearer wrong' }],
      // One name on both servers: the refusal names the message's size.
      ['huge', () => body([{ header, data: randomBytes(messageBytesMax) }], 'huge')],
    ];
    for (const [name, make, headers] of cases) {
      const answer = await same(make, name, headers);
      expect(answer.headers['grpc-status']).not.toBe('0');
      expect(await stored(name)).toBeUndefined();
    }
    expect((await call(lean.port, Buffer.alloc(0))).headers).toMatchObject({ 'loom-error': 'INVALID_ARGUMENT', 'grpc-message': expect.stringContaining('at%20least%20one%20message') });
    expect((await call(lean.port, body([{ header, data: randomBytes(messageBytesMax) }], 'x'))).headers).toMatchObject({
      'grpc-status': String(grpc.status.RESOURCE_EXHAUSTED),
    });
  });

  it('refuses bad protobuf as grpc-js does (INVALID_ARGUMENT on field body), and two data fields in one message', async () => {
    for (const bad of [Buffer.from([0x0a, 0xff]), Buffer.from([0x12, 1, 1, 0x12, 1, 2])]) {
      const answer = await call(lean.port, Buffer.concat([body([{ header: { bucket: 'b', name: 'bad' } }], 'bad'), frame(bad)]));
      expect(answer.headers).toMatchObject({ 'grpc-status': String(grpc.status.INVALID_ARGUMENT), 'loom-error': 'INVALID_ARGUMENT', 'loom-error-details': '{"field":"body"}' });
    }
    const fromGrpcJs = await call(plainPort, Buffer.concat([body([{ header: { bucket: 'b', name: 'bad' } }], 'bad'), frame(Buffer.from([0x0a, 0xff]))]));
    expect(fromGrpcJs.headers).toMatchObject({ 'loom-error': 'INVALID_ARGUMENT', 'loom-error-details': '{"field":"body"}' });
    expect(await stored('bad')).toBeUndefined();
    // A wrong token comes first, as on grpc-js's path, whether the bad bytes are the first message or a later one.
    for (const bad of [frame(Buffer.from([0x0a, 0xff])), Buffer.concat([body([{ header: { bucket: 'b', name: 'bad' } }], 'bad'), frame(Buffer.from([0x0a, 0xff]))])]) {
      const answers = await Promise.all([lean.port, plainPort].map((port) => call(port, bad, { authorization: 'Bearer wrong' })));
      expect(answers[0]).toEqual(answers[1]);
      expect(answers[0].headers).toMatchObject({ 'loom-error': 'UNAUTHENTICATED' });
    }
  });

  it('takes data that comes before the header in the first message, and bytes split over many small DATA frames', async () => {
    const data = randomBytes(70_000);
    const headerFirst = put.requestSerialize({ header: { bucket: 'b', name: 'reordered' } });
    // Field 2 (data) and then field 1 (header): valid protobuf, though no encoder writes this order.
    const length = [0x12, (data.length & 0x7f) | 0x80, ((data.length >> 7) & 0x7f) | 0x80, data.length >> 14];
    const reordered = frame(Buffer.concat([Buffer.from(length), data, headerFirst]));
    expect((await call(lean.port, reordered)).trailers).toMatchObject({ 'grpc-status': '0' });
    expect((await stored('reordered'))?.equals(data)).toBe(true);

    const bytes = body([{ header: { bucket: 'b', name: 'trickled' }, data: data.subarray(0, 1000) }, { data: data.subarray(1000) }], 'trickled');
    const stream = open(lean.port);
    const answered = answerOf(stream);
    for (let at = 0; at < bytes.length; at += 997) {
      stream.write(bytes.subarray(at, at + 997));
      await new Promise((resolve) => setImmediate(resolve));
    }
    stream.end();
    expect((await answered).trailers).toMatchObject({ 'grpc-status': '0' });
    expect((await stored('trickled'))?.equals(data)).toBe(true);
  });

  it('uploads from a grpc-js client on the lean path', async () => {
    const loaded = grpc.loadPackageDefinition(loadLoomProto()) as unknown as { loom: { v1: Record<string, new (a: string, c: grpc.ChannelCredentials) => grpc.Client> } };
    const client = new loaded.loom.v1.Buckets(`127.0.0.1:${lean.port}`, grpc.credentials.createInsecure()) as grpc.Client & Record<string, (...args: unknown[]) => grpc.ClientWritableStream<unknown>>;
    const metadata = new grpc.Metadata();
    metadata.set('authorization', `Bearer ${token}`);
    const before = putsOnGrpcJs;
    try {
      const data = randomBytes(3 * 200 * 1024 + 11);
      const info = await new Promise<Record<string, unknown>>((resolve, reject) => {
        const upload = client.Put(metadata, (err: Error | null, response: Record<string, unknown>) => (err ? reject(err) : resolve(response)));
        upload.write({ header: { bucket: 'b', name: 'client', size: data.length } });
        for (let at = 0; at < data.length; at += 200 * 1024) upload.write({ data: data.subarray(at, at + 200 * 1024) });
        upload.end();
      });
      expect(info).toMatchObject({ name: 'client', size: data.length, sha256: sha256(data) });
      expect((await stored('client'))?.equals(data)).toBe(true);
      expect(putsOnGrpcJs).toBe(before);
    } finally {
      client.close();
    }
  });

  it('commits nothing when the client resets mid-upload or its deadline passes, and goes on serving', async () => {
    const uploads = jest.spyOn(db.objects, 'put');
    // A client that goes away mid-message: its connection closes, with no END_STREAM before.
    const gone = http2.connect(`http://127.0.0.1:${lean.port}`);
    const reset = gone.request({ ':method': 'POST', ':path': put.path, 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${token}` });
    reset.on('error', () => undefined);
    reset.write(body([{ header: { bucket: 'b', name: 'reset' }, data: randomBytes(100_000) }], 'reset').subarray(0, 60_000));
    for (let turn = 0; turn < 100 && uploads.mock.results.length === 0; turn++) await new Promise((resolve) => setTimeout(resolve, 10));
    gone.destroy();
    // The upload ends at once (its data fails): it does not wait for bytes that never come.
    await expect(uploads.mock.results[0].value).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    // Gone between two messages, with neither size nor digest announced: Node's HTTP/2 ends the
    // request stream as if the client had finished, and only the reset tells it was a cancel.
    const between = http2.connect(`http://127.0.0.1:${lean.port}`);
    const cut = between.request({ ':method': 'POST', ':path': put.path, 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${token}` });
    cut.on('error', () => undefined);
    cut.write(body([{ header: { bucket: 'b', name: 'between' }, data: randomBytes(10_000) }, { data: randomBytes(10_000) }], 'between'));
    for (let turn = 0; turn < 100 && uploads.mock.results.length === 1; turn++) await new Promise((resolve) => setTimeout(resolve, 10));
    await new Promise((resolve) => setTimeout(resolve, 20));
    between.destroy();
    await expect(uploads.mock.results[1].value).rejects.toMatchObject({ code: 'UNAVAILABLE', message: 'the client cancelled the upload' });
    uploads.mockRestore();

    const slow = open(lean.port, { 'grpc-timeout': '200m' });
    const answered = answerOf(slow);
    slow.write(body([{ header: { bucket: 'b', name: 'late' }, data: randomBytes(100_000) }], 'late').subarray(0, 60_000));
    expect((await answered).headers).toMatchObject({ 'grpc-status': String(grpc.status.DEADLINE_EXCEEDED) });
    slow.close();

    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await stored('reset')).toBeUndefined();
    expect(await stored('between')).toBeUndefined();
    expect(await stored('late')).toBeUndefined();
    const after = await call(lean.port, body([{ header: { bucket: 'b', name: 'after' }, data: Buffer.from('fine') }], 'after'));
    expect(after.trailers).toMatchObject({ 'grpc-status': '0' });
    expect((await stored('after'))?.toString()).toBe('fine');
  });

  /**
   * Uploads stall (as behind a slow disk) until released, after their first piece or after their
   * last one (every byte taken, the commit not yet proposed); the parser's input is counted.
   */
  function stallUploads(after: 'first' | 'last' = 'first'): { release(): void; fed(): number; restore(): void } {
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const objectsPut = db.objects.put.bind(db.objects);
    const stall = jest.spyOn(db.objects, 'put').mockImplementation((bucket, name, source, options) =>
      objectsPut(
        bucket,
        name,
        (async function* stalled() {
          let first = true;
          for await (const piece of source as AsyncIterable<Uint8Array>) {
            yield piece;
            if (first && after === 'first') await held;
            first = false;
          }
          if (after === 'last') await held;
        })(),
        options,
      ),
    );
    let fed = 0;
    const feed = PutMessageParser.prototype.feed;
    const count = jest.spyOn(PutMessageParser.prototype, 'feed').mockImplementation(function (this: PutMessageParser, chunk: Buffer) {
      fed += chunk.length;
      return feed.call(this, chunk);
    });
    return {
      release: () => release(),
      fed: () => fed,
      restore() {
        release();
        stall.mockRestore();
        count.mockRestore();
      },
    };
  }

  it('stops reading a stalled upload, so flow control holds the client, and finishes it once the upload reads again', async () => {
    const stalled = stallUploads();
    try {
      const data = randomBytes(16 * 1024 * 1024);
      const stream = open(lean.port);
      const answered = answerOf(stream);
      const pieceBytes = messageBytesMax - 64;
      stream.write(frame(put.requestSerialize({ header: { bucket: 'b', name: 'stalled', size: data.length } })));
      for (let at = 0; at < data.length; at += pieceBytes) stream.write(frame(put.requestSerialize({ data: data.subarray(at, at + pieceBytes) })));
      stream.end();
      await new Promise((resolve) => setTimeout(resolve, 500));
      // The server read the stream window's worth (windows.ts, 1 MiB) at most, not the 16 MiB sent.
      expect(stalled.fed()).toBeGreaterThan(0);
      expect(stalled.fed()).toBeLessThanOrEqual(1024 * 1024 + 64 * 1024);
      stalled.release();
      expect((await answered).trailers).toMatchObject({ 'grpc-status': '0' });
      expect(stalled.fed()).toBeGreaterThan(data.length);
      expect(sha256((await stored('stalled')) as Buffer)).toBe(sha256(data));
    } finally {
      stalled.restore();
    }
  });

  it('stops reading a stalled upload of tiny messages after a bounded number of pieces, not only of bytes', async () => {
    const stalled = stallUploads();
    try {
      // 20,000 messages of 10 bytes: 200 KB, under the byte bound, in pieces that each hold a socket read.
      const stream = open(lean.port);
      const answered = answerOf(stream);
      stream.write(frame(put.requestSerialize({ header: { bucket: 'b', name: 'tiny' } })));
      const tiny = Buffer.concat(Array.from({ length: 20_000 }, (_, i) => frame(put.requestSerialize({ data: Buffer.from(String(i).padStart(10, '0')) }))));
      stream.end(tiny);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(stalled.fed()).toBeLessThan(tiny.length / 4);
      stalled.release();
      expect((await answered).trailers).toMatchObject({ 'grpc-status': '0' });
      expect((await stored('tiny'))?.length).toBe(200_000);
    } finally {
      stalled.restore();
    }
  });

  it('commits nothing when the deadline passes after the last byte, even with the size announced', async () => {
    const stalled = stallUploads('last');
    try {
      const data = randomBytes(300_000);
      const answer = await call(lean.port, body([{ header: { bucket: 'b', name: 'overdue', size: data.length }, data: data.subarray(0, 100_000) }, { data: data.subarray(100_000) }], 'overdue'), { 'grpc-timeout': '200m' });
      expect(answer.headers).toMatchObject({ 'grpc-status': String(grpc.status.DEADLINE_EXCEEDED) });
      const uploads = db.objects.put as jest.Mock;
      stalled.release();
      await expect(uploads.mock.results[uploads.mock.results.length - 1].value).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      expect(await stored('overdue')).toBeUndefined();
    } finally {
      stalled.restore();
    }
  });
});
