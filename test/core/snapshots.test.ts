// Snapshots of the views (docs/snapshots.md): the self-checking file, compaction below a snapshot,
// views restored from it when they lag the compacted log, and installing one received from a leader.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { pack } from 'msgpackr';
import { Views } from '../../src/core/views';
import { FileSnapshotBytes, writeSnapshot } from '../../src/core/snapshots';
import { SingleNodeReplicator, SnapshotStore, encodeSnapshot, extractSnapshot, openDatabase, type OpenDatabase, type SnapshotHandler } from '../../src/core';
import { LmdbLog, type LogStore } from '../../src/eventlog';
import { silentLogger, type LoomError } from '../../src/util';
import { makeTempDir, removeDir } from '../support/tmp';

/** A single voter that hands the core's snapshot installer to the test, as Raft's driver would get it. */
class CapturingReplicator extends SingleNodeReplicator {
  handler: SnapshotHandler | undefined;
  useSnapshots(handler: SnapshotHandler): void {
    this.handler = handler;
  }
}

describe('snapshot files', () => {
  const meta = { index: 42, term: 3, conf: { voters: [1, 2, 3], learners: [] } };
  const files = [
    { name: 'lmdb/data.mdb', bytes: Buffer.from('pages') },
    { name: 'sql.db', bytes: Buffer.from('sqlite') },
  ];

  /** Extracts `data` into a fresh directory: its position and its files by name, as text. */
  const extracted = async (data: Uint8Array, source: string): Promise<{ meta: unknown; files: Array<[string, string]> }> => {
    const dir = makeTempDir();
    try {
      const at = await extractSnapshot(data, `${dir}/out`, source);
      return { meta: at, files: files.map((f) => [f.name, readFileSync(`${dir}/out/${f.name}`, 'utf8')]) };
    } finally {
      removeDir(dir);
    }
  };

  it('round-trips position, membership and files', async () => {
    const decoded = await extracted(encodeSnapshot(meta, files), 'test');
    expect(decoded.meta).toEqual(meta);
    expect(decoded.files).toEqual([
      ['lmdb/data.mdb', 'pages'],
      ['sql.db', 'sqlite'],
    ]);
  });

  it('rejects a flipped byte, a foreign file and a path outside the views as CORRUPT', async () => {
    const data = Buffer.from(encodeSnapshot(meta, files));
    data[data.length - 3] ^= 0xff;
    await expect(extracted(data, 'flipped')).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining('sha256') });
    await expect(extracted(Buffer.from('not a snapshot at all, no header'), 'junk')).rejects.toMatchObject({ code: 'CORRUPT' });
    const escaping = encodeSnapshot(meta, [{ name: '../../etc/passwd', bytes: Buffer.from('x') }]);
    await expect(extracted(escaping, 'escaping')).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining('outside the views directory') });
  });

  /** Writes `files` into a directory, snapshots it into a file the way a node does, and opens that file. */
  const snapshotOnDisk = async (dir: string, at = meta): Promise<FileSnapshotBytes> => {
    for (const f of files) {
      mkdirSync(`${dir}/views/${f.name}`.replace(/\/[^/]*$/, ''), { recursive: true });
      writeFileSync(`${dir}/views/${f.name}`, f.bytes);
    }
    await writeSnapshot(`${dir}/snap.bin`, at, `${dir}/views`);
    return new FileSnapshotBytes(`${dir}/snap.bin`);
  };

  it('streams a snapshot from a directory into a file and back out into files', async () => {
    const dir = makeTempDir();
    try {
      const data = await snapshotOnDisk(dir);
      expect(await extractSnapshot(data, `${dir}/out`, 'file')).toEqual(meta);
      expect(readFileSync(`${dir}/out/lmdb/data.mdb`, 'utf8')).toBe('pages');
      expect(readFileSync(`${dir}/out/sql.db`, 'utf8')).toBe('sqlite');
      await extractSnapshot(data, `${dir}/some`, 'file', { wanted: (name) => name === 'sql.db' });
      expect(readdirSync(`${dir}/some`)).toEqual(['sql.db']);
      data.close();
    } finally {
      removeDir(dir);
    }
  });

  it('extracts nothing from a damaged or cut-short file: CORRUPT, and the target is removed', async () => {
    const dir = makeTempDir();
    try {
      (await snapshotOnDisk(dir)).close();
      const good = readFileSync(`${dir}/snap.bin`);
      const flipped = Buffer.from(good);
      flipped[flipped.length - 40] ^= 0xff; // a byte of the last file, not of the header
      writeFileSync(`${dir}/flipped.bin`, flipped);
      await expect(extractSnapshot(new FileSnapshotBytes(`${dir}/flipped.bin`), `${dir}/a`, 'flipped')).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining('sha256') });
      expect(existsSync(`${dir}/a`)).toBe(false);
      // A node checks its stored snapshot when it starts, so it never sends a damaged one.
      mkdirSync(`${dir}/snaps`);
      writeFileSync(`${dir}/snaps/snap-${String(meta.index).padStart(20, '0')}.bin`, flipped);
      expect(() => new SnapshotStore(`${dir}/snaps`).latest()).toThrow(expect.objectContaining({ code: 'CORRUPT', message: expect.stringContaining('sha256') }));
      writeFileSync(`${dir}/short.bin`, good.subarray(0, good.length - 1));
      await expect(extractSnapshot(new FileSnapshotBytes(`${dir}/short.bin`), `${dir}/b`, 'short')).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining('header describes') });
      expect(existsSync(`${dir}/b`)).toBe(false);
    } finally {
      removeDir(dir);
    }
  });

  /** A well-formed LOOMSNP2 (header, one byte per file, a correct digest) naming `names`. */
  const snapshotNaming = (names: string[]): Buffer => {
    const header = pack({ index: 5, term: 1, conf: null, files: names.map((name) => ({ name, size: 1 })) });
    const length = Buffer.alloc(4);
    length.writeUInt32BE(header.length);
    const body = Buffer.concat([Buffer.from('LOOMSNP2'), length, header, Buffer.alloc(names.length, 0x61)]);
    return Buffer.concat([body, createHash('sha256').update(body).digest()]);
  };

  it.each([
    ['a file that is also a directory', ['a', 'a/b'], 'also a directory'],
    ['a NUL byte', ['lmdb/data\u0000.mdb'], 'NUL'],
    ['the same file twice', ['sql.db', 'sql.db'], 'twice'],
  ])('refuses a header naming %s as CORRUPT, writing nothing', async (_, names, why) => {
    const dir = makeTempDir();
    try {
      await expect(extractSnapshot(snapshotNaming(names), `${dir}/out`, 'hostile')).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining(why) });
      expect(existsSync(`${dir}/out`)).toBe(false);
    } finally {
      removeDir(dir);
    }
  });

  it('refuses a header length of 1 GiB (a flipped bit) without reading that much', async () => {
    const dir = makeTempDir();
    try {
      const prefix = Buffer.alloc(12);
      Buffer.from('LOOMSNP2').copy(prefix);
      prefix.writeUInt32BE(2 ** 30, 8);
      const fd = fs.openSync(`${dir}/snap.bin`, 'w');
      fs.writeSync(fd, prefix);
      fs.ftruncateSync(fd, 2 ** 30 + 12 + 32); // sparse: a 1 GiB file that takes no disk
      fs.closeSync(fd);
      const data = new FileSnapshotBytes(`${dir}/snap.bin`);
      const reads = jest.spyOn(data, 'subarray');
      await expect(extractSnapshot(data, `${dir}/out`, 'sparse')).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining('claims a header') });
      expect(Math.max(...reads.mock.calls.map(([begin, end]) => end - begin))).toBeLessThanOrEqual(1024);
      data.close();
    } finally {
      removeDir(dir);
    }
  });

  it('reads and extracts a snapshot written by an older build (LOOMSNP1)', async () => {
    const dir = makeTempDir();
    try {
      const body = pack({ index: meta.index, term: meta.term, conf: meta.conf, files });
      const old = Buffer.concat([Buffer.from('LOOMSNP1'), createHash('sha256').update(body).digest(), body]);
      mkdirSync(`${dir}/snaps`);
      writeFileSync(`${dir}/snaps/snap-${String(meta.index).padStart(20, '0')}.bin`, old);
      const store = new SnapshotStore(`${dir}/snaps`);
      const latest = store.latest()!;
      expect(latest.meta).toEqual(meta);
      await extractSnapshot(latest.data, `${dir}/out`, 'old');
      expect(readFileSync(`${dir}/out/lmdb/data.mdb`, 'utf8')).toBe('pages');
      store.close();
    } finally {
      removeDir(dir);
    }
  });

  it('gathers a snapshot from the leader in a file that saving moves into place, or deletes when unused', async () => {
    const dir = makeTempDir();
    try {
      const source = await snapshotOnDisk(dir);
      const store = new SnapshotStore(`${dir}/snaps`);
      const gather = (): FileSnapshotBytes => {
        const assembly = store.assemble();
        for (let at = 0; at < source.byteLength; at += 7) assembly.append(source.subarray(at, at + 7));
        return assembly.finish() as FileSnapshotBytes;
      };
      const unused = gather();
      expect(existsSync(unused.file)).toBe(true);
      unused.release();
      expect(existsSync(unused.file)).toBe(false);
      const dropped = store.assemble();
      dropped.append(Buffer.from('part'));
      dropped.discard();
      expect(readdirSync(`${dir}/snaps`)).toEqual([]);

      const received = gather();
      store.save({ meta, data: received });
      expect(readdirSync(`${dir}/snaps`)).toEqual([`snap-${String(meta.index).padStart(20, '0')}.bin`]);
      expect(Buffer.from(store.latest()!.data.subarray(0, source.byteLength))).toEqual(Buffer.from(source.subarray(0, source.byteLength)));
      store.close();
      source.close();
    } finally {
      removeDir(dir);
    }
  });

  it('keeps a failed write of a snapshot from the leader out of Raft: the snapshot fails to install instead', () => {
    const dir = makeTempDir();
    const writes = jest.spyOn(fs, 'writeSync').mockImplementation(() => {
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    });
    try {
      const store = new SnapshotStore(`${dir}/snaps`);
      const assembly = store.assemble();
      expect(() => assembly.append(Buffer.from('chunk'))).not.toThrow();
      const data = assembly.finish();
      expect(data.byteLength).toBe(5);
      expect(() => data.subarray(0, 5)).toThrow(expect.objectContaining({ code: 'UNAVAILABLE', message: expect.stringContaining('ENOSPC') }));
      expect(readdirSync(`${dir}/snaps`)).toEqual([]);
    } finally {
      writes.mockRestore();
      removeDir(dir);
    }
  });

  it('keeps only the newest snapshot on disk', () => {
    const dir = makeTempDir();
    try {
      const store = new SnapshotStore(dir);
      store.save({ meta: { index: 1, term: 1 }, data: encodeSnapshot({ index: 1, term: 1 }, files) });
      store.save({ meta: { index: 9, term: 2 }, data: encodeSnapshot({ index: 9, term: 2 }, files) });
      const reopened = new SnapshotStore(dir);
      expect(reopened.latest()?.meta).toEqual({ index: 9, term: 2 });
      expect(readdirSync(dir)).toEqual(['snap-00000000000000000009.bin']);
    } finally {
      removeDir(dir);
    }
  });

  it('never drops a newer snapshot when saving an older one', () => {
    // An installed snapshot (9) must survive a snapshot of the views it replaced (5) saved after it.
    const dir = makeTempDir();
    try {
      const store = new SnapshotStore(dir);
      store.save({ meta: { index: 9, term: 2 }, data: encodeSnapshot({ index: 9, term: 2 }, files) });
      store.save({ meta: { index: 5, term: 2 }, data: encodeSnapshot({ index: 5, term: 2 }, files) });
      expect(store.latest()?.meta).toEqual({ index: 9, term: 2 });
      expect(new SnapshotStore(dir).latest()?.meta).toEqual({ index: 9, term: 2 });
    } finally {
      removeDir(dir);
    }
  });
});

describe('snapshots of a database', () => {
  let dir: string;
  let log: LogStore;
  let opened: OpenDatabase | undefined;

  const open = async (extra: Partial<Parameters<typeof openDatabase>[0]> = {}): Promise<OpenDatabase> => {
    opened = await openDatabase({ log, viewsDir: `${dir}/views`, logger: silentLogger(), snapshotCatchUpEntries: 10, ttlScanIntervalMs: 60_000, ...extra });
    return opened;
  };

  const fill = async (db: OpenDatabase, count: number, tag: string): Promise<void> => {
    for (let i = 0; i < count; i++) {
      await db.db.kv.put('b', `k${i % 50}`, JSON.stringify({ tag, i }));
      if (i % 10 === 0) await db.db.events.append(`s${i % 3}`, { type: 'done', data: { tag, i } });
    }
    await db.db.objects.put('files', 'a.bin', Buffer.alloc(300 * 1024, 5));
  };

  beforeEach(() => {
    dir = makeTempDir();
    log = LmdbLog.open({ path: `${dir}/log` });
  });
  afterEach(async () => {
    await opened?.close();
    opened = undefined;
    await log.close();
    removeDir(dir);
  });

  it('compacts the log below a snapshot and restores lost views from it on start', async () => {
    const db = await open();
    await fill(db, 120, 'one');
    const applied = db.core.status().appliedIndex;
    const meta = await db.snapshot();
    expect(meta.index).toBe(applied);
    expect(log.firstIndex()).toBe(applied - 10 + 1);
    const before = await db.db.kv.get('b', 'k7');
    const events = await db.db.events.read('s1');
    await db.close();
    opened = undefined;

    // The views are not fsynced: lose them entirely, as a crash may lose their last writes.
    rmSync(`${dir}/views`, { recursive: true, force: true });
    const again = await open();
    expect(await again.db.kv.get('b', 'k7')).toEqual(before);
    expect(await again.db.events.read('s1')).toEqual(events);
    const info = await again.db.objects.stat('files', 'a.bin');
    expect(info.size).toBe(300 * 1024);
    // …and it goes on from where the snapshot and the log left off.
    const { rev } = await again.db.kv.put('b', 'k7', 'after');
    expect(rev).toBe(log.lastIndex());
    expect(Buffer.from((await again.db.kv.get('b', 'k7')).value).toString()).toBe('after');
  });

  it('takes snapshots on its own every snapshotEntries applied entries', async () => {
    const db = await open({ snapshotEntries: 50 });
    await fill(db, 130, 'auto');
    await db.db.kv.put('b', 'last', 'x');
    const deadline = Date.now() + 10_000;
    while (log.firstIndex() === 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(log.firstIndex()).toBeGreaterThan(1);
    // Read once the database is closed: a store opened beside a live one clears its temporary
    // files, which a snapshot being taken may still be writing.
    await db.close();
    opened = undefined;
    const store = new SnapshotStore(`${dir}/views-snapshots`);
    expect(store.latest()?.meta.index).toBeGreaterThanOrEqual(50);
    store.close();
  });

  it('refuses a snapshot over snapshotBytesMax, and tries again only after snapshotEntries more entries', async () => {
    const db = await open({ snapshotBytesMax: 1, snapshotEntries: 40 });
    const backups = jest.spyOn(Views.prototype, 'backup');
    try {
      const refused = await db.snapshot().then(
        () => undefined,
        (e: unknown) => e as LoomError,
      );
      expect(refused?.code).toBe('TOO_LARGE');
      expect(refused?.message).toContain('snapshotBytesMax');
      backups.mockClear();
      // 200 entries, one per batch: a failing snapshot is retried about every 40, not every batch.
      for (let i = 0; i < 200; i++) await db.db.kv.put('b', `k${i}`, 'v');
      await new Promise((r) => setTimeout(r, 200));
      expect(backups.mock.calls.length).toBeGreaterThan(0);
      expect(backups.mock.calls.length).toBeLessThanOrEqual(6);
      expect(log.firstIndex()).toBe(1);
      expect(new SnapshotStore(`${dir}/views-snapshots`).latest()).toBeUndefined();
    } finally {
      backups.mockRestore();
    }
  });

  it('takes two snapshots asked for at once one after the other, and the stored one restores', async () => {
    const db = await open({ snapshotCatchUpEntries: 1 });
    await fill(db, 20, 'both');
    for (let i = 0; i < 4; i++) await db.db.objects.put('files', `f${i}`, Buffer.alloc(1024 * 1024, i + 1));
    const taken = await Promise.all([db.snapshot(), db.snapshot()]);
    expect(taken[0]).toEqual(taken[1]);
    const before = await db.db.kv.get('b', 'k7');
    await db.close();
    opened = undefined;
    expect(readdirSync(`${dir}/views-snapshots`)).toEqual([`snap-${String(taken[0].index).padStart(20, '0')}.bin`]);
    rmSync(`${dir}/views`, { recursive: true, force: true });
    const again = await open();
    expect(await again.db.kv.get('b', 'k7')).toEqual(before);
    expect((await again.db.objects.stat('files', 'f3')).size).toBe(1024 * 1024);
  });

  it('leaves no file and no open descriptor behind when a snapshot from the leader fails its check', async () => {
    const replicator = new CapturingReplicator({ log, now: Date.now });
    await replicator.start();
    await open({ replicator });
    const meta = { index: 50, term: 2 };
    const damaged = Buffer.from(encodeSnapshot(meta, [{ name: 'lmdb/data.mdb', bytes: Buffer.alloc(4096, 1) }]));
    damaged[100] ^= 0xff; // a byte of the file, not of the header
    const assembly = replicator.handler!.assemble!();
    assembly.append(damaged);
    await expect(replicator.handler!.install({ meta, data: assembly.finish() })).rejects.toMatchObject({ code: 'CORRUPT' });
    expect(readdirSync(`${dir}/views-snapshots`)).toEqual([]);
    const descriptors = readdirSync('/proc/self/fd').map((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        return '';
      }
    });
    expect(descriptors.filter((target) => target.startsWith(`${dir}/views-snapshots`))).toEqual([]);
    // The node goes on serving its own views.
    expect((await opened!.db.kv.put('b', 'still', 'here')).rev).toBeGreaterThan(0);
  });

  it('refuses to start when the views lag a compacted log that no snapshot covers', async () => {
    const db = await open();
    await fill(db, 40, 'x');
    await db.snapshot();
    await db.close();
    opened = undefined;
    rmSync(`${dir}/views`, { recursive: true, force: true });
    rmSync(`${dir}/views-snapshots`, { recursive: true, force: true });
    await expect(open()).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining('no snapshot') });
  });

  it('installs a snapshot from another node: views replaced, log restarted, live watchers ended', async () => {
    // The "leader": its own database and snapshot.
    const leaderDir = makeTempDir();
    const leaderLog = LmdbLog.open({ path: `${leaderDir}/log` });
    const leader = await openDatabase({ log: leaderLog, viewsDir: `${leaderDir}/views`, logger: silentLogger(), snapshotCatchUpEntries: 10, ttlScanIntervalMs: 60_000 });
    try {
      await fill(leader, 80, 'leader');
      await leader.snapshot();
      const snapshot = new SnapshotStore(`${leaderDir}/views-snapshots`).latest()!;

      // The "follower": a few entries of its own, a live watcher, then the install.
      const replicator = new CapturingReplicator({ log, now: Date.now });
      await replicator.start();
      const db = await open({ replicator });
      await db.db.kv.put('b', 'mine', 'stale');
      const watch = db.db.watch('>', { fromSeq: 0 });
      const seen: number[] = [];
      const ended = (async () => {
        for await (const change of watch) seen.push(change.seq);
      })().then(
        () => undefined,
        (err: unknown) => err,
      );
      await new Promise((r) => setTimeout(r, 50));
      await replicator.handler!.install(snapshot);

      expect(log.firstIndex()).toBe(snapshot.meta.index + 1);
      expect(await db.db.kv.get('b', 'k3')).toEqual(await leader.db.kv.get('b', 'k3'));
      expect(await db.db.kv.get('b', 'mine').catch((e: LoomError) => e.code)).toBe('NOT_FOUND');
      expect(await db.db.events.read('s0')).toEqual(await leader.db.events.read('s0'));
      expect(db.core.status().appliedIndex).toBe(snapshot.meta.index);
      expect(db.projections().map((p) => p.appliedIndex)).toEqual(leader.projections().map((p) => p.appliedIndex));
      expect(await ended).toMatchObject({ code: 'NOT_FOUND' });
      expect(seen).toEqual([1]);
    } finally {
      await leader.close();
      await leaderLog.close();
      removeDir(leaderDir);
    }
  });

  it('rejects a damaged snapshot file on start rather than restoring garbage', async () => {
    const db = await open();
    await fill(db, 30, 'x');
    const meta = await db.snapshot();
    await db.close();
    opened = undefined;
    rmSync(`${dir}/views`, { recursive: true, force: true });
    writeFileSync(`${dir}/views-snapshots/snap-${String(meta.index).padStart(20, '0')}.bin`, 'LOOMSNP1 damaged');
    await expect(open()).rejects.toMatchObject({ code: 'CORRUPT' });
  });
});
