// An upload fills its chunk frames again once their entries are released (core/chunk-frames.ts).
// What users rely on: a reused buffer never changes what the log, the views or a download hold.

import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { Bus } from '../../src/bus';
import { Core, openDatabase, type EntryConsumer, type OpenDatabase } from '../../src/core';
import { chunkFrameStats, dropChunkFrames, lendChunkFrame, takeChunkFrame } from '../../src/core/chunk-frames';
import { LmdbLog, MemoryLog, allocEntryData, type LogEntry } from '../../src/eventlog';
import { releaseTransferMemory, silentLogger } from '../../src/util';
import { makeTempDir, removeDir } from '../support/tmp';

/** A consumer that applies only when told to: entries stay committed but unapplied until then. */
function gate(): EntryConsumer & { open(): void } {
  let applied = 0;
  let release: () => void = () => undefined;
  let opened = new Promise<void>((resolve) => (release = resolve));
  return {
    name: 'gate',
    appliedIndex: () => applied,
    async apply(entries: LogEntry[]) {
      await opened;
      applied = entries[entries.length - 1].index;
    },
    open() {
      release();
      opened = Promise.resolve();
    },
  };
}

describe('releasing an entry’s data to its proposer', () => {
  let dir: string;
  beforeEach(() => {
    dir = makeTempDir();
  });
  afterEach(() => removeDir(dir));

  it('holds the buffer until the entry is durable and applied; after that the log reads its own copy', async () => {
    const log = LmdbLog.open({ path: dir, sync: 'none' });
    const consumer = gate();
    const core = await Core.open({ log, logger: silentLogger(), consumers: [consumer] });
    try {
      expect(core.releasesEntryData()).toBe(true);
      const original = randomBytes(300 * 1024);
      const data = allocEntryData(original.length);
      original.copy(data);
      const seq = await core.proposeCommitted({ type: 'test.blob', data });
      // Durable, but no consumer has taken it: the buffer is still the log's to hand out.
      expect(core.releaseEntryData(seq)).toBe(false);
      consumer.open();
      await core.waitApplied(seq);
      expect(core.releaseEntryData(seq)).toBe(true);
      // The proposer overwrites its buffer: what the log holds is unchanged.
      data.fill(0xee);
      expect(Buffer.from(log.entries(seq, seq + 1)[0].data).equals(original)).toBe(true);
      expect(log.verify().ok).toBe(true);
    } finally {
      await core.close();
      await log.close();
    }
  });

  it('never releases over a log that keeps entries in memory', async () => {
    const core = await Core.open({ log: new MemoryLog(), logger: silentLogger() });
    const seq = await core.proposeCommitted({ type: 'test.blob', data: Buffer.from('kept') });
    await core.waitApplied(seq);
    expect(core.releasesEntryData()).toBe(false);
    expect(core.releaseEntryData(seq)).toBe(false);
    await core.close();
  });

  it('reuses a lent frame of the same size only once it is released, oldest first', () => {
    dropChunkFrames();
    let releasedA = false;
    const a = takeChunkFrame(1000);
    const b = takeChunkFrame(1000);
    lendChunkFrame(a, () => releasedA);
    lendChunkFrame(b, () => true);
    // The oldest is not released: nothing behind it is taken either.
    expect(takeChunkFrame(1000)).not.toBe(a);
    releasedA = true;
    expect(takeChunkFrame(1000)).toBe(a);
    // A released frame of another size is dropped, not handed out.
    expect(takeChunkFrame(2000).byteLength).toBe(2000);
    expect(chunkFrameStats().held).toBe(0);
  });

  it('lets go of every frame it holds when the node gives back transfer memory', () => {
    lendChunkFrame(takeChunkFrame(1000), () => true);
    expect(chunkFrameStats()).toMatchObject({ held: 1, heldBytes: 1000 });
    releaseTransferMemory();
    expect(chunkFrameStats()).toMatchObject({ held: 0, heldBytes: 0 });
  });
});

describe('uploads that reuse their frames', () => {
  let dir: string;
  let log: LmdbLog;
  let opened: OpenDatabase;

  beforeEach(async () => {
    dir = makeTempDir();
    log = LmdbLog.open({ path: `${dir}/log`, sync: 'none' });
    opened = await openDatabase({ log, viewsDir: `${dir}/views`, logger: silentLogger(), bus: new Bus(), objects: { chunkBytes: 4096 }, chunkGcIntervalMs: 3_600_000, snapshotCatchUpEntries: 0 });
  });
  afterEach(async () => {
    await opened.close();
    await log.close();
    removeDir(dir);
  });

  it('stores every object byte for byte, in the log and the views, while frames go round', async () => {
    dropChunkFrames();
    const before = chunkFrameStats();
    const objects = Array.from({ length: 6 }, () => randomBytes(2 * 1024 * 1024 + 123));
    // Two at a time, in pieces that straddle chunk boundaries.
    for (let i = 0; i < objects.length; i += 2) {
      await Promise.all(
        [i, i + 1].map((n) => {
          const bytes = objects[n];
          const pieces: Buffer[] = [];
          for (let at = 0; at < bytes.length; at += 10_000) pieces.push(bytes.subarray(at, at + 10_000));
          return opened.db.objects.put('b', `o${n}`, Readable.from(pieces));
        }),
      );
    }
    const after = chunkFrameStats();
    const reused = after.reused - before.reused;
    const allocated = after.allocated - before.allocated;
    // 3,078 chunks went through far fewer frames.
    expect(reused).toBeGreaterThan(allocated * 4);
    for (let n = 0; n < objects.length; n++) {
      const download = await opened.db.objects.get('b', `o${n}`);
      const hash = createHash('sha256');
      for await (const piece of download.stream) hash.update(piece as Buffer);
      expect(hash.digest('hex')).toBe(createHash('sha256').update(objects[n]).digest('hex'));
    }
    // Every chunk entry in the log still holds the bytes its digest names.
    expect(log.verify().ok).toBe(true);
  });
});
