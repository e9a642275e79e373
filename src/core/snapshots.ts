// Snapshots of the views at a log position (docs/snapshots.md): what lets a node drop the log
// before that position, and what a follower behind the leader's compacted log installs instead
// of the entries it missed. A snapshot is one self-checking file, sent to followers byte for byte:
//   "LOOMSNP1" | sha256(body) | body = msgpack {index, term, conf?, files: [{name, bytes}]}
// where `files` are the views' files (relative to the views directory) as of a position at or
// after `index` — every view's own checkpoint tells the applier where to resume.

import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pack, unpack } from 'msgpackr';
import type { SnapshotMeta } from '../eventlog';
import { LoomError, assert } from '../util';

export interface SnapshotFile {
  /** Path relative to the views directory, with `/` separators. */
  name: string;
  bytes: Uint8Array;
}

/** A snapshot as the replicator sends it: its position and the encoded file. */
export interface ViewSnapshot {
  meta: SnapshotMeta;
  data: Uint8Array;
}

const magic = Buffer.from('LOOMSNP1');
const digestBytes = 32;
const fileNamePattern = /^snap-(\d{20})\.bin$/;

export function encodeSnapshot(meta: SnapshotMeta, files: SnapshotFile[]): Uint8Array {
  const body = pack({ index: meta.index, term: meta.term, conf: meta.conf ?? null, files: files.map((f) => ({ name: f.name, bytes: f.bytes })) });
  const digest = createHash('sha256').update(body).digest();
  return Buffer.concat([magic, digest, body]);
}

/** Decodes and checks a snapshot; a damaged one is CORRUPT naming `source`, never half-read. */
export function decodeSnapshot(data: Uint8Array, source: string): { meta: SnapshotMeta; files: SnapshotFile[] } {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (bytes.length < magic.length + digestBytes || !bytes.subarray(0, magic.length).equals(magic)) {
    throw new LoomError('CORRUPT', `snapshot ${source} is not a loom snapshot (bad header)`, { file: source });
  }
  const digest = bytes.subarray(magic.length, magic.length + digestBytes);
  const body = bytes.subarray(magic.length + digestBytes);
  if (!createHash('sha256').update(body).digest().equals(digest)) {
    throw new LoomError('CORRUPT', `snapshot ${source} fails its sha256 check`, { file: source });
  }
  const decoded = unpack(body) as { index: number; term: number; conf: SnapshotMeta['conf'] | null; files: Array<{ name: string; bytes: Uint8Array }> };
  const meta: SnapshotMeta = decoded.conf ? { index: decoded.index, term: decoded.term, conf: decoded.conf } : { index: decoded.index, term: decoded.term };
  for (const f of decoded.files) checkFileName(f.name, source);
  return { meta, files: decoded.files };
}

/**
 * Reads every regular file under `dir` into snapshot files (names relative to `dir`), sorted. A
 * snapshot is built in memory, so files that hold more than `bytesMax` in all are refused
 * (TOO_LARGE, naming snapshotBytesMax) before any is read.
 */
export function readSnapshotFiles(dir: string, bytesMax = Infinity): SnapshotFile[] {
  const names: string[] = [];
  let bytes = 0;
  const walk = (sub: string): void => {
    for (const entry of fs.readdirSync(path.join(dir, sub), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const rel = sub === '' ? entry.name : `${sub}/${entry.name}`;
      if (entry.isDirectory()) walk(rel);
      else if (entry.isFile()) {
        names.push(rel);
        bytes += fs.statSync(path.join(dir, rel)).size;
      }
    }
  };
  walk('');
  if (bytes > bytesMax) {
    throw new LoomError('TOO_LARGE', `a snapshot of the views would hold ${bytes} bytes, over snapshotBytesMax (${bytesMax}); snapshots are built in memory`, {
      limit: 'snapshotBytesMax',
      max: bytesMax,
      bytes,
    });
  }
  return names.map((name) => ({ name, bytes: fs.readFileSync(path.join(dir, name)) }));
}

/** Writes a snapshot's files under `dir` (which must not exist yet), each fsynced. */
export function writeSnapshotFiles(dir: string, files: SnapshotFile[]): void {
  assert(!fs.existsSync(dir), `snapshot target ${dir} already exists`);
  fs.mkdirSync(dir, { recursive: true });
  for (const f of files) {
    const target = path.join(dir, ...f.name.split('/'));
    fs.mkdirSync(path.dirname(target), { recursive: true });
    writeDurably(target, f.bytes);
  }
}

/** The snapshot files of one node: `<dir>/snap-<index>.bin`, the newest kept, older ones deleted. */
export class SnapshotStore {
  readonly dir: string;
  private cached: ViewSnapshot | undefined;
  private loaded = false;

  constructor(dir: string) {
    this.dir = path.resolve(dir);
  }

  /** The newest snapshot on disk, if any (read once, then kept in memory to send to followers). */
  latest(): ViewSnapshot | undefined {
    if (!this.loaded) {
      this.loaded = true;
      const newest = this.fileNames().pop();
      if (newest !== undefined) {
        const file = path.join(this.dir, newest);
        const data = fs.readFileSync(file);
        this.cached = { meta: decodeSnapshot(data, file).meta, data };
      }
    }
    return this.cached;
  }

  /** Stores a snapshot durably (write, fsync, rename, fsync the directory), then drops older ones. */
  save(snapshot: ViewSnapshot): void {
    fs.mkdirSync(this.dir, { recursive: true });
    const name = `snap-${String(snapshot.meta.index).padStart(20, '0')}.bin`;
    const file = path.join(this.dir, name);
    const tmp = `${file}.tmp`;
    writeDurably(tmp, snapshot.data);
    fs.renameSync(tmp, file);
    syncDir(this.dir);
    // Only older snapshots go: one taken from views a newer snapshot (just installed) replaces
    // must not delete the snapshot the compacted log relies on.
    const names = this.fileNames();
    if (!names.some((n) => n > name)) this.cached = snapshot;
    this.loaded = true;
    for (const older of names) if (older < name) fs.rmSync(path.join(this.dir, older), { force: true });
  }

  private fileNames(): string[] {
    if (!fs.existsSync(this.dir)) return [];
    for (const leftover of fs.readdirSync(this.dir).filter((n) => n.endsWith('.tmp'))) fs.rmSync(path.join(this.dir, leftover), { force: true });
    return fs
      .readdirSync(this.dir)
      .filter((n) => fileNamePattern.test(n))
      .sort();
  }
}

function checkFileName(name: string, source: string): void {
  const parts = name.split('/');
  if (name.length === 0 || path.isAbsolute(name) || parts.some((p) => p === '' || p === '.' || p === '..')) {
    throw new LoomError('CORRUPT', `snapshot ${source} names a file outside the views directory: ${JSON.stringify(name)}`, { file: source });
  }
}

function writeDurably(file: string, bytes: Uint8Array): void {
  const fd = fs.openSync(file, 'w');
  try {
    let written = 0;
    while (written < bytes.byteLength) written += fs.writeSync(fd, bytes, written, bytes.byteLength - written);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function syncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
