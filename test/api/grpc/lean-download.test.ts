// Buckets.Get on the lean path (lean-unary.ts): the same raw HTTP/2 requests to a server with it and
// one without must get the same headers, bytes and trailers, a grpc-js client must read through it,
// and a client that resets or lets its deadline pass mid-download must stop the download.

import { createHash, randomBytes } from 'node:crypto';
import * as http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { createGrpcServer, loadLoomProto, type GrpcServer } from '../../../src/api/grpc';
import type { Database } from '../../../src/core';
import { silentLogger } from '../../../src/util';
import { startGrpc, type GrpcHarness } from './harness';
import { answerOf, frame, type Answer } from './raw-http2';

const token = 'secret';
const chunk = 4096;
const buckets = loadLoomProto()['loom.v1.Buckets'] as unknown as Record<string, { path: string; requestSerialize(m: object): Buffer; responseDeserialize(b: Buffer): Record<string, unknown> }>;

/** The Get streams that reached grpc-js's own handler. */
let getsOnGrpcJs = 0;
type StreamHandler = (this: unknown, interceptors: unknown, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;
const serverPrototype = grpc.Server.prototype as unknown as { _streamHandler: StreamHandler };
const grpcJsHandler = serverPrototype._streamHandler;
const spy = jest.spyOn(serverPrototype, '_streamHandler').mockImplementation(function (this: unknown, interceptors, stream, headers) {
  if (headers[':path'] === buckets.Get.path) getsOnGrpcJs++;
  grpcJsHandler.call(this, interceptors, stream, headers);
});
afterAll(() => spy.mockRestore());

/** The messages of a Get's body: each 5-byte prefix and the ObjectChunk it frames. */
function messagesOf(body: Buffer): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (let at = 0; at < body.length; ) {
    const size = body.readUInt32BE(at + 1);
    out.push(buckets.Get.responseDeserialize(body.subarray(at + 5, at + 5 + size)));
    at += 5 + size;
  }
  return out;
}

describe('Buckets.Get on the lean path', () => {
  let lean: GrpcHarness;
  let plain: GrpcServer;
  let plainPort: number;
  let db: Database;
  const sessions = new Map<number, http2.ClientHttp2Session>();
  const bytes = randomBytes(5 * chunk + 17);

  beforeAll(async () => {
    lean = await startGrpc({ authToken: token, wrapDb: (inner) => (db = inner) });
    // The same database behind a server without the lean path: grpc-js answers every call there.
    plain = createGrpcServer({ host: '127.0.0.1', port: 0, db, nodeId: 1, logger: silentLogger(), authToken: token, leanUnary: false });
    plainPort = await plain.listen();
    await db.objects.put('b', 'o', bytes, { chunkBytes: chunk, contentType: 'text/plain' });
  });
  afterAll(async () => {
    for (const session of sessions.values()) session.close();
    await plain.close();
    await lean.close();
  });

  function call(port: number, message: object, headers: http2.OutgoingHttpHeaders = {}): Promise<Answer> {
    let session = sessions.get(port);
    if (session === undefined) sessions.set(port, (session = http2.connect(`http://127.0.0.1:${port}`)));
    const all: http2.OutgoingHttpHeaders = { ':method': 'POST', ':path': buckets.Get.path, 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${token}`, ...headers };
    for (const key of Object.keys(all)) if (all[key] === undefined) delete all[key];
    const stream = session.request(all);
    stream.end(frame(buckets.Get.requestSerialize(message)));
    return answerOf(stream);
  }

  /** The same Get to both servers: the answers must be equal, and only grpc-js's server used grpc-js. */
  async function same(message: object, headers: http2.OutgoingHttpHeaders = {}): Promise<Answer> {
    const before = getsOnGrpcJs;
    const fromLean = await call(lean.port, message, headers);
    expect(getsOnGrpcJs).toBe(before);
    const fromGrpcJs = await call(plainPort, message, headers);
    expect(getsOnGrpcJs).toBe(before + 1);
    expect(fromLean).toEqual(fromGrpcJs);
    return fromLean;
  }

  it('sends an object and a range byte for byte as grpc-js: info, one message per chunk, trailers', async () => {
    const whole = await same({ bucket: 'b', name: 'o' });
    expect(whole.trailers).toEqual({ 'grpc-status': '0', 'grpc-message': 'OK' });
    const messages = messagesOf(whole.body);
    expect(messages[0].info).toMatchObject({ size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'), content_type: 'text/plain' });
    expect(messages.length).toBe(1 + 6);
    expect(Buffer.concat(messages.slice(1).map((m) => m.data as Buffer)).equals(bytes)).toBe(true);
    const range = messagesOf((await same({ bucket: 'b', name: 'o', offset: chunk - 3, length: chunk + 5 })).body);
    expect(Buffer.concat(range.slice(1).map((m) => m.data as Buffer)).equals(bytes.subarray(chunk - 3, 2 * chunk + 2))).toBe(true);
  });

  it('answers a missing object, a bad range, bad bytes and a wrong token as grpc-js', async () => {
    expect((await same({ bucket: 'b', name: 'nope' })).headers).toMatchObject({ 'grpc-status': String(grpc.status.NOT_FOUND), 'loom-error': 'NOT_FOUND' });
    expect((await same({ bucket: 'b', name: 'o', offset: bytes.length + 1 })).headers).toMatchObject({ 'loom-error': 'INVALID_ARGUMENT' });
    expect((await same({ bucket: 'b', name: 'o' }, { authorization: 'Bearer wrong' })).headers).toMatchObject({ 'loom-error': 'UNAUTHENTICATED' });
    const bad = await Promise.all(
      [lean.port, plainPort].map((port) => {
        const stream = sessions.get(port)!.request({ ':method': 'POST', ':path': buckets.Get.path, 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${token}` });
        stream.end(frame(Buffer.from([0x0a, 0xff])));
        return answerOf(stream);
      }),
    );
    expect(bad[0]).toEqual(bad[1]);
    expect(bad[0].headers).toMatchObject({ 'loom-error': 'INVALID_ARGUMENT', 'loom-error-details': '{"field":"body"}' });
  });

  it.each([
    [3, 2, chunk],
    // Past the read-ahead (downloadBytesAheadMax, 1 MiB: 64 chunks of 16 KiB): none of the
    // chunks read ahead of the damaged one is lost.
    [70, 66, 16 * 1024],
  ])('ends a download of %i chunks whose chunk %i is damaged with CORRUPT trailers, after every good chunk, as grpc-js', async (chunks, bad, chunkBytes) => {
    const damaged = randomBytes(chunks * chunkBytes);
    await db.objects.put('b', 'bad', damaged, { chunkBytes });
    const reader = db.objects as unknown as { reader: { readStoredChunk(...args: unknown[]): Buffer } };
    const read = reader.reader.readStoredChunk.bind(reader.reader);
    // The third chunk reads back with one bit flipped, as a damaged disk page would give it.
    const flip = jest.spyOn(Object.getPrototypeOf(reader.reader) as { readStoredChunk(...args: unknown[]): Buffer }, 'readStoredChunk').mockImplementation(function (...args: unknown[]) {
      const out = read(...args);
      if (args[3] === bad) out[0] ^= 1;
      return out;
    });
    try {
      const answer = await same({ bucket: 'b', name: 'bad' });
      expect(answer.trailers).toMatchObject({ 'grpc-status': String(grpc.status.DATA_LOSS), 'loom-error': 'CORRUPT' });
      const messages = messagesOf(answer.body);
      expect(Buffer.concat(messages.slice(1).map((m) => m.data as Buffer)).equals(damaged.subarray(0, bad * chunkBytes))).toBe(true);
    } finally {
      flip.mockRestore();
    }
  });

  it('reads through a grpc-js client, and stops a download whose client resets it or whose deadline passes', async () => {
    const big = randomBytes(256 * chunk);
    await db.objects.put('b', 'big', big, { chunkBytes: chunk });
    const loaded = grpc.loadPackageDefinition(loadLoomProto()) as unknown as { loom: { v1: Record<string, new (a: string, c: grpc.ChannelCredentials) => grpc.Client> } };
    const client = new loaded.loom.v1.Buckets(`127.0.0.1:${lean.port}`, grpc.credentials.createInsecure()) as grpc.Client & Record<string, (...args: unknown[]) => grpc.ClientReadableStream<{ data: Buffer }>>;
    const metadata = new grpc.Metadata();
    metadata.set('authorization', `Bearer ${token}`);
    const onGrpcJsBefore = getsOnGrpcJs;
    try {
      const parts: Buffer[] = [];
      for await (const message of client.Get({ bucket: 'b', name: 'big' }, metadata)) parts.push(message.data);
      expect(Buffer.concat(parts).equals(big)).toBe(true);

      // A reset after the first chunk, and a client that reads nothing until its deadline has
      // passed: each time the server's download is closed (its stream destroyed).
      const opens = jest.spyOn(db.objects, 'get');
      const closed = async (call: number): Promise<boolean> => {
        const download = await (opens.mock.results[call].value as ReturnType<Database['objects']['get']>);
        for (let turn = 0; turn < 100 && !download.stream.destroyed; turn++) await new Promise((r) => setTimeout(r, 10));
        return download.stream.destroyed;
      };
      try {
        const cancelled = client.Get({ bucket: 'b', name: 'big' }, metadata);
        cancelled.on('error', () => undefined);
        await new Promise((resolve) => cancelled.once('data', resolve));
        cancelled.cancel();
        expect(await closed(0)).toBe(true);

        const slow = client.Get({ bucket: 'b', name: 'big' }, metadata, { deadline: Date.now() + 300 });
        slow.pause();
        const failed = await new Promise<grpc.ServiceError>((resolve) => slow.on('error', resolve));
        expect(failed.code).toBe(grpc.status.DEADLINE_EXCEEDED);
        expect(await closed(1)).toBe(true);
      } finally {
        opens.mockRestore();
      }
      // None of these downloads went through grpc-js.
      expect(getsOnGrpcJs).toBe(onGrpcJsBefore);
    } finally {
      client.close();
    }
  });
});
