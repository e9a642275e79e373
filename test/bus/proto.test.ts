// Raw-socket protocol edge cases, the list taken from nats-server's test/proto_test.go,
// pedantic_test.go, verbose_test.go, ping_test.go, maxpayload_test.go (cases ported, not code).

import { Bus, NatsServer } from '../../src/bus';
import type { NatsServerOptions } from '../../src/bus';
import { RawClient } from './support/raw';

const MSG = (subject: string, sid: string, payload: string, reply?: string): string =>
  `MSG ${subject} ${sid}${reply ? ` ${reply}` : ''} ${Buffer.byteLength(payload)}\r\n${payload}\r\n`;

describe('NATS protocol over a raw socket', () => {
  let bus: Bus;
  let server: NatsServer;
  let port: number;
  const clients: RawClient[] = [];

  async function start(options: NatsServerOptions = {}): Promise<void> {
    bus = new Bus();
    server = new NatsServer(bus, { host: '127.0.0.1', port: 0, ...options });
    ({ port } = await server.listen());
  }
  const ready = async (o: Record<string, unknown> = {}): Promise<RawClient> => {
    const c = await RawClient.ready(port, o);
    clients.push(c);
    return c;
  };
  const raw = async (): Promise<RawClient> => {
    const c = await RawClient.connect(port);
    clients.push(c);
    return c;
  };

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await server.close();
    await bus.close();
  });

  describe('INFO and CONNECT', () => {
    beforeEach(() => start());

    it('sends INFO with what clients need, and no nonce without auth', async () => {
      const c = await raw();
      const [, json] = await c.expect(/^INFO (.*)\r\n/);
      const info = JSON.parse(json);
      expect(info).toMatchObject({ proto: 1, headers: true, max_payload: 1024 * 1024, server_name: 'loom' });
      expect(info.version).toMatch(/^\d+\.\d+\.\d+$/);
      expect(typeof info.server_id).toBe('string');
      expect(typeof info.client_id).toBe('number');
      expect(info.nonce).toBeUndefined();
      expect(info.auth_required).toBeUndefined();
    });

    it('refuses a client protocol above 1 and closes', async () => {
      const c = await ready({ protocol: 2 });
      await c.expect(/-ERR 'invalid client protocol'\r\n/);
      await c.waitClosed();
    });

    it('refuses no_responders without headers and closes', async () => {
      const c = await ready({ no_responders: true, headers: false });
      await c.expect(/-ERR 'no responders requires headers support'\r\n/);
      await c.waitClosed();
    });

    it('refuses CONNECT arguments that are not a JSON object and closes', async () => {
      const c = await raw();
      c.send('CONNECT {nope\r\n');
      await c.expect(/-ERR 'Unknown Protocol Operation'\r\n/);
      await c.waitClosed();
    });

    it('answers +OK to a CONNECT split across writes, once CRLF arrives (proto_test TestProtoCrash)', async () => {
      const c = await raw();
      c.send('CONNECT {"verbose":true,"pedantic":true}');
      await new Promise((r) => setTimeout(r, 50));
      c.send('\r\n');
      await c.expect(/^INFO .*\r\n\+OK\r\n/);
    });
  });

  describe('basic ops (proto_test.go)', () => {
    beforeEach(() => start());

    it('answers PING with PONG', async () => {
      const c = await ready();
      c.send('PING\r\n');
      await c.expect(/^PONG\r\n/);
    });

    it('delivers to one and then to two matching subscriptions', async () => {
      const c = await ready();
      c.send('SUB foo 1\r\nPUB foo 5\r\nhello\r\n');
      expect(await c.sync()).toBe(MSG('foo', '1', 'hello'));
      c.send('SUB * 2\r\nPUB foo 2\r\nok\r\n');
      const got = await c.sync();
      expect(got).toContain(MSG('foo', '1', 'ok'));
      expect(got).toContain(MSG('foo', '2', 'ok'));
    });

    it('carries the reply subject in MSG', async () => {
      const c = await ready();
      c.send('SUB foo 1\r\nPUB foo bar 2\r\nok\r\n');
      expect(await c.sync()).toBe(MSG('foo', '1', 'ok', 'bar'));
    });

    it.each(['ZZZ\r\n', 'PUBS foo 2\r\nok\r\n', 'SUBZZZ foo 1\r\n'])('answers %j with -ERR and closes', async (bad) => {
      const c = await ready();
      c.send(bad);
      await c.expect(/-ERR 'Unknown Protocol Operation'\r\n/);
      await c.waitClosed();
    });

    it('stops after UNSUB max: 2 of 100 messages', async () => {
      const c = await ready();
      c.send('SUB foo 22\r\nUNSUB 22 2\r\n');
      c.send('PUB foo 2\r\nok\r\n'.repeat(100));
      expect(await c.sync()).toBe(MSG('foo', '22', 'ok').repeat(2));
    });

    it('UNSUB of an unknown sid is ignored', async () => {
      const c = await ready();
      c.send('UNSUB 99\r\n');
      expect(await c.sync()).toBe('');
    });

    it('spreads a queue group over its members and gives each group one copy', async () => {
      const c = await ready();
      c.send('SUB foo g1 1\r\nSUB foo g1 2\r\nSUB foo g2 3\r\nSUB foo g2 4\r\n');
      c.send('PUB foo 2\r\nok\r\n'.repeat(100));
      const got = await c.sync();
      const counts: Record<string, number> = {};
      for (const m of got.matchAll(/MSG foo (\d+) 2\r\n/g)) counts[m[1]] = (counts[m[1]] ?? 0) + 1;
      expect(Object.keys(counts).sort()).toEqual(['1', '2', '3', '4']);
      expect(counts['1'] + counts['2']).toBe(100);
      expect(counts['3'] + counts['4']).toBe(100);
      for (const n of Object.values(counts)) expect(n).toBeGreaterThanOrEqual(25);
    });

    it('keeps one subscription when a sid is reused (TestDuplicateProtoSub)', async () => {
      const c = await ready();
      c.send('SUB foo 1\r\nSUB foo 1\r\nPUB foo 2\r\nok\r\n');
      expect(await c.sync()).toBe(MSG('foo', '1', 'ok'));
      expect(bus.subscriptionCount).toBe(1);
    });

    it('does not echo a client its own messages when it asked echo:false', async () => {
      const c = await ready({ echo: false });
      const other = await ready();
      c.send('SUB foo 1\r\nPUB foo 2\r\nok\r\n');
      expect(await c.sync()).toBe('');
      other.send('PUB foo 2\r\nhi\r\n');
      await other.sync();
      expect(await c.sync()).toBe(MSG('foo', '1', 'hi'));
    });

    it('answers a request with nobody subscribed with a NATS/1.0 503 status message', async () => {
      const c = await ready({ headers: true, no_responders: true });
      c.send('SUB _INBOX.x.* 1\r\nPUB nobody _INBOX.x.1 2\r\nhi\r\n');
      expect(await c.sync()).toBe('HMSG _INBOX.x.1 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n');
    });

    it('sends HMSG to clients with headers and strips headers for clients without', async () => {
      const withHeaders = await ready({ headers: true });
      const without = await ready({ headers: false });
      withHeaders.send('SUB foo 1\r\n');
      without.send('SUB foo 9\r\n');
      await withHeaders.sync();
      await without.sync();
      const block = 'NATS/1.0\r\nA: b\r\n\r\n';
      withHeaders.send(`HPUB foo ${block.length} ${block.length + 2}\r\n${block}ok\r\n`);
      expect(await withHeaders.sync()).toBe(`HMSG foo 1 ${block.length} ${block.length + 2}\r\n${block}ok\r\n`);
      expect(await without.sync()).toBe(MSG('foo', '9', 'ok'));
    });

    it('refuses HPUB from a client that did not ask for headers', async () => {
      const c = await ready({ headers: false });
      c.send('HPUB foo 12 12\r\nNATS/1.0\r\n\r\n\r\n');
      await c.expect(/-ERR 'Unknown Protocol Operation'\r\n/);
      await c.waitClosed();
    });

    it('a bad connection does not disturb another one', async () => {
      const good = await ready();
      good.send('SUB foo 1\r\n');
      await good.sync();
      const bad = await ready();
      bad.send('PUB foo 2\r\nok\r\nGARBAGE\r\n');
      await bad.waitClosed();
      expect(await good.sync()).toBe(MSG('foo', '1', 'ok'));
    });
  });

  describe('verbose (verbose_test.go)', () => {
    beforeEach(() => start());

    it('answers +OK to CONNECT, PUB, SUB and UNSUB, and PONG (only) to PING', async () => {
      const c = await ready({ verbose: true });
      await c.expect(/^\+OK\r\n/);
      c.send('PING\r\n');
      await c.expect(/^PONG\r\n/);
      c.send('CONNECT {"verbose":true,"pedantic":true}\r\n');
      await c.expect(/^\+OK\r\n/);
      c.send('PUB foo 2\r\nok\r\n');
      await c.expect(/^\+OK\r\n/);
      c.send('SUB foo 1\r\n');
      await c.expect(/^\+OK\r\n/);
      c.send('UNSUB 1\r\n');
      await c.expect(/^\+OK\r\n/);
      expect(await c.sync()).toBe('');
    });
  });

  describe('pedantic (pedantic_test.go)', () => {
    beforeEach(() => start());

    it.each(['foo.', '.foo.', 'foo..bar', 'foo.>.bar'])('refuses SUB %s with Invalid Subject and stays open', async (s) => {
      const c = await ready({ pedantic: true });
      c.send(`SUB ${s} 1\r\n`);
      await c.expect(/^-ERR 'Invalid Subject'\r\n/);
      expect(await c.sync()).toBe('');
    });

    it.each(['foo.*', 'foo.>', 'foo.', '.foo', 'foo..*'])('refuses PUB %s with Invalid Publish Subject and stays open', async (s) => {
      const c = await ready({ pedantic: true });
      c.send(`PUB ${s} 2\r\nok\r\n`);
      await c.expect(/^-ERR 'Invalid Publish Subject'\r\n/);
      expect(await c.sync()).toBe('');
    });

    it('outside pedantic mode drops a wildcard publish silently', async () => {
      const c = await ready();
      c.send('SUB foo.* 1\r\nPUB foo.* 2\r\nok\r\nPUB foo.x 2\r\nok\r\n');
      expect(await c.sync()).toBe(MSG('foo.x', '1', 'ok'));
    });
  });

  describe('limits', () => {
    it('refuses a payload over max_payload, says so in INFO, and closes (maxpayload_test.go)', async () => {
      await start({ maxPayloadBytes: 1024 });
      const c = await raw();
      const [, json] = await c.expect(/^INFO (.*)\r\n/);
      expect(JSON.parse(json).max_payload).toBe(1024);
      c.send('CONNECT {}\r\nPUB foo 1025\r\n');
      await c.expect(/-ERR 'Maximum Payload Violation'\r\n/);
      await c.waitClosed();
    });

    it('refuses a size that overflows 32 bits (TestMaxPayloadOverrun)', async () => {
      await start();
      const c = await ready();
      c.send('PUB foo 4294967296\r\n');
      await c.expect(/-ERR 'Maximum Payload Violation'\r\n/);
      await c.waitClosed();
    });

    it('refuses a control line over the limit and closes', async () => {
      await start({ maxControlLineBytes: 64 });
      const c = await ready();
      c.send(`SUB ${'a'.repeat(100)} 1\r\n`);
      await c.expect(/-ERR 'Maximum Control Line Exceeded'\r\n/);
      await c.waitClosed();
    });

    it('refuses subscriptions past the limit but keeps the connection', async () => {
      await start({ subscriptionsMax: 2 });
      const c = await ready();
      c.send('SUB a 1\r\nSUB b 2\r\nSUB c 3\r\n');
      await c.expect(/^-ERR 'maximum subscriptions exceeded'\r\n/);
      c.send('PUB b 1\r\nx\r\n');
      expect(await c.sync()).toBe(MSG('b', '2', 'x'));
    });

    it('refuses connections past the limit with INFO then -ERR', async () => {
      await start({ connectionsMax: 1 });
      await ready();
      const second = await raw();
      await second.expect(/^INFO .*\r\n-ERR 'maximum connections exceeded'\r\n/);
      await second.waitClosed();
    });
  });

  describe('pings (ping_test.go)', () => {
    it('pings the client, and a client that answers PONG stays', async () => {
      await start({ pingIntervalMs: 40, pingsOutstandingMax: 2 });
      const c = await ready();
      for (let i = 0; i < 4; i++) {
        await c.expect(/^PING\r\n/);
        c.send('PONG\r\n');
      }
      expect(c.closed).toBe(false);
    });

    it('closes a client that leaves pings unanswered with Stale Connection', async () => {
      await start({ pingIntervalMs: 40, pingsOutstandingMax: 2 });
      const c = await ready();
      await c.expect(/^PING\r\nPING\r\n-ERR 'Stale Connection'\r\n/);
      await c.waitClosed();
    });
  });

  describe('auth', () => {
    it('announces auth_required with a nonce, accepts the token, refuses a wrong one', async () => {
      await start({ authToken: 'tok' });
      const c = await raw();
      const [, json] = await c.expect(/^INFO (.*)\r\n/);
      const info = JSON.parse(json);
      expect(info.auth_required).toBe(true);
      expect(typeof info.nonce).toBe('string');
      c.send('CONNECT {"auth_token":"tok"}\r\n');
      expect(await c.sync()).toBe('');
      const wrong = await ready({ auth_token: 'nope' });
      await wrong.expect(/-ERR 'Authorization Violation'\r\n/);
      await wrong.waitClosed();
    });

    it('refuses any op before CONNECT when auth is on', async () => {
      await start({ user: 'u', password: 'p' });
      const c = await raw();
      c.send('PING\r\n');
      await c.expect(/-ERR 'Authorization Violation'\r\n/);
      await c.waitClosed();
    });

    it('checks user and password', async () => {
      await start({ user: 'u', password: 'p' });
      const good = await ready({ user: 'u', pass: 'p' });
      expect(await good.sync()).toBe('');
      const bad = await ready({ user: 'u', pass: 'x' });
      await bad.expect(/-ERR 'Authorization Violation'\r\n/);
      await bad.waitClosed();
    });

    it('closes a client that does not CONNECT in time with Authentication Timeout', async () => {
      await start({ authToken: 'tok', authTimeoutMs: 50 });
      const c = await raw();
      await c.expect(/-ERR 'Authentication Timeout'\r\n/);
      await c.waitClosed();
    });
  });

  describe('graceful shutdown', () => {
    it('stops accepting, delivers what is pending, then closes every client', async () => {
      await start();
      const sub = await ready();
      sub.send('SUB foo 1\r\n');
      await sub.sync();
      const pub = await ready();
      pub.send('PUB foo 2\r\nok\r\n'.repeat(1000));
      await pub.sync();
      await server.close();
      await sub.waitClosed();
      expect(sub.received.split('MSG foo 1 2').length - 1).toBe(1000);
      await expect(RawClient.connect(port)).rejects.toThrow();
    });
  });
});
