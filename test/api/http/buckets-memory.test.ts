import { createHash } from 'node:crypto';
import * as http from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { startServe, stopServe } from '../../support/cli';
import { describeRss, rssAround } from '../../support/rss';
import { makeTempDir, removeDir } from '../../support/tmp';

const objectBytes = 1024 ** 3;
const pieceBytes = 1024 * 1024;
const growthBytesMax = 100 * 1024 * 1024;

/** `pieces` MiB of bytes that differ from piece to piece, so no two chunks are the same. */
function source(pieces: number): Readable {
  const piece = Buffer.alloc(pieceBytes, 7);
  return Readable.from(
    (function* generate() {
      for (let i = 0; i < pieces; i++) {
        for (let at = 0; at < pieceBytes; at += 64 * 1024) piece.writeUInt32BE(i, at);
        yield Buffer.from(piece);
      }
    })(),
  );
}

function upload(port: number, name: string, body: Readable): Promise<{ status: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'PUT', path: `/v1/buckets/mem/objects/${name}` }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, sha256: (JSON.parse(Buffer.concat(parts).toString()) as { sha256: string }).sha256 }));
      res.on('error', reject);
    });
    req.on('error', reject);
    pipeline(body, req).catch(reject);
  });
}

function download(port: number, name: string): Promise<{ size: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: `/v1/buckets/mem/objects/${name}` }, (res) => {
        const hash = createHash('sha256');
        let size = 0;
        res.on('data', (d: Buffer) => {
          hash.update(d);
          size += d.length;
        });
        res.on('end', () => resolve({ size, sha256: hash.digest('hex') }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

const onLinux = process.platform === 'linux' ? describe : describe.skip;

onLinux('a loom serve process and a 1 GiB object', () => {
  it('uploads and downloads it over HTTP with RSS less than 100 MiB above where it started, at its peak and once quiet', async () => {
    const dir = makeTempDir();
    const serve = await startServe(dir);
    const pid = serve.child.pid as number;
    try {
      const port = serve.ports.http;
      const rss = await rssAround(pid, async (uploaded) => {
        const put = await upload(port, 'gig', source(objectBytes / pieceBytes));
        expect(put.status).toBe(200);
        uploaded();
        expect(await download(port, 'gig')).toEqual({ size: objectBytes, sha256: put.sha256 });
      });
      process.stdout.write(describeRss('1 GiB up+down over HTTP', rss));
      expect(rss.peakBytes - rss.startedBytes).toBeLessThan(growthBytesMax);
      expect(rss.quietBytes - rss.startedBytes).toBeLessThan(growthBytesMax);
    } finally {
      await stopServe(serve);
      removeDir(dir);
    }
  }, 180_000);
});
