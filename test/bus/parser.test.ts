// The client-op parser fed with no socket: byte by byte, at every split point, and the cases of
// nats-server's server/parser_test.go and server/split_test.go (the list ported, not the code).

import { ClientParser } from '../../src/bus/parser';
import type { ClientOpHandler } from '../../src/bus/parser';
import { isLoomError } from '../../src/util';

type Event = string;

function recorder(): { handler: ClientOpHandler; events: Event[] } {
  const events: Event[] = [];
  const handler: ClientOpHandler = {
    connect: (json) => events.push(`CONNECT ${json}`),
    pub: (subject, reply, source, start, headerBytes, end) => {
      const body = Buffer.from(source.subarray(start, end)).toString('latin1');
      events.push(
        headerBytes < 0
          ? `PUB ${subject} ${reply ?? '-'} ${body}`
          : `HPUB ${subject} ${reply ?? '-'} ${body.slice(0, headerBytes)}|${body.slice(headerBytes)}`,
      );
    },
    sub: (subject, queue, sid) => events.push(`SUB ${subject} ${queue ?? '-'} ${sid}`),
    unsub: (sid, max) => events.push(`UNSUB ${sid} ${max ?? '-'}`),
    ping: () => events.push('PING'),
    pong: () => events.push('PONG'),
    ok: () => events.push('+OK'),
    err: (m) => events.push(`-ERR ${m}`),
  };
  return { handler, events };
}

const limits = { maxControlLineBytes: 4096, maxPayloadBytes: 1024 * 1024 };

function parseWhole(input: string | Buffer, l = limits): Event[] {
  const { handler, events } = recorder();
  new ClientParser(handler, l).parse(Buffer.from(input));
  return events;
}

function parseSplit(input: Buffer, cuts: number[]): Event[] {
  const { handler, events } = recorder();
  const parser = new ClientParser(handler, limits);
  let at = 0;
  for (const cut of [...cuts, input.length]) {
    parser.parse(Buffer.from(input.subarray(at, cut))); // copies: the parser may not keep views of old chunks
    at = cut;
  }
  return events;
}

function natsError(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    if (isLoomError(err) && typeof err.details.natsError === 'string') return err.details.natsError;
    throw err;
  }
  return 'no error';
}

const stream = Buffer.from(
  'CONNECT {"verbose":false,"headers":true}\r\n' +
    'PING\r\nPONG\r\n' +
    'SUB foo 1\r\nSUB foo.* workers 22\r\n' +
    'PUB foo 5\r\nhello\r\n' +
    'PUB foo.bar INBOX.22 11\r\nhello world\r\n' +
    'HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n' +
    'PUB empty 0\r\n\r\n' +
    'UNSUB 1\r\nUNSUB 22 5\r\n+OK\r\n-ERR \'oops\'\r\n',
);
const expected = [
  'CONNECT {"verbose":false,"headers":true}',
  'PING',
  'PONG',
  'SUB foo - 1',
  'SUB foo.* workers 22',
  'PUB foo - hello',
  'PUB foo.bar INBOX.22 hello world',
  'HPUB foo - NATS/1.0\r\n\r\n|hi',
  'PUB empty - ',
  'UNSUB 1 -',
  'UNSUB 22 5',
  '+OK',
  "-ERR 'oops'",
];

describe('ClientParser', () => {
  it('parses a stream of every client op', () => {
    expect(parseWhole(stream)).toEqual(expected);
  });

  it('gives the same ops when the stream is fed one byte at a time', () => {
    expect(parseSplit(stream, Array.from({ length: stream.length - 1 }, (_, i) => i + 1))).toEqual(expected);
  });

  it('gives the same ops for every single split point and every pair of nearby split points', () => {
    for (let a = 1; a < stream.length; a++) {
      expect(parseSplit(stream, [a])).toEqual(expected);
      for (let b = a + 1; b < Math.min(stream.length, a + 12); b++) expect(parseSplit(stream, [a, b])).toEqual(expected);
    }
  });

  it('accepts op names in any case and tolerates spaces before CRLF (PING  \\r  \\n)', () => {
    expect(parseWhole('ping\r\nPiNg  \r  \nPONG  \r\npub foo 2\r\nok\r\nsub bar 1\r\n')).toEqual([
      'PING',
      'PING',
      'PONG',
      'PUB foo - ok',
      'SUB bar - 1',
    ]);
  });

  it('accepts a bare LF as the end of a control line', () => {
    expect(parseWhole('PING\nSUB foo 1\n')).toEqual(['PING', 'SUB foo - 1']);
  });

  // parser_test.go TestParsePubArg: spaces and tabs anywhere between arguments.
  it.each([
    ['a 2', 'a', '-', 2],
    ['a 222', 'a', '-', 222],
    [' foo 22', 'foo', '-', 22],
    ['foo 22 ', 'foo', '-', 22],
    ['foo   22', 'foo', '-', 22],
    [' foo   22 ', 'foo', '-', 22],
    ['foo bar 22', 'foo', 'bar', 22],
    ['  foo   bar  22  ', 'foo', 'bar', 22],
    ['  foo   bar  2222  ', 'foo', 'bar', 2222],
    ['a\t2', 'a', '-', 2],
    ['\tfoo\t22\t', 'foo', '-', 22],
    ['foo\t\t\t22', 'foo', '-', 22],
    ['foo\tbar\t22', 'foo', 'bar', 22],
    ['\t \tfoo\t \t \tbar\t \t22\t \t', 'foo', 'bar', 22],
    ['\t \tfoo\t \t \t\t\t2222\t \t', 'foo', '-', 2222],
  ])('splits PUB arguments %j', (arg, subject, reply, size) => {
    const body = 'x'.repeat(size as number);
    expect(parseWhole(`PUB ${arg}\r\n${body}\r\n`)).toEqual([`PUB ${subject} ${reply} ${body}`]);
  });

  it('splits SUB and UNSUB arguments on tabs too', () => {
    expect(parseWhole('SUB\tfoo\t\tq\t7\r\nUNSUB\t7\t\t3\r\n')).toEqual(['SUB foo q 7', 'UNSUB 7 3']);
  });

  // parser_test.go TestShouldFail (client side; INFO and MSG are not client ops here).
  it.each([
    'xxx', 'Px', 'PIx', 'PINx', ' PING', 'POx', 'PONx', '+x', '+Ox', '-x', '-Ex', '-ERx', '-ERRx',
    'Cx', 'COx', 'CONx', 'CONNx', 'CONNEx', 'CONNECx', 'CONNECT \r\n', 'PUx', 'PUB foo\r\n', 'PUB  \r\n',
    'PUB foo bar       \r\n', 'PUB foo 2\r\nok \r\n', 'PUB foo 2\r\nok\r \n', 'Sx', 'SUx', 'SUB\r\n', 'SUB  \r\n',
    'SUB foo\r\n', 'SUB foo bar baz 22\r\n', 'Ux', 'UNx', 'UNSx', 'UNSUx', 'UNSUBx', 'UNSUBUNSUB 1\r\n', 'UNSUB_2\r\n',
    'UNSUB_UNSUB_UNSUB 2\r\n', 'UNSUB_\t2\r\n', 'UNSUB\r\n', 'UNSUB \r\n', 'UNSUB          \t       \r\n',
    'Ix', 'INFO {}\r\n', 'M', 'MSG foo 1 2\r\nok\r\n', 'HPUB foo 2\r\nok\r\n', 'HPUB foo 5 2\r\nhello\r\n',
    'UNSUB 1 x\r\n', 'PUB foo -1\r\n', 'PUB foo 2a\r\n',
  ])('refuses %j with Unknown Protocol Operation', (input) => {
    expect(natsError(() => parseWhole(input))).toBe('Unknown Protocol Operation');
  });

  it('refuses a payload over the limit before reading it (maxpayload_test.go)', () => {
    expect(natsError(() => parseWhole('PUB foo 1025\r\n', { ...limits, maxPayloadBytes: 1024 }))).toBe(
      'Maximum Payload Violation',
    );
    expect(natsError(() => parseWhole('PUB foo 4294967296\r\n'))).toBe('Maximum Payload Violation');
    expect(natsError(() => parseWhole('PUB foo 380571300000000\r\n'))).toBe('Maximum Payload Violation');
    expect(parseWhole('PUB foo 1024\r\n' + 'x'.repeat(1024) + '\r\n', { ...limits, maxPayloadBytes: 1024 })).toHaveLength(1);
  });

  it('refuses a control line over the limit, whole or split across chunks', () => {
    const small = { ...limits, maxControlLineBytes: 32 };
    const long = `SUB ${'a'.repeat(40)} 1\r\n`;
    expect(natsError(() => parseWhole(long, small))).toBe('Maximum Control Line Exceeded');
    const { handler } = recorder();
    const parser = new ClientParser(handler, small);
    expect(
      natsError(() => {
        for (const piece of [`SUB ${'a'.repeat(20)}`, 'a'.repeat(20)]) parser.parse(Buffer.from(piece));
      }),
    ).toBe('Maximum Control Line Exceeded');
    expect(parseWhole(`SUB ${'a'.repeat(24)} 1\r\n`, small)).toHaveLength(1);
  });

  it('emits the ops before a bad one, then stops (the connection will be closed)', () => {
    const { handler, events } = recorder();
    const parser = new ClientParser(handler, limits);
    expect(natsError(() => parser.parse(Buffer.from('PING\r\nSUB foo 1\r\nZZZ\r\nPING\r\n')))).toBe(
      'Unknown Protocol Operation',
    );
    expect(events).toEqual(['PING', 'SUB foo - 1']);
  });

  it('does nothing after halt()', () => {
    const { handler, events } = recorder();
    const parser = new ClientParser(handler, limits);
    parser.halt();
    parser.parse(Buffer.from('PING\r\n'));
    expect(events).toEqual([]);
  });

  // split_test.go TestSplitDanglingArgBuf / TestSplitBufferPubOp: a large payload split anywhere.
  it('reassembles a 100 KiB payload split into odd-sized chunks', () => {
    const body = Buffer.alloc(100 * 1024, 'z');
    const input = Buffer.concat([Buffer.from(`PUB big.one r.1 ${body.length}\r\n`), body, Buffer.from('\r\nPING\r\n')]);
    const cuts = [];
    for (let at = 7; at < input.length; at += 4093) cuts.push(at);
    const events = parseSplit(input, cuts);
    expect(events).toHaveLength(2);
    expect(events[0]).toBe(`PUB big.one r.1 ${body.toString('latin1')}`);
    expect(events[1]).toBe('PING');
  });
});
