import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { openDatabase } from '../../src/core';
import { LmdbLog } from '../../src/eventlog';
import { silentLogger } from '../../src/util';
import { makeTempDir, removeDir } from '../support/tmp';

/**
 * The whole RSS and its anonymous part (heap, buffers, native allocations), from /proc/self/status.
 * The rest is pages of files this process maps: LMDB reads chunks through its map, and the node gives
 * those pages back as it goes (util/mapped-memory.ts), so the whole RSS is bounded too.
 */
function memory(): { anonBytes: number; rssBytes: number } {
  const status = readFileSync('/proc/self/status', 'utf8');
  const kb = (field: string): number => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024;
  return { anonBytes: kb('RssAnon'), rssBytes: kb('VmRSS') };
}

const objectBytes = 1024 ** 3;
const pieceBytes = 64 * 1024;
const growthBytesMax = 100 * 1024 * 1024;

describe('object memory', () => {
  it('uploads and downloads a 1 GiB object with the node\'s RSS growing by less than 100 MiB (log sync none)', async () => {
    const dir = makeTempDir();
    // sync none: this test measures memory, not fsync latency; durability is tested elsewhere.
    const log = LmdbLog.open({ path: `${dir}/log`, sync: 'none' });
    const opened = await openDatabase({ log, viewsDir: `${dir}/views`, logger: silentLogger() });
    try {
      const piece = Buffer.alloc(pieceBytes);
      const source = (): Readable =>
        Readable.from(
          (function* generate() {
            for (let i = 0; i < objectBytes / pieceBytes; i++) {
              piece.writeUInt32BE(i, 0);
              yield Buffer.from(piece);
            }
          })(),
        );
      // The digest to expect, computed before measuring from the one piece, so that the test's own
      // garbage does not raise the level the node's growth is measured from.
      const expected = createHash('sha256');
      for (let i = 0; i < objectBytes / pieceBytes; i++) {
        piece.writeUInt32BE(i, 0);
        expected.update(piece);
      }
      await opened.db.objects.put('mem', 'warm-up', source().take(64));
      const before = memory();
      let peak = before;
      const sampler = setInterval(() => {
        const now = memory();
        if (now.anonBytes > peak.anonBytes) peak = { ...peak, anonBytes: now.anonBytes };
        if (now.rssBytes > peak.rssBytes) peak = { ...peak, rssBytes: now.rssBytes };
      }, 100);
      const info = await opened.db.objects.put('mem', 'gig', source());
      expect(info.sha256).toBe(expected.digest('hex'));
      const download = await opened.db.objects.get('mem', 'gig');
      const actual = createHash('sha256');
      let size = 0;
      for await (const p of download.stream) {
        actual.update(p as Buffer);
        size += (p as Buffer).length;
      }
      clearInterval(sampler);
      expect(size).toBe(objectBytes);
      expect(actual.digest('hex')).toBe(info.sha256);
      const growth = peak.rssBytes - before.rssBytes;
      process.stdout.write(`1 GiB up+down: RSS growth ${(growth / 2 ** 20).toFixed(1)} MiB, of which anonymous ${((peak.anonBytes - before.anonBytes) / 2 ** 20).toFixed(1)} MiB\n`);
      expect(growth).toBeLessThan(growthBytesMax);
    } finally {
      await opened.close();
      await log.close();
      removeDir(dir);
    }
  }, 120_000);
});
