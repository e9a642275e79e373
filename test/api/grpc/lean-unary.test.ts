// The lean unary path (lean-unary.ts) against grpc-js's own: the same raw HTTP/2 requests to a server
// with it and one without must get the same answers, and every other stream must still reach grpc-js.

import * as http2 from 'node:http2';
import { gzipSync } from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import { createGrpcServer, loadLoomProto, type GrpcServer } from '../../../src/api/grpc';
import { answersPerTurnMax } from '../../../src/api/grpc/lean-unary';
import type { Database } from '../../../src/core';
import { silentLogger } from '../../../src/util';
import { failure, startGrpc, type GrpcHarness } from './harness';
import { answerOf, frame, type Answer } from './raw-http2';

const token = 'secret';
const limits = { messageBytesMax: 1024 };
const kv = loadLoomProto()['loom.v1.KV'] as unknown as Record<string, { path: string; requestSerialize(m: object): Buffer; responseDeserialize(b: Buffer): Record<string, unknown> }>;

/** Puts wait while a gate is set, so a test can hold a call in flight. */
let gate: Promise<void> | undefined;
let putsEntered = 0;
function gated(db: Database): Database {
  const put: Database['kv']['put'] = async (...args) => {
    putsEntered++;
    await gate;
    return db.kv.put(...args);
  };
  return Object.assign(Object.create(db) as Database, { kv: Object.assign(Object.create(db.kv) as Database['kv'], { put }) });
}
/** Holds puts until the returned function is called; resolves once one has arrived. */
async function holdPuts(): Promise<{ arrived: () => Promise<void>; release: () => void }> {
  let release!: () => void;
  gate = new Promise((resolve) => (release = resolve));
  const before = putsEntered;
  return {
    async arrived() {
      for (let turn = 0; turn < 500 && putsEntered === before; turn++) await new Promise((r) => setTimeout(r, 10));
      expect(putsEntered).toBeGreaterThan(before);
    },
    release() {
      gate = undefined;
      release();
    },
  };
}

/** The streams that reached grpc-js's own handler, as "port path". */
const onGrpcJs: string[] = [];
/** Node's class of server streams (not exported by node:http2), taken from a stream grpc-js saw. */
let serverStreamPrototype: { respond: http2.ServerHttp2Stream['respond'] } | undefined;
type StreamHandler = (this: unknown, interceptors: unknown, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;
const serverPrototype = grpc.Server.prototype as unknown as { _streamHandler: StreamHandler };
const grpcJsHandler = serverPrototype._streamHandler;
const spy = jest.spyOn(serverPrototype, '_streamHandler').mockImplementation(function (this: unknown, interceptors, stream, headers) {
  onGrpcJs.push(`${stream.session?.socket.localPort} ${headers[':path']}`);
  serverStreamPrototype ??= Object.getPrototypeOf(stream) as typeof serverStreamPrototype;
  grpcJsHandler.call(this, interceptors, stream, headers);
});

afterAll(() => spy.mockRestore());

describe('the lean unary path', () => {
  let lean: GrpcHarness;
  let plain: GrpcServer;
  let plainPort: number;
  const sessions = new Map<number, http2.ClientHttp2Session>();

  beforeAll(async () => {
    let db: Database | undefined;
    lean = await startGrpc({ authToken: token, limits, wrapDb: (inner) => (db = gated(inner)) });
    // The same database behind a server without the lean path: grpc-js answers every call there.
    plain = createGrpcServer({ host: '127.0.0.1', port: 0, db: db as Database, nodeId: 1, logger: silentLogger(), authToken: token, limits, leanUnary: false });
    plainPort = await plain.listen();
  });
  afterAll(async () => {
    for (const session of sessions.values()) session.close();
    await plain.close();
    await lean.close();
  });

  function session(port: number): http2.ClientHttp2Session {
    let s = sessions.get(port);
    if (s === undefined) sessions.set(port, (s = http2.connect(`http://127.0.0.1:${port}`)));
    return s;
  }

  function request(port: number, path: string, headers: http2.OutgoingHttpHeaders = {}): http2.ClientHttp2Stream {
    const all: http2.OutgoingHttpHeaders = { ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${token}`, ...headers };
    for (const key of Object.keys(all)) if (all[key] === undefined) delete all[key];
    return session(port).request(all);
  }

  function call(port: number, path: string, body: Buffer, headers: http2.OutgoingHttpHeaders = {}): Promise<Answer> {
    const stream = request(port, path, headers);
    stream.end(body);
    return answerOf(stream);
  }

  /** The same request to both servers: the answers must be equal. */
  async function same(path: string, body: Buffer, headers: http2.OutgoingHttpHeaders = {}): Promise<Answer> {
    const [fromLean, fromGrpcJs] = await Promise.all([call(lean.port, path, body, headers), call(plainPort, path, body, headers)]);
    expect(fromLean).toEqual(fromGrpcJs);
    return fromLean;
  }

  /** The same write to both servers, one after the other: the answers must be equal but for the log position. */
  async function sameWrite(path: string, body: Buffer): Promise<Answer> {
    const fromLean = await call(lean.port, path, body);
    const fromGrpcJs = await call(plainPort, path, body);
    const unsequenced = (a: Answer): string => JSON.stringify(a).replace(/\\"seq\\":\d+/, 'seq');
    expect(unsequenced(fromLean)).toEqual(unsequenced(fromGrpcJs));
    return fromLean;
  }

  const put = (message: object): Buffer => frame(kv.Put.requestSerialize(message));
  const get = (message: object): Buffer => frame(kv.Get.requestSerialize(message));
  const statusOf = (answer: Answer): unknown => (answer.trailers ?? answer.headers)['grpc-status'];

  it('answers gets, misses and stale writes byte for byte as grpc-js', async () => {
    const written = kv.Put.responseDeserialize((await call(lean.port, kv.Put.path, put({ bucket: 'b', key: 'k', value: Buffer.from('v1') }))).body.subarray(5));
    const hit = await same(kv.Get.path, get({ bucket: 'b', key: 'k' }));
    expect(hit.trailers).toEqual({ 'grpc-status': '0', 'grpc-message': 'OK' });
    expect(hit.headers).toEqual({ ':status': 200, 'content-type': 'application/grpc+proto' });
    expect(kv.Get.responseDeserialize(hit.body.subarray(5))).toMatchObject({ key: 'k', rev: written.rev });
    const miss = await same(kv.Get.path, get({ bucket: 'b', key: 'nope' }));
    expect(miss.headers).toMatchObject({ 'grpc-status': String(grpc.status.NOT_FOUND), 'loom-error': 'NOT_FOUND' });
    // A refused write still takes a place in the log, so the two answers name different seqs.
    const stale = await sameWrite(kv.Put.path, put({ bucket: 'b', key: 'k', value: Buffer.from('v2'), expect_rev: 1_000 }));
    expect(stale.headers).toMatchObject({ 'grpc-status': String(grpc.status.FAILED_PRECONDITION), 'loom-error': 'CONFLICT' });
    await sameWrite(kv.Delete.path, frame(kv.Delete.requestSerialize({ bucket: 'b', key: 'k', expect_rev: 1_000 })));
  });

  it('answers a successful put with the same headers, trailers and message shape as grpc-js', async () => {
    const body = put({ bucket: 'b', key: 'seq', value: Buffer.from('x') });
    const fromLean = await call(lean.port, kv.Put.path, body);
    const fromGrpcJs = await call(plainPort, kv.Put.path, body);
    expect(fromLean.headers).toEqual(fromGrpcJs.headers);
    expect(fromLean.trailers).toEqual(fromGrpcJs.trailers);
    const revs = [fromLean, fromGrpcJs].map((a) => kv.Put.responseDeserialize(a.body.subarray(5)).rev as number);
    expect(revs[1]).toBe(revs[0] + 1);
    expect(fromLean.body.subarray(0, 5)).toEqual(fromGrpcJs.body.subarray(0, 5));
  });

  it('leaves out the date and encoding headers grpc-js adds to a success, and nothing else', async () => {
    const headersOf = (port: number): Promise<http2.IncomingHttpHeaders> =>
      new Promise((resolve, reject) => {
        const stream = request(port, kv.Get.path);
        stream.on('response', resolve);
        stream.on('error', reject);
        stream.resume();
        stream.end(get({ bucket: 'b', key: 'seq' }));
      });
    const [fromLean, fromGrpcJs] = await Promise.all([headersOf(lean.port), headersOf(plainPort)]);
    expect(Object.fromEntries(Object.entries(fromLean))).toEqual({ ':status': 200, 'content-type': 'application/grpc+proto' });
    expect(Object.keys(fromGrpcJs).sort()).toEqual([':status', 'content-type', 'date', 'grpc-accept-encoding', 'grpc-encoding']);
  });

  it('reads a request split over several DATA frames', async () => {
    const stream = request(lean.port, kv.Get.path);
    const body = get({ bucket: 'b', key: 'seq' });
    stream.write(body.subarray(0, 3));
    await new Promise((r) => setTimeout(r, 20));
    stream.write(body.subarray(3, 9));
    await new Promise((r) => setTimeout(r, 20));
    stream.end(body.subarray(9));
    expect(statusOf(await answerOf(stream))).toBe('0');
  });

  it('rejects bad protobuf, oversized, missing and extra messages as grpc-js', async () => {
    const bad = await same(kv.Put.path, frame(Buffer.from([0x0a, 0xff])));
    expect(bad.headers).toMatchObject({ 'grpc-status': String(grpc.status.INVALID_ARGUMENT), 'loom-error-details': '{"field":"body"}' });
    const big = await same(kv.Put.path, frame(Buffer.alloc(2_000)));
    expect(big.headers).toMatchObject({ 'grpc-status': String(grpc.status.RESOURCE_EXHAUSTED), 'grpc-message': 'Received%20message%20larger%20than%20max%20(2000%20vs%201024)' });
    // The prefix alone is enough for the answer: the server does not wait for the body.
    const announced = await Promise.all(
      [lean.port, plainPort].map((port) => {
        const stream = request(port, kv.Put.path);
        stream.write(Buffer.from([0, 0, 1, 0, 0]));
        return answerOf(stream);
      }),
    );
    expect(announced[0]).toEqual(announced[1]);
    expect(statusOf(announced[0])).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
    const none = await same(kv.Get.path, Buffer.alloc(0));
    expect(none.headers).toMatchObject({ 'grpc-status': String(grpc.status.UNIMPLEMENTED) });
    const two = await same(kv.Get.path, Buffer.concat([get({ bucket: 'b', key: 'k' }), get({ bucket: 'b', key: 'k' })]));
    expect(two.headers).toMatchObject({ 'grpc-status': String(grpc.status.UNIMPLEMENTED) });
  });

  it('takes the compressed flag under identity as grpc-js does, and leaves other encodings, content types and bad timeouts to grpc-js', async () => {
    const message = kv.Get.requestSerialize({ bucket: 'b', key: 'seq' });
    expect(statusOf(await same(kv.Get.path, frame(message, 1)))).toBe('0');
    onGrpcJs.length = 0;
    expect(statusOf(await same(kv.Get.path, frame(gzipSync(message), 1), { 'grpc-encoding': 'gzip' }))).toBe('0');
    expect((await same(kv.Get.path, frame(message), { 'content-type': 'text/plain' })).headers[':status']).toBe(415);
    const badTimeout = await same(kv.Get.path, frame(message), { 'grpc-timeout': 'soon' });
    expect(badTimeout.headers).toMatchObject({ 'grpc-status': String(grpc.status.INTERNAL) });
    expect(onGrpcJs.filter((s) => s.startsWith(`${lean.port} `))).toEqual(Array(3).fill(`${lean.port} ${kv.Get.path}`));
  });

  it('answers UNAUTHENTICATED without the token or with a wrong one, as grpc-js', async () => {
    const body = get({ bucket: 'b', key: 'k' });
    expect((await same(kv.Get.path, body, { authorization: undefined })).headers).toMatchObject({ 'grpc-status': String(grpc.status.UNAUTHENTICATED) });
    expect((await same(kv.Get.path, body, { authorization: 'Bearer guess' })).headers).toMatchObject({ 'loom-error': 'UNAUTHENTICATED' });
  });

  it('never logs a write whose deadline passed before it arrived', async () => {
    for (const port of [lean.port, plainPort]) {
      const marker = put({ bucket: 'late', key: 'marker', value: Buffer.from('m') });
      const revOf = async (): Promise<number> => kv.Put.responseDeserialize((await call(port, kv.Put.path, marker)).body.subarray(5)).rev as number;
      const before = await revOf();
      const late = await call(port, kv.Put.path, put({ bucket: 'late', key: `k${port}`, value: Buffer.from('x') }), { 'grpc-timeout': '1n' });
      expect(statusOf(late)).toBe(String(grpc.status.DEADLINE_EXCEEDED));
      // Nothing reached the log between the two markers.
      expect(await revOf()).toBe(before + 1);
    }
  });

  it('answers DEADLINE_EXCEEDED when the deadline passes mid-call, as grpc-js', async () => {
    const held = await holdPuts();
    try {
      const expired = await same(kv.Put.path, put({ bucket: 'b', key: 'slow', value: Buffer.from('x') }), { 'grpc-timeout': '100m' });
      expect(expired.headers).toEqual({ ':status': 200, 'content-type': 'application/grpc+proto', 'grpc-status': '4', 'grpc-message': 'Deadline%20exceeded' });
    } finally {
      held.release();
    }
  });

  it('drops the answer of a call the client cancelled mid-call, and goes on serving', async () => {
    // Answering a reset stream throws inside a promise callback: an unhandled rejection that would
    // end the server (and that jest does not report), so count the answers tried on closed streams.
    await call(lean.port, kv.List.path, frame(kv.List.requestSerialize({ bucket: 'b' })));
    const prototype = serverStreamPrototype as NonNullable<typeof serverStreamPrototype>;
    const respond = prototype.respond;
    let answersToClosedStreams = 0;
    const respondSpy = jest.spyOn(prototype, 'respond').mockImplementation(function (this: http2.ServerHttp2Stream, ...args) {
      if (this.closed || this.destroyed) answersToClosedStreams++;
      return respond.apply(this, args);
    });
    const held = await holdPuts();
    const stream = request(lean.port, kv.Put.path);
    stream.end(put({ bucket: 'b', key: 'cancelled', value: Buffer.from('x') }));
    const closed = answerOf(stream);
    await held.arrived();
    stream.close(http2.constants.NGHTTP2_CANCEL);
    await closed;
    held.release();
    expect(statusOf(await call(lean.port, kv.Put.path, put({ bucket: 'b', key: 'after', value: Buffer.from('x') })))).toBe('0');
    expect(statusOf(await call(lean.port, kv.Get.path, get({ bucket: 'b', key: 'after' })))).toBe('0');
    respondSpy.mockRestore();
    expect(answersToClosedStreams).toBe(0);
  });

  it('answers a burst of calls a few per turn, so the first answers leave before the last are written', async () => {
    await call(lean.port, kv.Put.path, put({ bucket: 'b', key: 'burst', value: Buffer.from('x') }));
    await call(lean.port, kv.List.path, frame(kv.List.requestSerialize({ bucket: 'b' })));
    const prototype = serverStreamPrototype as NonNullable<typeof serverStreamPrototype>;
    const respond = prototype.respond;
    let answers = 0;
    let firstTurn: number | undefined;
    const respondSpy = jest.spyOn(prototype, 'respond').mockImplementation(function (this: http2.ServerHttp2Stream, ...args) {
      // Scheduled before the lean path's own next turn, so it sees what the first turn answered.
      if (answers++ === 0) setImmediate(() => (firstTurn = answers));
      return respond.apply(this, args);
    });
    const burst = await Promise.all(Array.from({ length: 4 * answersPerTurnMax }, () => call(lean.port, kv.Get.path, get({ bucket: 'b', key: 'burst' }))));
    respondSpy.mockRestore();
    expect(burst.map(statusOf)).toEqual(Array(4 * answersPerTurnMax).fill('0'));
    expect(firstTurn).toBe(answersPerTurnMax);
  });

  it('serves KV Get, Put and Delete on the lean path and every other rpc on grpc-js, on one connection', async () => {
    const events = loadLoomProto()['loom.v1.Events'] as unknown as Record<string, { path: string; requestSerialize(m: object): Buffer }>;
    const watchDefinition = loadLoomProto()['loom.v1.Watch'] as unknown as Record<string, { requestSerialize(m: object): Buffer }>;
    onGrpcJs.length = 0;
    const watch = request(lean.port, '/loom.v1.Watch/Watch');
    watch.end(frame(watchDefinition.Watch.requestSerialize({ subject: '$KV.one.*', from_seq: 0 })));
    const written = await call(lean.port, kv.Put.path, put({ bucket: 'one', key: 'k', value: Buffer.from('x') }));
    const answers = await Promise.all([
      written,
      call(lean.port, events.Append.path, frame(events.Append.requestSerialize({ stream: 'one', type: 't', data: '{}' }))),
      call(lean.port, kv.Get.path, get({ bucket: 'one', key: 'k' })),
      call(lean.port, kv.Delete.path, frame(kv.Delete.requestSerialize({ bucket: 'one', key: 'k' }))),
      call(lean.port, kv.List.path, frame(kv.List.requestSerialize({ bucket: 'one' }))),
    ]);
    expect(answers.map(statusOf)).toEqual(['0', '0', '0', '0', '0']);
    const change = await new Promise<Buffer>((resolve) => watch.once('data', resolve));
    expect(change.length).toBeGreaterThan(5);
    watch.close(http2.constants.NGHTTP2_CANCEL);
    expect(onGrpcJs.sort()).toEqual([`${lean.port} /loom.v1.Events/Append`, `${lean.port} /loom.v1.KV/List`, `${lean.port} /loom.v1.Watch/Watch`]);
  });
});

describe('the lean unary path through a grpc-js client', () => {
  let h: GrpcHarness;
  beforeAll(async () => {
    h = await startGrpc({ wrapDb: gated });
  });
  afterAll(async () => {
    await h.close();
  });

  it('serves puts, gets and deletes, and leaves events, lists and watches to grpc-js', async () => {
    onGrpcJs.length = 0;
    const watch = h.door.watch('$KV.c.*', { fromSeq: 0 });
    const { rev } = await h.door.kvPut({ bucket: 'c', key: 'k', value: Buffer.from('v') });
    expect((await h.door.kvGet({ bucket: 'c', key: 'k' })).rev).toBe(rev);
    await h.door.evAppend({ stream: 's', type: 't', data: { a: 1 } });
    expect((await h.door.kvList({ bucket: 'c' })).items).toEqual([{ key: 'k', rev }]);
    expect((await h.door.kvDel({ bucket: 'c', key: 'k' })).rev).toBeGreaterThan(rev);
    expect((await failure(h.door.kvGet({ bucket: 'c', key: 'k' }))).code).toBe('NOT_FOUND');
    const first = await watch[Symbol.asyncIterator]().next();
    expect(first.value).toMatchObject({ seq: rev });
    watch.close();
    expect([...new Set(onGrpcJs.map((s) => s.split(' ')[1]))].sort()).toEqual(['/loom.v1.Events/Append', '/loom.v1.KV/List', '/loom.v1.Watch/Watch']);
  });

  it('gives a grpc-js client DEADLINE_EXCEEDED when its deadline passes mid-call', async () => {
    const held = await holdPuts();
    try {
      const err = await failure(h.door.kvPut({ bucket: 'c', key: 'slow', value: Buffer.from('x') }, { deadlineMs: 100 }));
      expect(err.grpcCode).toBe(grpc.status.DEADLINE_EXCEEDED);
    } finally {
      held.release();
    }
  });

  it('lets a call in flight finish when the server closes, then stops', async () => {
    const held = await holdPuts();
    const putting = h.door.kvPut({ bucket: 'c', key: 'last', value: Buffer.from('x') });
    await held.arrived();
    const closing = h.server.close();
    held.release();
    expect((await putting).rev).toBeGreaterThan(0);
    await closing;
    expect((await failure(h.door.kvGet({ bucket: 'c', key: 'last' }, { deadlineMs: 1_000 }))).grpcCode).toBe(grpc.status.UNAVAILABLE);
  });
});
