// The peer transport in one process: frames survive any split, peers with the secret exchange
// messages, a peer with a wrong secret is rejected and logged, and garbage never crashes a node.

import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import * as net from 'node:net';
import { Packr } from 'msgpackr';
import pino from 'pino';
import { emptyMessage, type Message } from '../../src/eventlog/raft';
import { FrameParser, PeerTransport, encodeFrame, validateMessage, type PeerTls } from '../../src/replication';
import { seededRandom } from '../../src/eventlog/raft';
import { freePort } from '../support/ports';

const secret = 'correct-horse-battery';

function capturingLogger(): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

const fixture = (name: string): Buffer => readFileSync(path.join(__dirname, '../fixtures/tls', name));
const trusted: PeerTls = { cert: fixture('node.pem'), key: fixture('node-key.pem'), ca: fixture('ca.pem') };
const stranger: PeerTls = { cert: fixture('other.pem'), key: fixture('other-key.pem'), ca: fixture('other-ca.pem') };

async function transportPair(secretB = secret, tls: { a?: PeerTls; b?: PeerTls } = {}) {
  const portA = await freePort();
  const portB = await freePort();
  const logA = capturingLogger();
  const peers = [{ id: 1, host: '127.0.0.1', port: portA }, { id: 2, host: '127.0.0.1', port: portB }];
  const a = new PeerTransport({ nodeId: 1, host: '127.0.0.1', port: portA, peers, secret, logger: logA.logger, tls: tls.a });
  const b = new PeerTransport({ nodeId: 2, host: '127.0.0.1', port: portB, peers, secret: secretB, logger: pino({ level: 'silent' }), tls: tls.b });
  await a.listen();
  await b.listen();
  return { a, b, portA, logA };
}


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function heartbeat(from: number, to: number, term: number): Message {
  return { ...emptyMessage('heartbeat', from, to, term), commit: 3, context: 'x' };
}

describe('frames', () => {
  it('decodes the same frames whatever the split of the bytes', () => {
    const m: Message = { ...heartbeat(1, 2, 5), type: 'app', entries: [{ index: 4, term: 5, type: 'kv.put', data: Buffer.from('abc'), ts: 7 }] };
    const bytes = Buffer.concat([encodeFrame({ t: 'messages', m: [m] }), encodeFrame({ t: 'info', info: { nats: '127.0.0.1:1' } })]);
    for (let split = 0; split <= bytes.length; split++) {
      const parser = new FrameParser(1 << 20);
      const frames = [...parser.push(bytes.subarray(0, split)), ...parser.push(bytes.subarray(split))];
      expect(frames).toHaveLength(2);
      const got = validateMessage((frames[0] as { m: unknown[] }).m[0], 1, 2);
      expect(got.entries[0].index).toBe(4);
      expect(Buffer.from(got.entries[0].data).toString()).toBe('abc');
    }
  });

  it('refuses a frame longer than the limit before buffering it', () => {
    const parser = new FrameParser(100);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(101);
    expect(() => parser.push(head)).toThrow(/limit 100/);
  });

  it('refuses a message that claims another sender or has a malformed field', () => {
    expect(() => validateMessage(heartbeat(3, 2, 1), 1, 2)).toThrow(/claims to come from 3/);
    expect(() => validateMessage({ ...heartbeat(1, 2, 1), term: -1 }, 1, 2)).toThrow(/term/);
    expect(() => validateMessage({ ...heartbeat(1, 2, 1), type: 'nope' }, 1, 2)).toThrow(/type/);
  });
});

describe('peer transport', () => {
  it('delivers messages between peers that share the secret, and their addresses', async () => {
    const { a, b, portA } = await transportPair();
    try {
      const got: Message[] = [];
      b.onMessages((from, ms) => got.push(...ms.filter(() => from === 1)));
      a.setLocalInfo({ nats: '127.0.0.1:4222' });
      const deadline = Date.now() + 5000;
      while (got.length === 0 && Date.now() < deadline) {
        a.send([heartbeat(1, 2, 1)]);
        await sleep(50);
      }
      expect(got[0].type).toBe('heartbeat');
      expect(got[0].commit).toBe(3);
      while (b.infoOf(1)?.nats === undefined && Date.now() < deadline) await sleep(20);
      expect(b.infoOf(1)).toEqual({ nats: '127.0.0.1:4222', raft: `127.0.0.1:${portA}` });
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('tells the raft address of a peer it does not dial, as that peer announces it', async () => {
    const portA = await freePort();
    const portC = await freePort();
    // c knows a; a was started without c (c joined while a was down).
    const a = new PeerTransport({ nodeId: 1, host: '127.0.0.1', port: portA, peers: [{ id: 1, host: '127.0.0.1', port: portA }], secret, logger: pino({ level: 'silent' }) });
    const c = new PeerTransport({ nodeId: 3, host: '0.0.0.0', port: portC, peers: [{ id: 1, host: '127.0.0.1', port: portA }], secret, logger: pino({ level: 'silent' }) });
    const announced: Array<{ id: number; host: string; port: number }> = [];
    a.onRaftAddress((peer) => announced.push(peer));
    try {
      await a.listen();
      await c.listen();
      const deadline = Date.now() + 5000;
      while (announced.length === 0 && Date.now() < deadline) await sleep(20);
      // c listens on every interface: a takes the host c's connection came from.
      expect(announced[0]).toEqual({ id: 3, host: '127.0.0.1', port: portC });
      // Once a dials c, c's announcements no longer come up.
      a.addPeer(announced[0]);
      c.setLocalInfo({ nats: '127.0.0.1:4222' });
      while (a.infoOf(3)?.nats === undefined && Date.now() < deadline) await sleep(20);
      expect(announced).toHaveLength(1);
    } finally {
      await a.close();
      await c.close();
    }
  });

  it('rejects and logs a peer with a wrong cluster secret, acting on none of its messages', async () => {
    const { a, b, logA } = await transportPair('wrong-secret-here');
    try {
      const got: Message[] = [];
      a.onMessages((_from, ms) => got.push(...ms));
      for (let i = 0; i < 20; i++) {
        b.send([heartbeat(2, 1, 1)]);
        await sleep(50);
      }
      expect(got).toEqual([]);
      expect(a.rejectedPeers).toBeGreaterThan(0);
      expect(logA.lines.join('')).toMatch(/wrong cluster secret/);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('survives fuzzed bytes and fuzzed frames on the raft port, closing only those connections', async () => {
    const { a, b, portA } = await transportPair();
    const got: Message[] = [];
    a.onMessages((_from, ms) => got.push(...ms));
    const random = seededRandom(42);
    const packr = new Packr({ useRecords: false });
    const junk = (): unknown => {
      const pick = Math.floor(random() * 8);
      if (pick === 0) return { t: 'messages', m: [heartbeat(2, 1, 1)] }; // before any handshake
      if (pick === 1) return { t: 'hello', id: 2, mac: Buffer.alloc(32), info: {} };
      if (pick === 2) return { t: 'challenge', nonce: Buffer.alloc(3) };
      if (pick === 3) return [1, 2, { t: 'x' }];
      if (pick === 4) return { t: 'hello', id: -5, mac: 'x' };
      if (pick === 5) return null;
      if (pick === 6) return { t: 'challenge', nonce: Buffer.alloc(32) };
      return { t: 'info', info: { nats: 7 } };
    };
    try {
      for (let round = 0; round < 60; round++) {
        const socket = net.connect({ host: '127.0.0.1', port: portA });
        socket.on('error', () => undefined);
        await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
        const parts: Buffer[] = [];
        for (let i = 0; i < 3; i++) {
          if (random() < 0.5) {
            parts.push(Buffer.from(Array.from({ length: Math.floor(random() * 64) + 1 }, () => Math.floor(random() * 256))));
          } else {
            const body = packr.pack(junk());
            const head = Buffer.alloc(4);
            head.writeUInt32BE(random() < 0.1 ? 0xffffffff : body.length);
            parts.push(head, body);
          }
        }
        socket.write(Buffer.concat(parts));
        socket.end();
        await sleep(5);
      }
      expect(got).toEqual([]);
      // The legitimate peer still gets through.
      const deadline = Date.now() + 5000;
      while (got.length === 0 && Date.now() < deadline) {
        b.send([heartbeat(2, 1, 1)]);
        await sleep(50);
      }
      expect(got.length).toBeGreaterThan(0);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('peer transport over mutual TLS', () => {
  /** Sends heartbeats from b to a for a while; returns what a received. */
  async function heartbeatsReceived(a: PeerTransport, b: PeerTransport, ms: number): Promise<Message[]> {
    const got: Message[] = [];
    a.onMessages((_from, messages) => got.push(...messages));
    const deadline = Date.now() + ms;
    while (got.length === 0 && Date.now() < deadline) {
      b.send([heartbeat(2, 1, 1)]);
      await sleep(50);
    }
    return got;
  }

  it('delivers messages between peers whose certificates the shared CA signed', async () => {
    const { a, b } = await transportPair(secret, { a: trusted, b: trusted });
    try {
      const got = await heartbeatsReceived(a, b, 5000);
      expect(got[0]).toMatchObject({ type: 'heartbeat', from: 2, commit: 3 });
      expect(a.rejectedPeers).toBe(0);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it.each([
    ['a certificate another CA signed', stranger],
    ['plain TCP', undefined],
  ])('refuses a peer with %s, acting on none of its messages', async (_what, tlsB) => {
    const { a, b, logA } = await transportPair(secret, { a: trusted, b: tlsB });
    try {
      expect(await heartbeatsReceived(a, b, 1000)).toEqual([]);
      expect(a.rejectedPeers).toBeGreaterThan(0);
      expect(logA.lines.join('')).toMatch(/TLS handshake failed/);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
