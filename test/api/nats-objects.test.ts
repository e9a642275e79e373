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
});
