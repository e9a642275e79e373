// What watchers hear of objects ($OBJ.<bucket>.<token> on the bus, db.watch live and replayed, the
// gRPC Watch encoding), and how every door answers a list cursor it could not have issued.

import * as grpc from '@grpc/grpc-js';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { encodeChange } from '../../src/api/grpc/codec';
import { errorDetailsTrailer, errorTrailer, loadLoomProto } from '../../src/api/grpc';
import { openNode, type EmbeddedNode } from '../../src';
import { connect, type LoomClient } from '../../src/client';
import type { Change } from '../../src/projections';
import { LoomError } from '../../src/util';
import { makeTempDir, removeDir } from '../support/tmp';

type Ctor = new (address: string, credentials: grpc.ChannelCredentials) => grpc.Client;
type GrpcClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

function grpcClient(service: string, port: number): GrpcClient {
  const loaded = grpc.loadPackageDefinition(loadLoomProto()) as unknown as { loom: { v1: Record<string, Ctor> } };
  return new loaded.loom.v1[service](`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as GrpcClient;
}

describe('object changes and list cursors', () => {
  let dir: string;
  let node: EmbeddedNode;
  let nc: NatsConnection;
  let client: LoomClient;
  let base: string;

  beforeAll(async () => {
    dir = makeTempDir();
    node = await openNode({ data: dir, doors: true, sync: 'none' });
    nc = await natsConnect({ port: node.ports.nats });
    client = await connect({ servers: `nats://127.0.0.1:${node.ports.nats}`, http: `http://127.0.0.1:${node.ports.http}` });
    base = `http://127.0.0.1:${node.ports.http}`;
  });
  afterAll(async () => {
    await client.close();
    await nc.close();
    await node.close();
    removeDir(dir);
  });

  const request = async (subject: string, body: unknown): Promise<{ error?: string; json: Record<string, unknown> }> => {
    const reply = await nc.request(subject, JSON.stringify(body), { timeout: 5000 });
    return { error: reply.headers?.get('Loom-Error') || undefined, json: JSON.parse(reply.string()) as Record<string, unknown> };
  };

  it('publishes no delete for an object that did not exist, live or replayed, and a PUT whose payload is the INFO answer', async () => {
    const heard: Array<{ subject: string; op?: string; payload: Record<string, unknown> }> = [];
    const sub = nc.subscribe('$OBJ.nb.>', {
      callback: (_err, msg) => heard.push({ subject: msg.subject, op: msg.headers?.get('Loom-Op'), payload: JSON.parse(msg.string()) as Record<string, unknown> }),
    });
    await nc.flush();
    const live = node.db.watch('$OBJ.nb.>', { fromSeq: (await node.db.objects.put('other', 'x', 'x')).rev });
    const liveChanges: Change[] = [];
    const following = (async () => {
      for await (const change of live) liveChanges.push(change);
    })();

    // Given a bucket without `never`, deleting it over HTTP and NATS answers deleted: false...
    const viaHttp = (await (await fetch(`${base}/v1/buckets/nb/objects/never`, { method: 'DELETE' })).json()) as { rev: number; deleted: boolean };
    expect(viaHttp.deleted).toBe(false);
    expect((await request('$LOOM.API.OBJ.DEL.nb', { name: 'never' })).json).toMatchObject({ deleted: false });
    // ...while a real put and delete do change something.
    const put = await node.db.objects.put('nb', 'real', Buffer.alloc(5000, 1), { chunkBytes: 4096, contentType: 'text/plain', metadata: { k: 'v' } });
    const info = (await request('$LOOM.API.OBJ.INFO.nb', { name: 'real' })).json;
    const deleted = await node.db.objects.delete('nb', 'real');
    expect(deleted.deleted).toBe(true);
    await nc.flush();
    await new Promise((resolve) => setTimeout(resolve, 100));
    sub.unsubscribe();
    live.close();
    await following;

    // Then watchers hear only the real put and delete.
    const token = Buffer.from('real').toString('base64url');
    expect(heard.map((h) => [h.subject, h.op])).toEqual([
      [`$OBJ.nb.${token}`, 'PUT'],
      [`$OBJ.nb.${token}`, 'DEL'],
    ]);
    expect(liveChanges.map((c) => c.kind === 'object' && [c.name, c.op])).toEqual([
      ['real', 'PUT'],
      ['real', 'DEL'],
    ]);
    // The PUT payload is exactly the object info INFO, List and Stat answer.
    expect(heard[0].payload).toEqual(info);
    expect(heard[0].payload).toEqual(JSON.parse(JSON.stringify(put)));
    expect(heard[0].payload).toMatchObject({ chunkBytes: 4096, chunkCount: 2 });
    expect(heard[1].payload).toEqual({ bucket: 'nb', name: 'real', rev: deleted.rev, updatedAt: expect.any(Number), deleted: true });

    // A watch that replays the log from its start hears the same: the missing deletes are skipped.
    const replay = node.db.watch('$OBJ.nb.>', { fromSeq: 0 });
    const replayed: Change[] = [];
    for await (const change of replay) {
      replayed.push(change);
      if (change.seq >= deleted.rev) break;
    }
    replay.close();
    expect(replayed.map((c) => c.kind === 'object' && [c.name, c.op])).toEqual([
      ['real', 'PUT'],
      ['real', 'DEL'],
    ]);
    expect(replayed[0].kind === 'object' && replayed[0].info).toEqual(heard[0].payload);
    // gRPC Watch sends the same info, chunk fields included.
    expect((encodeChange(replayed[0]).object as { info: Record<string, unknown> }).info).toMatchObject({ chunk_bytes: 4096, chunk_count: 2, content_type: 'text/plain' });
  });

  describe('a list cursor the server could not have issued', () => {
    // `garbage` is base64url of bytes that are not UTF-8; `YWJjZB` a non-canonical `abcd`; `AA` a NUL.
    const bad = ['garbage', 'YWJjZB', 'AA', 'not base64!'];
    let grpcBuckets: GrpcClient;
    let grpcKv: GrpcClient;

    beforeAll(async () => {
      grpcBuckets = grpcClient('Buckets', node.ports.grpc as number);
      grpcKv = grpcClient('KV', node.ports.grpc as number);
      for (const name of ['a', 'b', 'c']) {
        await node.db.objects.put('cur', name, name);
        await node.kv.put('cur', name, name);
      }
    });
    afterAll(() => {
      grpcBuckets.close();
      grpcKv.close();
    });

    const grpcList = (c: GrpcClient, cursor: string): Promise<{ code?: unknown; field?: unknown }> =>
      new Promise((resolve) =>
        c.List({ bucket: 'cur', cursor }, (err: grpc.ServiceError | null) => {
          const details = err?.metadata.get(errorDetailsTrailer)[0];
          resolve({ code: err?.metadata.get(errorTrailer)[0], field: details === undefined ? undefined : (JSON.parse(String(details)) as { field?: unknown }).field });
        }),
      );

    it.each(bad)('refuses %j with INVALID_ARGUMENT naming cursor on every door, objects and KV', async (cursor) => {
      const refused = { code: 'INVALID_ARGUMENT', field: 'cursor' };
      for (const path of [`/v1/buckets/cur/objects?cursor=${encodeURIComponent(cursor)}`, `/v1/kv/cur?cursor=${encodeURIComponent(cursor)}`]) {
        const res = await fetch(`${base}${path}`);
        expect(res.status).toBe(400);
        expect(await res.json()).toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'cursor' } });
      }
      for (const subject of ['$LOOM.API.OBJ.LIST.cur', '$LOOM.API.KV.LIST.cur']) {
        const reply = await request(subject, { cursor });
        expect({ code: reply.error, field: (reply.json.details as { field?: unknown }).field }).toEqual(refused);
      }
      expect(await grpcList(grpcBuckets, cursor)).toEqual(refused);
      expect(await grpcList(grpcKv, cursor)).toEqual(refused);
      for (const listing of [() => client.objects.list('cur', { cursor }), () => client.kv.list('cur', { cursor }), () => node.db.objects.list('cur', { cursor })]) {
        const err = await listing().catch((e: unknown) => e);
        expect(err instanceof LoomError && { code: err.code, field: err.details.field }).toEqual(refused);
      }
    });

    it('pages on with the cursors it issued', async () => {
      const first = await client.objects.list('cur', { limit: 2 });
      expect(first.items.map((i) => i.name)).toEqual(['a', 'b']);
      const second = await client.objects.list('cur', { limit: 2, cursor: first.cursor });
      expect(second).toMatchObject({ items: [{ name: 'c' }] });
      const keys = await node.kv.list('cur', { limit: 1 });
      expect((await node.kv.list('cur', { cursor: keys.cursor })).items.map((i) => i.key)).toEqual(['b', 'c']);
    });
  });
});
