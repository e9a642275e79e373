// A change whose event is larger than the bus's maxPayloadBytes (a KV value, an object's info with
// its metadata, an event's data) goes out without its payload, its size in header
// Loom-Omitted-Bytes: subscribers and watchers still hear of it, in order, and the node goes on
// applying writes. Before, the bus refused the message inside the applier, which stopped: the node
// turned unready and every later write failed.

import { connect as natsConnect, type Msg, type NatsConnection } from 'nats';
import { connect, type LoomClient, type WatchChange } from '../../../src/client';
import { startServe, stopServe, type ServeProcess } from '../../support/cli';
import { makeTempDir, removeDir } from '../../support/tmp';

const maxPayloadBytes = 4096;

describe('change events larger than the bus takes, on a real loom serve', () => {
  let dir: string;
  let serve: ServeProcess;
  let nc: NatsConnection;
  let client: LoomClient;
  let base: string;

  beforeAll(async () => {
    dir = makeTempDir();
    serve = await startServe(dir, ['--nats-max-payload-bytes', String(maxPayloadBytes)]);
    base = `http://127.0.0.1:${serve.ports.http}`;
    nc = await natsConnect({ port: serve.ports.nats });
    client = await connect({ servers: `nats://127.0.0.1:${serve.ports.nats}`, http: base });
  });
  afterAll(async () => {
    await client.close();
    await nc.close();
    await stopServe(serve);
    removeDir(dir);
  });

  /** Messages on `subject` until `count` have come. */
  function collect(subject: string, count: number): Promise<Msg[]> {
    const got: Msg[] = [];
    const sub = nc.subscribe(subject);
    return (async () => {
      for await (const msg of sub) {
        got.push(msg);
        if (got.length === count) sub.unsubscribe();
      }
      return got;
    })();
  }

  /** The first `count` changes a watch of `subject` delivers. */
  async function watched(subject: string, count: number): Promise<WatchChange[]> {
    const watch = client.watch(subject);
    const got: WatchChange[] = [];
    for await (const change of watch) {
      got.push(change);
      if (got.length === count) break;
    }
    watch.close();
    return got;
  }

  it('publishes a KV change without its value, says how big it was, and goes on applying writes', async () => {
    const events = collect('$KV.big.>', 2);
    await nc.flush();
    const big = 'v'.repeat(5000);
    expect((await fetch(`${base}/v1/kv/big/k`, { method: 'PUT', body: big })).status).toBe(200);
    expect((await fetch(`${base}/v1/kv/big/small`, { method: 'PUT', body: 'tiny' })).status).toBe(200);
    const [first, second] = await events;
    expect(first.subject).toBe('$KV.big.k');
    expect(first.data.length).toBe(0);
    expect(first.headers?.get('Loom-Omitted-Bytes')).toBe('5000');
    expect(first.headers?.get('Loom-Op')).toBe('PUT');
    expect(second.subject).toBe('$KV.big.small');
    expect(Buffer.from(second.data).toString()).toBe('tiny');
    expect(second.headers?.get('Loom-Omitted-Bytes')).toBe('');
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    // The value is there to read through the API.
    expect(await (await fetch(`${base}/v1/kv/big/k`)).text()).toBe(big);

    // A watch replays both, the first marked, and the SDK says so.
    const [omitted, whole] = await watched('$KV.big.>', 2);
    expect(omitted).toMatchObject({ kind: 'kv', subject: '$KV.big.k', op: 'PUT', omittedBytes: 5000 });
    expect(whole).toMatchObject({ kind: 'kv', subject: '$KV.big.small', op: 'PUT' });
    expect(Buffer.from((whole as { value: Uint8Array }).value).toString()).toBe('tiny');
    expect(whole).not.toHaveProperty('omittedBytes');
  });

  it('publishes an object change whose info is too big without it, and the SDK watch reports object changes as objects', async () => {
    const events = collect('$OBJ.files.>', 3);
    await nc.flush();
    const put = (name: string, headers: Record<string, string>): Promise<Response> => fetch(`${base}/v1/buckets/files/objects/${name}`, { method: 'PUT', body: 'body', headers });
    expect((await put('tagged', { 'x-loom-meta-note': 'n'.repeat(5000) })).status).toBe(200);
    expect((await put('plain', {})).status).toBe(200);
    expect((await fetch(`${base}/v1/buckets/files/objects/plain`, { method: 'DELETE' })).status).toBe(200);
    const [tagged, plain, deleted] = await events;
    expect(tagged.data.length).toBe(0);
    expect(Number(tagged.headers?.get('Loom-Omitted-Bytes'))).toBeGreaterThan(5000);
    expect(JSON.parse(Buffer.from(plain.data).toString())).toMatchObject({ bucket: 'files', name: 'plain', size: 4 });
    expect(JSON.parse(Buffer.from(deleted.data).toString())).toMatchObject({ bucket: 'files', name: 'plain', deleted: true });

    const changes = await watched('$OBJ.files.>', 3);
    expect(changes.map((c) => c.kind)).toEqual(['object', 'object', 'object']);
    expect(changes[0]).toMatchObject({ op: 'PUT', info: undefined });
    expect((changes[0] as { omittedBytes?: number }).omittedBytes).toBeGreaterThan(5000);
    expect(changes[1]).toMatchObject({ op: 'PUT', info: { bucket: 'files', name: 'plain', size: 4 } });
    expect(changes[2]).toMatchObject({ op: 'DEL', info: { bucket: 'files', name: 'plain', deleted: true } });
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
  });
});
