import { connect, type NatsConnection } from 'nats';
import { openNode, type EmbeddedNode } from '../../src';
import { makeTempDir, removeDir } from '../support/tmp';

describe('objects over the NATS door', () => {
  let dir: string;
  let node: EmbeddedNode;
  let nc: NatsConnection;

  beforeAll(async () => {
    dir = makeTempDir();
    node = await openNode({ data: dir, doors: true, sync: 'none' });
    nc = await connect({ port: node.ports.nats });
  });
  afterAll(async () => {
    await nc.close();
    await node.close();
    removeDir(dir);
  });

  const call = async (subject: string, body: unknown): Promise<{ error?: string; json: Record<string, unknown> }> => {
    const reply = await nc.request(subject, JSON.stringify(body), { timeout: 5000 });
    return { error: reply.headers?.get('Loom-Error') || undefined, json: JSON.parse(reply.string()) as Record<string, unknown> };
  };

  it('deletes only at the expected rev given in the payload', async () => {
    const info = await node.db.objects.put('pics', 'dog.png', Buffer.from('woof'));
    expect((await call('$LOOM.API.OBJ.DEL.pics', { name: 'dog.png', expectRev: info.rev + 1 })).error).toBe('CONFLICT');
    expect((await call('$LOOM.API.OBJ.DEL.pics', { name: 'dog.png', expectRev: 'x' })).error).toBe('INVALID_ARGUMENT');
    expect((await call('$LOOM.API.OBJ.INFO.pics', { name: 'dog.png' })).json).toMatchObject({ rev: info.rev });
    expect((await call('$LOOM.API.OBJ.DEL.pics', { name: 'dog.png', expectRev: info.rev })).json).toMatchObject({ deleted: true });
  });

  it('answers OBJ.INFO, OBJ.LIST and OBJ.DEL and publishes $OBJ changes', async () => {
    const seen: Array<{ subject: string; op?: string; info: Record<string, unknown> }> = [];
    const sub = nc.subscribe('$OBJ.pics.>', {
      callback: (_err, msg) => seen.push({ subject: msg.subject, op: msg.headers?.get('Loom-Op'), info: JSON.parse(msg.string()) as Record<string, unknown> }),
    });
    await nc.flush();
    const info = await node.db.objects.put('pics', 'cat.png', Buffer.from('meow'), { contentType: 'image/png' });
    expect((await call('$LOOM.API.OBJ.INFO.pics', { name: 'cat.png' })).json).toMatchObject({ name: 'cat.png', size: 4, sha256: info.sha256, contentType: 'image/png' });
    expect((await call('$LOOM.API.OBJ.LIST.pics', { prefix: 'c' })).json).toMatchObject({ items: [{ name: 'cat.png' }] });
    expect((await call('$LOOM.API.OBJ.DEL.pics', { name: 'cat.png' })).json).toMatchObject({ deleted: true });
    expect((await call('$LOOM.API.OBJ.INFO.pics', { name: 'cat.png' })).error).toBe('NOT_FOUND');
    expect((await call('$LOOM.API.OBJ.INFO.pics', {})).error).toBe('INVALID_ARGUMENT');
    await nc.flush();
    await new Promise((r) => setTimeout(r, 100));
    sub.unsubscribe();
    const token = Buffer.from('cat.png').toString('base64url');
    expect(seen.map((s) => [s.subject, s.op])).toEqual([
      [`$OBJ.pics.${token}`, 'PUT'],
      [`$OBJ.pics.${token}`, 'DEL'],
    ]);
    expect(seen[0].info).toMatchObject({ bucket: 'pics', name: 'cat.png', size: 4, sha256: info.sha256 });
  });

  /** Follows cursors from the first page to the last; every reply must fit in one message. */
  const listAll = async (subject: string, body: Record<string, unknown>, nameOf: (item: Record<string, unknown>) => string): Promise<{ names: string[]; pages: number }> => {
    const names: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const reply = await call(subject, cursor === undefined ? body : { ...body, cursor });
      expect(reply.error).toBeUndefined();
      const page = reply.json as { items: Array<Record<string, unknown>>; cursor?: string };
      expect(page.items.length).toBeGreaterThan(0);
      names.push(...page.items.map(nameOf));
      cursor = page.cursor;
      pages++;
    } while (cursor !== undefined);
    return { names, pages };
  };

  it('cuts an OBJ.LIST page that does not fit in one message short, with a cursor that reaches every object once', async () => {
    // 160 objects with 8 KB of metadata each: a page of 200 is over 1 MiB as JSON.
    const expected: string[] = [];
    for (let i = 0; i < 160; i++) {
      const name = `big/${String(i).padStart(3, '0')}`;
      await node.db.objects.put('meta', name, Buffer.from(name), { metadata: { note: String(i % 10).repeat(8_000) } });
      expected.push(name);
    }
    await node.db.objects.put('meta', 'small', Buffer.from('s'));
    expected.push('small');

    const { names, pages } = await listAll('$LOOM.API.OBJ.LIST.meta', { limit: 200 }, (item) => item.name as string);
    expect(names).toEqual(expected);
    expect(pages).toBeGreaterThan(1);
    const withLimit = await listAll('$LOOM.API.OBJ.LIST.meta', { limit: 30 }, (item) => item.name as string);
    expect(withLimit.names).toEqual(expected);
  });

  it('cuts a KV.LIST page that does not fit in one message short, with a cursor that reaches every key once', async () => {
    // 1,100 keys of 1,000 bytes each: a page of all of them is over 1 MiB as JSON.
    const expected: string[] = [];
    for (let i = 0; i < 1100; i++) expected.push(`${String(i).padStart(4, '0')}-${'k'.repeat(995)}`);
    for (const key of expected) await node.kv.put('longkeys', key, Buffer.from('v'));
    const { names, pages } = await listAll('$LOOM.API.KV.LIST.longkeys', { limit: 10_000 }, (item) => item.key as string);
    expect(names).toEqual(expected);
    expect(pages).toBe(2);
  });
});
