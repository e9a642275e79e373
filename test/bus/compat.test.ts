// Compatibility of the official NATS clients with loom's bus: every case runs with `nats` 2.x and
// `@nats-io/transport-node` 3.x against each server factory, plus bridges to the in-process API.

import { clientFlavours, take } from './support/clients';
import type { ClientConnection, ClientFlavour } from './support/clients';
import { serverFactories } from './support/servers';
import type { ServerFactory, ServerUnderTest } from './support/servers';
import { MsgHeaders } from '../../src/bus';

const text = (d: Uint8Array): string => Buffer.from(d).toString('utf8');

describe.each(serverFactories)('bus compatibility against %s', (_serverName: string, startServer: ServerFactory) => {
  describe.each(clientFlavours.map((c) => [c.name, c] as [string, ClientFlavour]))('with %s', (_n, client) => {
    let server: ServerUnderTest;
    const open: ClientConnection[] = [];
    const connect = async (extra: Partial<Parameters<ClientFlavour['connect']>[0]> = {}): Promise<ClientConnection> => {
      const nc = await client.connect({ port: server.port(), ...extra });
      open.push(nc);
      return nc;
    };

    beforeEach(async () => {
      server = await startServer();
    });
    afterEach(async () => {
      for (const nc of open.splice(0)) if (!nc.isClosed()) await nc.close();
      await server.stop();
    });

    it('delivers a published message to a subscriber', async () => {
      const nc = await connect();
      const sub = nc.subscribe('greet');
      nc.publish('greet', 'hello');
      const [m] = await take(sub, 1);
      expect(m.subject).toBe('greet');
      expect(text(m.data)).toBe('hello');
    });

    it('matches * to one token and > to one or more tokens', async () => {
      const pub = await connect();
      const sub = await connect();
      const star = sub.subscribe('orders.*');
      const full = sub.subscribe('orders.>');
      await sub.flush();
      for (const s of ['orders.new', 'orders.eu.new', 'orders', 'other.new']) pub.publish(s, s);
      await pub.flush();
      expect((await take(star, 1)).map((m) => m.subject)).toEqual(['orders.new']);
      expect((await take(full, 2)).map((m) => m.subject)).toEqual(['orders.new', 'orders.eu.new']);
    });

    it('spreads a queue group across its 3 members, one copy per message, while plain subscribers get all', async () => {
      const members = await Promise.all([connect(), connect(), connect()]);
      const counts = [0, 0, 0];
      members.forEach((nc, i) => nc.subscribe('work', { queue: 'workers', callback: () => counts[i]++ }));
      const watcher = await connect();
      let watched = 0;
      watcher.subscribe('work', { callback: () => watched++ });
      await Promise.all([...members, watcher].map((nc) => nc.flush()));
      const pub = await connect();
      for (let i = 0; i < 300; i++) pub.publish('work', String(i));
      await pub.flush();
      await Promise.all([...members, watcher].map((nc) => nc.flush()));
      expect(counts.reduce((a, b) => a + b, 0)).toBe(300);
      for (const c of counts) expect(c).toBeGreaterThan(50);
      expect(watched).toBe(300);
    });

    it('answers a request with the responder reply', async () => {
      const responder = await connect();
      responder.subscribe('math.double', { callback: (_e, m) => m.respond(String(Number(m.string()) * 2)) });
      await responder.flush();
      const requester = await connect();
      const reply = await requester.request('math.double', '21', { timeout: 2000 });
      expect(reply.string()).toBe('42');
    });

    it('fails a request fast with no responders when nobody is subscribed', async () => {
      const nc = await connect();
      const started = Date.now();
      await expect(nc.request('nobody.home', 'x', { timeout: 4000 })).rejects.toThrow(/503|no responders/i);
      expect(Date.now() - started).toBeLessThan(2000);
    });

    it('round-trips headers, with repeated keys', async () => {
      const nc = await connect();
      const sub = nc.subscribe('with.headers');
      const h = client.headers();
      h.set('Loom-Rev', '17');
      h.append('Loom-Tag', 'a');
      h.append('Loom-Tag', 'b');
      nc.publish('with.headers', 'v', { headers: h });
      const [m] = await take(sub, 1);
      expect(m.headers?.get('Loom-Rev')).toBe('17');
      expect(text(m.data)).toBe('v');
      expect((m.headers as unknown as { values(k: string): string[] }).values('Loom-Tag')).toEqual(['a', 'b']);
    });

    it('stops a subscription after max messages (UNSUB with max)', async () => {
      const nc = await connect();
      const sub = nc.subscribe('limited', { max: 3 });
      for (let i = 0; i < 10; i++) nc.publish('limited', String(i));
      await nc.flush();
      const got = [];
      for await (const m of sub) got.push(m.string());
      expect(got).toEqual(['0', '1', '2']);
      // And the server forgot it: a later publish reaches nobody.
      await expect(nc.request('limited', 'x', { timeout: 2000 })).rejects.toThrow(/503|no responders/i);
    });

    it('drains a subscription and a connection, delivering what was in flight', async () => {
      const nc = await connect();
      let got = 0;
      const sub = nc.subscribe('drain.me', { callback: () => got++ });
      const pub = await connect();
      await nc.flush();
      for (let i = 0; i < 100; i++) pub.publish('drain.me', 'x');
      await pub.flush();
      await sub.drain();
      expect(got).toBe(100);
      await nc.drain();
      expect(nc.isClosed()).toBe(true);
    });

    it('flush round-trips to the server', async () => {
      const nc = await connect();
      await expect(nc.flush()).resolves.toBeUndefined();
    });

    it('reconnects after a server restart and resubscribes', async () => {
      const nc = await connect({ reconnect: true });
      const sub = nc.subscribe('after.restart');
      await nc.flush();
      const reconnected = (async () => {
        for await (const s of nc.status()) if (s.type === 'reconnect') return;
      })();
      await server.restart();
      await reconnected;
      nc.publish('after.restart', 'back');
      const [m] = await take(sub, 1);
      expect(m.string()).toBe('back');
    });

    it('refuses an oversize payload in the client, from the server INFO max_payload', async () => {
      await server.stop();
      server = await startServer({ maxPayloadBytes: 1024 });
      const nc = await connect();
      expect(() => nc.publish('big', new Uint8Array(2048))).toThrow(/payload|MAX_PAYLOAD/i);
      nc.publish('small', new Uint8Array(1000));
      await nc.flush();
    });

    describe('with an auth token', () => {
      beforeEach(async () => {
        await server.stop();
        server = await startServer({ authToken: 's3cret' });
      });

      it('accepts the right token', async () => {
        const nc = await connect({ token: 's3cret' });
        await nc.flush();
      });

      it('rejects a wrong token with Authorization Violation', async () => {
        await expect(connect({ token: 'nope' })).rejects.toThrow(/authorization/i);
        await expect(connect({})).rejects.toThrow(/authorization/i);
      });
    });

    describe('with a user and password', () => {
      beforeEach(async () => {
        await server.stop();
        server = await startServer({ user: 'ana', password: 'pw' });
      });

      it('accepts the right credentials and rejects wrong ones', async () => {
        const nc = await connect({ user: 'ana', pass: 'pw' });
        await nc.flush();
        await expect(connect({ user: 'ana', pass: 'bad' })).rejects.toThrow(/authorization/i);
      });
    });

    describe('bridged to the in-process bus', () => {
      // A process-based factory (a real `loom serve`) has no in-process side: these cases pass vacuously.
      const busOf = (): NonNullable<ServerUnderTest['bus']> => {
        if (!server.bus) throw new Error('this server factory has no in-process bus');
        return server.bus;
      };
      const maybe = (name: string, fn: () => Promise<void>): void =>
        it(name, async () => {
          if (server.bus) await fn();
        });

      maybe('an in-process queue subscriber answers a client request, with headers', async () => {
        const bus = busOf();
        bus.subscribe('$LOOM.API.>', {
          queue: 'loom-api',
          callback: (m) => {
            const h = new MsgHeaders().set('Loom-Rev', '9');
            if (m.subject.endsWith('.missing')) h.set('Loom-Error', 'NOT_FOUND');
            m.respond(`echo:${m.string()}`, { headers: h });
          },
        });
        const nc = await connect();
        const reply = await nc.request('$LOOM.API.KV.GET.b.k', 'q', { timeout: 2000 });
        expect(reply.string()).toBe('echo:q');
        expect(reply.headers?.get('Loom-Rev')).toBe('9');
        const missing = await nc.request('$LOOM.API.KV.GET.b.missing', 'q', { timeout: 2000 });
        expect(missing.headers?.get('Loom-Error')).toBe('NOT_FOUND');
      });

      maybe('a client responder answers an in-process request', async () => {
        const bus = busOf();
        const nc = await connect();
        nc.subscribe('svc.upper', { callback: (_e, m) => m.respond(m.string().toUpperCase()) });
        await nc.flush();
        const reply = await bus.request('svc.upper', 'shout', { timeoutMs: 2000 });
        expect(reply.string()).toBe('SHOUT');
      });

      maybe('in-process publishes reach clients and client publishes reach in-process iterators', async () => {
        const bus = busOf();
        const nc = await connect();
        const clientSub = nc.subscribe('$KV.users.*');
        await nc.flush();
        bus.publish('$KV.users.ana', 'v1', { headers: new MsgHeaders().set('Loom-Op', 'PUT') });
        const [m] = await take(clientSub, 1);
        expect(m.subject).toBe('$KV.users.ana');
        expect(m.headers?.get('Loom-Op')).toBe('PUT');

        const local = bus.subscribe('from.client.>', { max: 2 });
        nc.publish('from.client.a', '1');
        nc.publish('from.client.b', '2');
        const got: string[] = [];
        for await (const lm of local) got.push(`${lm.subject}=${lm.string()}`);
        expect(got).toEqual(['from.client.a=1', 'from.client.b=2']);
      });

      maybe('an in-process request with nobody listening fails with no responders', async () => {
        await expect(busOf().request('nobody', 'x', { timeoutMs: 2000 })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      });
    });
  });
});
