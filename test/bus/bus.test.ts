// The in-process API other parts of loom use: publish, subscribe as callback and as async
// iterable, max and drain, request/reply with no-responders and timeout, limits and close.

import { Bus, MsgHeaders } from '../../src/bus';
import type { Msg } from '../../src/bus';
import { isLoomError } from '../../src/util';

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (err) {
    return isLoomError(err) ? err.code : 'not a LoomError';
  }
  return undefined;
}

describe('Bus (in-process)', () => {
  let bus: Bus;
  beforeEach(() => (bus = new Bus()));
  afterEach(() => bus.close());

  it('delivers to callbacks synchronously, with subject, reply and headers', () => {
    const got: Msg[] = [];
    bus.subscribe('$KV.users.*', { callback: (m) => got.push(m) });
    bus.publish('$KV.users.ana', 'v1', { headers: new MsgHeaders().set('Loom-Rev', '5'), reply: 'r.1' });
    expect(got).toHaveLength(1);
    expect(got[0].subject).toBe('$KV.users.ana');
    expect(got[0].reply).toBe('r.1');
    expect(got[0].string()).toBe('v1');
    expect(got[0].headers?.get('Loom-Rev')).toBe('5');
  });

  it('passes the publisher buffer through without copying it', () => {
    const data = Buffer.from('zero-copy');
    let seen: Buffer | undefined;
    bus.subscribe('z', { callback: (m) => (seen = m.data) });
    bus.publish('z', data);
    expect(seen).toBe(data);
  });

  it('iterates a subscription and ends it after max messages', async () => {
    const sub = bus.subscribe('tick', { max: 3 });
    for (let i = 0; i < 5; i++) bus.publish('tick', String(i));
    const got: string[] = [];
    for await (const m of sub) got.push(m.string());
    expect(got).toEqual(['0', '1', '2']);
    expect(sub.isClosed).toBe(true);
    expect(bus.subscriptionCount).toBe(0);
  });

  it('unsubscribe(max) stops after max in total; breaking out of iteration unsubscribes', async () => {
    const sub = bus.subscribe('a');
    bus.publish('a', '1');
    sub.unsubscribe(2);
    bus.publish('a', '2');
    bus.publish('a', '3');
    const got: string[] = [];
    for await (const m of sub) got.push(m.string());
    expect(got).toEqual(['1', '2']);
    const other = bus.subscribe('b');
    bus.publish('b', 'x');
    for await (const _m of other) break;
    expect(bus.subscriptionCount).toBe(0);
  });

  it('drain lets an iterating consumer take what is queued, then closes', async () => {
    const sub = bus.subscribe('d');
    bus.publish('d', '1');
    bus.publish('d', '2');
    const drained = sub.drain();
    bus.publish('d', 'late'); // no longer subscribed
    const got: string[] = [];
    for await (const m of sub) got.push(m.string());
    await drained;
    expect(got).toEqual(['1', '2']);
  });

  it('gives each queue group one copy and plain subscribers every copy', () => {
    const counts = { a: 0, b: 0, c: 0, plain: 0 };
    bus.subscribe('job', { queue: 'w', callback: () => counts.a++ });
    bus.subscribe('job', { queue: 'w', callback: () => counts.b++ });
    bus.subscribe('job', { queue: 'w', callback: () => counts.c++ });
    bus.subscribe('job', { callback: () => counts.plain++ });
    for (let i = 0; i < 300; i++) bus.publish('job');
    expect(counts.a + counts.b + counts.c).toBe(300);
    expect(Math.min(counts.a, counts.b, counts.c)).toBeGreaterThan(50);
    expect(counts.plain).toBe(300);
  });

  it('answers requests, fails fast with no responders, and times out', async () => {
    bus.subscribe('$LOOM.API.>', { queue: 'loom-api', callback: (m) => m.respond(`re:${m.string()}`) });
    expect((await bus.request('$LOOM.API.X', 'q')).string()).toBe('re:q');
    await expect(bus.request('nobody', 'q')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    bus.subscribe('silent', { callback: () => undefined });
    await expect(bus.request('silent', 'q', { timeoutMs: 20 })).rejects.toMatchObject({ code: 'TIMEOUT' });
  });

  it('refuses bad subjects and oversize payloads with LoomErrors', () => {
    expect(codeOf(() => bus.publish('a.*', 'x'))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => bus.publish('a..b', 'x'))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => bus.subscribe('a.>.b'))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => bus.subscribe('a', { queue: 'has space' }))).toBe('INVALID_ARGUMENT');
    const small = new Bus({ maxPayloadBytes: 8 });
    expect(codeOf(() => small.publish('a', '123456789'))).toBe('TOO_LARGE');
    void small.close();
  });

  it('ends a subscription whose callback throws, without failing the publisher', () => {
    const sub = bus.subscribe('boom', {
      callback: () => {
        throw new Error('subscriber bug');
      },
    });
    expect(() => bus.publish('boom', 'x')).not.toThrow();
    expect(sub.isClosed).toBe(true);
    expect((sub.error as Error).message).toBe('subscriber bug');
  });

  it('drops messages past pendingMsgsMax for a consumer that does not iterate', () => {
    const sub = bus.subscribe('flood', { pendingMsgsMax: 10 });
    for (let i = 0; i < 25; i++) bus.publish('flood', 'x');
    expect(sub.dropped).toBe(15);
  });

  it('after close, publishing fails UNAVAILABLE, iterators end and pending requests fail', async () => {
    const sub = bus.subscribe('x');
    bus.subscribe('slow', { callback: () => undefined });
    const pending = bus.request('slow', 'q', { timeoutMs: 5000 });
    await bus.close();
    await expect(pending).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(codeOf(() => bus.publish('x', 'y'))).toBe('UNAVAILABLE');
    const got = [];
    for await (const m of sub) got.push(m);
    expect(got).toEqual([]);
  });
});

describe('interest under a first token', () => {
  it('is there while some subscription could match a subject starting with the token', () => {
    const bus = new Bus();
    expect(bus.hasInterestUnder('$KV')).toBe(false);
    const other = bus.subscribe('$LOOM.API.KV.GET');
    expect(bus.hasInterestUnder('$KV')).toBe(false);
    for (const filter of ['$KV.users.>', '*.users.alice', '>']) {
      const sub = bus.subscribe(filter);
      expect([filter, bus.hasInterestUnder('$KV')]).toEqual([filter, true]);
      sub.unsubscribe();
      expect([filter, bus.hasInterestUnder('$KV')]).toEqual([filter, false]);
    }
    other.unsubscribe();
    void bus.close();
  });
});
