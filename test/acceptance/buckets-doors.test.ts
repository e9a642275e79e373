// Buckets through its doors on a real `loom serve` process with fast chunk collection: gRPC
// (grpc-js), NATS (the official `nats` client), $OBJ change events live and replayed, the SQL
// `objects` table and `_loom_chunks` bookkeeping. Covers change events for names that are awkward
// as subject tokens, racing conditional writes as events, SQL rows and replays see them, the
// error shapes of malformed NATS and gRPC requests, collection of the chunks a cancelled sized
// upload stored, and byte-exact downloads of shared chunks after collections.

import { createHash, randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { connect, type NatsConnection } from 'nats';
import { startServe, stopServe, type ServeProcess } from '../support/cli';
import { get, grpcClient, put, sql, unary, type GrpcClient, type GrpcObjectInfo } from '../support/grpc-buckets';
import { makeTempDir, removeDir } from '../support/tmp';

const chunk = 256 * 1024;
const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

interface Change {
  subject: string;
  op?: string;
  seq?: string;
  rev?: string;
  body: string;
}

describe('Buckets doors on loom serve --orphan-chunk-age-ms 1000 --chunk-gc-interval-ms 200', () => {
  let dir: string;
  let serve: ServeProcess;
  let buckets: GrpcClient;
  let sqlc: GrpcClient;
  let nc: NatsConnection;

  beforeAll(async () => {
    dir = makeTempDir('loom-doors-');
    serve = await startServe(dir, ['--sync', 'none', '--orphan-chunk-age-ms', '1000', '--chunk-gc-interval-ms', '200']);
    buckets = grpcClient('Buckets', serve.ports.grpc);
    sqlc = grpcClient('SQL', serve.ports.grpc);
    nc = await connect({ servers: `127.0.0.1:${serve.ports.nats}` });
  });
  afterAll(async () => {
    await nc?.close();
    buckets?.close();
    sqlc?.close();
    if (serve) await stopServe(serve);
    removeDir(dir);
  });

  async function natsCall(subject: string, body: unknown): Promise<{ error?: string; json: Record<string, unknown> }> {
    const payload = typeof body === 'string' ? Buffer.from(body) : Buffer.from(JSON.stringify(body));
    const m = await nc.request(subject, payload, { timeout: 5000 });
    return { error: m.headers?.get('Loom-Error') || undefined, json: JSON.parse(Buffer.from(m.data).toString()) as Record<string, unknown> };
  }

  function record(subject: string): { changes: Change[]; stop(): void } {
    const changes: Change[] = [];
    const sub = nc.subscribe(subject, {
      callback: (_e, m) =>
        changes.push({ subject: m.subject, op: m.headers?.get('Loom-Op'), seq: m.headers?.get('Loom-Seq'), rev: m.headers?.get('Loom-Rev'), body: Buffer.from(m.data).toString() }),
    });
    return { changes, stop: () => sub.unsubscribe() };
  }

  async function replay(subject: string, expected: number): Promise<Change[]> {
    const inbox = `_INBOX.replay.${Math.random().toString(36).slice(2)}`;
    const changes: Change[] = [];
    const sub = nc.subscribe(inbox, {
      callback: (_e, m) =>
        changes.push({ subject: m.headers?.get('Loom-Subject') ?? '', op: m.headers?.get('Loom-Op'), seq: m.headers?.get('Loom-Seq'), rev: m.headers?.get('Loom-Rev'), body: Buffer.from(m.data).toString() }),
    });
    await nc.flush();
    await natsCall('$LOOM.API.WATCH', { subject, fromSeq: 0, deliver: inbox });
    const deadline = Date.now() + 5000;
    while (changes.length < expected && Date.now() < deadline) await sleep(50);
    await sleep(200);
    sub.unsubscribe();
    return changes;
  }

  it('publishes one change per put/overwrite/delete on $OBJ.<bucket>.<base64url(name)> for tricky names, in order, matching INFO, and replays the same', async () => {
    const bucket = 'ev';
    const live = record(`$OBJ.${bucket}.>`);
    await nc.flush();
    const names = ['a', 'dir/sub/file.txt', 'héllo wörld ✓', '😀'.repeat(256), 'x'.repeat(1024), '.', ' ', '*', '>', 'a.b', '\u00ff\u00fe', '?>?', 'tab\tinside'];
    const infos: GrpcObjectInfo[] = [];
    for (const name of names) {
      const { err, info } = await put(buckets, [{ header: { bucket, name, content_type: 'text/x', metadata: { k: name.slice(0, 8).trim() || 'v' } }, data: Buffer.from(`v1 ${name}`) }]);
      expect(err).toBeUndefined();
      infos.push(info!);
    }
    const over = await put(buckets, [{ header: { bucket, name: 'a' }, data: Buffer.from('v2') }]);
    const del = await unary<{ rev: number; deleted: boolean }>(buckets, 'Delete', { bucket, name: 'a' });
    expect(del.res).toEqual({ rev: expect.any(Number), deleted: true });
    const missing = await unary<{ rev: number; deleted: boolean }>(buckets, 'Delete', { bucket, name: 'a' });
    expect(missing.res?.deleted).toBe(false);
    await sleep(300);
    live.stop();

    expect(live.changes).toHaveLength(names.length + 2);
    const expectedNames = [...names, 'a', 'a'];
    live.changes.forEach((change, i) => {
      expect(change.subject).toBe(`$OBJ.${bucket}.${Buffer.from(expectedNames[i]).toString('base64url')}`);
      expect(change.op).toBe(i < names.length + 1 ? 'PUT' : 'DEL');
      expect(JSON.parse(change.body).name).toBe(expectedNames[i]);
      if (i > 0) expect(Number(change.seq)).toBeGreaterThan(Number(live.changes[i - 1].seq));
    });
    // A PUT's payload is what INFO answered at the time (camelCase), for every name.
    for (let i = 0; i < names.length; i++) {
      const body = JSON.parse(live.changes[i].body);
      expect(body).toMatchObject({ bucket, name: names[i], size: infos[i].size, sha256: infos[i].sha256, contentType: 'text/x', rev: infos[i].rev, chunkBytes: chunk, chunkCount: 1 });
      if (i > 0) expect(body).toEqual((await natsCall(`$LOOM.API.OBJ.INFO.${bucket}`, { name: names[i] })).json);
    }
    expect(JSON.parse(live.changes[names.length].body).rev).toBe(over.info!.rev);
    expect(JSON.parse(live.changes[names.length + 1].body)).toEqual({ bucket, name: 'a', rev: del.res!.rev, updatedAt: expect.any(Number), deleted: true });

    const replayed = await replay(`$OBJ.${bucket}.>`, live.changes.length);
    expect(replayed.map((c) => [c.subject, c.op, c.seq, c.body])).toEqual(live.changes.map((c) => [c.subject, c.op, c.seq, c.body]));
  });

  it('of racing conditional writes, publishes, replays and shows in SQL only the winners, agreeing with Stat', async () => {
    const bucket = 'race';
    const live = record(`$OBJ.${bucket}.>`);
    await nc.flush();
    const bodies = Array.from({ length: 8 }, (_, i) => randomBytes(1000 + i));
    const creates = await Promise.all(bodies.map((data) => put(buckets, [{ header: { bucket, name: 'one', expect_rev: 0 }, data }])));
    const created = creates.filter((r) => !r.err);
    expect(created).toHaveLength(1);
    expect(creates.filter((r) => r.err).every((r) => r.err!.code === grpc.status.FAILED_PRECONDITION && r.err!.loom === 'CONFLICT')).toBe(true);
    const updates = await Promise.all(bodies.map((data) => put(buckets, [{ header: { bucket, name: 'one', expect_rev: created[0].info!.rev }, data }])));
    const updated = updates.filter((r) => !r.err);
    expect(updated).toHaveLength(1);
    const stat = await unary<GrpcObjectInfo>(buckets, 'Stat', { bucket, name: 'one' });
    expect(stat.res).toMatchObject({ rev: updated[0].info!.rev, sha256: updated[0].info!.sha256 });
    const rows = await sql(sqlc, 'SELECT name, size, sha256, content_type, metadata, updated_at, rev FROM objects WHERE bucket = ?', [bucket]);
    expect(rows).toEqual([['one', stat.res!.size, stat.res!.sha256, 'application/octet-stream', '{}', stat.res!.updated_at, stat.res!.rev]]);
    const deletes = await Promise.all([1, 2, 3].map(() => unary<{ rev: number; deleted: boolean }>(buckets, 'Delete', { bucket, name: 'one', expect_rev: stat.res!.rev })));
    expect(deletes.filter((d) => d.res?.deleted)).toHaveLength(1);
    expect(await sql(sqlc, 'SELECT count(*) FROM objects WHERE bucket = ?', [bucket])).toEqual([[0]]);
    await sleep(300);
    live.stop();
    expect(live.changes.map((c) => c.op)).toEqual(['PUT', 'PUT', 'DEL']);
    const replayed = await replay(`$OBJ.${bucket}.>`, 3);
    expect(replayed.map((c) => [c.op, c.seq])).toEqual(live.changes.map((c) => [c.op, c.seq]));
  });

  it('keeps the SQL objects row equal to Stat through put, overwrite (metadata and content type change) and delete', async () => {
    const bucket = 'sq';
    const row = async (): Promise<unknown[][]> => sql(sqlc, 'SELECT bucket, name, size, sha256, content_type, metadata, updated_at, rev FROM objects WHERE bucket = ?', [bucket]);
    const fromStat = (i: GrpcObjectInfo): unknown[] => [i.bucket, i.name, i.size, i.sha256, i.content_type, JSON.stringify(i.metadata), i.updated_at, i.rev];
    const name = 'dir/ünï 😀';
    const first = await put(buckets, [{ header: { bucket, name, content_type: 'image/png', metadata: { K: 'v', 'a.b-c_d': 'ü 𝄞' } }, data: randomBytes(chunk + 1) }]);
    expect(first.err).toBeUndefined();
    expect(await row()).toEqual([fromStat((await unary<GrpcObjectInfo>(buckets, 'Stat', { bucket, name })).res!)]);
    expect(JSON.parse((await row())[0][5] as string)).toEqual({ K: 'v', 'a.b-c_d': 'ü 𝄞' });
    const second = await put(buckets, [{ header: { bucket, name }, data: Buffer.from('short') }]);
    expect(second.info?.content_type).toBe('application/octet-stream');
    expect(await row()).toEqual([fromStat((await unary<GrpcObjectInfo>(buckets, 'Stat', { bucket, name })).res!)]);
    await unary(buckets, 'Delete', { bucket, name });
    expect(await row()).toEqual([]);
  });

  it('answers malformed NATS object requests with a clear error naming the field, and keeps serving', async () => {
    expect((await put(buckets, [{ header: { bucket: 'nb', name: 'x' }, data: Buffer.from('x') }])).err).toBeUndefined();
    const cases: Array<[string, unknown, string, string]> = [
      ['$LOOM.API.OBJ.INFO.nb', '{bad', 'INVALID_ARGUMENT', 'payload'],
      ['$LOOM.API.OBJ.INFO.nb', '[1]', 'INVALID_ARGUMENT', 'payload'],
      ['$LOOM.API.OBJ.INFO.nb', {}, 'INVALID_ARGUMENT', 'name'],
      ['$LOOM.API.OBJ.INFO.nb', { name: 5 }, 'INVALID_ARGUMENT', 'name'],
      ['$LOOM.API.OBJ.INFO.nb', { name: 'x', extra: 1 }, 'INVALID_ARGUMENT', 'extra'],
      ['$LOOM.API.OBJ.INFO.nb', { name: '' }, 'INVALID_ARGUMENT', 'name'],
      ['$LOOM.API.OBJ.INFO.nb', { name: 'a\u0000b' }, 'INVALID_ARGUMENT', 'name'],
      ['$LOOM.API.OBJ.INFO.n$b', { name: 'x' }, 'INVALID_ARGUMENT', 'bucket'],
      ['$LOOM.API.OBJ.INFO.nb.extra', { name: 'x' }, 'INVALID_ARGUMENT', 'subject'],
      ['$LOOM.API.OBJ.INFO', { name: 'x' }, 'INVALID_ARGUMENT', 'subject'],
      ['$LOOM.API.OBJ.GET.nb', { name: 'x' }, 'INVALID_ARGUMENT', 'subject'],
      ['$LOOM.API.OBJ.LIST.nb', { limit: 0 }, 'INVALID_ARGUMENT', 'limit'],
      ['$LOOM.API.OBJ.LIST.nb', { cursor: 'zzz' }, 'INVALID_ARGUMENT', 'cursor'],
      ['$LOOM.API.OBJ.DEL.nb', {}, 'INVALID_ARGUMENT', 'name'],
      ['$LOOM.API.OBJ.DEL.nb', { name: 'x', expectRev: -1 }, 'INVALID_ARGUMENT', 'expectRev'],
    ];
    for (const [subject, body, code, field] of cases) {
      const answer = await natsCall(subject, body);
      expect([subject, body, answer.error, (answer.json.details as { field?: string })?.field]).toEqual([subject, body, code, field]);
      expect(answer.json).toEqual({ code, message: expect.any(String), details: expect.any(Object) });
    }
    const missing = await natsCall('$LOOM.API.OBJ.INFO.nb', { name: 'nope' });
    expect(missing).toEqual({ error: 'NOT_FOUND', json: { code: 'NOT_FOUND', message: expect.any(String), details: { bucket: 'nb', name: 'nope' } } });
    const conflict = await natsCall('$LOOM.API.OBJ.DEL.nb', { name: 'x', expectRev: 1 });
    expect(conflict.error).toBe('CONFLICT');
    expect((await natsCall('$LOOM.API.OBJ.INFO.nb', { name: 'x' })).json).toMatchObject({ name: 'x', size: 1 });
    expect((await natsCall('$LOOM.API.OBJ.DEL.nb', { name: 'nope' })).json).toEqual({ rev: expect.any(Number), deleted: false });
  });

  it('answers bad gRPC Put/Get/Stat/List/Delete input with INVALID_ARGUMENT or NOT_FOUND and loom-error, storing nothing', async () => {
    const d = Buffer.from('abc');
    const bad = async (messages: Array<Record<string, unknown>>): Promise<string | undefined> => (await put(buckets, messages)).err?.loom;
    expect(await bad([])).toBe('INVALID_ARGUMENT');
    expect(await bad([{ data: d }, { header: { bucket: 'gb', name: 'y' } }])).toBe('INVALID_ARGUMENT');
    expect(await bad([{ header: { bucket: 'gb', name: 'y' }, data: d }, { header: { bucket: 'gb', name: 'y' } }])).toBe('INVALID_ARGUMENT');
    expect(await bad([{ header: { bucket: 'g.b', name: 'y' }, data: d }])).toBe('INVALID_ARGUMENT');
    expect(await bad([{ header: { bucket: 'gb', name: 'y', sha256: 'XYZ' }, data: d }])).toBe('INVALID_ARGUMENT');
    expect(await bad([{ header: { bucket: 'gb', name: 'y', sha256: '00'.repeat(32) }, data: d }])).toBe('INVALID_ARGUMENT');
    expect(await bad([{ header: { bucket: 'gb', name: 'y', size: 4 }, data: d }])).toBe('INVALID_ARGUMENT');
    expect(await bad([{ header: { bucket: 'gb', name: 'y', metadata: { K: '1', k: '2' } }, data: d }])).toBe('INVALID_ARGUMENT');
    expect(await bad([{ header: { bucket: 'gb', name: 'y', chunk_bytes: 1024 }, data: d }])).toBe('INVALID_ARGUMENT');
    expect((await unary(buckets, 'Stat', { bucket: 'gb', name: 'y' })).err?.loom).toBe('NOT_FOUND');
    expect((await unary<{ items: unknown[] }>(buckets, 'List', { bucket: 'gb' })).res?.items).toEqual([]);

    const ok = await put(buckets, [{ header: { bucket: 'gb', name: 'z', sha256: sha256(d).toUpperCase() }, data: d }]);
    expect(ok.info?.sha256).toBe(sha256(d));
    expect((await get(buckets, { bucket: 'gb', name: 'z', offset: 3 })).err?.loom).toBe('INVALID_ARGUMENT');
    expect((await get(buckets, { bucket: 'gb', name: 'z', offset: 4, length: 0 })).err?.loom).toBe('INVALID_ARGUMENT');
    expect((await get(buckets, { bucket: 'gb', name: 'z', offset: 1, length: 100 })).data.toString()).toBe('bc');
    expect((await get(buckets, { bucket: 'gb', name: 'z', consistency: 'bogus' })).err?.loom).toBe('INVALID_ARGUMENT');
    expect((await get(buckets, { bucket: 'gb', name: 'nope' })).err?.code).toBe(grpc.status.NOT_FOUND);
    expect((await unary(buckets, 'List', { bucket: 'gb', limit: 20000 })).err?.loom).toBe('INVALID_ARGUMENT');
    expect((await unary(buckets, 'List', { bucket: 'gb', prefix: 'a'.repeat(2000) })).err?.loom).toBe('INVALID_ARGUMENT');
    expect((await unary(buckets, 'Delete', { bucket: 'gb', name: '' })).err?.loom).toBe('INVALID_ARGUMENT');
    expect((await get(buckets, { bucket: 'gb', name: 'z' })).data.toString()).toBe('abc');
  });

  it('collects the chunks a cancelled sized gRPC upload stored, and serves shared chunks byte-exact after collections', async () => {
    const book = async (): Promise<number[]> => (await sql(sqlc, 'SELECT count(*), coalesce(sum(refs), 0), coalesce(sum(refs = 0), 0) FROM _loom_chunks'))[0] as number[];
    const waitNoOrphans = async (): Promise<void> => {
      const deadline = Date.now() + 15_000;
      while ((await book())[2] > 0 && Date.now() < deadline) await sleep(200);
    };
    await waitNoOrphans();
    const start = await book();
    // Over uploadBatchBytes (4 MiB), so some chunks reach the log before the cancel.
    const code = await new Promise<number>((resolve) => {
      const call = buckets.Put((err: grpc.ServiceError | null) => resolve(err ? err.code : 0)) as grpc.ClientWritableStream<unknown>;
      call.write({ header: { bucket: 'gc', name: 'cut', size: 40 * chunk } });
      for (let i = 0; i < 6; i++) call.write({ data: randomBytes(4 * chunk) });
      setTimeout(() => call.cancel(), 1000);
    });
    expect(code).toBe(grpc.status.CANCELLED);
    expect((await unary(buckets, 'Stat', { bucket: 'gc', name: 'cut' })).err?.loom).toBe('NOT_FOUND');
    await waitNoOrphans();
    expect(await book()).toEqual(start);

    const a = randomBytes(3 * chunk);
    const shared = a.subarray(chunk, 2 * chunk);
    expect((await put(buckets, [{ header: { bucket: 'gc', name: 'A' }, data: a }])).err).toBeUndefined();
    expect((await put(buckets, [{ header: { bucket: 'gc', name: 'B' }, data: shared }])).err).toBeUndefined();
    expect((await put(buckets, [{ header: { bucket: 'gc', name: 'Z' }, data: Buffer.concat([shared, shared, shared]) }])).info?.chunk_count).toBe(3);
    await unary(buckets, 'Delete', { bucket: 'gc', name: 'A' });
    expect((await put(buckets, [{ header: { bucket: 'gc', name: 'Z' }, data: shared }])).err).toBeUndefined();
    await sleep(1500);
    await waitNoOrphans();
    expect((await get(buckets, { bucket: 'gc', name: 'B' })).data.equals(shared)).toBe(true);
    expect((await get(buckets, { bucket: 'gc', name: 'Z' })).data.equals(shared)).toBe(true);
    const again = await put(buckets, [{ header: { bucket: 'gc', name: 'A' }, data: a }]);
    expect(again.err).toBeUndefined();
    const read = await get(buckets, { bucket: 'gc', name: 'A' });
    expect(read.err).toBeUndefined();
    expect(read.data.equals(a)).toBe(true);
  }, 60_000);
});
