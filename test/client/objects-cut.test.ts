// The client SDK's object download when the response is cut: by a real `loom serve` that finds a
// damaged chunk after it has sent its status line, or by the network. Neither may look like a
// whole download; the first is CORRUPT, the second UNAVAILABLE with the offset to resume from.

import { randomBytes } from 'node:crypto';
import { connect, type LoomClient } from '../../src/client';
import { LoomError, names } from '../../src/util';
import { startServe, stopServe, type ServeProcess } from '../support/cli';
import { damageOnDisk } from '../support/damage';
import { TcpProxy } from '../support/proxy';
import { drain } from '../support/streams';
import { makeTempDir, removeDir } from '../support/tmp';

const { chunkBytesDefault } = names;

/** Damages chunk `index` of `bytes` (stored with the default chunk size) wherever the node keeps it. */
function damageChunk(dir: string, bytes: Buffer, index: number): void {
  const at = index * chunkBytesDefault + 100;
  expect(damageOnDisk(dir, bytes.subarray(at, at + 64))).not.toEqual([]);
}

describe('the client SDK downloading an object whose response is cut', () => {
  let dir: string;
  let serve: ServeProcess;
  let client: LoomClient;

  beforeAll(async () => {
    dir = makeTempDir();
    serve = await startServe(dir);
    client = await connect({ servers: `nats://127.0.0.1:${serve.ports.nats}`, http: `http://127.0.0.1:${serve.ports.http}` });
  });
  afterAll(async () => {
    await client.close();
    await stopServe(serve);
    removeDir(dir);
  });

  it('downloads an undamaged object of several chunks whole', async () => {
    const bytes = randomBytes(3 * chunkBytesDefault);
    await client.objects.put('disk', 'sound', bytes);
    const { bytes: received, failure } = await drain(await client.objects.get('disk', 'sound'));
    expect(failure).toBeUndefined();
    expect(received.equals(bytes)).toBe(true);
  });

  it('rejects with CORRUPT before any byte when the first chunk is damaged', async () => {
    const bytes = randomBytes(3 * chunkBytesDefault);
    await client.objects.put('disk', 'damaged-first', bytes);
    damageChunk(dir, bytes, 0);
    // The node checks a response's first chunk before its status line: a 500 CORRUPT, no stream.
    await expect(client.objects.get('disk', 'damaged-first')).rejects.toMatchObject({ code: 'CORRUPT', details: { bucket: 'disk', name: 'damaged-first', chunk: 0 } });
  });

  it('delivers every byte before a damaged second chunk, then fails CORRUPT naming it', async () => {
    const bytes = randomBytes(3 * chunkBytesDefault);
    await client.objects.put('disk', 'damaged-second', bytes);
    damageChunk(dir, bytes, 1);
    const { bytes: received, failure } = await drain(await client.objects.get('disk', 'damaged-second'));
    expect(failure).toBeInstanceOf(LoomError);
    expect(failure).toMatchObject({ code: 'CORRUPT', details: { bucket: 'disk', name: 'damaged-second', chunk: 1 } });
    expect(received.equals(bytes.subarray(0, chunkBytesDefault))).toBe(true);
  });

  it('fails a download the node cuts at a damaged later chunk with CORRUPT naming it, after every byte before it and one more request', async () => {
    // 12 chunks, the 10th damaged: past the node's 1 MiB read-ahead (downloadBytesAheadMax), so the
    // node has sent its 200 and some bytes when it finds the damage, and can only cut the response.
    const bytes = randomBytes(12 * chunkBytesDefault);
    const proxy = await TcpProxy.start(serve.ports.http);
    const viaProxy = await connect({ servers: `nats://127.0.0.1:${serve.ports.nats}`, http: `http://127.0.0.1:${proxy.port}` });
    try {
      await viaProxy.objects.put('disk', 'damaged-later', bytes);
      damageChunk(dir, bytes, 9);

      const { bytes: received, failure } = await drain(await viaProxy.objects.get('disk', 'damaged-later'));
      expect(failure).toBeInstanceOf(LoomError);
      expect(failure).toMatchObject({ code: 'CORRUPT', details: { bucket: 'disk', name: 'damaged-later', chunk: 9 } });
      expect(received.equals(bytes.subarray(0, 9 * chunkBytesDefault))).toBe(true);
      // The GET, and one from the first byte it did not deliver, which the node answers CORRUPT.
      expect(proxy.gets).toBe(2);

      // A range that starts past the first bytes is cut the same way; one that ends before the damage is whole.
      const ranged = await drain(await viaProxy.objects.get('disk', 'damaged-later', { offset: 1000, length: 11 * chunkBytesDefault }));
      expect(ranged.failure).toMatchObject({ code: 'CORRUPT', details: { chunk: 9 } });
      expect(ranged.bytes.equals(bytes.subarray(1000, 9 * chunkBytesDefault))).toBe(true);
      expect(proxy.gets).toBe(4);
      const before = await drain(await viaProxy.objects.get('disk', 'damaged-later', { offset: 10, length: 9 * chunkBytesDefault - 10 }));
      expect(before.failure).toBeUndefined();
      expect(before.bytes.equals(bytes.subarray(10, 9 * chunkBytesDefault))).toBe(true);
      expect(proxy.gets).toBe(5);
    } finally {
      await viaProxy.close();
      await proxy.close();
    }
  });

  it('fails a download the network cuts with UNAVAILABLE naming the offset to resume from, which resumes it', async () => {
    const proxy = await TcpProxy.start(serve.ports.http);
    const viaProxy = await connect({ servers: `nats://127.0.0.1:${serve.ports.nats}`, http: `http://127.0.0.1:${proxy.port}` });
    try {
      const bytes = randomBytes(3 * chunkBytesDefault + 5);
      await viaProxy.objects.put('net', 'song', bytes);
      proxy.cutAfter(chunkBytesDefault + 12_345);
      const getsBefore = proxy.gets;
      const { bytes: received, failure } = await drain(await viaProxy.objects.get('net', 'song'));
      expect(failure).toBeInstanceOf(LoomError);
      expect(failure).toMatchObject({ code: 'UNAVAILABLE', details: { bucket: 'net', name: 'song', offset: received.length } });
      // The GET, and one from the first byte it did not deliver, which the node answers with bytes.
      expect(proxy.gets - getsBefore).toBe(2);
      expect(received.length).toBeGreaterThan(0);
      expect(received.length).toBeLessThan(bytes.length);
      expect(received.equals(bytes.subarray(0, received.length))).toBe(true);

      const rest = await drain(await viaProxy.objects.get('net', 'song', { offset: received.length }));
      expect(rest.failure).toBeUndefined();
      expect(Buffer.concat([received, rest.bytes]).equals(bytes)).toBe(true);
    } finally {
      await viaProxy.close();
      await proxy.close();
    }
  });
});
