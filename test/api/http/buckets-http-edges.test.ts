// HTTP semantics of the Buckets door that an S3/GCS-style client relies on, through a real
// `loom serve` process, node:http, raw sockets and the SDK: requests on one connection decided in
// order; a body longer than its Content-Length; the preconditions and ranges of RFC 9110; digests
// (x-loom-sha256, Digest, Content-Digest, Repr-Digest); decimal-only integers; an upload's idle
// limit. Written first by an independent review (each case failed on the code it reviewed).

import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as net from 'node:net';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { connect, type LoomClient } from '../../../src/client';
import { startServe, stopServe, type ServeProcess } from '../../support/cli';
import { httpRequest, type HttpAnswer } from '../../support/http';
import { makeTempDir, removeDir } from '../../support/tmp';

const KiB = 1024;
const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Writes `bytes` on a fresh connection, half-closes after `endAfterMs`, and returns everything the node sent. */
function rawExchange(port: number, bytes: Buffer, endAfterMs = 1500): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const out: Buffer[] = [];
    socket.on('data', (d: Buffer) => out.push(d));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(Buffer.concat(out).toString('latin1')));
    socket.write(bytes);
    setTimeout(() => socket.end(), endAfterMs);
  });
}

const objectUrl = (bucket: string, name: string): string => `/v1/buckets/${bucket}/objects/${name.split('/').map(encodeURIComponent).join('/')}`;
const json = (answer: HttpAnswer): Record<string, unknown> => JSON.parse(answer.body.toString('utf8')) as Record<string, unknown>;

describe('Buckets over HTTP: a loom serve process with default limits', () => {
  let dir: string;
  let serve: ServeProcess;
  let port: number;
  let sdk: LoomClient;

  beforeAll(async () => {
    dir = makeTempDir('loom-http-edges-');
    serve = await startServe(dir, ['--sync', 'none']);
    port = serve.ports.http;
    sdk = await connect({ servers: `nats://127.0.0.1:${serve.ports.nats}`, http: `http://127.0.0.1:${port}`, timeoutMs: 10_000 });
  });

  afterAll(async () => {
    await sdk?.close();
    if (serve) await stopServe(serve);
    removeDir(dir);
  });

  // A body longer than its Content-Length (a client that counted characters, not UTF-8 bytes)
  // makes its tail look like a malformed next request. The PUT itself is whole and is stored, so
  // its answer must be its own 200, before the 400 for the rest (RFC 9112 §9.3.2: answers go in
  // request order), never a 400 alone while the PUT replaced the object.
  it('answers a PUT whose body runs past its Content-Length with its own 200 first, and stores what it announced', async () => {
    const good = Buffer.from('the good version of the document');
    expect((await httpRequest(port, 'PUT', objectUrl('clen', 'doc'), { body: good })).status).toBe(200);
    const body = Buffer.from('héllo wörld', 'utf8');
    const head = `PUT ${objectUrl('clen', 'doc')} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: ${'héllo wörld'.length - 6}\r\n\r\n`;
    const answer = await rawExchange(port, Buffer.concat([Buffer.from(head, 'latin1'), body]));
    // The 400 for the tail may or may not follow: Node may close the connection after the PUT's answer.
    const statuses = answer.split('\r\n').filter((line) => line.startsWith('HTTP/1.1 ')).map((line) => Number(line.split(' ')[1]));
    expect(statuses[0]).toBe(200);
    const now = await httpRequest(port, 'GET', objectUrl('clen', 'doc'));
    expect([now.status, now.body.toString('utf8')]).toEqual([200, 'héll']);
    expect((await httpRequest(port, 'GET', '/healthz')).status).toBe(200);
  });

  // RFC 9110 §13.1.4: a GET whose If-Unmodified-Since is older than the object is 412. A resuming
  // download (Range + If-Unmodified-Since: <old Last-Modified>, curl -z) must not get a 206 of a
  // newer object and splice two objects together.
  it('answers a GET (plain and ranged) with If-Unmodified-Since older than the object 412, not the new bytes', async () => {
    const first = randomBytes(4000);
    await httpRequest(port, 'PUT', objectUrl('ius', 'file'), { body: first });
    const before = await httpRequest(port, 'HEAD', objectUrl('ius', 'file'));
    const lastModified = before.headers['last-modified'] as string;
    await sleep(1100); // Last-Modified has 1 s resolution
    const second = randomBytes(4000);
    await httpRequest(port, 'PUT', objectUrl('ius', 'file'), { body: second });
    const resumed = await httpRequest(port, 'GET', objectUrl('ius', 'file'), { headers: { range: 'bytes=2000-', 'if-unmodified-since': lastModified } });
    const whole = await httpRequest(port, 'GET', objectUrl('ius', 'file'), { headers: { 'if-unmodified-since': lastModified } });
    // Sanity: an If-Unmodified-Since at or after the current Last-Modified lets the GET through.
    const current = (await httpRequest(port, 'HEAD', objectUrl('ius', 'file'))).headers['last-modified'] as string;
    expect((await httpRequest(port, 'GET', objectUrl('ius', 'file'), { headers: { 'if-unmodified-since': current } })).status).toBe(200);
    expect([resumed.status, whole.status]).toEqual([412, 412]);
  });

  // Integers are decimal: Number() would read 0x2, 1e1 and 0b11, so a typo (1e1 for 11) would
  // silently mean something else.
  it.each([
    ['list ?limit=0x2', 'GET', '/v1/buckets/ints/objects?limit=0x2', {}, 'limit'],
    ['list ?limit=1e1', 'GET', '/v1/buckets/ints/objects?limit=1e1', {}, 'limit'],
    ['list ?limit=0b11', 'GET', '/v1/buckets/ints/objects?limit=0b11', {}, 'limit'],
    ['PUT x-loom-chunk-bytes: 0x1000', 'PUT', '/v1/buckets/ints/objects/c', { 'x-loom-chunk-bytes': '0x1000' }, 'x-loom-chunk-bytes'],
    ['PUT ?expectRev=0x0', 'PUT', '/v1/buckets/ints/objects/e?expectRev=0x0', {}, 'expectRev'],
  ] as const)('refuses a non-decimal integer (%s) with 400 naming the field', async (_label, method, url, headers, field) => {
    await httpRequest(port, 'PUT', objectUrl('ints', 'seed'), { body: 'x' });
    const answer = await httpRequest(port, method, url, { headers: { ...headers }, body: method === 'PUT' ? 'abc' : undefined });
    expect([answer.status, json(answer).code, (json(answer).details as { field?: string } | undefined)?.field]).toEqual([400, 'INVALID_ARGUMENT', field]);
  });

  // Buffer.from(…, 'base64') skips characters that are not base64: the header is checked whole.
  it('refuses a Digest header whose sha-256 value is not base64', async () => {
    const bytes = Buffer.from('abc');
    const b64 = createHash('sha256').update(bytes).digest('base64');
    const answer = await httpRequest(port, 'PUT', objectUrl('dig', 'junk'), { body: bytes, headers: { digest: `sha-256=!!**${b64}**` } });
    expect([answer.status, json(answer).code]).toEqual([400, 'INVALID_ARGUMENT']);
    expect((await httpRequest(port, 'GET', objectUrl('dig', 'junk'))).status).toBe(404);
  });

  // An object-mode source of numbers made Node's request throw out of the pipe, an uncaught
  // exception in the caller's process. Run in a child process, so a crash cannot take jest down.
  it('the SDK rejects a put whose source yields non-bytes with INVALID_ARGUMENT, and the caller process survives', async () => {
    const clientModule = path.join(__dirname, '../../../dist/client');
    const script = `
      const { connect } = require(${JSON.stringify(clientModule)});
      const { Readable } = require('stream');
      process.on('exit', (code) => process.stdout.write('EXIT ' + code + '\\n'));
      (async () => {
        const c = await connect({ servers: 'nats://127.0.0.1:${serve.ports.nats}', http: 'http://127.0.0.1:${port}', timeoutMs: 5000 });
        try { await c.objects.put('sdkbad', 'n', Readable.from([1, 2, 3])); console.log('RESOLVED'); }
        catch (e) { console.log('REJECTED ' + e.code); }
        await c.close();
      })();`;
    const result = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
    expect({ stdout: result.stdout.trim(), status: result.status }).toEqual({ stdout: 'REJECTED INVALID_ARGUMENT\nEXIT 0', status: 0 });
    expect((await httpRequest(port, 'GET', objectUrl('sdkbad', 'n'))).status).toBe(404);
  });

  // RFC 9112 §9.3.2: pipelined requests may run side by side only if all are safe. A PUT, a GET
  // and a DELETE sent back to back must be decided in that order.
  it('executes a PUT then a DELETE pipelined on one connection in that order', async () => {
    const body = 'pipelined version';
    const url = objectUrl('pipe', 'o');
    const wire =
      `PUT ${url} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}` +
      `GET ${url} HTTP/1.1\r\nHost: x\r\n\r\n` +
      `DELETE ${url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;
    const answer = await rawExchange(port, Buffer.from(wire), 3000);
    // Each response: status line, headers, a JSON body of Content-Length bytes.
    const responses: Array<{ status: number; body: Record<string, unknown> }> = [];
    let rest = answer;
    while (rest.startsWith('HTTP/1.1 ')) {
      const split = rest.indexOf('\r\n\r\n');
      const head = rest.slice(0, split);
      const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
      const text = rest.slice(split + 4, split + 4 + length); responses.push({ status: Number(head.split(' ')[1]), body: /application\/json/i.test(head) ? (JSON.parse(text) as Record<string, unknown>) : { text } });
      rest = rest.slice(split + 4 + length);
    }
    await sleep(200);
    const after = await httpRequest(port, 'GET', url);
    const [put, get, del] = responses;
    expect({
      statuses: responses.map((r) => r.status),
      getSawThePut: get.status === 200,
      deleteRanAfterPut: (del.body.rev as number) > (put.body.rev as number),
      deleted: del.body.deleted,
      objectAfter: after.status,
    }).toEqual({ statuses: [200, 200, 200], getSawThePut: true, deleteRanAfterPut: true, deleted: true, objectAfter: 404 });
  });

  it('ranges of every boundary and random spot agree with the bytes, for odd chunk sizes (4097, 5000, 65537)', async () => {
    const mismatches: string[] = [];
    for (const chunkBytes of [4097, 5000, 65537]) {
      for (const size of [1, chunkBytes - 1, chunkBytes, chunkBytes + 1, 3 * chunkBytes + 7]) {
        const bytes = randomBytes(size);
        const name = `odd-${chunkBytes}-${size}`;
        const put = await httpRequest(port, 'PUT', objectUrl('ranges', name), { body: bytes, headers: { 'x-loom-chunk-bytes': String(chunkBytes) } });
        expect(json(put)).toMatchObject({ size, chunkBytes, chunkCount: Math.ceil(size / chunkBytes) });
        const spots = new Set([0, 1, chunkBytes - 1, chunkBytes, chunkBytes + 1, 2 * chunkBytes, size - 2, size - 1]);
        for (let i = 0; i < 4; i++) spots.add(Math.floor(Math.random() * size));
        const points = [...spots].filter((p) => p >= 0 && p < size);
        for (const start of points) {
          for (const end of points) {
            if (end < start) continue;
            const answer = await httpRequest(port, 'GET', objectUrl('ranges', name), { headers: { range: `bytes=${start}-${end}` } });
            if (answer.status !== 206 || answer.headers['content-range'] !== `bytes ${start}-${end}/${size}` || !answer.body.equals(bytes.subarray(start, end + 1))) {
              mismatches.push(`${name} ${start}-${end}: ${answer.status} ${String(answer.headers['content-range'])}`);
            }
          }
        }
        const sdkRead = Buffer.concat(await (await sdk.objects.get('ranges', name, { offset: Math.min(chunkBytes, size - 1) })).toArray());
        expect(sdkRead.equals(bytes.subarray(Math.min(chunkBytes, size - 1)))).toBe(true);
      }
    }
    expect(mismatches).toEqual([]);
  });

  it('names with /, //, a leading or trailing /, %, ?, #, ;, +, spaces, control characters and encoded dot segments round-trip over HTTP and the SDK', async () => {
    const namesToTry = ['/', '//', '/lead', 'trail/', 'a//b', 'pct%25x', 'q?x', 'h#x', 'semi;x', 'p+q', 'sp ', 'tab\tx', '\nnl', '.', '..', 'x/../y', './x', '\u00e9', 'e\u0301'];
    for (const name of namesToTry) {
      const bytes = Buffer.from(`body of ${JSON.stringify(name)}`);
      const put = await httpRequest(port, 'PUT', objectUrl('names', name), { body: bytes });
      expect([name, put.status, json(put).name]).toEqual([name, 200, name]);
    }
    for (const name of namesToTry) {
      const expected = `body of ${JSON.stringify(name)}`;
      expect([name, (await httpRequest(port, 'GET', objectUrl('names', name))).body.toString()]).toEqual([name, expected]);
      expect([name, Buffer.concat(await (await sdk.objects.get('names', name)).toArray()).toString()]).toEqual([name, expected]);
    }
    const listed: string[] = [];
    let cursor: string | undefined;
    do {
      const page = json(await httpRequest(port, 'GET', `/v1/buckets/names/objects?limit=3${cursor ? `&cursor=${cursor}` : ''}`)) as { items: Array<{ name: string }>; cursor?: string };
      listed.push(...page.items.map((i) => i.name));
      cursor = page.cursor;
    } while (cursor);
    expect(listed).toEqual([...namesToTry].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
  });

  it('a header sent twice (x-loom-sha256, x-loom-chunk-bytes) is refused with 400 naming it, never half-read', async () => {
    const bytes = Buffer.from('twice');
    const digest = sha256(bytes);
    const raw = (headerLines: string): Buffer => Buffer.from(`PUT ${objectUrl('twice', 'o')} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n${headerLines}\r\n\r\ntwice`);
    const a = await rawExchange(port, raw(`x-loom-sha256: ${digest}\r\nx-loom-sha256: ${digest}`));
    expect(a.split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request');
    const b = await rawExchange(port, raw('x-loom-chunk-bytes: 4096\r\nx-loom-chunk-bytes: 4096'));
    expect(b.split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request');
    expect(b).toContain('"field":"x-loom-chunk-bytes"');
    expect((await httpRequest(port, 'GET', objectUrl('twice', 'o'))).status).toBe(404);
  });

  it('a chunked upload whose framing breaks mid-body is answered 400 with a loom body and stores nothing', async () => {
    const piece = randomBytes(600_000);
    const head = `PUT ${objectUrl('framing', 'broken')} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n`;
    const answer = await rawExchange(port, Buffer.concat([Buffer.from(head), Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\nzz\r\n')]));
    expect(answer.split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request');
    expect(answer).toContain('"code":"INVALID_ARGUMENT"');
    await sleep(200);
    expect((await httpRequest(port, 'GET', objectUrl('framing', 'broken'))).status).toBe(404);
  });

  it('the SDK takes strings (UTF-8 bytes), async iterables and Uint8Arrays, and refuses bad offsets before asking', async () => {
    expect((await sdk.objects.put('sdkok', 'u', 'héllo')).size).toBe(6);
    expect(
      (
        await sdk.objects.put(
          'sdkok',
          'ai',
          (async function* gen() {
            yield Buffer.from('xy');
            yield 'z';
          })(),
        )
      ).size,
    ).toBe(3);
    expect((await sdk.objects.put('sdkok', 'ua', new Uint8Array([1, 2, 3]))).sha256).toBe(sha256(new Uint8Array([1, 2, 3])));
    expect(Buffer.concat(await (await sdk.objects.get('sdkok', 'u', { offset: 1, length: 2 })).toArray()).toString('hex')).toBe('c3a9');
    expect(Buffer.concat(await (await sdk.objects.get('sdkok', 'u', { offset: 6 })).toArray()).length).toBe(0);
    await expect(sdk.objects.get('sdkok', 'u', { offset: 7 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'offset' } });
    await expect(sdk.objects.get('sdkok', 'u', { offset: -1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', details: { field: 'offset' } });
    await expect(sdk.objects.get('sdkok', 'u', { offset: 1.5 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  // RFC 9110 §14.1.1: "When a selected representation has zero length, the only satisfiable form
  // of range in a GET request is a suffix-range with a non-zero suffix-length." So `bytes=-1` on a
  // 0-byte object is satisfiable and must not be 416; a 206 cannot be written for 0 bytes, so the
  // whole (empty) 200 is the answer.
  it('answers Range bytes=-1 on a 0-byte object 200 (satisfiable per RFC 9110 §14.1.1), not 416', async () => {
    await httpRequest(port, 'PUT', '/v1/buckets/rfc/objects/empty', { body: Buffer.alloc(0) });
    const answer = await httpRequest(port, 'GET', '/v1/buckets/rfc/objects/empty', { headers: { range: 'bytes=-1' } });
    expect([answer.status, answer.body.length]).toEqual([200, 0]);
  });

  // RFC 9110 §13.1.3/§13.2.2 step 4: a GET with If-Modified-Since (and no If-None-Match) at or after
  // Last-Modified is 304.
  it('answers If-Modified-Since at the object\'s Last-Modified with 304', async () => {
    await httpRequest(port, 'PUT', '/v1/buckets/rfc/objects/ims', { body: 'cached' });
    const lastModified = (await httpRequest(port, 'HEAD', '/v1/buckets/rfc/objects/ims')).headers['last-modified'] as string;
    const answer = await httpRequest(port, 'GET', '/v1/buckets/rfc/objects/ims', { headers: { 'if-modified-since': lastModified } });
    expect(answer.status).toBe(304);
  });

  // RFC 9110 §5.6.1: a recipient MUST accept empty list elements, so `bytes=0-1,` is one range.
  it('serves Range bytes=0-1, (an empty list element) as the single range it is', async () => {
    await httpRequest(port, 'PUT', '/v1/buckets/rfc/objects/r', { body: 'hello world' });
    const answer = await httpRequest(port, 'GET', '/v1/buckets/rfc/objects/r', { headers: { range: 'bytes=0-1,' } });
    expect([answer.status, answer.body.toString()]).toEqual([206, 'he']);
  });

  // Content-Digest / Repr-Digest (RFC 9530, which obsoletes RFC 3230's Digest) are checked too.
  it('refuses an upload whose RFC 9530 Content-Digest does not match, rather than ignoring it', async () => {
    const wrong = createHash('sha256').update('something else').digest('base64');
    const answer = await httpRequest(port, 'PUT', '/v1/buckets/rfc/objects/cd', { body: 'abc', headers: { 'content-digest': `sha-256=:${wrong}:` } });
    expect(answer.status).toBe(400);
  });

  // Node joins two x-loom-meta-<key> headers as "1, 2" and keeps the first of two Content-Types;
  // RFC 9110 §5.3 allows folding only for list
  // fields; a metadata value is not one, and Content-Type is a singleton field.
  it('refuses a metadata header or Content-Type sent twice rather than folding or picking one', async () => {
    const meta = await httpRequest(port, 'PUT', '/v1/buckets/rfc/objects/m', { body: 'x', headers: { 'x-loom-meta-a': ['1', '2'] } });
    const ct = await httpRequest(port, 'PUT', '/v1/buckets/rfc/objects/c', { body: 'x', headers: { 'content-type': ['text/a', 'text/b'] } });
    expect([meta.status, ct.status]).toEqual([400, 400]);
  });
});

// No limit on a whole upload: only a body on which no byte arrives for --http-body-idle-timeout-ms
// is cut off (a whole-request limit of 60 s used to fail every upload slower than that).
describe('Buckets over HTTP: a loom serve process with --http-body-idle-timeout-ms 1000', () => {
  let dir: string;
  let serve: ServeProcess;
  let sdk: LoomClient;

  beforeAll(async () => {
    dir = makeTempDir('loom-http-idle-');
    serve = await startServe(dir, ['--sync', 'none', '--http-body-idle-timeout-ms', '1000']);
    sdk = await connect({ servers: `nats://127.0.0.1:${serve.ports.nats}`, http: `http://127.0.0.1:${serve.ports.http}`, timeoutMs: 10_000 });
  });

  afterAll(async () => {
    await sdk?.close();
    if (serve) await stopServe(serve);
    removeDir(dir);
  });

  /** 16 KiB every `gapMs` for `seconds`: slow but moving, unless the gap is longer than the limit. */
  function paced(seconds: number, gapMs: number): { stream: Readable; digest: () => string; size: () => number } {
    const hash = createHash('sha256');
    let size = 0;
    const started = Date.now();
    const stream = new Readable({
      read() {
        setTimeout(() => {
          if (Date.now() - started > seconds * 1000) {
            this.push(null);
            return;
          }
          const piece = randomBytes(16 * KiB);
          hash.update(piece);
          size += piece.length;
          this.push(piece);
        }, gapMs);
      },
    });
    let digest: string | undefined;
    return { stream, digest: () => (digest ??= hash.digest('hex')), size: () => size };
  }

  it('stores uploads that take several times the idle limit but keep moving, over plain HTTP and the SDK', async () => {
    const viaHttp = paced(4, 250);
    const viaSdk = paced(4, 250);
    const [httpAnswer, info] = await Promise.all([httpRequest(serve.ports.http, 'PUT', objectUrl('slow', 'http'), { body: viaHttp.stream }), sdk.objects.put('slow', 'sdk', viaSdk.stream)]);
    expect([httpAnswer.status, json(httpAnswer)]).toMatchObject([200, { size: viaHttp.size(), sha256: viaHttp.digest() }]);
    expect(info).toMatchObject({ size: viaSdk.size(), sha256: viaSdk.digest() });
  });

  it('cuts off an upload whose body stops for longer than the limit, stores nothing, and goes on serving', async () => {
    const started = Date.now();
    const outcome = await httpRequest(serve.ports.http, 'PUT', objectUrl('slow', 'stalled'), { body: paced(6, 2500).stream }).then(
      (answer) => `answered ${answer.status}`,
      (err: Error) => `cut: ${err.message}`,
    );
    expect(outcome).toMatch(/^cut: /);
    expect(Date.now() - started).toBeLessThan(5000);
    await sleep(200);
    expect((await httpRequest(serve.ports.http, 'GET', objectUrl('slow', 'stalled'))).status).toBe(404);
    expect((await httpRequest(serve.ports.http, 'GET', '/healthz')).status).toBe(200);
  });
});
