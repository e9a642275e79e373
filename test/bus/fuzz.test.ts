// Parser fuzzing with fast-check (fixed seeds): random and mutated protocol streams, fed with any
// split, never crash the parser or the server, never disturb another connection, and a connection
// told a fatal -ERR is closed.

import fc from 'fast-check';
import { Bus, NatsServer } from '../../src/bus';
import { ClientParser } from '../../src/bus/parser';
import type { ClientOpHandler } from '../../src/bus/parser';
import { isLoomError } from '../../src/util';
import { RawClient } from './support/raw';

const token = fc.stringMatching(/^[a-z*>]{1,4}$/);
const subject = fc.array(token, { minLength: 1, maxLength: 3 }).map((t) => t.join('.'));
const payload = fc.string({ maxLength: 20 });
const op = fc.oneof(
  fc.constant('PING\r\n'),
  fc.constant('PONG\r\n'),
  fc.constant('CONNECT {"verbose":true,"headers":true}\r\n'),
  fc.tuple(subject, fc.nat(50)).map(([s, sid]) => `SUB ${s} ${sid}\r\n`),
  fc.tuple(subject, token, fc.nat(50)).map(([s, q, sid]) => `SUB ${s} ${q} ${sid}\r\n`),
  fc.tuple(fc.nat(50), fc.option(fc.nat(5))).map(([sid, max]) => `UNSUB ${sid}${max === null ? '' : ` ${max}`}\r\n`),
  fc.tuple(subject, payload).map(([s, p]) => `PUB ${s} ${Buffer.byteLength(p)}\r\n${p}\r\n`),
  fc.tuple(subject, subject, payload).map(([s, r, p]) => `PUB ${s} ${r} ${Buffer.byteLength(p)}\r\n${p}\r\n`),
  payload.map((p) => `HPUB h 12 ${12 + Buffer.byteLength(p)}\r\nNATS/1.0\r\n\r\n${p}\r\n`),
);
const validStream = fc.array(op, { minLength: 1, maxLength: 12 }).map((ops) => Buffer.from(ops.join('')));
const mutation = fc.record({ at: fc.nat(), kind: fc.constantFrom('insert', 'delete', 'replace'), byte: fc.nat(255) });

function mutate(stream: Buffer, mutations: Array<{ at: number; kind: string; byte: number }>): Buffer {
  const bytes = [...stream];
  for (const m of mutations) {
    const at = bytes.length === 0 ? 0 : m.at % bytes.length;
    if (m.kind === 'insert') bytes.splice(at, 0, m.byte);
    else if (m.kind === 'delete') bytes.splice(at, 1);
    else bytes[at] = m.byte;
  }
  return Buffer.from(bytes);
}

const mutatedStream = fc.oneof(
  fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
  fc.tuple(validStream, fc.array(mutation, { minLength: 1, maxLength: 4 })).map(([s, m]) => mutate(s, m)),
);

const nullHandler: ClientOpHandler = {
  connect: () => undefined,
  pub: () => undefined,
  sub: () => undefined,
  unsub: () => undefined,
  ping: () => undefined,
  pong: () => undefined,
  ok: () => undefined,
  err: () => undefined,
};

describe('fuzzing the client-op parser', () => {
  it('only ever fails with a protocol violation, whatever the bytes and splits', () => {
    fc.assert(
      fc.property(mutatedStream, fc.array(fc.nat(), { maxLength: 5 }), (stream, cuts) => {
        const parser = new ClientParser(nullHandler, { maxControlLineBytes: 64, maxPayloadBytes: 64 });
        const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
        let at = 0;
        try {
          for (const cut of [...points, stream.length]) {
            parser.parse(stream.subarray(at, cut));
            at = cut;
          }
        } catch (err) {
          if (!(isLoomError(err, 'INVALID_ARGUMENT') && typeof err.details.natsError === 'string')) throw err;
        }
      }),
      { seed: 20240611, numRuns: 3000 },
    );
  });

  it('parses every valid stream the same whole and split', () => {
    const record = (): { handler: ClientOpHandler; seen: string[] } => {
      const seen: string[] = [];
      const handler: ClientOpHandler = {
        ...nullHandler,
        sub: (s, q, sid) => seen.push(`S ${s} ${q} ${sid}`),
        pub: (s, r, src, a, h, b) => seen.push(`P ${s} ${r} ${h} ${src.subarray(a, b).toString('latin1')}`),
        ping: () => seen.push('PING'),
      };
      return { handler, seen };
    };
    fc.assert(
      fc.property(validStream, fc.nat(), (stream, cut) => {
        const whole = record();
        new ClientParser(whole.handler, { maxControlLineBytes: 4096, maxPayloadBytes: 4096 }).parse(stream);
        const split = record();
        const parser = new ClientParser(split.handler, { maxControlLineBytes: 4096, maxPayloadBytes: 4096 });
        const at = cut % (stream.length + 1);
        parser.parse(Buffer.from(stream.subarray(0, at)));
        parser.parse(Buffer.from(stream.subarray(at)));
        expect(split.seen).toEqual(whole.seen);
      }),
      { seed: 7, numRuns: 500 },
    );
  });
});

// Errors after which nats-server keeps the connection open.
const NON_FATAL = new Set(['Invalid Subject', 'Invalid Publish Subject', 'maximum subscriptions exceeded']);

describe('fuzzing the server over sockets', () => {
  let bus: Bus;
  let server: NatsServer;
  let port: number;

  beforeAll(async () => {
    bus = new Bus();
    server = new NatsServer(bus, { host: '127.0.0.1', port: 0, maxPayloadBytes: 256, maxControlLineBytes: 128 });
    ({ port } = await server.listen());
  });
  afterAll(async () => {
    await server.close();
    await bus.close();
  });

  it('a bad stream never disturbs a bystander; a fatal -ERR always closes the bad connection', async () => {
    const bystander = await RawClient.ready(port);
    bystander.send('SUB witness 1\r\n');
    await bystander.sync();
    let checked = 0;
    await fc.assert(
      fc.asyncProperty(mutatedStream, async (stream) => {
        const bad = await RawClient.connect(port);
        await bad.expect(/^INFO .*\r\n/);
        bad.send(stream);
        await new Promise((r) => setTimeout(r, 25));
        const errors = [...bad.received.matchAll(/-ERR '([^']*)'/g)].map((m) => m[1]);
        const fatal = errors.filter((e) => !NON_FATAL.has(e));
        if (fatal.length > 0) await bad.waitClosed(1000);
        bad.close();
        bystander.send('PUB witness 2\r\nok\r\n');
        expect(await bystander.sync()).toBe('MSG witness 1 2\r\nok\r\n');
        checked++;
      }),
      { seed: 99, numRuns: 60 },
    );
    expect(checked).toBe(60);
    bystander.close();
  });
});
