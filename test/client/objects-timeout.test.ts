// The client SDK's object transfers when the network goes silent: a proxy in front of a real node's
// HTTP door stops forwarding (a black hole) or trickles. A stall fails TIMEOUT within the client's
// timeoutMs, naming where it stuck; a transfer that keeps moving is never timed out, however long.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { Readable } from 'node:stream';
import { connect, type LoomClient } from '../../src/client';
import { openNode, type EmbeddedNode } from '../../src/node';
import { LoomError } from '../../src/util';
import { TcpProxy } from '../support/proxy';
import { drain } from '../support/streams';

const timeoutMs = 400;

/**
 * A process that listens with a backlog of one and then blocks its event loop (asleep, not
 * spinning) so it never accepts: prints its port, then holds for a minute.
 */
const silentListener = `
const server = require('node:net').createServer();
server.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
  // A write to a pipe is synchronous on Linux: the port is out before the loop blocks.
  process.stdout.write(String(server.address().port));
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000);
});
`;

/** The error `promise` rejects with, or 'resolved'. */
async function failureOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
    return 'resolved';
  } catch (err) {
    return err;
  }
}

/** A source that never ends by itself: 64 KiB pieces, as fast as they are taken, up to 256 MiB. */
function endlessSource(): Readable {
  const piece = randomBytes(64 * 1024);
  let left = 4096;
  return new Readable({
    read() {
      this.push(left-- > 0 ? piece : null);
    },
  });
}

describe('the client SDK transferring objects over a network that stalls', () => {
  let node: EmbeddedNode;
  let direct: LoomClient;
  let proxy: TcpProxy;
  let client: LoomClient;

  beforeAll(async () => {
    node = await openNode({ doors: true, sync: 'none' });
    direct = await connect({ servers: `nats://127.0.0.1:${node.ports.nats}`, http: `http://127.0.0.1:${node.ports.http}` });
  });
  beforeEach(async () => {
    const httpPort = node.ports.http;
    if (httpPort === undefined) throw new Error('the node opened no HTTP door');
    proxy = await TcpProxy.start(httpPort);
    client = await connect({ servers: `nats://127.0.0.1:${node.ports.nats}`, http: `http://127.0.0.1:${proxy.port}`, timeoutMs });
  });
  afterEach(async () => {
    await client.close();
    await proxy.close();
  });
  afterAll(async () => {
    await direct.close();
    await node.close();
  });

  it('fails a get whose response never starts with TIMEOUT in the response phase, within about timeoutMs', async () => {
    await direct.objects.put('stall', 'silent', randomBytes(1000));
    proxy.set('down', { kind: 'stall', bytes: 0 });
    const started = Date.now();
    const failure = await failureOf(client.objects.get('stall', 'silent'));
    expect(failure).toBeInstanceOf(LoomError);
    expect(failure).toMatchObject({ code: 'TIMEOUT', details: { phase: 'response', timeoutMs } });
    expect(Date.now() - started).toBeLessThan(timeoutMs + 2000);
  });

  it('fails a get that stalls mid-body with TIMEOUT naming the first byte not delivered, from which it resumes', async () => {
    const bytes = randomBytes(3 * 1024 * 1024);
    await direct.objects.put('stall', 'half', bytes);
    proxy.set('down', { kind: 'stall', bytes: 1024 * 1024 + 777 });
    const { bytes: received, failure } = await drain(await client.objects.get('stall', 'half'));
    expect(failure).toBeInstanceOf(LoomError);
    expect(failure).toMatchObject({ code: 'TIMEOUT', details: { phase: 'download', bucket: 'stall', name: 'half', offset: received.length } });
    expect(received.length).toBeGreaterThan(0);
    expect(received.length).toBeLessThan(bytes.length);
    expect(received.equals(bytes.subarray(0, received.length))).toBe(true);

    proxy.set('down', undefined);
    const rest = await drain(await client.objects.get('stall', 'half', { offset: received.length }));
    expect(rest.failure).toBeUndefined();
    expect(Buffer.concat([received, rest.bytes]).equals(bytes)).toBe(true);
  });

  it('fails a put that stalls with TIMEOUT, destroys the source, and commits nothing', async () => {
    proxy.set('up', { kind: 'stall', bytes: 1024 * 1024 });
    const source = endlessSource();
    const failure = await failureOf(client.objects.put('stall', 'upload', source));
    expect(failure).toBeInstanceOf(LoomError);
    expect(failure).toMatchObject({ code: 'TIMEOUT', details: { phase: 'upload', timeoutMs } });
    expect(source.destroyed).toBe(true);

    // The black hole's connection to the node dies too: the node sees an upload cut short.
    await proxy.close();
    await expect(direct.objects.info('stall', 'upload')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    // The node is still whole: the same name uploads directly.
    expect(await direct.objects.put('stall', 'upload', 'after')).toMatchObject({ size: 5 });
  });

  it('downloads an object that trickles for longer than timeoutMs in all, since bytes keep moving', async () => {
    const bytes = randomBytes(256 * 1024);
    await direct.objects.put('stall', 'slow', bytes);
    proxy.set('down', { kind: 'trickle', bytes: 16 * 1024, everyMs: 50 });
    const started = Date.now();
    const { bytes: received, failure } = await drain(await client.objects.get('stall', 'slow'));
    expect(failure).toBeUndefined();
    expect(received.equals(bytes)).toBe(true);
    expect(Date.now() - started).toBeGreaterThan(2 * timeoutMs);
  });

  it('does not time out a put whose source pauses for longer than timeoutMs, since nothing waits on the network', async () => {
    const pause = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 3 * timeoutMs));
    async function* slowly(): AsyncGenerator<Buffer> {
      yield Buffer.from('first ');
      await pause();
      yield Buffer.from('second');
    }
    expect(await client.objects.put('stall', 'slow-source', slowly())).toMatchObject({ size: 12 });
    const { bytes } = await drain(await client.objects.get('stall', 'slow-source'));
    expect(bytes.toString()).toBe('first second');
  });

  it('does not time out a download whose consumer stops reading for longer than timeoutMs', async () => {
    const bytes = randomBytes(2 * 1024 * 1024);
    await direct.objects.put('stall', 'patient', bytes);
    const stream = await client.objects.get('stall', 'patient');
    const pieces: Buffer[] = [];
    for await (const piece of stream) {
      pieces.push(piece as Buffer);
      if (pieces.length === 1) await new Promise((resolve) => setTimeout(resolve, 3 * timeoutMs));
    }
    expect(Buffer.concat(pieces).equals(bytes)).toBe(true);
  });

  it('fails a transfer whose connection is never accepted with TIMEOUT in the connect phase, within about timeoutMs', async () => {
    // A listener whose process never accepts: once connections fill its accept queue, the kernel
    // drops every later SYN, as for a black-holed host.
    const silent = spawn(process.execPath, ['-e', silentListener], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const port = Number(await new Promise<string>((resolve) => silent.stdout.once('data', (d: Buffer) => resolve(d.toString()))));
      // Connections that fill the queue (Linux takes backlog + 1), until one is left hanging.
      const fillers: net.Socket[] = [];
      for (let connected = true; connected && fillers.length < 8; ) {
        const filler = net.connect(port, '127.0.0.1');
        filler.on('error', () => undefined);
        fillers.push(filler);
        connected = await new Promise<boolean>((resolve) => {
          filler.once('connect', () => resolve(true));
          setTimeout(() => resolve(false), 300);
        });
      }
      expect(fillers[fillers.length - 1].connecting).toBe(true);
      const unreachable = await connect({ servers: `nats://127.0.0.1:${node.ports.nats}`, http: `http://127.0.0.1:${port}`, timeoutMs });
      try {
        const started = Date.now();
        expect(await failureOf(unreachable.objects.get('stall', 'anything'))).toMatchObject({ code: 'TIMEOUT', details: { phase: 'connect', timeoutMs } });
        expect(await failureOf(unreachable.objects.put('stall', 'anything', Buffer.from('x')))).toMatchObject({ code: 'TIMEOUT', details: { phase: 'connect', timeoutMs } });
        expect(Date.now() - started).toBeLessThan(2 * timeoutMs + 2000);
      } finally {
        for (const filler of fillers) filler.destroy();
        await unreachable.close();
      }
    } finally {
      silent.kill('SIGKILL');
    }
  });
});

