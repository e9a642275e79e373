import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { Readable } from 'node:stream';
import { Bus } from '../../src/bus';
import { openDatabase, uploadChunksInFlightMax, type OpenDatabase } from '../../src/core';
import { Views } from '../../src/core/views';
import { LmdbLog, type LogStore } from '../../src/eventlog';
import type { Change } from '../../src/projections';
import { LoomError, silentLogger } from '../../src/util';
import { damageOnDisk, filesHolding } from '../support/damage';
import { makeTempDir, removeDir } from '../support/tmp';

const chunk = 4096;

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

function pieces(bytes: Buffer, size: number): Readable {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
  return Readable.from(out);
}

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  return promise.then(
    () => undefined,
    (err: unknown) => (err instanceof LoomError ? err.code : String(err)),
  );
}

describe('objects on one node', () => {
  let dir: string;
  let log: LogStore;
  let opened: OpenDatabase;
  let clock: number;

  async function start(): Promise<void> {
    log = LmdbLog.open({ path: `${dir}/log`, sync: 'none' });
    opened = await openDatabase({ log, viewsDir: `${dir}/views`, logger: silentLogger(), bus: new Bus(), now: () => clock, objects: { chunkBytes: chunk }, chunkGcIntervalMs: 3_600_000, snapshotCatchUpEntries: 0 });
  }
  async function stop(): Promise<void> {
    await opened.close();
    await log.close();
  }

  beforeEach(async () => {
    dir = makeTempDir();
    clock = 1_800_000_000_000;
    await start();
  });
  afterEach(async () => {
    await stop();
    removeDir(dir);
  });

  it.each([0, 1, chunk - 1, chunk, chunk + 1, 5 * chunk + 17])('round-trips %i bytes byte for byte', async (size) => {
    const bytes = randomBytes(size);
    const info = await opened.db.objects.put('files', `f-${size}`, pieces(bytes, 1000), { contentType: 'image/png', metadata: { a: 'b' } });
    expect(info).toMatchObject({ size, sha256: createHash('sha256').update(bytes).digest('hex'), contentType: 'image/png', metadata: { a: 'b' } });
    const download = await opened.db.objects.get('files', `f-${size}`);
    expect((await collect(download.stream)).equals(bytes)).toBe(true);
    expect(await opened.db.objects.stat('files', `f-${size}`)).toEqual(info);
  });

  it('stores the chunks of the same content under two names once', async () => {
    const bytes = randomBytes(3 * chunk);
    await opened.db.objects.put('files', 'one', bytes);
    const before = opened.db.objects.chunkStats();
    await opened.db.objects.put('files', 'two', bytes);
    expect(opened.db.objects.chunkStats()).toEqual(before);
    expect(before).toMatchObject({ chunks: 3, unreferenced: 0, bytes: 3 * chunk });
  });

  it('frees the chunks of an overwritten and of a deleted object after a collection, and keeps shared ones', async () => {
    const shared = randomBytes(chunk);
    await opened.db.objects.put('files', 'a', Buffer.concat([shared, randomBytes(chunk)]));
    await opened.db.objects.put('files', 'b', Buffer.concat([shared, randomBytes(10)]));
    await opened.db.objects.put('files', 'a', randomBytes(chunk));
    expect(opened.db.objects.chunkStats()).toMatchObject({ chunks: 4, unreferenced: 1 });
    // Not old enough yet: the orphan age protects uploads in progress.
    expect((await opened.db.objects.collectGarbage({ olderThanMs: 1000, now: clock })).collected).toBe(0);
    clock += 2000;
    expect((await opened.db.objects.collectGarbage({ olderThanMs: 1000, now: clock })).collected).toBe(1);
    expect(await opened.db.objects.delete('files', 'b')).toMatchObject({ deleted: true });
    expect(await opened.db.objects.delete('files', 'b')).toMatchObject({ deleted: false });
    clock += 2000;
    expect((await opened.db.objects.collectGarbage({ olderThanMs: 1000, now: clock })).collected).toBe(2);
    expect(opened.db.objects.chunkStats()).toMatchObject({ chunks: 1, unreferenced: 0 });
    expect(await codeOf(opened.db.objects.stat('files', 'b'))).toBe('NOT_FOUND');
  });

  it('serves ranges', async () => {
    const bytes = randomBytes(3 * chunk + 100);
    await opened.db.objects.put('files', 'r', bytes);
    for (const [offset, length] of [
      [0, 1],
      [chunk - 1, 2],
      [chunk, chunk],
      [10, 3 * chunk],
      [3 * chunk + 99, 1],
      [5, undefined],
    ] as Array<[number, number | undefined]>) {
      const download = await opened.db.objects.get('files', 'r', { offset, length });
      const end = length === undefined ? bytes.length : offset + length;
      expect((await collect(download.stream)).equals(bytes.subarray(offset, end))).toBe(true);
    }
    expect(await codeOf(opened.db.objects.get('files', 'r', { offset: bytes.length + 1 }))).toBe('INVALID_ARGUMENT');
  });

  it('leaves nothing visible from an interrupted upload, and collects its chunks', async () => {
    // Chunks gathered for one proposal (fewer than a window, 64 of 4 KiB) never reach the log.
    expect(uploadChunksInFlightMax).toBe(64);
    async function* broken(chunks: number): AsyncGenerator<Buffer> {
      yield randomBytes(chunks * chunk);
      throw new Error('client went away');
    }
    expect(await codeOf(opened.db.objects.put('files', 'gone', broken(3)))).toBe('Error: client went away');
    expect(opened.db.objects.chunkStats()).toMatchObject({ chunks: 0 });
    // Past a full window, every chunk is proposed as it is cut.
    expect(await codeOf(opened.db.objects.put('files', 'gone', broken(70)))).toBe('Error: client went away');
    expect(await codeOf(opened.db.objects.stat('files', 'gone'))).toBe('NOT_FOUND');
    expect(opened.db.objects.chunkStats()).toMatchObject({ chunks: 70, unreferenced: 70 });
    clock += 10;
    await opened.db.objects.collectGarbage({ olderThanMs: 0, now: clock });
    expect(opened.db.objects.chunkStats()).toMatchObject({ chunks: 0 });
  });

  it('proposes the commit without waiting for its chunks to be durable, and succeeds once they are', async () => {
    const core = opened.db.core;
    const propose = core.proposeCommitted.bind(core);
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const chunkProposals = jest.spyOn(core, 'proposeCommitted').mockImplementation(async (entry) => {
      const seq = await propose(entry);
      await held;
      return seq;
    });
    const commits = jest.spyOn(opened.db, 'mutate');
    try {
      const bytes = randomBytes(3 * chunk);
      const upload = opened.db.objects.put('files', 'piped', bytes);
      // Bounded: before the change the commit waited for the held chunks and never came.
      for (let turn = 0; turn < 200 && commits.mock.calls.length === 0; turn++) await new Promise((resolve) => setTimeout(resolve, 5));
      expect(commits.mock.calls.map((call) => call[0])).toEqual(['blob.commit']);
      expect(chunkProposals).toHaveBeenCalledTimes(3);
      release();
      expect((await upload).size).toBe(bytes.length);
      expect((await collect((await opened.db.objects.get('files', 'piped')).stream)).equals(bytes)).toBe(true);
    } finally {
      chunkProposals.mockRestore();
      commits.mockRestore();
    }
  });

  it('fails the upload with the error of a chunk proposal that failed while the source was slow', async () => {
    const core = opened.db.core;
    const propose = core.proposeCommitted.bind(core);
    let proposals = 0;
    const failing = jest.spyOn(core, 'proposeCommitted').mockImplementation((entry) =>
      // The second chunk's proposal fails while the upload waits for its source.
      ++proposals === 2 ? new Promise((_, reject) => setTimeout(() => reject(new LoomError('UNAVAILABLE', 'the log refused the chunk')), 10)) : propose(entry),
    );
    async function* slow(): AsyncGenerator<Buffer> {
      // A full window: all 64 chunks are proposed, the upload awaits the first and reads on.
      yield randomBytes(uploadChunksInFlightMax * chunk);
      await new Promise((resolve) => setTimeout(resolve, 50));
      yield randomBytes(chunk);
    }
    try {
      expect(await codeOf(opened.db.objects.put('files', 'slow', slow()))).toBe('UNAVAILABLE');
      expect(await codeOf(opened.db.objects.stat('files', 'slow'))).toBe('NOT_FOUND');
    } finally {
      failing.mockRestore();
    }
  });

  it('rejects an upload whose digest does not match, leaving nothing visible', async () => {
    const bytes = randomBytes(chunk * 2);
    const wrong = createHash('sha256').update('other').digest('hex');
    expect(await codeOf(opened.db.objects.put('files', 'bad', bytes, { sha256: wrong }))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(opened.db.objects.stat('files', 'bad'))).toBe('NOT_FOUND');
    const right = createHash('sha256').update(bytes).digest('hex');
    expect((await opened.db.objects.put('files', 'good', bytes, { sha256: right })).sha256).toBe(right);
  });

  it('rejects an object over the size limit', async () => {
    await stop();
    log = LmdbLog.open({ path: `${dir}/log`, sync: 'none' });
    opened = await openDatabase({ log, viewsDir: `${dir}/views`, logger: silentLogger(), objects: { chunkBytes: chunk, objectBytesMax: 10_000 } });
    expect(await codeOf(opened.db.objects.put('files', 'big', randomBytes(10_001)))).toBe('TOO_LARGE');
    expect((await opened.db.objects.put('files', 'fits', randomBytes(10_000))).size).toBe(10_000);
  });

  it('lists objects with a prefix and cursor', async () => {
    for (const name of ['a/1', 'a/2', 'a/3', 'b/1']) await opened.db.objects.put('files', name, name);
    const first = await opened.db.objects.list('files', { prefix: 'a/', limit: 2 });
    expect(first.items.map((i) => i.name)).toEqual(['a/1', 'a/2']);
    const second = await opened.db.objects.list('files', { prefix: 'a/', limit: 2, cursor: first.cursor });
    expect(second.items.map((i) => i.name)).toEqual(['a/3']);
    expect(second.cursor).toBeUndefined();
  });

  it('lists names with characters beyond U+FFFF, with and without a prefix, and nothing of the next bucket', async () => {
    // UTF-8 order: 'x', then '\uffff' (EF BF BF), then the emoji (F0 9F ...), then U+10FFFF (F4 8F BF BF).
    const names = ['emoji/x', 'emoji/\uffff', 'emoji/😀.png', 'emoji/😀/deep', 'emoji/\u{10ffff}', '😀 first'];
    for (const name of names) await opened.db.objects.put('unicode', name, name);
    await opened.db.objects.put('unicode2', 'emoji/😀 elsewhere', 'x');
    const all = await opened.db.objects.list('unicode');
    expect(all.items.map((i) => i.name)).toEqual([...names].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    const paged: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await opened.db.objects.list('unicode', { prefix: 'emoji/', limit: 2, cursor });
      paged.push(...page.items.map((i) => i.name));
      cursor = page.cursor;
    } while (cursor);
    expect(paged).toEqual(['emoji/x', 'emoji/\uffff', 'emoji/😀.png', 'emoji/😀/deep', 'emoji/\u{10ffff}']);
    expect((await opened.db.objects.list('unicode', { prefix: 'emoji/😀' })).items.map((i) => i.name)).toEqual(['emoji/😀.png', 'emoji/😀/deep']);
  });

  it('publishes PUT and DEL changes on $OBJ.<bucket>.<token>, the same live and replayed', async () => {
    const from = opened.core.status().appliedIndex;
    const live: Change[] = [];
    const watch = opened.db.watch('$OBJ.files.>', { fromSeq: from });
    const reading = (async () => {
      for await (const change of watch) {
        live.push(change);
        if (live.length === 2) break;
      }
    })();
    await opened.db.objects.put('files', 'ünï/😀', 'hello', { contentType: 'text/plain' });
    await opened.db.objects.delete('files', 'ünï/😀');
    await reading;
    const token = Buffer.from('ünï/😀').toString('base64url');
    expect(live.map((c) => [c.subject, c.kind === 'object' ? c.op : ''])).toEqual([
      [`$OBJ.files.${token}`, 'PUT'],
      [`$OBJ.files.${token}`, 'DEL'],
    ]);
    const replay = opened.db.watch('$OBJ.>', { fromSeq: from });
    const replayed: Change[] = [];
    for await (const change of replay) {
      replayed.push(change);
      if (replayed.length === 2) break;
    }
    expect(replayed).toEqual(live);
  });

  it('fails CORRUPT, never with wrong bytes, when a stored chunk is damaged on disk', async () => {
    const bytes = randomBytes(2 * chunk);
    await opened.db.objects.put('files', 'c', bytes);
    await stop();
    expect(damageOnDisk(dir, bytes.subarray(chunk + 100, chunk + 164))).toEqual(['log/data.mdb']);
    await start();
    const download = await opened.db.objects.get('files', 'c');
    expect(await codeOf(collect(download.stream))).toBe('CORRUPT');
  });

  it('hands over every piece read ahead of a damaged chunk before it fails, paused or flowing; from the damaged chunk it fails before any piece', async () => {
    // 300 chunks of 4 KiB, the 201st damaged: within the 256 the stream reads ahead (downloadBytesAheadMax).
    const damaged = 200;
    const bytes = randomBytes(300 * chunk);
    await opened.db.objects.put('files', 'middle', bytes);
    expect(damageOnDisk(dir, bytes.subarray(damaged * chunk + 100, damaged * chunk + 164))).toEqual(['log/data.mdb']);
    const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

    // Paused: it reads ahead up to the damaged chunk, stops there, and holds its failure.
    const paused = (await opened.db.objects.get('files', 'middle')).stream;
    paused.on('readable', () => undefined);
    while (paused.readableLength < damaged) await settle();
    for (let turn = 0; turn < 10; turn++) await settle();
    expect(paused.readableLength).toBe(damaged);
    expect(paused.destroyed).toBe(false);
    paused.removeAllListeners('readable');
    const parts: Buffer[] = [];
    const failure = await (async () => {
      for await (const part of paused) parts.push(part as Buffer);
    })().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toMatchObject({ code: 'CORRUPT', details: { chunk: damaged } });
    expect(Buffer.concat(parts).equals(bytes.subarray(0, damaged * chunk))).toBe(true);

    // Flowing ('data'), every piece taken as it comes.
    const flowing = (await opened.db.objects.get('files', 'middle')).stream;
    const flowed: Buffer[] = [];
    flowing.on('data', (part: Buffer) => flowed.push(part));
    expect(await new Promise<unknown>((resolve) => flowing.once('error', resolve))).toMatchObject({ code: 'CORRUPT', details: { chunk: damaged } });
    expect(Buffer.concat(flowed).equals(bytes.subarray(0, damaged * chunk))).toBe(true);

    // A range that starts in the damaged chunk fails before any piece.
    const first = (await opened.db.objects.get('files', 'middle', { offset: damaged * chunk + 1 })).stream;
    const none: Buffer[] = [];
    first.on('data', (part: Buffer) => none.push(part));
    expect(await new Promise<unknown>((resolve) => first.once('error', resolve))).toMatchObject({ code: 'CORRUPT', details: { chunk: damaged } });
    expect(none).toEqual([]);
  });

  it('fails CORRUPT for a chunk damaged on disk while the node runs', async () => {
    const bytes = randomBytes(2 * chunk);
    await opened.db.objects.put('files', 'live', bytes);
    expect(damageOnDisk(dir, bytes.subarray(100, 164))).toEqual(['log/data.mdb']);
    const download = await opened.db.objects.get('files', 'live');
    expect(await codeOf(collect(download.stream))).toBe('CORRUPT');
  });

  it('keeps the bytes of a chunk once: in the log, then in the view once the log is compacted below it', async () => {
    const bytes = randomBytes(3 * chunk);
    await opened.db.objects.put('files', 'kept', bytes);
    const needle = bytes.subarray(2 * chunk + 100, 2 * chunk + 164);
    expect(filesHolding(dir, needle)).toEqual(['log/data.mdb']);

    // A snapshot that compacts the log below every chunk entry: their bytes move into the view.
    await opened.db.kv.put('other', 'k', 'v');
    const meta = await opened.snapshot();
    expect(log.firstIndex()).toBe(meta.index + 1);
    const download = await opened.db.objects.get('files', 'kept');
    expect((await collect(download.stream)).equals(bytes)).toBe(true);
    expect(opened.db.objects.chunkStats()).toMatchObject({ chunks: 3, bytes: 3 * chunk });
    // The view holds them now, and so does the snapshot file: a follower that installs it has no
    // log before it. (The log's file may still hold them in pages LMDB freed but has not reused.)
    expect(filesHolding(dir, needle)).toEqual(expect.arrayContaining(['views-snapshots/' + readdirSync(`${dir}/views-snapshots`)[0], 'views/lmdb/data.mdb']));

    // And they survive a restart, and are still checked when read.
    await stop();
    await start();
    expect((await collect((await opened.db.objects.get('files', 'kept')).stream)).equals(bytes)).toBe(true);
    await stop();
    expect(damageOnDisk(`${dir}/views`, needle)).toEqual(['lmdb/data.mdb']);
    await start();
    expect(await codeOf(collect((await opened.db.objects.get('files', 'kept')).stream))).toBe('CORRUPT');
  });

  it('does not compact the log below a chunk whose bytes there fail their check', async () => {
    const bytes = randomBytes(2 * chunk);
    await opened.db.objects.put('files', 'bad', bytes);
    // Damaged after the snapshot's copy was made, before the log's copy is moved into the view.
    const backup = Views.prototype.backup;
    const spy = jest.spyOn(Views.prototype, 'backup').mockImplementation(async function (this: Views, ...args: Parameters<Views['backup']>) {
      await backup.apply(this, args);
      damageOnDisk(dir, bytes.subarray(chunk + 100, chunk + 164));
    });
    try {
      const failed = await opened.snapshot().then(
        () => undefined,
        (e: unknown) => e as LoomError,
      );
      expect(failed?.code).toBe('CORRUPT');
      expect(failed?.message).toContain('the log is not compacted below it');
    } finally {
      spy.mockRestore();
    }
    expect(log.firstIndex()).toBe(1);
  });

  it('answers UNAVAILABLE, not CORRUPT, while a snapshot install has reset the log under the old views', async () => {
    const bytes = randomBytes(2 * chunk);
    await opened.db.objects.put('files', 'moving', bytes);
    const download = await opened.db.objects.get('files', 'moving');
    // The step of an install between restarting the log after the snapshot and replacing the views.
    await log.resetToSnapshot({ index: 10_000, term: 7 });
    expect(await codeOf(collect(download.stream))).toBe('UNAVAILABLE');
  });
});
