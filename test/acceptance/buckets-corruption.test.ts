// A chunk of an object damaged on disk under a real `loom serve` process (default chunk size),
// found by its content as a failing disk would leave it. Downloads through gRPC must fail CORRUPT
// and never deliver wrong bytes, while byte ranges that avoid the chunk, other objects and the
// rest of the node keep working; a watch replaying the log across the chunk's entry still
// delivers changes that have nothing to do with it.

import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { connect, type NatsConnection } from 'nats';
import { startServe, stopServe, type ServeProcess } from '../support/cli';
import { damageOnDisk } from '../support/damage';
import { get, grpcClient, put, unary, type GrpcClient } from '../support/grpc-buckets';
import { makeTempDir, removeDir } from '../support/tmp';

const chunk = 256 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('Buckets with a chunk damaged on disk (loom serve, default chunk size)', () => {
  let dir: string;
  let serve: ServeProcess;
  let buckets: GrpcClient;
  let nc: NatsConnection;
  const object = randomBytes(3 * chunk + 10);
  const middle = object.subarray(chunk, 2 * chunk);

  beforeAll(async () => {
    dir = makeTempDir('loom-corruption-');
    serve = await startServe(dir, ['--sync', 'none']);
    buckets = grpcClient('Buckets', serve.ports.grpc);
    nc = await connect({ servers: `127.0.0.1:${serve.ports.nats}` });
    expect((await put(buckets, [{ header: { bucket: 'cr', name: 'obj', size: object.length }, data: object }])).err).toBeUndefined();
    // Shares obj's middle chunk.
    expect((await put(buckets, [{ header: { bucket: 'cr', name: 'twin' }, data: middle }])).info?.chunk_count).toBe(1);
    expect((await put(buckets, [{ header: { bucket: 'cr', name: 'other' }, data: Buffer.from('unrelated') }])).err).toBeUndefined();
    expect(damageOnDisk(dir, middle.subarray(100, 164)).length).toBeGreaterThan(0);
  });
  afterAll(async () => {
    await nc?.close();
    buckets?.close();
    if (serve) await stopServe(serve);
    removeDir(dir);
  });

  it('serves every byte before the damaged chunk, then CORRUPT naming it; ranges that avoid it succeed; a twin sharing it is CORRUPT too', async () => {
    const whole = await get(buckets, { bucket: 'cr', name: 'obj' });
    expect(whole.err?.loom).toBe('CORRUPT');
    expect(whole.err?.code).toBe(grpc.status.DATA_LOSS);
    expect(whole.err?.details).toMatch(/chunk 1 /);
    expect(whole.data.equals(object.subarray(0, chunk))).toBe(true);

    const tail = await get(buckets, { bucket: 'cr', name: 'obj', offset: 2 * chunk + 5 });
    expect(tail.err).toBeUndefined();
    expect(tail.data.equals(object.subarray(2 * chunk + 5))).toBe(true);

    const head = await get(buckets, { bucket: 'cr', name: 'obj', offset: 0, length: chunk });
    expect(head.err).toBeUndefined();
    expect(head.data.equals(object.subarray(0, chunk))).toBe(true);

    const inside = await get(buckets, { bucket: 'cr', name: 'obj', offset: chunk + 1, length: 2 });
    expect(inside.err?.loom).toBe('CORRUPT');
    expect(inside.data.length).toBe(0);

    const twin = await get(buckets, { bucket: 'cr', name: 'twin' });
    expect(twin.err?.loom).toBe('CORRUPT');
    expect(twin.data.length).toBe(0);

    // The node still answers everything else.
    expect((await unary(buckets, 'Stat', { bucket: 'cr', name: 'obj' })).err).toBeUndefined();
    expect((await get(buckets, { bucket: 'cr', name: 'other' })).data.toString()).toBe('unrelated');
  });

  // A chunk's log entry publishes no change, and downloads check the chunk's sha256 themselves, so
  // a watch replaying across the damaged entry (from 0, or resuming after a reconnect) must still
  // deliver the changes it asked for, here a KV change unrelated to objects, instead of stopping
  // with CORRUPT.
  it('still replays an unrelated KV change to a $LOOM.API.WATCH from seq 0', async () => {
    const httpPut = await fetch(`http://127.0.0.1:${serve.ports.http}/v1/kv/kvb/k1`, { method: 'PUT', body: 'hello' });
    expect(httpPut.status).toBe(200);
    const { rev } = (await httpPut.json()) as { rev: number };
    const inbox = `_INBOX.replay.${Date.now()}`;
    const seen: Array<{ subject?: string; seq?: string; error?: string; body: string }> = [];
    const sub = nc.subscribe(inbox, {
      callback: (_e, m) =>
        seen.push({ subject: m.headers?.get('Loom-Subject'), seq: m.headers?.get('Loom-Seq'), error: m.headers?.get('Loom-Error') || undefined, body: Buffer.from(m.data).toString() }),
    });
    await nc.flush();
    const answer = await nc.request('$LOOM.API.WATCH', Buffer.from(JSON.stringify({ subject: '$KV.kvb.>', fromSeq: 0, deliver: inbox })), { timeout: 5000 });
    expect(JSON.parse(Buffer.from(answer.data).toString())).toEqual({ ok: true });
    const deadline = Date.now() + 5000;
    while (seen.length === 0 && Date.now() < deadline) await sleep(50);
    sub.unsubscribe();
    expect(seen[0]).toEqual({ subject: '$KV.kvb.k1', seq: String(rev), error: undefined, body: 'hello' });
  });
});
