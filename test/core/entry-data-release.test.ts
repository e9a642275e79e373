// An upload fills its chunk frames again once their entries are released (core/chunk-frames.ts).
// What users rely on: a reused buffer never changes what the log, the views, a download or anyone
// holding an entry from the log sees.

import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { Bus } from '../../src/bus';
import { Core, openDatabase, type EntryConsumer, type OpenDatabase } from '../../src/core';
import { ChunkFrames } from '../../src/core/chunk-frames';
import { LmdbLog, MemoryLog, allocEntryData, markEntryDataReused, type LogEntry } from '../../src/eventlog';
import { releaseTransferMemory, silentLogger } from '../../src/util';
import { makeTempDir, removeDir } from '../support/tmp';

const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

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

function reusableData(bytes: Buffer): Buffer {
  const data = allocEntryData(bytes.length);
  bytes.copy(data);
  markEntryDataReused(data);
  return data;
}

describe('releasing an entry’s data to its proposer', () => {
  let dir: string;
  let log: LmdbLog;
  let consumer: ReturnType<typeof gate>;
  let core: Core;
  beforeEach(async () => {
    dir = makeTempDir();
    log = LmdbLog.open({ path: dir, sync: 'none' });
    consumer = gate();
    core = await Core.open({ log, logger: silentLogger(), consumers: [consumer] });
  });
  afterEach(async () => {
    consumer.open();
    await core.close();
    await log.close();
    removeDir(dir);
  });

  it('holds the buffer until the entry is durable and applied; after that the log reads its own copy', async () => {
    expect(core.releasesEntryData()).toBe(true);
    const original = randomBytes(300 * 1024);
    const data = reusableData(original);
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
  });

  it('hands a reader other than the applier a copy of data its proposer will reuse', async () => {
    const original = randomBytes(64 * 1024);
    const data = reusableData(original);
    const seq = await core.proposeCommitted({ type: 'test.blob', data });
    // Still in the log's memory (not applied): the applier gets the entry as appended, others a copy.
    expect(log.entriesToApply(seq, seq + 1)[0].data).toBe(data);
    const [held] = log.entries(seq, seq + 1);
    expect(held.data.buffer).not.toBe(data.buffer);
    consumer.open();
    await core.waitApplied(seq);
    expect(core.releaseEntryData(seq)).toBe(true);
    data.fill(0);
    expect(Buffer.from(held.data).equals(original)).toBe(true);
  });

  it('lends frames back only once their entries are released, oldest first', async () => {
    const frames = new ChunkFrames(core);
    const a = frames.take(1000);
    const b = frames.take(1000);
    const seqA = await core.proposeCommitted({ type: 'test.blob', data: a });
    const seqB = await core.proposeCommitted({ type: 'test.blob', data: b });
    frames.lend(a, seqA);
    frames.lend(b, seqB);
    // Committed but not applied: nothing is released, so a new frame is made.
    const c = frames.take(1000);
    expect([a, b]).not.toContain(c);
    consumer.open();
    await core.waitApplied(seqB);
    expect(frames.take(1000)).toBe(a);
    // A released frame of another size is dropped, not handed out.
    expect(frames.take(2000).byteLength).toBe(2000);
    expect(frames.stats()).toMatchObject({ held: 0, allocated: 4, reused: 1 });
  });

  it('lets go of the frames it holds when the node gives back transfer memory', async () => {
    const frames = new ChunkFrames(core);
    const a = frames.take(1000);
    frames.lend(a, await core.proposeCommitted({ type: 'test.blob', data: a }));
    expect(frames.stats()).toMatchObject({ held: 1, heldBytes: 1000 });
    releaseTransferMemory();
    expect(frames.stats()).toMatchObject({ held: 0, heldBytes: 0 });
  });

  it('lends nothing once the core is closed', async () => {
    const frames = new ChunkFrames(core);
    const a = frames.take(1000);
    const seq = await core.proposeCommitted({ type: 'test.blob', data: a });
    consumer.open();
    await core.waitApplied(seq);
    await core.close();
    frames.lend(a, seq);
    expect(frames.stats().held).toBe(0);
  });
});

it('never releases over a log that keeps entries in memory', async () => {
  const core = await Core.open({ log: new MemoryLog(), logger: silentLogger() });
  const seq = await core.proposeCommitted({ type: 'test.blob', data: Buffer.from('kept') });
  await core.waitApplied(seq);
  expect(core.releasesEntryData()).toBe(false);
  expect(core.releaseEntryData(seq)).toBe(false);
  await core.close();
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
    const { allocated, reused } = opened.db.objects.frameStats();
    // 3,078 chunks went through far fewer frames.
    expect(reused).toBeGreaterThan(allocated * 4);
    for (let n = 0; n < objects.length; n++) {
      const download = await opened.db.objects.get('b', `o${n}`);
      const hash = createHash('sha256');
      for await (const piece of download.stream) hash.update(piece as Buffer);
      expect(hash.digest('hex')).toBe(sha(objects[n]));
    }
    // Every chunk entry in the log still holds the bytes its digest names.
    expect(log.verify().ok).toBe(true);
  });

  it('leaves an entry a reader took from the log as it was when the next upload refills its frame', async () => {
    const info = await opened.db.objects.put('b', 'a', randomBytes(4096));
    const chunkSeq = info.rev - 1;
    const [held] = log.entries(chunkSeq, chunkSeq + 1);
    const before = sha(held.data);
    const reusedBefore = opened.db.objects.frameStats().reused;
    await opened.db.objects.put('b', 'b', randomBytes(4096));
    expect(opened.db.objects.frameStats().reused).toBe(reusedBefore + 1);
    expect(sha(held.data)).toBe(before);
  });
});
