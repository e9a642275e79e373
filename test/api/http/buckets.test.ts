import { createHash, randomBytes } from 'node:crypto';
import * as http from 'node:http';
import * as net from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { openNode, type EmbeddedNode } from '../../../src';
import { chunkBytesDefault } from '../../../src/util/names';
import { startServe, stopServe, type ServeProcess } from '../../support/cli';
import { damageOnDisk } from '../../support/damage';
import { makeTempDir, removeDir } from '../../support/tmp';

interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

function request(port: number, method: string, path: string, options: { headers?: Record<string, string>; body?: Readable | Buffer } = {}): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers: options.headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (options.body instanceof Readable) pipeline(options.body, req).catch(reject);
    else req.end(options.body);
  });
}

/** `size` pseudo-random bytes in 64 KiB pieces, reproducible from `seed`, never all in memory. */
function generated(size: number, seed: number): { stream: () => Readable; sha256: string } {
  const piece = 64 * 1024;
  const block = createHash('sha512').update(String(seed)).digest();
  const pieceAt = (i: number): Buffer => {
    const out = Buffer.allocUnsafe(Math.min(piece, size - i * piece));
    for (let o = 0; o < out.length; o += block.length) block.copy(out, o, 0, Math.min(block.length, out.length - o));
    out.writeUInt32BE(i >>> 0, 0 % Math.max(1, out.length - 3));
    return out;
  };
  const hash = createHash('sha256');
  for (let i = 0; i * piece < size; i++) hash.update(pieceAt(i));
  return {
    sha256: hash.digest('hex'),
    stream: () =>
      Readable.from(
        (function* pieces() {
          for (let i = 0; i * piece < size; i++) yield pieceAt(i);
        })(),
      ),
  };
}

const path = (name: string): string => `/v1/buckets/files/objects/${encodeURIComponent(name)}`;

describe('Buckets over HTTP', () => {
  let dir: string;
  let node: EmbeddedNode;
  let port: number;

  beforeAll(async () => {
    dir = makeTempDir();
    node = await openNode({ data: dir, doors: true, sync: 'none' });
    port = node.ports.http as number;
  });
  afterAll(async () => {
    await node.close();
    removeDir(dir);
  });

  const chunk = chunkBytesDefault;
  it.each([0, 1, chunk - 1, chunk, chunk + 1])('round-trips %i bytes byte for byte with ETag and metadata', async (size) => {
    const bytes = randomBytes(size);
    const sha = createHash('sha256').update(bytes).digest('hex');
    const put = await request(port, 'PUT', path(`b-${size}`), { body: bytes, headers: { 'content-type': 'image/png', 'x-loom-sha256': sha, 'x-loom-meta-owner': 'ann' } });
    expect(put.status).toBe(200);
    expect(put.headers.etag).toBe(`"${sha}"`);
    expect(JSON.parse(put.body.toString())).toMatchObject({ size, sha256: sha, contentType: 'image/png', metadata: { owner: 'ann' } });
    const get = await request(port, 'GET', path(`b-${size}`));
    expect(get.status).toBe(200);
    expect(get.body.equals(bytes)).toBe(true);
    expect(get.headers).toMatchObject({ etag: `"${sha}"`, 'content-type': 'image/png', 'x-loom-meta-owner': 'ann', 'content-length': String(size) });
  });

  it('round-trips 50 MiB streamed, and serves single ranges and If-None-Match', async () => {
    const size = 50 * 1024 * 1024;
    const source = generated(size, 1);
    const digest = Buffer.from(source.sha256, 'hex').toString('base64');
    const put = await request(port, 'PUT', path('big/ü 1'), { body: source.stream(), headers: { digest: `sha-256=${digest}`, 'content-type': 'application/octet-stream' } });
    expect(put.status).toBe(200);
    const get = await request(port, 'GET', path('big/ü 1'));
    expect(get.body.length).toBe(size);
    expect(createHash('sha256').update(get.body).digest('hex')).toBe(source.sha256);

    const range = await request(port, 'GET', path('big/ü 1'), { headers: { range: `bytes=${chunk - 5}-${chunk + 4}` } });
    expect(range.status).toBe(206);
    expect(range.headers['content-range']).toBe(`bytes ${chunk - 5}-${chunk + 4}/${size}`);
    expect(range.body.equals(get.body.subarray(chunk - 5, chunk + 5))).toBe(true);
    const suffix = await request(port, 'GET', path('big/ü 1'), { headers: { range: 'bytes=-7' } });
    expect(suffix.body.equals(get.body.subarray(size - 7))).toBe(true);
    expect((await request(port, 'GET', path('big/ü 1'), { headers: { range: `bytes=${size}-` } })).status).toBe(416);
    const cached = await request(port, 'GET', path('big/ü 1'), { headers: { 'if-none-match': `"${source.sha256}"` } });
    expect(cached.status).toBe(304);
    expect(cached.body.length).toBe(0);
  });

  it('answers HEAD with the headers a GET sends, whole or ranged, and no body', async () => {
    const bytes = randomBytes(chunk + 100);
    await request(port, 'PUT', path('head'), { body: bytes, headers: { 'content-type': 'text/plain' } });
    const get = await request(port, 'GET', path('head'));
    const head = await request(port, 'HEAD', path('head'));
    expect(head.status).toBe(200);
    expect(head.body.length).toBe(0);
    for (const name of ['etag', 'content-length', 'content-type', 'last-modified', 'accept-ranges', 'loom-rev']) expect([name, head.headers[name]]).toEqual([name, get.headers[name]]);
    const ranged = await request(port, 'HEAD', path('head'), { headers: { range: 'bytes=10-19' } });
    expect(ranged.status).toBe(206);
    expect(ranged.headers).toMatchObject({ 'content-range': `bytes 10-19/${bytes.length}`, 'content-length': '10' });
  });

  it('honours If-Range and If-Match as RFC 9110 says', async () => {
    const bytes = randomBytes(1000);
    const put = await request(port, 'PUT', path('cond'), { body: bytes });
    const etag = put.headers.etag as string;
    const get = await request(port, 'GET', path('cond'));
    const lastModified = get.headers['last-modified'] as string;
    // If-Range: the range while the validator matches (strongly), the whole object once it does not.
    for (const [ifRange, status] of [[etag, 206], [lastModified, 206], ['"stale"', 200], [`W/${etag}`, 200], ['Thu, 01 Jan 2015 00:00:00 GMT', 200]] as const) {
      const res = await request(port, 'GET', path('cond'), { headers: { range: 'bytes=0-1', 'if-range': ifRange } });
      expect([ifRange, res.status]).toEqual([ifRange, status]);
      expect(res.body.equals(status === 206 ? bytes.subarray(0, 2) : bytes)).toBe(true);
    }
    // If-Match: 412 unless the ETag (or *) matches; weak tags never match.
    for (const [ifMatch, status] of [[etag, 200], ['*', 200], [`"other", ${etag}`, 200], ['"other"', 412], [`W/${etag}`, 412]] as const) {
      const res = await request(port, 'GET', path('cond'), { headers: { 'if-match': ifMatch } });
      expect([ifMatch, res.status]).toEqual([ifMatch, status]);
      if (status === 412) expect(JSON.parse(res.body.toString())).toMatchObject({ code: 'CONFLICT', details: { field: 'if-match' } });
    }
  });

  it('refuses an upload whose Content-Length is over objectBytesMax before reading it, 100-continue or not', async () => {
    const over = String(node.db.objects.objectBytesMax + 1);
    // Expect: 100-continue: 413 instead of 100, and the client sends no body.
    const refused = await new Promise<{ status: number; body: string; continued: boolean }>((resolve, reject) => {
      let continued = false;
      const req = http.request({ host: '127.0.0.1', port, method: 'PUT', path: path('huge'), headers: { 'content-length': over, expect: '100-continue' } });
      req.on('continue', () => (continued = true));
      req.on('response', (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, continued }));
      });
      req.on('error', reject);
      req.flushHeaders();
    });
    expect(refused).toMatchObject({ status: 413, continued: false });
    expect(JSON.parse(refused.body)).toMatchObject({ code: 'TOO_LARGE', details: { limit: 'objectBytesMax' } });
    // Without Expect: 413 as soon as the headers are in, though the body never comes.
    const early = await new Promise<number>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'PUT', path: path('huge'), headers: { 'content-length': over } });
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.write(Buffer.alloc(16));
    });
    expect(early).toBe(413);
    expect((await request(port, 'GET', path('huge'))).status).toBe(404);
    // Other uploads with Expect still go through.
    const ok = await request(port, 'PUT', path('small'), { body: Buffer.from('hello'), headers: { expect: '100-continue' } });
    expect(ok.status).toBe(200);
  });

  it('writes conditionally: If-None-Match: * and If-Match answer 412, ?create and ?expectRev 409, and nothing changes', async () => {
    const json = (res: Response): Record<string, unknown> => JSON.parse(res.body.toString()) as Record<string, unknown>;
    const created = await request(port, 'PUT', path('guarded'), { body: Buffer.from('one'), headers: { 'if-none-match': '*' } });
    expect(created.status).toBe(200);
    const rev = json(created).rev as number;
    // Only if absent: it exists now.
    const again = await request(port, 'PUT', path('guarded'), { body: Buffer.from('two'), headers: { 'if-none-match': '*' } });
    expect(again.status).toBe(412);
    expect(json(again)).toMatchObject({ code: 'CONFLICT', details: { currentRev: rev } });
    expect((await request(port, 'PUT', `${path('guarded')}?create=1`, { body: Buffer.from('two') })).status).toBe(409);
    // Only if it is the version the client read: its ETag, or its rev.
    const stale = await request(port, 'PUT', path('guarded'), { body: Buffer.from('two'), headers: { 'if-match': '"0000"' } });
    expect(stale.status).toBe(412);
    expect((await request(port, 'PUT', `${path('guarded')}?expectRev=${rev + 1000}`, { body: Buffer.from('two') })).status).toBe(409);
    expect((await request(port, 'GET', path('guarded'))).body.toString()).toBe('one');
    const replaced = await request(port, 'PUT', path('guarded'), { body: Buffer.from('two'), headers: { 'if-match': created.headers.etag as string } });
    expect(replaced.status).toBe(200);
    const rev2 = json(replaced).rev as number;
    expect((await request(port, 'DELETE', path('guarded'), { headers: { 'if-match': created.headers.etag as string } })).status).toBe(412);
    expect((await request(port, 'DELETE', `${path('guarded')}?expectRev=${rev}`)).status).toBe(409);
    expect((await request(port, 'GET', path('guarded'))).body.toString()).toBe('two');
    expect(json(await request(port, 'DELETE', `${path('guarded')}?expectRev=${rev2}`))).toMatchObject({ deleted: true });
    expect((await request(port, 'PUT', path('guarded'), { body: Buffer.from('x'), headers: { 'if-match': '*' } })).status).toBe(412);
    expect((await request(port, 'GET', path('guarded'))).status).toBe(404);
  });

  it('takes If-Match: * with ?expectRev (what the SDK sends, which older nodes refuse), and tells Expect: 100-continue no before the body', async () => {
    const json = (res: Response): Record<string, unknown> => JSON.parse(res.body.toString()) as Record<string, unknown>;
    const rev = json(await request(port, 'PUT', path('paired'), { body: Buffer.from('one') })).rev as number;
    expect((await request(port, 'PUT', `${path('paired')}?expectRev=${rev + 1}`, { body: Buffer.from('two'), headers: { 'if-match': '*' } })).status).toBe(412);
    expect((await request(port, 'PUT', `${path('paired')}?expectRev=${rev}`, { body: Buffer.from('two'), headers: { 'if-match': '*' } })).status).toBe(200);
    // A refused conditional upload is answered instead of 100 Continue: no body is asked for.
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () =>
        socket.write(`PUT ${path('paired')} HTTP/1.1\r\nHost: loom\r\nIf-None-Match: *\r\nContent-Length: 100000000\r\nExpect: 100-continue\r\n\r\n`),
      );
      let text = '';
      socket.on('data', (d: Buffer) => {
        text += d.toString('latin1');
        if (text.includes('\r\n\r\n')) socket.destroy();
      });
      socket.on('close', () => resolve(text));
      socket.on('error', reject);
    });
    expect(answer.startsWith('HTTP/1.1 412')).toBe(true);
    // …and one whose condition holds gets its 100 Continue and is stored.
    const created = await request(port, 'PUT', path('paired-new'), { body: Buffer.from('new'), headers: { 'if-none-match': '*', expect: '100-continue' } });
    expect(created.status).toBe(200);
    expect((await request(port, 'GET', path('paired-new'))).body.toString()).toBe('new');
  });

  it('refuses the preconditions it cannot honour, and two conditions at once, rather than ignoring them', async () => {
    const first = await request(port, 'PUT', path('guarded2'), { body: Buffer.from('one') });
    const cases: Array<[string, string, Record<string, string>, string]> = [
      ['PUT', '', { 'if-none-match': first.headers.etag as string }, 'if-none-match'],
      ['DELETE', '', { 'if-unmodified-since': 'Thu, 01 Jan 2015 00:00:00 GMT' }, 'if-unmodified-since'],
      ['PUT', '', { 'if-modified-since': 'Thu, 01 Jan 2015 00:00:00 GMT' }, 'if-modified-since'],
      ['PUT', '?create=1', { 'if-match': '*' }, 'if-match'],
      ['PUT', '?expectRev=x', {}, 'expectRev'],
      ['DELETE', '?expectRev=1&expectRev=2', {}, 'expectRev'],
      ['PUT', '?create=yes', {}, 'create'],
    ];
    for (const [method, query, headers, field] of cases) {
      const res = await request(port, method, `${path('guarded2')}${query}`, { body: method === 'PUT' ? Buffer.from('two') : undefined, headers });
      expect([method, field, res.status]).toEqual([method, field, 400]);
      expect(JSON.parse(res.body.toString())).toMatchObject({ code: 'INVALID_ARGUMENT', details: { field } });
    }
    const still = await request(port, 'GET', path('guarded2'));
    expect(still.headers.etag).toBe(first.headers.etag);
    expect(still.body.toString()).toBe('one');
  });

  it('answers requests the HTTP parser refuses with a loom error body', async () => {
    const raw = (text: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const socket = net.connect(port, '127.0.0.1', () => socket.end(text));
        let out = '';
        socket.on('data', (d: Buffer) => (out += d.toString()));
        socket.on('end', () => resolve(out));
        socket.on('error', reject);
      });
    const big = await raw(`GET ${path('x')} HTTP/1.1\r\nHost: a\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(big.split('\r\n')[0]).toBe('HTTP/1.1 431 Request Header Fields Too Large');
    expect(JSON.parse(big.slice(big.indexOf('\r\n\r\n') + 4))).toMatchObject({ code: 'TOO_LARGE', details: { limit: 'maxHeaderSize' } });
    const folded = await raw(`GET ${path('x')} HTTP/1.1\r\nHost: a\r\nx-loom-meta-k: a\r\n b\r\n\r\n`);
    expect(folded.split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request');
    expect(JSON.parse(folded.slice(folded.indexOf('\r\n\r\n') + 4))).toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'request' } });
  });

  it('stores any content type the metadata rule allows, and refuses the others naming contentType', async () => {
    const ok = await request(port, 'PUT', path('typed'), { body: Buffer.from('x'), headers: { 'content-type': 'foo' } });
    expect(ok.status).toBe(200);
    expect((await request(port, 'GET', path('typed'))).headers['content-type']).toBe('foo');
    const bad = await request(port, 'PUT', path('typed'), { body: Buffer.from('y'), headers: { 'content-type': 'text/plain; name="\u00e9"' } });
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body.toString())).toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'contentType' } });
  });

  it('answers a URL that is not valid percent-encoding with a loom error body', async () => {
    const res = await request(port, 'PUT', '/v1/buckets/files/objects/a%FFb', { body: Buffer.from('x') });
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body.toString())).toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'url' } });
  });

  it('rejects an upload whose digest does not match, leaving nothing visible', async () => {
    const put = await request(port, 'PUT', path('wrong'), { body: randomBytes(1000), headers: { 'x-loom-sha256': 'ab'.repeat(32) } });
    expect(put.status).toBe(400);
    expect(JSON.parse(put.body.toString()).code).toBe('INVALID_ARGUMENT');
    expect((await request(port, 'GET', path('wrong'))).status).toBe(404);
  });

  it('leaves nothing visible when the client goes away mid-upload', async () => {
    await new Promise<void>((resolve) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'PUT', path: path('cut'), headers: { 'content-length': String(4 * chunk) } });
      req.on('error', () => resolve());
      req.write(randomBytes(2 * chunk), () => setTimeout(() => req.destroy(), 100));
      req.on('close', () => resolve());
    });
    await new Promise((r) => setTimeout(r, 200));
    expect((await request(port, 'GET', path('cut'))).status).toBe(404);
  });

  it('lists and deletes objects', async () => {
    await request(port, 'PUT', path('l/a'), { body: Buffer.from('a') });
    await request(port, 'PUT', path('l/b'), { body: Buffer.from('b') });
    const list = await request(port, 'GET', '/v1/buckets/files/objects?prefix=l/&limit=1');
    const page = JSON.parse(list.body.toString()) as { items: Array<{ name: string }>; cursor?: string };
    expect(page.items.map((i) => i.name)).toEqual(['l/a']);
    const next = JSON.parse((await request(port, 'GET', `/v1/buckets/files/objects?prefix=l/&cursor=${page.cursor}`)).body.toString()) as { items: Array<{ name: string }> };
    expect(next.items.map((i) => i.name)).toEqual(['l/b']);
    const del = await request(port, 'DELETE', path('l/a'));
    expect(JSON.parse(del.body.toString())).toMatchObject({ deleted: true });
    expect((await request(port, 'GET', path('l/a'))).status).toBe(404);
  });
});

/** What a client reading a raw socket got: the status, headers and every body byte before the socket ended. */
interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/**
 * A GET over a plain socket, read until the node ends the connection, so nothing between the node
 * and the test can drop or add a byte. `slow` reads a socket read every 2 ms, so the node's
 * writes back up behind the test, as a slow client's do.
 */
function rawGet(port: number, path: string, options: { headers?: Record<string, string>; slow?: boolean } = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const parts: Buffer[] = [];
    const head = Object.entries({ host: '127.0.0.1', connection: 'close', ...options.headers }).map(([k, v]) => `${k}: ${v}\r\n`);
    socket.write(`GET ${path} HTTP/1.1\r\n${head.join('')}\r\n`);
    socket.on('data', (data: Buffer) => {
      parts.push(data);
      if (!options.slow) return;
      socket.pause();
      setTimeout(() => socket.resume(), 2);
    });
    socket.on('error', reject);
    socket.on('end', () => {
      socket.destroy();
      const all = Buffer.concat(parts);
      const split = all.indexOf('\r\n\r\n');
      const [statusLine, ...lines] = all.subarray(0, split).toString('latin1').split('\r\n');
      const headers = Object.fromEntries(lines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]));
      resolve({ status: Number(statusLine.split(' ')[1]), headers, body: all.subarray(split + 4) });
    });
  });
}

describe('a loom serve process and a damaged chunk', () => {
  const chunk = chunkBytesDefault;
  let dir: string;
  let serve: ServeProcess;

  beforeAll(async () => {
    dir = makeTempDir();
    serve = await startServe(dir);
  });
  afterAll(async () => {
    await stopServe(serve);
    removeDir(dir);
  });

  /** Stores `bytes` as `name` and damages its chunk `index` on disk while the node runs. */
  async function storeDamaged(name: string, bytes: Buffer, index: number): Promise<void> {
    expect((await request(serve.ports.http, 'PUT', path(name), { body: bytes })).status).toBe(200);
    expect(damageOnDisk(dir, bytes.subarray(index * chunk + 100, index * chunk + 164))).not.toEqual([]);
  }

  it('survives a chunk after the first that fails its check: GET sends the bytes before it and cuts, HEAD answers', async () => {
    const bytes = randomBytes(3 * chunk);
    await storeDamaged('damaged-second', bytes, 1);
    for (const method of ['GET', 'HEAD', 'GET']) {
      if (method === 'HEAD') {
        const head = await request(serve.ports.http, 'HEAD', path('damaged-second'));
        expect(head.status).toBe(200);
        expect(head.headers['content-length']).toBe(String(bytes.length));
        continue;
      }
      const answer = await rawGet(serve.ports.http, path('damaged-second'));
      expect(answer.status).toBe(200);
      expect(answer.headers['content-length']).toBe(String(bytes.length));
      expect(answer.body.equals(bytes.subarray(0, chunk))).toBe(true);
    }
    // The process is still up, and serves the bytes before the damage.
    expect(serve.child.exitCode).toBeNull();
    const range = await request(serve.ports.http, 'GET', path('damaged-second'), { headers: { range: 'bytes=0-99' } });
    expect(range.status).toBe(206);
    expect(range.body.equals(bytes.subarray(0, 100))).toBe(true);
  });

  it('sends every byte before a damaged chunk in the middle, byte for byte, then cuts the response, to a fast and a slow client', async () => {
    // 48 chunks, the 41st damaged: far past the node's read-ahead (downloadBytesAheadMax, 1 MiB) and
    // more than the kernel's socket buffers hold, so the slow client's bytes queue in the node.
    const damaged = 40;
    const bytes = randomBytes(48 * chunk);
    await storeDamaged('damaged-middle', bytes, damaged);
    for (const slow of [false, true]) {
      const answer = await rawGet(serve.ports.http, path('damaged-middle'), { slow });
      expect(answer.status).toBe(200);
      expect(answer.headers['content-length']).toBe(String(bytes.length));
      expect(answer.body.length).toBe(damaged * chunk);
      expect(answer.body.equals(bytes.subarray(0, damaged * chunk))).toBe(true);
    }
    // A range is cut at the same byte of the object.
    const from = 2 * chunk + 5;
    const ranged = await rawGet(serve.ports.http, path('damaged-middle'), { headers: { range: `bytes=${from}-` } });
    expect(ranged.status).toBe(206);
    expect(ranged.headers['content-length']).toBe(String(bytes.length - from));
    expect(ranged.body.equals(bytes.subarray(from, damaged * chunk))).toBe(true);
    // From the first byte not delivered, the damaged chunk is the first: a clean CORRUPT naming it.
    const next = await rawGet(serve.ports.http, path('damaged-middle'), { headers: { range: `bytes=${damaged * chunk}-` } });
    expect(next.status).toBe(500);
    expect(JSON.parse(next.body.toString())).toMatchObject({ code: 'CORRUPT', details: { chunk: damaged } });
    expect(serve.child.exitCode).toBeNull();
  });
});
