// The client SDK's objects API against an embedded node with its doors open: bytes streamed over
// HTTP both ways (ranges, sha256 checks), info/list/delete over NATS, errors as typed LoomErrors.

import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { connect, type LoomClient } from '../../src/client';
import { openNode, type EmbeddedNode } from '../../src/node';
import { LoomError } from '../../src/util';

async function collect(stream: Readable): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for await (const piece of stream) pieces.push(piece as Buffer);
  return Buffer.concat(pieces);
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'resolved';
  } catch (err) {
    return err instanceof LoomError ? err.code : String(err);
  }
}

describe('the client SDK objects API', () => {
  let node: EmbeddedNode;
  let client: LoomClient;

  beforeAll(async () => {
    node = await openNode({ doors: true, sync: 'none' });
    client = await connect({ servers: `nats://127.0.0.1:${node.ports.nats}`, http: `http://127.0.0.1:${node.ports.http}` });
  });
  afterAll(async () => {
    await client.close();
    await node.close();
  });

  it('puts and deletes conditionally (expectRev; 0: only if absent): CONFLICT and nothing changes', async () => {
    const created = await client.objects.put('cond', 'doc', 'one', { expectRev: 0 });
    await expect(client.objects.put('cond', 'doc', 'two', { expectRev: 0 })).rejects.toMatchObject({ code: 'CONFLICT', details: { currentRev: created.rev } });
    await expect(client.objects.delete('cond', 'doc', { expectRev: created.rev + 1000 })).rejects.toMatchObject({ code: 'CONFLICT' });
    await expect(client.objects.put('cond', 'doc', 'two', { expectRev: -1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'expectRev' } });
    expect((await client.objects.info('cond', 'doc')).rev).toBe(created.rev);
    const replaced = await client.objects.put('cond', 'doc', 'two', { expectRev: created.rev });
    expect(await client.objects.delete('cond', 'doc', { expectRev: replaced.rev })).toMatchObject({ deleted: true });
  });

  it('puts a stream and gets it back whole and by range, with info, list and delete over NATS', async () => {
    const bytes = randomBytes(3 * 1024 * 1024 + 123);
    const source = Readable.from((function* pieces() {
      for (let at = 0; at < bytes.length; at += 100_000) yield bytes.subarray(at, at + 100_000);
    })());
    const info = await client.objects.put('photos', 'trips/2026/cat.jpg', source, { contentType: 'image/jpeg', metadata: { camera: 'x100' } });
    expect(info).toMatchObject({ bucket: 'photos', name: 'trips/2026/cat.jpg', size: bytes.length, contentType: 'image/jpeg', metadata: { camera: 'x100' } });
    expect(info.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));

    expect((await collect(await client.objects.get('photos', 'trips/2026/cat.jpg'))).equals(bytes)).toBe(true);
    const range = await collect(await client.objects.get('photos', 'trips/2026/cat.jpg', { offset: 300_000, length: 500_000 }));
    expect(range.equals(bytes.subarray(300_000, 800_000))).toBe(true);
    const tail = await collect(await client.objects.get('photos', 'trips/2026/cat.jpg', { offset: bytes.length - 10 }));
    expect(tail.equals(bytes.subarray(bytes.length - 10))).toBe(true);

    expect(await client.objects.info('photos', 'trips/2026/cat.jpg', { atLeast: info.rev })).toEqual(info);
    await client.objects.put('photos', 'dog.jpg', Buffer.from('woof'));
    const page = await client.objects.list('photos', { limit: 1 });
    expect(page.items.map((i) => i.name)).toEqual(['dog.jpg']);
    expect((await client.objects.list('photos', { cursor: page.cursor })).items.map((i) => i.name)).toEqual(['trips/2026/cat.jpg']);

    expect(await client.objects.delete('photos', 'trips/2026/cat.jpg')).toMatchObject({ deleted: true });
    expect(await codeOf(client.objects.info('photos', 'trips/2026/cat.jpg'))).toBe('NOT_FOUND');
    expect(await codeOf(client.objects.get('photos', 'trips/2026/cat.jpg'))).toBe('NOT_FOUND');
  });

  it('rejects an upload whose sha256 is not the one given, and nothing becomes visible', async () => {
    const code = await codeOf(client.objects.put('photos', 'bad', 'some bytes', { sha256: '0'.repeat(64) }));
    expect(code).toBe('INVALID_ARGUMENT');
    expect(await codeOf(client.objects.info('photos', 'bad'))).toBe('NOT_FOUND');
  });

  it('puts, gets, stats, lists and deletes names with dot segments and URL syntax under their exact names', async () => {
    const tricky = ['x/../y', 'x/./y', '..', '.', 'a/..', './a', '%2e%2e', '.%2e/z', 'q?x=1&y', 'h#frag', 'with space', '100%', 'ünï/日本語', 'dir/', 'a//b', '...'];
    await client.objects.put('dots', 'y', 'plain y');
    await client.objects.put('dots', 'x/y', 'plain x/y');
    for (const name of tricky) {
      const info = await client.objects.put('dots', name, `bytes of ${name}`);
      expect(info.name).toBe(name);
    }
    for (const name of tricky) {
      expect((await collect(await client.objects.get('dots', name))).toString()).toBe(`bytes of ${name}`);
      expect((await collect(await client.objects.get('dots', name, { offset: 0, length: 5 }))).toString()).toBe('bytes');
      expect(await client.objects.info('dots', name)).toMatchObject({ name, size: Buffer.byteLength(`bytes of ${name}`) });
    }
    // `x/../y` and `x/./y` did not land on `y` and `x/y`.
    expect((await collect(await client.objects.get('dots', 'y'))).toString()).toBe('plain y');
    expect((await collect(await client.objects.get('dots', 'x/y'))).toString()).toBe('plain x/y');
    const listed = (await client.objects.list('dots', { limit: 1000 })).items.map((i) => i.name);
    expect(listed.sort()).toEqual([...tricky, 'y', 'x/y'].sort());

    for (const name of tricky) expect(await client.objects.delete('dots', name)).toMatchObject({ deleted: true });
    expect((await client.objects.list('dots')).items.map((i) => i.name).sort()).toEqual(['x/y', 'y']);
  });

  it('pages through a listing too big for one NATS reply by following cursors', async () => {
    // 160 objects with 8 KB of metadata: a page of 200 would be over 1 MiB as JSON.
    const expected: string[] = [];
    for (let i = 0; i < 160; i++) {
      const name = `o${String(i).padStart(3, '0')}`;
      await node.db.objects.put('wide', name, Buffer.from(name), { metadata: { note: 'm'.repeat(8_000) } });
      expected.push(name);
    }
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await client.objects.list('wide', cursor === undefined ? { limit: 200 } : { limit: 200, cursor });
      seen.push(...page.items.map((i) => i.name));
      cursor = page.cursor;
      pages++;
    } while (cursor !== undefined);
    expect(seen).toEqual(expected);
    expect(pages).toBeGreaterThan(1);
  });

  it('reads nothing for length 0, as the node does, once the object exists and the offset lies within it', async () => {
    await client.objects.put('zero', 'ten.bin', Buffer.from('0123456789'));
    for (const offset of [undefined, 0, 3, 10]) {
      const stream = await client.objects.get('zero', 'ten.bin', { offset, length: 0 });
      expect((await collect(stream)).length).toBe(0);
    }
    expect(await codeOf(client.objects.get('zero', 'missing.bin', { length: 0 }))).toBe('NOT_FOUND');
    await expect(client.objects.get('zero', 'ten.bin', { offset: 11, length: 0 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'offset', size: 10 } });
    for (const length of [-1, 1.5, Number.NaN]) {
      await expect(client.objects.get('zero', 'ten.bin', { length })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'length' } });
    }
  });

  it('reads from the very end as the node does: nothing, for an empty object too, and INVALID_ARGUMENT past it', async () => {
    await client.objects.put('zero', 'empty.bin', Buffer.alloc(0));
    for (const options of [{ offset: 0 }, { length: 10 }, { offset: 0, length: 10 }]) {
      expect((await collect(await client.objects.get('zero', 'empty.bin', options))).length).toBe(0);
    }
    await client.objects.put('zero', 'ten-more.bin', Buffer.from('0123456789'));
    expect((await collect(await client.objects.get('zero', 'ten-more.bin', { offset: 10 }))).length).toBe(0);
    expect((await collect(await client.objects.get('zero', 'ten-more.bin', { offset: 8, length: 10 }))).toString()).toBe('89');
    await expect(client.objects.get('zero', 'ten-more.bin', { offset: 11 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'offset', size: 10 } });
    await expect(client.objects.get('zero', 'empty.bin', { offset: 1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'offset', size: 0 } });
  });

  it("fails a put whose own source fails with the source's error, and keeps the object it would have replaced", async () => {
    await client.objects.put('sources', 'kept.txt', 'original');
    const broken = new Error('the disk the file was on went away');
    async function* failing(): AsyncGenerator<Buffer> {
      yield Buffer.alloc(100_000, 1);
      await new Promise((resolve) => setTimeout(resolve, 20));
      throw broken;
    }
    await expect(client.objects.put('sources', 'kept.txt', failing())).rejects.toBe(broken);
    expect((await collect(await client.objects.get('sources', 'kept.txt'))).toString()).toBe('original');
  });

  it('checks names before anything is sent, and asks for the HTTP address when it has none', async () => {
    expect(await codeOf(client.objects.put('bad bucket', 'x', 'y'))).toBe('INVALID_ARGUMENT');
    const natsOnly = await connect({ servers: `nats://127.0.0.1:${node.ports.nats}` });
    try {
      expect(await codeOf(natsOnly.objects.get('photos', 'dog.jpg'))).toBe('INVALID_ARGUMENT');
      expect((await natsOnly.objects.info('photos', 'dog.jpg')).size).toBe(4);
    } finally {
      await natsOnly.close();
    }
  });
});
