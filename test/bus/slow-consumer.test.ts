// A subscriber that stops reading is cut off at pendingBytesMax with 'Slow Consumer', while the
// publisher and the other subscribers go on, and the server's memory stays bounded (measured).

import * as net from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Bus, NatsServer } from '../../src/bus';
import { RawClient } from './support/raw';

setFlagsFromString('--expose_gc');
const gc = runInNewContext('gc') as () => void;

function bufferedBytes(): number {
  const m = process.memoryUsage();
  return m.arrayBuffers + m.heapUsed;
}

/** Connects, subscribes, and counts the bytes that arrive without keeping them. */
async function countingSubscriber(port: number, subject: string): Promise<{ bytes(): number; socket: net.Socket }> {
  const socket = net.connect(port, '127.0.0.1');
  let bytes = 0;
  let sawInfo = false;
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.on('error', () => undefined);
  socket.on('data', (d: Buffer) => {
    if (!sawInfo) {
      const end = d.indexOf('\r\n');
      sawInfo = true;
      d = d.subarray(end + 2);
    }
    bytes += d.length;
  });
  socket.write(`CONNECT {}\r\nSUB ${subject} 1\r\n`);
  return { bytes: () => bytes, socket };
}

describe('slow consumer', () => {
  it('cuts off only the subscriber that stopped reading, and memory stays bounded', async () => {
    const pendingBytesMax = 2 * 1024 * 1024;
    const bus = new Bus();
    const server = new NatsServer(bus, { host: '127.0.0.1', port: 0, pendingBytesMax });
    const { port } = await server.listen();

    const fast = await countingSubscriber(port, 'flood');
    const slow = await countingSubscriber(port, 'flood');
    const publisher = await RawClient.ready(port);
    await publisher.sync();
    while (bus.subscriptionCount < 2) await new Promise((r) => setTimeout(r, 5));
    slow.socket.pause(); // stops reading: the kernel buffers fill, then the server's

    gc();
    const baseline = bufferedBytes();
    // Sampled after a full GC, so the figure is what the server holds, not garbage not yet collected.
    let peak = 0;

    const payload = 'x'.repeat(1000);
    const batch = `PUB flood ${payload.length}\r\n${payload}\r\n`.repeat(1000);
    const batches = 100; // 100 MB through the server, 50 times the slow consumer's limit
    // The reason is queued behind what the kernel already holds, so the slow one only sees it if it
    // reads again before the server's linger runs out: it starts reading as soon as it is cut off.
    let tail = '';
    const slowClosed = new Promise((r) => slow.socket.once('close', r));
    for (let i = 0; i < batches; i++) {
      publisher.send(batch);
      await publisher.sync();
      if (bus.subscriptionCount === 1 && slow.socket.isPaused()) {
        slow.socket.on('data', (d: Buffer) => (tail = (tail + d.toString('latin1')).slice(-100)));
        slow.socket.resume();
      }
      if (i % 5 === 0) {
        gc();
        peak = Math.max(peak, bufferedBytes() - baseline);
      }
    }
    const perMessage = `MSG flood 1 ${payload.length}\r\n${payload}\r\n`.length;
    const deadline = Date.now() + 20000;
    while (fast.bytes() < batches * 1000 * perMessage && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    gc();
    peak = Math.max(peak, bufferedBytes() - baseline);

    expect(fast.bytes()).toBe(batches * 1000 * perMessage); // every message reached the reader
    expect(publisher.closed).toBe(false);
    expect(await publisher.sync()).toBe('');
    expect(server.connectionCount).toBe(2); // the slow one is gone
    expect(bus.subscriptionCount).toBe(1);
    // Bounded: a few times pendingBytesMax (the slow one's buffer, the fast one's, read chunks), not 100 MB.
    expect(peak).toBeLessThan(8 * pendingBytesMax);

    // What the slow one finally reads ends with the reason.
    await slowClosed;
    expect(tail).toMatch(/-ERR 'Slow Consumer'\r\n$/);

    publisher.close();
    fast.socket.destroy();
    await server.close();
    await bus.close();
  });
});
