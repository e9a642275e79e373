// The client SDK against a real `loom serve` process: every operation, typed errors, and a watch
// that survives a SIGKILL and restart of the server mid-stream with no gap and no duplicate.

import { rmSync } from 'node:fs';
import * as path from 'node:path';
import { connect, type LoomClient, type WatchChange } from '../../src/client';
import { LoomError } from '../../src/util';
import { startServe, stopServe, type ServeProcess } from '../support/cli';
import { makeTempDir, removeDir } from '../support/tmp';
import { freePort } from '../support/ports';


describe('the client SDK', () => {
  let dir: string;
  let natsPort: number;
  let serve: ServeProcess;
  let client: LoomClient;

  beforeAll(async () => {
    dir = makeTempDir();
    natsPort = await freePort();
    serve = await startServe(dir, ['--nats-port', String(natsPort)]);
    client = await connect({ servers: `nats://127.0.0.1:${natsPort}` });
  });
  afterAll(async () => {
    await client.close();
    await stopServe(serve);
    removeDir(dir);
  });

  it('puts, gets, lists and deletes keys, with CAS conflicts as typed errors', async () => {
    const { rev } = await client.kv.put('users', 'alice', '{"n":1}');
    const got = await client.kv.get('users', 'alice', { atLeast: rev });
    expect(Buffer.from(got.value).toString()).toBe('{"n":1}');
    expect(got.rev).toBe(rev);
    const conflict = await client.kv.put('users', 'alice', 'x', { expectRev: rev + 100 }).catch((e: unknown) => e);
    expect(conflict).toBeInstanceOf(LoomError);
    expect(conflict).toMatchObject({ code: 'CONFLICT', details: { currentRev: rev } });
    await client.kv.put('users', 'bob', 'b');
    expect((await client.kv.list('users', { limit: 1 })).items).toEqual([{ key: 'alice', rev }]);
    await client.kv.delete('users', 'bob');
    await expect(client.kv.get('users', 'bob')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(client.kv.put('bad bucket!', 'k', 'v')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('appends and reads events, and reports cluster status', async () => {
    const appended = await client.events.append('orders', { type: 'order.created', data: { id: 7 }, expectVersion: 0 });
    expect(appended.version).toBe(1);
    const events = await client.events.read('orders');
    expect(events[0]).toMatchObject({ stream: 'orders', version: 1, type: 'order.created', data: { id: 7 } });
    await expect(client.events.append('orders', { type: 'order.created', data: {}, expectVersion: 0 })).rejects.toMatchObject({ code: 'CONFLICT' });
    expect(await client.status()).toMatchObject({ role: 'leader', commit: expect.any(Number) });
  });

  it('keeps a watch going across a server SIGKILL and restart, with no gap and no duplicate', async () => {
    for (let i = 0; i < 100; i++) await client.events.append('ticks', { type: 'tick', data: { i } });
    const watch = client.watch('$EV.ticks.>', { fromSeq: 0 });
    const seen: number[] = [];
    const take = async (n: number): Promise<void> => {
      while (seen.length < n) {
        const { value, done } = await watch.next();
        if (done) throw new Error('watch ended');
        seen.push(((value as WatchChange & { kind: 'event' }).data as { i: number }).i);
      }
    };
    await take(60);
    await stopServe(serve, 'SIGKILL');
    serve = await startServe(dir, ['--nats-port', String(natsPort)]);
    // Writes after the restart: the client reconnects by itself; retry until the node serves.
    for (let i = 100; i < 200; i++) {
      for (;;) {
        try {
          await client.events.append('ticks', { type: 'tick', data: { i } });
          break;
        } catch {
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    }
    await take(200);
    watch.close();
    expect(seen).toEqual(Array.from({ length: 200 }, (_, i) => i));
  }, 60_000);

  it('sends a request made while the node is down once the client has reconnected, and fails one that waits past its limit UNAVAILABLE, unsent', async () => {
    const impatient = await connect({ servers: `nats://127.0.0.1:${natsPort}`, timeoutMs: 300 });
    const dying = await connect({ servers: `nats://127.0.0.1:${natsPort}`, timeoutMs: 2000 });
    // A request made after the node died but before its client read the end of the socket is lost
    // (docs/decisions.md §25): the requests below wait until both clients have seen the disconnect.
    const disconnected = (c: LoomClient): Promise<void> =>
      (async () => {
        for await (const status of c.nc.status()) if (status.type === 'disconnect') return;
      })();
    const seen = Promise.all([disconnected(client), disconnected(impatient)]);
    try {
      // Closed as the node dies under its drain: closed all the same, nothing left redialing.
      const killed = stopServe(serve, 'SIGKILL');
      await dying.close();
      expect(dying.nc.isClosed()).toBe(true);
      await killed;
      await seen;
      // The nats client drops what is published while it is disconnected; the SDK holds it back.
      const during = client.kv.put('restart', 'during', 'sent after the reconnect').catch((e: unknown) => e);
      const unsent = await impatient.kv.put('restart', 'unsent', 'never').catch((e: unknown) => e);
      // Closing while the node is down returns (a drain would wait for the node).
      await impatient.close();
      expect(impatient.nc.isClosed()).toBe(true);
      rmSync(path.join(dir, 'ports.json'), { force: true });
      serve = await startServe(dir, ['--nats-port', String(natsPort)]);
      expect(unsent).toMatchObject({ code: 'UNAVAILABLE', message: expect.stringMatching(/not sent/) });
      const { rev } = (await during) as { rev: number };
      expect(Buffer.from((await client.kv.get('restart', 'during', { atLeast: rev })).value).toString()).toBe('sent after the reconnect');
      await expect(client.kv.get('restart', 'unsent', { atLeast: rev })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    } finally {
      await impatient.close();
    }
  }, 30_000);
});
