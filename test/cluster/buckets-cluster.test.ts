// Buckets on a 3-node cluster of real `loom serve` processes (written by an independent tester): replication, follower reads, NOT_LEADER, failover mid-upload, snapshot catch-up, change events through a follower.

import { createHash, randomBytes } from 'node:crypto';
import * as http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { connect as natsConnect, createInbox } from 'nats';
import { loadLoomProto } from '../../src/api/grpc';
import { TestCluster, sleep } from './cluster';

jest.setTimeout(120_000);

type BucketsClient = grpc.Client & {
  Put(md: grpc.Metadata, callback: (err: grpc.ServiceError | null, info: Record<string, unknown>) => void): grpc.ClientWritableStream<unknown>;
  List(req: object, callback: (err: grpc.ServiceError | null, res: { items: Array<{ name: string }> }) => void): void;
};

function grpcClient(port: number): BucketsClient {
  const loaded = grpc.loadPackageDefinition(loadLoomProto()) as unknown as { loom: { v1: Record<string, new (a: string, c: grpc.ChannelCredentials) => grpc.Client> } };
  return new loaded.loom.v1.Buckets(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as BucketsClient;
}

function grpcPut(client: BucketsClient, bucket: string, name: string, data: Buffer): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const call = client.Put(new grpc.Metadata(), (err, info) => (err ? reject(err) : resolve(info)));
    call.write({ header: { bucket, name, size: data.length } });
    for (let at = 0; at < data.length; at += 1024 * 1024) call.write({ data: data.subarray(at, at + 1024 * 1024) });
    call.end();
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/**
 * An HTTP PUT of `data` written `pieceBytes` at a time as the socket drains, so a test can act
 * once `sent()` bytes have gone (kill or move the leader mid-upload). The answer: its status and
 * body, or status -1 and the error's message when the connection broke.
 */
function pacedPut(url: string, data: Buffer, pieceBytes: number): { sent(): number; answer: Promise<{ status: number; body: string }> } {
  let sent = 0;
  const answer = new Promise<{ status: number; body: string }>((resolve) => {
    let body = '';
    const req = http.request(url, { method: 'PUT', headers: { 'content-length': String(data.length) } }, (res) => {
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', () => resolve({ status: res.statusCode ?? -1, body }));
    });
    req.on('error', (e) => resolve({ status: -1, body: e.message }));
    const write = (): void => {
      while (sent < data.length) {
        const piece = data.subarray(sent, sent + pieceBytes);
        sent += piece.length;
        if (!req.write(piece)) {
          req.once('drain', write);
          return;
        }
      }
      req.end();
    };
    write();
  });
  return { sent: () => sent, answer };
}

async function httpPut(port: number, bucket: string, name: string, data: Buffer): Promise<{ status: number; body: any }> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/buckets/${bucket}/objects/${encodeURIComponent(name)}`, { method: 'PUT', body: data, headers: { 'content-type': 'application/x-probe' }, signal: AbortSignal.timeout(20_000) });
  const text = await res.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* not json */
  }
  return { status: res.status, body };
}

async function httpGet(port: number, bucket: string, name: string, query = ''): Promise<{ status: number; etag: string | null; bytes: Buffer }> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/buckets/${bucket}/objects/${encodeURIComponent(name)}${query}`, { signal: AbortSignal.timeout(10_000) });
  return { status: res.status, etag: res.headers.get('etag'), bytes: Buffer.from(await res.arrayBuffer()) };
}

async function httpList(port: number, bucket: string, query = ''): Promise<string[]> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/buckets/${bucket}/objects${query}`, { signal: AbortSignal.timeout(5000) });
  const body = (await res.json()) as { items: Array<{ name: string }> };
  return body.items.map((i) => i.name).sort();
}

async function sql(port: number, q: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/sql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sql: q }), signal: AbortSignal.timeout(5000) });
  return { status: res.status, body: await res.json() };
}

describe('Buckets on a 3-node cluster', () => {
  let cluster: TestCluster;
  let leader: number;
  const followers = (): number[] => cluster.live().map((n) => n.id).filter((id) => id !== leader);
  const port = (id: number, door: 'http' | 'grpc' | 'nats'): number => cluster.node(id).ports[door];

  beforeAll(async () => {
    cluster = await TestCluster.start({ size: 3, extraArgs: ['--heartbeat-ms', '70', '--election-timeout-ms', '700'] });
    leader = await cluster.waitLeader();
  });

  afterAll(async () => {
    await cluster?.close();
  });

  it('HTTP upload to the leader is byte-exact on each follower (linearizable and atLeast) and listed everywhere', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 12345);
    const put = await httpPut(port(leader, 'http'), 'b1', 'dir/obj one', data);
    expect(put.status).toBe(200);
    expect(put.body.sha256).toBe(sha(data));
    const rev = put.body.rev as number;
    for (const f of followers()) {
      const lin = await httpGet(port(f, 'http'), 'b1', 'dir/obj one', '?consistency=linearizable');
      expect(lin.status).toBe(200);
      expect(lin.etag).toBe(`"${sha(data)}"`);
      expect(lin.bytes.equals(data)).toBe(true);
      const al = await httpGet(port(f, 'http'), 'b1', 'dir/obj one', `?atLeast=${rev}`);
      expect(al.status).toBe(200);
      expect(al.bytes.equals(data)).toBe(true);
    }
    await cluster.waitConverged(rev);
    for (const n of cluster.live()) expect(await httpList(port(n.id, 'http'), 'b1')).toEqual(['dir/obj one']);
  });

  it('gRPC Put to the leader replicates; a Put to a follower is NOT_LEADER naming the leader and stores nothing', async () => {
    const data = randomBytes(2 * 1024 * 1024 + 7);
    const info = await grpcPut(grpcClient(port(leader, 'grpc')), 'b2', 'g1', data);
    expect(info.sha256).toBe(sha(data));
    const rev = Number(info.rev);
    for (const f of followers()) {
      const got = await httpGet(port(f, 'http'), 'b2', 'g1', `?atLeast=${rev}`);
      expect(got.bytes.equals(data)).toBe(true);
      expect(got.etag).toBe(`"${sha(data)}"`);
    }
    const f = followers()[0];
    let err: grpc.ServiceError | undefined;
    try {
      await grpcPut(grpcClient(port(f, 'grpc')), 'b2', 'refused', randomBytes(600 * 1024));
    } catch (e) {
      err = e as grpc.ServiceError;
    }
    expect(err?.code).toBe(grpc.status.UNAVAILABLE);
    expect(err?.metadata.get('loom-error')[0]).toBe('NOT_LEADER');
    expect(err?.details + JSON.stringify(err?.metadata.getMap())).toContain(String(cluster.node(leader).ports.grpc));
    // HTTP to a follower too
    const hput = await httpPut(port(f, 'http'), 'b2', 'refused-http', randomBytes(600 * 1024));
    expect(hput.status).toBe(421);
    expect(hput.body.code).toBe('NOT_LEADER');
    expect(hput.body.details.leader).toBe(leader);
    const commit = (await cluster.status(leader))!.commit;
    await cluster.waitConverged(commit);
    for (const n of cluster.live()) expect(await httpList(port(n.id, 'http'), 'b2', '?consistency=linearizable')).toEqual(['g1']);
    // No orphan chunks from the refused uploads anywhere.
    for (const n of cluster.live()) {
      const orphans = await sql(port(n.id, 'http'), 'SELECT count(*) AS c FROM _loom_chunks WHERE refs = 0');
      expect(orphans.status).toBe(200);
      expect(JSON.stringify(orphans.body.rows)).toMatch(/^\[\[0\]\]$|^\[\{"c":0\}\]$/);
    }
  });

  it('delete on the leader leaves identical chunk bookkeeping on every replica', async () => {
    const data = randomBytes(1024 * 1024 + 3);
    const put = await httpPut(port(leader, 'http'), 'b3', 'd1', data);
    expect(put.status).toBe(200);
    const del = await fetch(`http://127.0.0.1:${port(leader, 'http')}/v1/buckets/b3/objects/d1`, { method: 'DELETE' });
    expect(del.status).toBe(200);
    const delBody = (await del.json()) as { rev: number };
    await cluster.waitConverged(delBody.rev);
    const views: string[] = [];
    for (const n of cluster.live()) {
      const got = await httpGet(port(n.id, 'http'), 'b3', 'd1', `?atLeast=${delBody.rev}`);
      expect(got.status).toBe(404);
      const r = await sql(port(n.id, 'http'), 'SELECT sha256, length, refs, since FROM _loom_chunks ORDER BY sha256');
      expect(r.status).toBe(200);
      views.push(JSON.stringify(r.body.rows));
      const o = await sql(port(n.id, 'http'), 'SELECT count(*) FROM _loom_chunks WHERE refs = 0');
      expect(JSON.stringify(o.body.rows)).toMatch(/5/);
    }
    expect(new Set(views).size).toBe(1);
  });

  it('SIGKILL of the leader mid-upload leaves no partial object; new uploads work; restarted node converges', async () => {
    const old = leader;
    const data = randomBytes(48 * 1024 * 1024);
    const upload = pacedPut(`http://127.0.0.1:${port(old, 'http')}/v1/buckets/b4/objects/big`, data, 256 * 1024);
    const deadline = Date.now() + 20_000;
    while (upload.sent() < 16 * 1024 * 1024 && Date.now() < deadline) await sleep(5);
    await cluster.kill(old, 'SIGKILL');
    await upload.answer;
    leader = await cluster.waitLeader(15_000);
    expect(leader).not.toBe(old);
    const commit = (await cluster.status(leader))!.commit;
    await cluster.waitConverged(commit);
    for (const n of cluster.live()) {
      const got = await httpGet(port(n.id, 'http'), 'b4', 'big', '?consistency=linearizable');
      if (got.status === 200) expect(got.bytes.equals(data)).toBe(true);
      else expect(got.status).toBe(404);
      const names = await httpList(port(n.id, 'http'), 'b4', '?consistency=linearizable');
      expect(names.length === 0 || got.status === 200).toBe(true);
    }
    const after = randomBytes(1024 * 1024 + 99);
    const put = await httpPut(port(leader, 'http'), 'b4', 'after', after);
    expect(put.status).toBe(200);
    await cluster.startNode(old);
    // Re-upload the interrupted content (its committed chunks are orphans now) under two names.
    expect((await httpPut(port(leader, 'http'), 'b4', 'big', data)).status).toBe(200);
    expect((await httpPut(port(leader, 'http'), 'b4', 'big2', data)).status).toBe(200);
    const commit2 = (await cluster.status(leader))!.commit;
    await cluster.waitConverged(commit2, 30_000);
    const lists: string[] = [];
    for (const n of cluster.live()) {
      lists.push(JSON.stringify(await httpList(port(n.id, 'http'), 'b4')));
      const got = await httpGet(port(n.id, 'http'), 'b4', 'after');
      expect(got.bytes.equals(after)).toBe(true);
      for (const nm of ['big', 'big2']) {
        const g = await httpGet(port(n.id, 'http'), 'b4', nm);
        expect(g.status).toBe(200);
        expect(g.bytes.equals(data)).toBe(true);
      }
      const objs = await sql(port(n.id, 'http'), 'SELECT bucket, name, size, sha256, rev FROM objects ORDER BY bucket, name');
      lists.push(JSON.stringify(objs.body.rows));
    }
    expect(lists[0]).toBe(lists[2]);
    expect(lists[0]).toBe(lists[4]);
    expect(lists[1]).toBe(lists[3]);
    expect(lists[1]).toBe(lists[5]);
    const chunkTables: string[] = [];
    for (const n of cluster.live()) {
      const r = await sql(port(n.id, 'http'), 'SELECT sha256, length, refs, since FROM _loom_chunks ORDER BY sha256');
      expect(r.status).toBe(200);
      chunkTables.push(JSON.stringify(r.body.rows));
    }
    expect(chunkTables[1]).toBe(chunkTables[0]);
    expect(chunkTables[2]).toBe(chunkTables[0]);
    // Old node serves the pre-kill objects byte-exact too.
    const again = await httpGet(port(old, 'http'), 'b1', 'dir/obj one');
    expect(again.status).toBe(200);
  });

  it('$OBJ.<bucket>.> changes arrive through a follower NATS port for leader uploads', async () => {
    const f = followers()[0];
    const nc = await natsConnect({ servers: `127.0.0.1:${port(f, 'nats')}`, timeout: 2000 });
    try {
      const sub = nc.subscribe('$OBJ.b5.>');
      const seen: Array<{ subject: string; op?: string; body: any }> = [];
      const done = (async () => {
        for await (const m of sub) {
          seen.push({ subject: m.subject, op: m.headers?.get('Loom-Op'), body: JSON.parse(Buffer.from(m.data).toString() || '{}') });
          if (seen.length >= 2) break;
        }
      })();
      await nc.flush();
      const data = randomBytes(300 * 1024);
      const put = await httpPut(port(leader, 'http'), 'b5', 'ev/one', data);
      expect(put.status).toBe(200);
      await fetch(`http://127.0.0.1:${port(leader, 'http')}/v1/buckets/b5/objects/${encodeURIComponent('ev/one')}`, { method: 'DELETE' });
      await Promise.race([done, sleep(5000)]);
      sub.unsubscribe();
      expect(seen.map((s) => s.op)).toEqual(['PUT', 'DEL']);
      expect(seen[0].subject).toBe(`$OBJ.b5.${Buffer.from('ev/one').toString('base64url')}`);
      expect(seen[0].body.sha256).toBe(sha(data));
    } finally {
      await nc.close();
    }
  });

  it('follower reads: gRPC Get with consistency, Range, If-None-Match, metadata; NATS OBJ.INFO/LIST on a follower', async () => {
    const data = randomBytes(700 * 1024 + 5);
    const res = await fetch(`http://127.0.0.1:${port(leader, 'http')}/v1/buckets/b6/objects/m1`, { method: 'PUT', body: data, headers: { 'content-type': 'text/x-probe', 'x-loom-meta-colour': Buffer.from('blau grün').toString('latin1') } });
    expect(res.status).toBe(200);
    const info = (await res.json()) as { rev: number; sha256: string };
    const f = followers()[0];
    const loaded = grpc.loadPackageDefinition(loadLoomProto()) as unknown as { loom: { v1: Record<string, new (a: string, c: grpc.ChannelCredentials) => grpc.Client> } };
    const c = new loaded.loom.v1.Buckets(`127.0.0.1:${port(f, 'grpc')}`, grpc.credentials.createInsecure()) as any;
    const pieces: Buffer[] = [];
    let first: any;
    for await (const m of c.Get({ bucket: 'b6', name: 'm1', consistency: 'linearizable' })) {
      if (m.info && !first) first = m.info;
      if (m.data?.length) pieces.push(m.data);
    }
    expect(Buffer.concat(pieces).equals(data)).toBe(true);
    const pieces2: Buffer[] = [];
    for await (const m of c.Get({ bucket: 'b6', name: 'm1', at_least: info.rev, atLeast: info.rev })) if (m.data?.length) pieces2.push(m.data);
    expect(Buffer.concat(pieces2).equals(data)).toBe(true);
    c.close();
    const range = await fetch(`http://127.0.0.1:${port(f, 'http')}/v1/buckets/b6/objects/m1?atLeast=${info.rev}`, { headers: { range: 'bytes=262140-262150' } });
    expect(range.status).toBe(206);
    expect(Buffer.from(await range.arrayBuffer()).equals(data.subarray(262140, 262151))).toBe(true);
    const full = await fetch(`http://127.0.0.1:${port(f, 'http')}/v1/buckets/b6/objects/m1?atLeast=${info.rev}`);
    expect(full.headers.get('content-type')).toBe('text/x-probe');
    expect(Buffer.from(full.headers.get('x-loom-meta-colour') ?? '', 'latin1').toString()).toBe('blau grün');
    await full.arrayBuffer();
    const nm = await fetch(`http://127.0.0.1:${port(f, 'http')}/v1/buckets/b6/objects/m1`, { headers: { 'if-none-match': `"${info.sha256}"` } });
    expect(nm.status).toBe(304);
    const nc = await natsConnect({ servers: `127.0.0.1:${port(f, 'nats')}`, timeout: 2000 });
    try {
      const m = await nc.request('$LOOM.API.OBJ.INFO.b6', Buffer.from(JSON.stringify({ name: 'm1' })), { timeout: 3000 });
      const body = JSON.parse(Buffer.from(m.data).toString());
      expect(body.sha256).toBe(info.sha256);
      expect(body.metadata).toEqual({ colour: 'blau grün' });
      const l = await nc.request('$LOOM.API.OBJ.LIST.b6', Buffer.from(JSON.stringify({})), { timeout: 3000 });
      expect(JSON.parse(Buffer.from(l.data).toString()).items.map((i: { name: string }) => i.name)).toEqual(['m1']);
    } finally {
      await nc.close();
    }
  });

  it('deletes on a follower are NOT_LEADER with the leader addresses on HTTP and NATS; nothing deleted', async () => {
    const f = followers()[0];
    const del = await fetch(`http://127.0.0.1:${port(f, 'http')}/v1/buckets/b6/objects/m1`, { method: 'DELETE' });
    const body = (await del.json()) as any;
    expect(del.status).toBe(421);
    expect(body.code).toBe('NOT_LEADER');
    expect(body.details.leader).toBe(leader);
    expect(body.details.http).toBe(`127.0.0.1:${port(leader, 'http')}`);
    expect(body.details.grpc).toBe(`127.0.0.1:${port(leader, 'grpc')}`);
    expect(body.details.nats).toBe(`127.0.0.1:${port(leader, 'nats')}`);
    const nc = await natsConnect({ servers: `127.0.0.1:${port(f, 'nats')}`, timeout: 2000 });
    try {
      const m = await nc.request('$LOOM.API.OBJ.DEL.b6', Buffer.from(JSON.stringify({ name: 'm1' })), { timeout: 3000 });
      expect(m.headers?.get('Loom-Error')).toBe('NOT_LEADER');
      expect(JSON.parse(Buffer.from(m.data).toString()).details.leader).toBe(leader);
    } finally {
      await nc.close();
    }
    expect((await httpGet(port(leader, 'http'), 'b6', 'm1')).status).toBe(200);
  });

  it('a watch replay through a follower shows PUT and DEL for b5 in order (WATCH fromSeq 0)', async () => {
    const f = followers()[1] ?? followers()[0];
    const nc = await natsConnect({ servers: `127.0.0.1:${port(f, 'nats')}`, timeout: 2000 });
    try {
      const inbox = createInbox();
      const sub = nc.subscribe(inbox);
      const seen: Array<{ subject: string; op?: string }> = [];
      const done = (async () => {
        for await (const m of sub) {
          seen.push({ subject: m.subject, op: m.headers?.get('Loom-Op') });
          if (seen.length >= 2) break;
        }
      })();
      const r = await nc.request('$LOOM.API.WATCH', Buffer.from(JSON.stringify({ subject: '$OBJ.b5.>', fromSeq: 0, deliver: inbox })), { timeout: 3000 });
      expect(JSON.parse(Buffer.from(r.data).toString())).toEqual({ ok: true });
      await Promise.race([done, sleep(4000)]);
      expect(seen.map((s) => s.op)).toEqual(['PUT', 'DEL']);
    } finally {
      await nc.close();
    }
  });

  it('SIGKILL of the leader mid gRPC upload (size announced) leaves no partial object anywhere', async () => {
    const old = leader;
    const data = randomBytes(40 * 1024 * 1024);
    const c = grpcClient(port(old, 'grpc'));
    let sent = 0;
    const outcome = new Promise<string>((resolve) => {
      const call = c.Put(new grpc.Metadata(), (err) => resolve(err ? `err ${err.code} ${err.details}` : 'ok'));
      call.write({ header: { bucket: 'b9', name: 'big', size: data.length } });
      const pump = (): void => {
        while (sent < data.length) {
          const piece = data.subarray(sent, sent + 1024 * 1024);
          sent += piece.length;
          if (!call.write({ data: piece })) {
            call.once('drain', pump);
            return;
          }
        }
        call.end();
      };
      pump();
    });
    const deadline = Date.now() + 20_000;
    while (sent < 20 * 1024 * 1024 && Date.now() < deadline) await sleep(5);
    await cluster.kill(old, 'SIGKILL');
    await Promise.race([outcome, sleep(10_000)]);
    c.close();
    leader = await cluster.waitLeader(15_000);
    for (const n of cluster.live()) {
      const got = await httpGet(port(n.id, 'http'), 'b9', 'big', '?consistency=linearizable');
      if (got.status === 200) expect(got.bytes.equals(data)).toBe(true);
      else expect(got.status).toBe(404);
    }
    await cluster.startNode(old);
    const commit = (await cluster.status(leader))!.commit;
    await cluster.waitConverged(commit, 30_000);
    const tables: string[] = [];
    for (const n of cluster.live()) {
      const r = await sql(port(n.id, 'http'), 'SELECT sha256, length, refs, since FROM _loom_chunks ORDER BY sha256');
      tables.push(JSON.stringify(r.body.rows));
      const got = await httpGet(port(n.id, 'http'), 'b9', 'big');
      if (got.status === 200) expect(got.bytes.equals(data)).toBe(true);
      else expect(got.status).toBe(404);
    }
    expect(new Set(tables).size).toBe(1);
  });

  it('a follower SIGKILLed during an upload does not fail it; the follower converges after restart', async () => {
    const f = followers()[0];
    const data = randomBytes(24 * 1024 * 1024);
    const p = httpPut(port(leader, 'http'), 'b10', 'x', data);
    await sleep(100);
    await cluster.kill(f, 'SIGKILL');
    const put = await p;
    expect(put.status).toBe(200);
    await cluster.startNode(f);
    const got = await httpGet(port(f, 'http'), 'b10', 'x', `?atLeast=${put.body.rev}`);
    expect(got.status).toBe(200);
    expect(got.bytes.equals(data)).toBe(true);
  });

  it('read-your-write on followers right after leader writes, every door (linearizable and atLeast)', async () => {
    const loaded = grpc.loadPackageDefinition(loadLoomProto()) as unknown as { loom: { v1: Record<string, new (a: string, c: grpc.ChannelCredentials) => grpc.Client> } };
    const fs = followers();
    const clients = new Map(fs.map((f) => [f, new loaded.loom.v1.Buckets(`127.0.0.1:${port(f, 'grpc')}`, grpc.credentials.createInsecure()) as any]));
    const ncs = new Map(await Promise.all(fs.map(async (f) => [f, await natsConnect({ servers: `127.0.0.1:${port(f, 'nats')}`, timeout: 2000 })] as const)));
    const unary = (c: any, m: string, req: object): Promise<any> => new Promise((resolve, reject) => c[m](req, (e: Error | null, r: unknown) => (e ? reject(e) : resolve(r))));
    const failures: string[] = [];
    try {
      for (let round = 0; round < 6; round++) {
        const name = `ryw${round}`;
        const d = randomBytes(5000 + round);
        const put = await httpPut(port(leader, 'http'), 'b13', name, d);
        expect(put.status).toBe(200);
        const rev = put.body.rev as number;
        for (const f of fs) {
          const c = clients.get(f);
          const nc = ncs.get(f)!;
          const checks: Array<[string, () => Promise<boolean>]> = [
            ['http get lin', async () => (await httpGet(port(f, 'http'), 'b13', name, '?consistency=linearizable')).status === 200],
            ['http list lin', async () => (await httpList(port(f, 'http'), 'b13', '?consistency=linearizable')).includes(name)],
            ['http list atLeast', async () => (await httpList(port(f, 'http'), 'b13', `?atLeast=${rev}`)).includes(name)],
            ['nats info lin', async () => { const h = (await import('nats')).headers(); h.set('Loom-Consistency', 'linearizable'); const m = await nc.request('$LOOM.API.OBJ.INFO.b13', Buffer.from(JSON.stringify({ name })), { timeout: 3000, headers: h }); return !m.headers?.get('Loom-Error'); }],
            ['nats list atLeast', async () => { const h = (await import('nats')).headers(); h.set('Loom-At-Least', String(rev)); const m = await nc.request('$LOOM.API.OBJ.LIST.b13', Buffer.from('{}'), { timeout: 3000, headers: h }); return JSON.parse(Buffer.from(m.data).toString()).items?.some((i: { name: string }) => i.name === name); }],
            ['grpc stat lin', async () => { try { return (await unary(c, 'Stat', { bucket: 'b13', name, consistency: 'linearizable' })).sha256 === sha(d); } catch { return false; } }],
            ['grpc stat atLeast', async () => { try { return (await unary(c, 'Stat', { bucket: 'b13', name, at_least: rev })).sha256 === sha(d); } catch { return false; } }],
            ['grpc list lin', async () => { try { return (await unary(c, 'List', { bucket: 'b13', consistency: 'linearizable' })).items.some((i: { name: string }) => i.name === name); } catch { return false; } }],
            ['grpc get atLeast', async () => { try { const ps: Buffer[] = []; for await (const m of c.Get({ bucket: 'b13', name, at_least: rev })) if (m.data?.length) ps.push(m.data); return Buffer.concat(ps).equals(d); } catch { return false; } }],
          ];
          const results = await Promise.all(checks.map(async ([label, fn]) => [label, await fn().catch(() => false)] as const));
          for (const [label, ok] of results) if (!ok) failures.push(`${round} node${f} ${label}`);
        }
        const del = await fetch(`http://127.0.0.1:${port(leader, 'http')}/v1/buckets/b13/objects/${name}`, { method: 'DELETE' });
        const drev = ((await del.json()) as { rev: number }).rev;
        for (const f of fs) {
          if ((await httpGet(port(f, 'http'), 'b13', name, '?consistency=linearizable')).status !== 404) failures.push(`${round} node${f} get after delete lin`);
          if ((await httpList(port(f, 'http'), 'b13', `?atLeast=${drev}`)).includes(name)) failures.push(`${round} node${f} list after delete atLeast`);
        }
      }
    } finally {
      for (const c of clients.values()) c.close();
      for (const nc of ncs.values()) await nc.close();
    }
    expect(failures).toEqual([]);
  });

  it('leadership transferred (and graceful SIGTERM) mid-upload: a 200 means present everywhere, an error means absent everywhere', async () => {
    for (let round = 0; round < 4; round++) {
      const old = leader;
      const d = randomBytes((round % 2 === 0 ? 12 : 3) * 1024 * 1024 + round);
      const to = followers()[0];
      const upload = pacedPut(`http://127.0.0.1:${port(old, 'http')}/v1/buckets/b14/objects/t${round}`, d, 128 * 1024);
      const res = upload.answer;
      const dl = Date.now() + 10_000;
      while (upload.sent() < d.length / 2 && Date.now() < dl) await sleep(2);
      if (round < 3) {
        const tr = await fetch(`http://127.0.0.1:${port(old, 'http')}/v1/cluster/transfer-leader`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ to }) });
        await tr.text();
      } else {
        cluster.signal(old, 'SIGTERM');
      }
      const r = await Promise.race([res, sleep(15_000).then(() => ({ status: -2, body: 'hung' }))]);
      if (round === 3) {
        const child = cluster.node(old).serve?.child;
        if (child && child.exitCode === null) await Promise.race([new Promise((ok) => child.once('exit', ok)), sleep(5000)]);
        await cluster.kill(old, 'SIGKILL').catch(() => undefined);
      }
      leader = await cluster.waitLeader(15_000);
      if (round === 3) await cluster.startNode(old);
      const commit = (await cluster.status(leader))!.commit;
      await cluster.waitConverged(commit, 30_000);
      const states: number[] = [];
      for (const n of cluster.live()) {
        const g = await httpGet(port(n.id, 'http'), 'b14', `t${round}`);
        if (g.status === 200) expect(g.bytes.equals(d)).toBe(true);
        states.push(g.status);
      }
      expect(new Set(states).size).toBe(1);
      if (r.status === 200) expect(states[0]).toBe(200);
      else expect(states[0]).toBe(404);
    }
  });

  it('a delete of a missing object publishes no $OBJ change on a follower, live or in a watch replay (NATS and SSE)', async () => {
    const f = followers()[0];
    const nc = await natsConnect({ servers: `127.0.0.1:${port(f, 'nats')}`, timeout: 2000 });
    try {
      const sub = nc.subscribe('$OBJ.b15.>');
      const live: string[] = [];
      const done = (async () => {
        for await (const m of sub) {
          live.push(m.headers?.get('Loom-Op') ?? '?');
          if (live.length >= 1) break;
        }
      })();
      await nc.flush();
      const del = await fetch(`http://127.0.0.1:${port(leader, 'http')}/v1/buckets/b15/objects/ghost`, { method: 'DELETE' });
      const delBody = await del.json() as any;
      expect(delBody.deleted).toBe(false);
      expect((await httpPut(port(leader, 'http'), 'b15', 'real', randomBytes(1000))).status).toBe(200);
      await Promise.race([done, sleep(4000)]);
      expect(live).toEqual(['PUT']);
      const inbox = createInbox();
      const rsub = nc.subscribe(inbox);
      const replay: string[] = [];
      const rdone = (async () => {
        for await (const m of rsub) {
          replay.push(m.headers?.get('Loom-Op') ?? '?');
          if (replay.length >= 1) break;
        }
      })();
      await nc.request('$LOOM.API.WATCH', Buffer.from(JSON.stringify({ subject: '$OBJ.b15.>', fromSeq: 0, deliver: inbox })), { timeout: 3000 });
      await Promise.race([rdone, sleep(3000)]);
      await sleep(300);
      expect(replay).toEqual(['PUT']);
      // SSE through the follower
      const ac = new AbortController();
      const res = await fetch(`http://127.0.0.1:${port(f, 'http')}/v1/watch?subject=${encodeURIComponent('$OBJ.b15.>')}&fromSeq=0`, { signal: ac.signal });
      let text = '';
      const reader = res.body!.getReader();
      const until = Date.now() + 3000;
      while (!/data:/.test(text) && Date.now() < until) {
        const chunk = await Promise.race([reader.read(), sleep(3000).then(() => ({ done: true, value: undefined }))]);
        if (chunk.done) break;
        text += Buffer.from(chunk.value!).toString();
      }
      await sleep(300);
      ac.abort();
      expect(text).toContain('real');
      expect(text).not.toContain('ghost');
    } finally {
      await nc.close();
    }
  });

  it('1 MiB chunks (chunkBytesMax) replicate byte-exact; over-max chunk size is refused and stores nothing', async () => {
    const d = randomBytes(9 * 1024 * 1024 + 17);
    const res = await fetch(`http://127.0.0.1:${port(leader, 'http')}/v1/buckets/b16/objects/max`, { method: 'PUT', body: d, headers: { 'x-loom-chunk-bytes': String(1024 * 1024) }, signal: AbortSignal.timeout(30_000) });
    const body = (await res.json()) as any;
    expect(res.status).toBe(200);
    expect(body.chunkBytes).toBe(1024 * 1024);
    for (const f of followers()) {
      const g = await httpGet(port(f, 'http'), 'b16', 'max', `?atLeast=${body.rev}`);
      expect(g.status).toBe(200);
      expect(g.bytes.equals(d)).toBe(true);
    }
    const big = await fetch(`http://127.0.0.1:${port(leader, 'http')}/v1/buckets/b16/objects/over`, { method: 'PUT', body: randomBytes(3 * 1024 * 1024), headers: { 'x-loom-chunk-bytes': String(2 * 1024 * 1024) } });
    expect([400, 413]).toContain(big.status);
    expect(((await big.json()) as { code: string }).code).toMatch(/^(INVALID_ARGUMENT|TOO_LARGE)$/);
    const statuses = await Promise.all(cluster.live().map((n) => cluster.status(n.id)));
    expect(statuses.every((st) => st && st.leader === leader)).toBe(true);
    expect((await httpGet(port(leader, 'http'), 'b16', 'over')).status).toBe(404);
  });

  // Last in this cluster: the losing upload leaves orphan chunks, which tests above count.
  it('conditional writes racing on the leader: one object, one CONFLICT, the same on every replica', async () => {
    // Two creates that both pass the check before their body: a conditional upload sent with
    // Expect: 100-continue hears 100 Continue only then, and both bodies go only once both have.
    // The loser's commit is a version-2 entry every replica must refuse alike.
    const url = `http://127.0.0.1:${port(leader, 'http')}/v1/buckets/cond/objects/doc?create=1`;
    const bodies = [randomBytes(600 * 1024), randomBytes(600 * 1024)];
    let continued = 0;
    const requests = bodies.map((body) => {
      const req = http.request(url, { method: 'PUT', headers: { 'content-length': String(body.length), expect: '100-continue' } });
      const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
        req.on('response', (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        });
        req.on('error', reject);
      });
      req.on('continue', () => {
        if (++continued === bodies.length) requests.forEach((r, i) => r.req.end(bodies[i]));
      });
      req.flushHeaders();
      return { req, answer };
    });
    const answers = await Promise.all(requests.map((r) => r.answer));
    expect(answers.map((r) => r.status).sort()).toEqual([200, 409]);
    const won = JSON.parse(answers.find((r) => r.status === 200)!.body) as { rev: number; sha256: string };
    // Refused when its commit was applied (a seq in the log), not by the check before its body.
    const lostAt = (JSON.parse(answers.find((r) => r.status === 409)!.body) as { details: { seq: number } }).details.seq;
    expect(lostAt).toBeGreaterThan(0);
    const commit = (await cluster.status(leader))!.commit;
    await cluster.waitConverged(commit);
    const states: string[] = [];
    for (const n of cluster.live()) {
      const rows = await sql(port(n.id, 'http'), "SELECT name, rev, sha256 FROM objects WHERE bucket = 'cond'");
      expect(rows.body.rows).toEqual([['doc', won.rev, won.sha256]]);
      const got = await httpGet(port(n.id, 'http'), 'cond', 'doc', `?atLeast=${commit}`);
      expect(sha(got.bytes)).toBe(won.sha256);
      const conflicts = (await sql(port(n.id, 'http'), 'SELECT seq FROM _loom_conflicts ORDER BY seq')).body.rows as number[][];
      expect(conflicts.flat()).toContain(lostAt);
      states.push(JSON.stringify(conflicts));
    }
    expect(new Set(states).size).toBe(1);
    // A stale delete is refused on the leader and deletes nothing anywhere.
    const stale = await fetch(`http://127.0.0.1:${port(leader, 'http')}/v1/buckets/cond/objects/doc?expectRev=${won.rev - 1}`, { method: 'DELETE' });
    expect(stale.status).toBe(409);
    expect((await httpGet(port(followers()[0], 'http'), 'cond', 'doc', '?consistency=linearizable')).status).toBe(200);
  });
});

describe('Buckets on a 3-node cluster with frequent snapshots', () => {
  let cluster: TestCluster;
  let leader: number;
  const port = (id: number, door: 'http' | 'grpc' | 'nats'): number => cluster.node(id).ports[door];

  beforeAll(async () => {
    cluster = await TestCluster.start({ size: 3, extraArgs: ['--heartbeat-ms', '70', '--election-timeout-ms', '700', '--snapshot-entries', '20', '--snapshot-catch-up-entries', '2'] });
    leader = await cluster.waitLeader();
  });

  afterAll(async () => {
    await cluster?.close();
  });

  it('a follower that misses objects catches up by snapshot and serves them byte-exact; compacted leader still serves; dedup + overwrite refcounts agree', async () => {
    const f = cluster.live().map((n) => n.id).find((id) => id !== leader)!;
    const a = randomBytes(1024 * 1024 + 1);
    expect((await httpPut(port(leader, 'http'), 's', 'before', a)).status).toBe(200);
    await cluster.kill(f, 'SIGKILL');
    const objs: Buffer[] = [];
    for (let i = 0; i < 12; i++) {
      const d = randomBytes(300 * 1024 + i);
      objs.push(d);
      const r = await httpPut(port(leader, 'http'), 's', `o${i}`, d);
      expect(r.status).toBe(200);
    }
    // shared chunks: same content under another name, then overwrite and delete
    expect((await httpPut(port(leader, 'http'), 's', 'dup', objs[0])).status).toBe(200);
    expect((await httpPut(port(leader, 'http'), 's', 'o0', objs[1])).status).toBe(200);
    await fetch(`http://127.0.0.1:${port(leader, 'http')}/v1/buckets/s/objects/o2`, { method: 'DELETE' });
    for (let i = 0; i < 30; i++) await fetch(`http://127.0.0.1:${port(leader, 'http')}/v1/kv/k/x${i}`, { method: 'PUT', body: 'v' });
    await sleep(500);
    // leader reads after compaction
    const la = await httpGet(port(leader, 'http'), 's', 'before');
    expect(la.status).toBe(200);
    expect(la.bytes.equals(a)).toBe(true);
    await cluster.startNode(f);
    const commit = (await cluster.status(leader))!.commit;
    await cluster.waitConverged(commit, 30_000);
    const got = await httpGet(port(f, 'http'), 's', 'before');
    expect(got.status).toBe(200);
    expect(got.bytes.equals(a)).toBe(true);
    for (let i = 3; i < 12; i++) {
      const g = await httpGet(port(f, 'http'), 's', `o${i}`);
      expect(g.status).toBe(200);
      expect(g.bytes.equals(objs[i])).toBe(true);
    }
    expect((await httpGet(port(f, 'http'), 's', 'dup')).bytes.equals(objs[0])).toBe(true);
    expect((await httpGet(port(f, 'http'), 's', 'o0')).bytes.equals(objs[1])).toBe(true);
    expect((await httpGet(port(f, 'http'), 's', 'o2')).status).toBe(404);
    const tables: string[] = [];
    const lists: string[] = [];
    for (const n of cluster.live()) {
      const r = await sql(port(n.id, 'http'), 'SELECT sha256, length, refs, since FROM _loom_chunks ORDER BY sha256');
      expect(r.status).toBe(200);
      tables.push(JSON.stringify(r.body.rows));
      lists.push(JSON.stringify(await httpList(port(n.id, 'http'), 's')));
    }
    expect(new Set(lists).size).toBe(1);
    expect(new Set(tables).size).toBe(1);
    // snapshot happened?
  });

  it('kill the leader right after a small upload body is sent: whole or absent everywhere, replicas agree', async () => {
    for (let round = 0; round < 5; round++) {
      const old = leader;
      const d = randomBytes(600 * 1024 + round);
      const delays = [0, 2, 5, 10, -1];
      const delay = delays[round];
      const res = await new Promise<{ status: number; body: string }>((resolve) => {
        let body = '';
        const req = http.request(`http://127.0.0.1:${port(old, 'http')}/v1/buckets/s/objects/race${round}`, { method: 'PUT', headers: { 'content-length': String(d.length) } }, (r) => {
          if (delay === -1) void cluster.kill(old, 'SIGKILL');
          r.on('data', (c: Buffer) => (body += c.toString()));
          r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
          r.on('error', () => resolve({ status: r.statusCode ?? -1, body }));
        });
        req.on('error', (e) => resolve({ status: -1, body: e.message }));
        req.on('finish', () => {
          if (delay >= 0) setTimeout(() => void cluster.kill(old, 'SIGKILL'), delay);
        });
        req.end(d);
      });
      while (cluster.node(old).serve) await sleep(10);
      leader = await cluster.waitLeader(15_000);
      await cluster.startNode(old);
      const commit = (await cluster.status(leader))!.commit;
      await cluster.waitConverged(commit, 30_000);
      const states: string[] = [];
      for (const n of cluster.live()) {
        const g = await httpGet(port(n.id, 'http'), 's', `race${round}`);
        if (g.status === 200) expect(g.bytes.equals(d)).toBe(true);
        else expect(g.status).toBe(404);
        states.push(String(g.status));
      }
      expect(new Set(states).size).toBe(1);
      if (res.status === 200) expect(states[0]).toBe('200');
    }
  });
});
