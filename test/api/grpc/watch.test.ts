// Watch over gRPC: replay from a seq then live, resume without gap or duplicate, cancel and
// deadlines that close the server's watch, shutdown, and flow control against a slow client.

import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { pumpWatch } from '../../../src/api/grpc/watch-pump';
import type { Database, Watch } from '../../../src/core';
import type { Change } from '../../../src/projections';
import { grpcDoor, type DoorWatch } from './adapter';
import { failure, startGrpc, type GrpcHarness } from './harness';

/** Takes `count` changes from a watch, failing after `ms`. */
async function take(watch: DoorWatch, count: number, ms = 10_000): Promise<Change[]> {
  const out: Change[] = [];
  const iterator = watch[Symbol.asyncIterator]();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`only ${out.length} of ${count} changes in ${ms} ms`)), ms)));
  try {
    while (out.length < count) {
      const next = await Promise.race([iterator.next(), timeout]);
      if (next.done) break;
      out.push(next.value);
    }
  } finally {
    clearTimeout(timer);
  }
  return out;
}

async function until(condition: () => boolean, ms = 5_000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > ms) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('gRPC watch', () => {
  let h: GrpcHarness;
  beforeEach(async () => {
    h = await startGrpc();
  });
  afterEach(async () => {
    await h.close();
  });

  it('replays committed changes from a seq, then follows live ones, in order', async () => {
    const { door } = h;
    const a = await door.kvPut({ bucket: 'w', key: 'a', value: Buffer.from('1') });
    await door.kvPut({ bucket: 'other', key: 'x', value: Buffer.from('no') });
    const b = await door.kvPut({ bucket: 'w', key: 'b', value: Buffer.from('2') });
    const watch = door.watch('$KV.w.>', { fromSeq: 0 });
    const replayed = await take(watch, 2);
    expect(replayed.map((c) => [c.seq, c.subject])).toEqual([
      [a.rev, '$KV.w.a'],
      [b.rev, '$KV.w.b'],
    ]);
    expect(replayed[0]).toMatchObject({ kind: 'kv', op: 'PUT', bucket: 'w', key: 'a', value: new Uint8Array(Buffer.from('1')) });
    const del = await door.kvDel({ bucket: 'w', key: 'a' });
    const live = await take(watch, 1);
    expect(live[0]).toMatchObject({ kind: 'kv', seq: del.rev, op: 'DEL', key: 'a', value: new Uint8Array(0) });
    watch.close();
  });

  it('resumes from the last seq received with no gap and no duplicate, events included', async () => {
    const { door } = h;
    const seqs: number[] = [];
    for (let i = 1; i <= 6; i++) seqs.push((await door.evAppend({ stream: 'orders', type: 'step', data: { i } })).seq);
    const first = door.watch('$EV.orders.*', { fromSeq: 0 });
    const head = await take(first, 3);
    first.close();
    const resumed = door.watch('$EV.orders.*', { fromSeq: head[head.length - 1].seq });
    const rest = await take(resumed, 3);
    resumed.close();
    expect([...head, ...rest].map((c) => c.seq)).toEqual(seqs);
    expect(rest[0]).toMatchObject({ kind: 'event', stream: 'orders', type: 'step', version: 4, data: { i: 4 } });
  });

  it('without from_seq delivers only changes committed after the watch started', async () => {
    const { door } = h;
    await door.kvPut({ bucket: 'w', key: 'old', value: Buffer.from('x') });
    const watch = door.watch('$KV.w.*');
    await until(() => h.opened!.feed.size > 0);
    const fresh = await door.kvPut({ bucket: 'w', key: 'new', value: Buffer.from('y') });
    const [change] = await take(watch, 1);
    expect(change).toMatchObject({ seq: fresh.rev, key: 'new' });
    watch.close();
  });

  it('closes the server side of the watch when the client cancels', async () => {
    const { door } = h;
    const watch = door.watch('>', { fromSeq: 0 });
    await door.kvPut({ bucket: 'w', key: 'k', value: Buffer.from('v') });
    await take(watch, 1);
    await until(() => h.opened!.feed.size === 1);
    watch.close();
    await until(() => h.opened!.feed.size === 0);
    // The iteration ends quietly after close().
    expect(await take(watch, 1)).toEqual([]);
  });

  it('ends a watch whose deadline passes with DEADLINE_EXCEEDED and closes it on the server', async () => {
    const call = (h.door.clients.Watch as unknown as { Watch(r: object, o: grpc.CallOptions): grpc.ClientReadableStream<unknown> }).Watch(
      { subject: '>' },
      { deadline: Date.now() + 300 },
    );
    const status = await new Promise<grpc.ServiceError>((resolve) => {
      call.on('data', () => undefined);
      call.on('error', resolve);
    });
    expect(status.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    await until(() => h.opened!.feed.size === 0);
  });

  it('rejects an invalid subject filter as INVALID_ARGUMENT naming the field', async () => {
    const watch = h.door.watch('$KV..bad', { fromSeq: 0 });
    const err = await failure(take(watch, 1));
    expect(err).toMatchObject({ code: 'INVALID_ARGUMENT', grpcCode: grpc.status.INVALID_ARGUMENT, details: { field: 'subject' } });
  });

  it('delivers every change in order when many are committed before the client reads', async () => {
    const { door } = h;
    const watch = door.watch('$KV.slow.*', { fromSeq: 0 });
    // Far more than an HTTP/2 window: a grpc-js client buffers them on its side (docs/grpc.md).
    const value = Buffer.alloc(32 * 1024, 7);
    const revs: number[] = [];
    for (let i = 0; i < 200; i++) revs.push((await door.kvPut({ bucket: 'slow', key: `k${i}`, value })).rev);
    const changes = await take(watch, 200, 20_000);
    expect(changes.map((c) => c.seq)).toEqual(revs);
    watch.close();
  });

  it('ends open watches with UNAVAILABLE when the server closes', async () => {
    const door = grpcDoor(h.port);
    const watch = door.watch('>', { fromSeq: 0 });
    await door.kvPut({ bucket: 'w', key: 'k', value: Buffer.from('v') });
    await take(watch, 1);
    const ended = failure(take(watch, 1));
    await h.server.close();
    expect((await ended).code).toBe('UNAVAILABLE');
    door.close();
  });
});

/** A TCP relay to the server whose server-to-client direction can be stalled, like a stuck network. */
async function stallableRelay(port: number): Promise<{ port: number; stall(): void; flow(): void; close(): void }> {
  const pairs: Array<{ client: net.Socket; upstream: net.Socket }> = [];
  const relay = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
    client.pipe(upstream);
    upstream.pipe(client);
    pairs.push({ client, upstream });
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  return {
    port: (relay.address() as net.AddressInfo).port,
    stall() {
      for (const { upstream } of pairs) {
        upstream.unpipe();
        upstream.pause();
      }
    },
    flow() {
      for (const { client, upstream } of pairs) upstream.pipe(client);
    },
    close() {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      relay.close();
    },
  };
}

describe('gRPC watch against a client that cannot keep up', () => {
  it('stops taking changes from the watch while the client grants no window, then delivers all in order', async () => {
    let pulled = 0;
    // Count what the server takes from the database's watch: that is what it would have to buffer.
    const counting = (db: Database): Database =>
      Object.assign(Object.create(db) as Database, {
        watch(subject: string, options: { fromSeq?: number }): Watch {
          const inner = db.watch(subject, options);
          const next = inner.next.bind(inner);
          return Object.assign(inner, {
            next: () => {
              pulled++;
              return next();
            },
          });
        },
      });
    const h = await startGrpc({ wrapDb: counting });
    const relay = await stallableRelay(h.port);
    const slow = grpcDoor(relay.port);
    try {
      const watch = slow.watch('$KV.slow.*', { fromSeq: 0 });
      await slow.status();
      relay.stall();
      const value = Buffer.alloc(32 * 1024, 7);
      const revs: number[] = [];
      for (let i = 0; i < 300; i++) revs.push((await h.door.kvPut({ bucket: 'slow', key: `k${i}`, value })).rev);
      await new Promise((r) => setTimeout(r, 200));
      // 300 changes of 32 KiB were committed; the server holds back after a window's worth.
      expect(pulled).toBeLessThan(100);
      relay.flow();
      const changes = await take(watch, 300, 20_000);
      expect(changes.map((c) => c.seq)).toEqual(revs);
      watch.close();
    } finally {
      slow.close();
      relay.close();
      await h.close();
    }
  });
});

describe('pumpWatch flow control', () => {
  function countingWatch(): { watch: Watch; pulled: () => number; closed: () => boolean } {
    let pulled = 0;
    let closed = false;
    async function* changes(): AsyncGenerator<Change> {
      for (let seq = 1; !closed; seq++) {
        pulled++;
        yield { kind: 'kv', seq, subject: `$KV.b.k${seq}`, op: 'PUT', bucket: 'b', key: `k${seq}`, value: new Uint8Array(1), ts: 0 };
      }
    }
    const iterator = changes();
    const watch = Object.assign(iterator, {
      close() {
        closed = true;
      },
    }) as unknown as Watch;
    return { watch, pulled: () => pulled, closed: () => closed };
  }

  class FullSink extends EventEmitter {
    writes = 0;
    write(): boolean {
      this.writes++;
      return false;
    }
  }

  it('takes no further change while the call is full, one more per drain, and stops on cancel', async () => {
    const { watch, pulled, closed } = countingWatch();
    const sink = new FullSink();
    const pumping = pumpWatch(watch, sink);
    await new Promise((r) => setTimeout(r, 50));
    expect(sink.writes).toBe(1);
    expect(pulled()).toBe(1);
    sink.emit('drain');
    await new Promise((r) => setTimeout(r, 20));
    expect(sink.writes).toBe(2);
    sink.emit('cancelled');
    await pumping;
    expect(closed()).toBe(true);
    expect(sink.listenerCount('drain') + sink.listenerCount('cancelled') + sink.listenerCount('close')).toBe(0);
  });
});

describe('calls per connection', () => {
  it('holds a connection to callsPerConnectionMax concurrent calls; the next waits until one ends', async () => {
    const h = await startGrpc({ limits: { callsPerConnectionMax: 2 } });
    try {
      const first = h.door.watch('>');
      const second = h.door.watch('>');
      // Both watches are open on the server once the feed has two listeners.
      await until(() => h.opened!.feed.size === 2);
      const waiting = await failure(h.door.status({ deadlineMs: 300 }));
      expect(waiting.code).toBe('TIMEOUT');
      first.close();
      await until(() => h.opened!.feed.size === 1);
      expect((await h.door.status({ deadlineMs: 5_000 })).nodeId).toBe(1);
      second.close();
    } finally {
      await h.close();
    }
  });
});
