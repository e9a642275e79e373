// Snapshots of the views at a log position (docs/snapshots.md): what lets a node drop the log
// before that position, and what a follower behind the leader's compacted log installs instead
// of the entries it missed. A snapshot is one self-checking file, sent to followers byte for byte
// and never held in memory whole (docs/decisions.md §20):
//   "LOOMSNP2" | u32 header length | msgpack header {index, term, conf, files: [{name, size}]}
//   | each file's bytes, in header order | sha256 of everything before it
// where `files` are the views' files (relative to the views directory) as of a position at or
// after `index` — every view's own checkpoint tells the applier where to resume. Files written by
// older builds ("LOOMSNP1" | sha256(body) | msgpack {index, term, conf, files: [{name, bytes}]})
// are still read, in memory as they were written.

import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pack, unpack } from 'msgpackr';
import type { SnapshotMeta } from '../eventlog';
import type { SnapshotAssembly, SnapshotBytes } from '../eventlog/raft';
import { LoomError, assert } from '../util';

export type { SnapshotBytes } from '../eventlog/raft';

export interface SnapshotFile {
  /** Path relative to the views directory, with `/` separators. */
  name: string;
  bytes: Uint8Array;
}

/** A snapshot as the replicator sends it: its position and the encoded file. */
export interface ViewSnapshot {
  meta: SnapshotMeta;
  data: SnapshotBytes;
}

/** Progress of a long snapshot copy (taking, extracting), for the log. */
export interface SnapshotProgress {
  bytes: number;
  totalBytes: number;
}

const magicV1 = Buffer.from('LOOMSNP1');
const magic = Buffer.from('LOOMSNP2');
const digestBytes = 32;
const headerLengthBytes = 4;
/** Largest header read (about 100 bytes per file, and a snapshot has a handful): more is damage. */
const headerBytesMax = 16 * 1024 * 1024;
/** Bytes copied per read while a snapshot is written or extracted (and between event-loop yields). */
const copyPieceBytes = 1024 * 1024;
/** Bytes copied between progress reports. */
const progressEveryBytes = 256 * 1024 * 1024;
const fileNamePattern = /^snap-(\d{20})\.bin$/;

interface HeaderFile {
  name: string;
  size: number;
}

interface Layout {
  meta: SnapshotMeta;
  /** Old-format files, decoded in memory (undefined for the current format). */
  v1Files?: SnapshotFile[];
  files: HeaderFile[];
  /** Offset of the first file's bytes (the end of the header). */
  bodyOffset: number;
}

function metaOf(decoded: { index: number; term: number; conf: SnapshotMeta['conf'] | null }): SnapshotMeta {
  return decoded.conf ? { index: decoded.index, term: decoded.term, conf: decoded.conf } : { index: decoded.index, term: decoded.term };
}

function headerBytes(meta: SnapshotMeta, files: HeaderFile[]): Buffer {
  const header = pack({ index: meta.index, term: meta.term, conf: meta.conf ?? null, files: files.map((f) => ({ name: f.name, size: f.size })) });
  const length = Buffer.alloc(headerLengthBytes);
  length.writeUInt32BE(header.byteLength);
  return Buffer.concat([magic, length, header]);
}

/** Encodes a snapshot of files held in memory (small snapshots, tests); large ones use writeSnapshot. */
export function encodeSnapshot(meta: SnapshotMeta, files: SnapshotFile[]): Uint8Array {
  const head = headerBytes(
    meta,
    files.map((f) => ({ name: f.name, size: f.bytes.byteLength })),
  );
  const body = Buffer.concat([head, ...files.map((f) => f.bytes)]);
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

/** Reads and checks a snapshot's header (not its digest: extracting checks that); CORRUPT naming `source`. */
function readLayout(data: SnapshotBytes, source: string): Layout {
  const prefix = Buffer.from(data.subarray(0, magic.length + headerLengthBytes));
  const corrupt = (why: string): LoomError => new LoomError('CORRUPT', `snapshot ${source} ${why}`, { file: source });
  if (prefix.length >= magicV1.length && prefix.subarray(0, magicV1.length).equals(magicV1)) {
    const { meta, files } = decodeV1(Buffer.from(data.subarray(0, data.byteLength)), source);
    return { meta, v1Files: files, files: files.map((f) => ({ name: f.name, size: f.bytes.byteLength })), bodyOffset: 0 };
  }
  if (prefix.length < magic.length + headerLengthBytes || !prefix.subarray(0, magic.length).equals(magic)) throw corrupt('is not a loom snapshot (bad header)');
  const headerLength = prefix.readUInt32BE(magic.length);
  if (headerLength > headerBytesMax) throw corrupt(`claims a header of ${headerLength} bytes (at most ${headerBytesMax})`);
  const bodyOffset = magic.length + headerLengthBytes + headerLength;
  if (bodyOffset + digestBytes > data.byteLength) throw corrupt('is cut short (its header runs past its end)');
  let decoded: { index: number; term: number; conf: SnapshotMeta['conf'] | null; files: HeaderFile[] };
  try {
    decoded = unpack(Buffer.from(data.subarray(magic.length + headerLengthBytes, bodyOffset))) as typeof decoded;
  } catch (err) {
    throw corrupt(`has an unreadable header (${(err as Error).message})`);
  }
  if (!Number.isSafeInteger(decoded?.index) || !Number.isSafeInteger(decoded.term) || !Array.isArray(decoded.files)) throw corrupt('has a header without its position or files');
  let total = 0;
  for (const f of decoded.files) {
    if (typeof f?.name !== 'string' || !Number.isSafeInteger(f.size) || f.size < 0) throw corrupt('has a header naming a file without a name or size');
    total += f.size;
  }
  checkFileNames(
    decoded.files.map((f) => f.name),
    source,
  );
  if (bodyOffset + total + digestBytes !== data.byteLength) {
    throw corrupt(`is ${data.byteLength} bytes but its header describes ${bodyOffset + total + digestBytes}`);
  }
  return { meta: metaOf(decoded), files: decoded.files.map((f) => ({ name: f.name, size: f.size })), bodyOffset };
}

function decodeV1(bytes: Buffer, source: string): { meta: SnapshotMeta; files: SnapshotFile[] } {
  if (bytes.length < magicV1.length + digestBytes) throw new LoomError('CORRUPT', `snapshot ${source} is not a loom snapshot (bad header)`, { file: source });
  const digest = bytes.subarray(magicV1.length, magicV1.length + digestBytes);
  const body = bytes.subarray(magicV1.length + digestBytes);
  if (!createHash('sha256').update(body).digest().equals(digest)) {
    throw new LoomError('CORRUPT', `snapshot ${source} fails its sha256 check`, { file: source });
  }
  const decoded = unpack(body) as { index: number; term: number; conf: SnapshotMeta['conf'] | null; files: Array<{ name: string; bytes: Uint8Array }> };
  checkFileNames(
    decoded.files.map((f) => f.name),
    source,
  );
  return { meta: metaOf(decoded), files: decoded.files };
}

/**
 * Checks a whole snapshot file against its digest, a piece at a time, and returns its position:
 * a node checks its stored snapshot once when it starts, so it never sends a damaged one.
 */
export function checkSnapshotFile(data: FileSnapshotBytes, source: string, onProgress?: (progress: SnapshotProgress) => void): SnapshotMeta {
  const layout = readLayout(data, source);
  if (layout.v1Files) return layout.meta;
  const hash = createHash('sha256');
  const end = data.byteLength - digestBytes;
  const buffer = Buffer.allocUnsafe(copyPieceBytes);
  for (let at = 0; at < end; at += copyPieceBytes) {
    hash.update(data.readInto(buffer, at, Math.min(copyPieceBytes, end - at)));
    if (at > 0 && at % progressEveryBytes === 0) onProgress?.({ bytes: at, totalBytes: end });
  }
  checkDigest(hash, data.subarray(end, end + digestBytes), source);
  return layout.meta;
}

function checkDigest(hash: Hash, stored: Uint8Array, source: string): void {
  if (!hash.digest().equals(stored)) throw new LoomError('CORRUPT', `snapshot ${source} fails its sha256 check`, { file: source });
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Writes every regular file under `dir` (names relative to it, sorted) into a snapshot at `file`,
 * a piece at a time, then fsyncs it. Refuses (TOO_LARGE, naming snapshotBytesMax) before writing
 * if the files hold more than `bytesMax`. Returns the snapshot's size.
 */
export async function writeSnapshot(file: string, meta: SnapshotMeta, dir: string, bytesMax = Infinity, onProgress?: (progress: SnapshotProgress) => void): Promise<number> {
  const files: HeaderFile[] = [];
  const walk = (sub: string): void => {
    for (const entry of fs.readdirSync(path.join(dir, sub), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const rel = sub === '' ? entry.name : `${sub}/${entry.name}`;
      if (entry.isDirectory()) walk(rel);
      else if (entry.isFile()) files.push({ name: rel, size: fs.statSync(path.join(dir, rel)).size });
    }
  };
  walk('');
  const totalBytes = files.reduce((sum, f) => sum + f.size, 0);
  if (totalBytes > bytesMax) {
    throw new LoomError('TOO_LARGE', `a snapshot of the views would hold ${totalBytes} bytes, over snapshotBytesMax (${bytesMax})`, { limit: 'snapshotBytesMax', max: bytesMax, bytes: totalBytes });
  }
  const hash = createHash('sha256');
  const out = fs.openSync(file, 'w');
  try {
    const head = headerBytes(meta, files);
    hash.update(head);
    writeAll(out, head);
    const piece = Buffer.allocUnsafe(copyPieceBytes);
    let copied = 0;
    let reported = 0;
    for (const f of files) {
      const input = fs.openSync(path.join(dir, ...f.name.split('/')), 'r');
      try {
        let left = f.size;
        while (left > 0) {
          const n = fs.readSync(input, piece, 0, Math.min(piece.length, left), null);
          assert(n > 0, `${f.name} in a snapshot's copy of the views shrank while it was written`);
          hash.update(piece.subarray(0, n));
          writeAll(out, piece.subarray(0, n));
          left -= n;
          copied += n;
          if (copied - reported >= progressEveryBytes) {
            reported = copied;
            onProgress?.({ bytes: copied, totalBytes });
          }
          await yieldToEventLoop();
        }
      } finally {
        fs.closeSync(input);
      }
    }
    writeAll(out, hash.digest());
    fs.fsyncSync(out);
    return fs.fstatSync(out).size;
  } finally {
    fs.closeSync(out);
  }
}

/**
 * Checks a snapshot and writes its files (those `wanted`, default all) under `dir`, which must not
 * exist yet, each fsynced. The digest covers every byte, so it is checked as the files are
 * written; a damaged snapshot is CORRUPT naming `source`, and `dir` is removed.
 */
export async function extractSnapshot(
  data: SnapshotBytes,
  dir: string,
  source: string,
  options: { wanted?: (name: string) => boolean; onProgress?: (progress: SnapshotProgress) => void } = {},
): Promise<SnapshotMeta> {
  assert(!fs.existsSync(dir), `snapshot target ${dir} already exists`);
  const wanted = options.wanted ?? (() => true);
  const layout = readLayout(data, source);
  fs.mkdirSync(dir, { recursive: true });
  try {
    if (layout.v1Files) {
      for (const f of layout.v1Files) if (wanted(f.name)) writeFileDurably(dir, f.name, (fd) => writeAll(fd, f.bytes));
      return layout.meta;
    }
    const hash = createHash('sha256').update(data.subarray(0, layout.bodyOffset));
    const totalBytes = data.byteLength - digestBytes - layout.bodyOffset;
    // A file is read into one buffer, piece after piece, rather than into a new one per piece.
    const buffer = data instanceof FileSnapshotBytes ? Buffer.allocUnsafe(copyPieceBytes) : undefined;
    let at = layout.bodyOffset;
    let reported = 0;
    for (const f of layout.files) {
      const copy = async (fd: number | undefined): Promise<void> => {
        const end = at + f.size;
        while (at < end) {
          const length = Math.min(end - at, copyPieceBytes);
          const piece = buffer ? (data as FileSnapshotBytes).readInto(buffer, at, length) : data.subarray(at, at + length);
          hash.update(piece);
          if (fd !== undefined) writeAll(fd, piece);
          at += piece.byteLength;
          if (at - layout.bodyOffset - reported >= progressEveryBytes) {
            reported = at - layout.bodyOffset;
            options.onProgress?.({ bytes: reported, totalBytes });
          }
          await yieldToEventLoop();
        }
      };
      if (wanted(f.name)) await writeFileDurablyAsync(dir, f.name, copy);
      else await copy(undefined);
    }
    checkDigest(hash, data.subarray(at, at + digestBytes), source);
    return layout.meta;
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

function writeFileDurably(dir: string, name: string, write: (fd: number) => void): void {
  const target = path.join(dir, ...name.split('/'));
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const fd = fs.openSync(target, 'w');
  try {
    write(fd);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

async function writeFileDurablyAsync(dir: string, name: string, write: (fd: number) => Promise<void>): Promise<void> {
  const target = path.join(dir, ...name.split('/'));
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const fd = fs.openSync(target, 'w');
  try {
    await write(fd);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** A snapshot in a file, read at an offset as Raft sends it; its descriptor stays open until closed. */
export class FileSnapshotBytes implements SnapshotBytes {
  readonly byteLength: number;
  private fd: number | undefined;

  constructor(
    readonly file: string,
    private readonly deleteOnRelease = false,
  ) {
    this.fd = fs.openSync(file, 'r');
    this.byteLength = fs.fstatSync(this.fd).size;
  }

  subarray(begin: number, end: number): Uint8Array {
    const from = Math.max(0, Math.min(begin, this.byteLength));
    const length = Math.max(0, Math.min(end, this.byteLength) - from);
    return this.readInto(Buffer.allocUnsafe(length), from, length);
  }

  /** Reads `length` bytes at `position` into the start of `target`; returns that part of it. */
  readInto(target: Buffer, position: number, length: number): Buffer {
    assert(this.fd !== undefined, `snapshot ${this.file} was read after it was closed`);
    assert(position + length <= this.byteLength && length <= target.length, `a read of ${length} bytes at ${position} from snapshot ${this.file} of ${this.byteLength}`);
    let read = 0;
    while (read < length) {
      const n = fs.readSync(this.fd, target, read, length - read, position + read);
      assert(n > 0, `snapshot ${this.file} ended before its ${this.byteLength} bytes`);
      read += n;
    }
    return target.subarray(0, length);
  }

  /** Closes the descriptor (reads after it fail); the file stays. */
  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }

  release(): void {
    this.close();
    if (this.deleteOnRelease) fs.rmSync(this.file, { force: true });
  }
}

/** The snapshot files of one node: `<dir>/snap-<index>.bin`, the newest kept, older ones deleted. */
export class SnapshotStore {
  readonly dir: string;
  private cached: { meta: SnapshotMeta; data: FileSnapshotBytes } | undefined;
  private loaded = false;
  private receiving = 0;

  /** `onProgress` hears how far the check of a large stored snapshot is (it runs once, at start). */
  constructor(
    dir: string,
    private readonly onProgress?: (progress: SnapshotProgress) => void,
  ) {
    this.dir = path.resolve(dir);
    // What an earlier process left half-written: a snapshot being taken or received.
    if (fs.existsSync(this.dir)) {
      for (const leftover of fs.readdirSync(this.dir).filter((n) => n.endsWith('.tmp'))) fs.rmSync(path.join(this.dir, leftover), { recursive: true, force: true });
    }
  }

  /** The newest snapshot on disk, if any (checked once; its bytes then read as they are sent). */
  latest(): ViewSnapshot | undefined {
    if (!this.loaded) {
      this.loaded = true;
      const newest = this.fileNames().pop();
      if (newest !== undefined) {
        const file = path.join(this.dir, newest);
        const data = new FileSnapshotBytes(file);
        try {
          this.cached = { meta: checkSnapshotFile(data, file, this.onProgress), data };
        } catch (err) {
          data.close();
          throw err;
        }
      }
    }
    return this.cached;
  }

  /** A file in the store's directory to write a snapshot being taken into (moved in by save). */
  tempFile(label: string): string {
    fs.mkdirSync(this.dir, { recursive: true });
    return path.join(this.dir, `${label}.tmp`);
  }

  /**
   * Gathers a snapshot arriving from the leader in a file of the store (moved in by save). Raft
   * calls it from step(), so a failed write (a full disk) does not throw there: it is kept, and
   * the snapshot it finishes fails to install with it.
   */
  assemble(): SnapshotAssembly {
    const file = this.tempFile(`receiving-${process.pid}-${++this.receiving}`);
    let fd: number | undefined;
    let failure: Error | undefined;
    let result: FileSnapshotBytes | undefined;
    let received = 0;
    const attempt = (write: () => void): void => {
      if (failure) return;
      try {
        write();
      } catch (err) {
        failure = err as Error;
      }
    };
    const close = (): void => {
      if (fd !== undefined) attempt(() => fs.closeSync(fd as number));
      fd = undefined;
    };
    attempt(() => (fd = fs.openSync(file, 'w')));
    return {
      append: (chunk) => {
        received += chunk.byteLength;
        attempt(() => writeAll(fd as number, chunk));
      },
      finish: () => {
        attempt(() => fs.fsyncSync(fd as number));
        close();
        if (failure === undefined) attempt(() => (result = new FileSnapshotBytes(file, true)));
        if (result) return result;
        fs.rmSync(file, { force: true });
        const error = failure as Error;
        return {
          byteLength: received,
          subarray: () => {
            throw new LoomError('UNAVAILABLE', `the snapshot from the leader could not be written to ${file}: ${error.message}`, { file });
          },
        };
      },
      discard: () => {
        close();
        fs.rmSync(file, { force: true });
      },
    };
  }

  /**
   * Stores a snapshot durably (a file of the store's own is renamed into place; bytes from
   * elsewhere are written, fsynced and renamed; then the directory is fsynced), then drops older
   * ones. The stored snapshot is read from its new place from then on.
   */
  save(snapshot: ViewSnapshot): void {
    fs.mkdirSync(this.dir, { recursive: true });
    const name = `snap-${String(snapshot.meta.index).padStart(20, '0')}.bin`;
    const file = path.join(this.dir, name);
    if (snapshot.data instanceof FileSnapshotBytes && path.dirname(snapshot.data.file) === this.dir) {
      snapshot.data.close();
      fs.renameSync(snapshot.data.file, file);
    } else {
      const tmp = this.tempFile(`saving-${snapshot.meta.index}`);
      writeFileDurably(this.dir, path.basename(tmp), (fd) => {
        for (let at = 0; at < snapshot.data.byteLength; at += copyPieceBytes) writeAll(fd, snapshot.data.subarray(at, at + copyPieceBytes));
      });
      fs.renameSync(tmp, file);
    }
    syncDir(this.dir);
    // Only older snapshots go: one taken from views a newer snapshot (just installed) replaces
    // must not delete the snapshot the compacted log relies on.
    const names = this.fileNames();
    if (!names.some((n) => n > name)) {
      this.cached?.data.close();
      this.cached = { meta: snapshot.meta, data: new FileSnapshotBytes(file) };
    }
    this.loaded = true;
    for (const older of names) if (older < name) fs.rmSync(path.join(this.dir, older), { force: true });
  }

  /** Closes the newest snapshot's file. */
  close(): void {
    this.cached?.data.close();
    this.cached = undefined;
    this.loaded = false;
  }

  private fileNames(): string[] {
    if (!fs.existsSync(this.dir)) return [];
    return fs
      .readdirSync(this.dir)
      .filter((n) => fileNamePattern.test(n))
      .sort();
  }
}

/** Every name a plain relative path inside the views directory, none twice, none also a directory of another. */
function checkFileNames(names: string[], source: string): void {
  const corrupt = (why: string, name: string): LoomError => new LoomError('CORRUPT', `snapshot ${source} ${why}: ${JSON.stringify(name)}`, { file: source });
  const seen = new Set<string>();
  for (const name of names) {
    const parts = name.split('/');
    if (name.includes('\0')) throw corrupt('names a file with a NUL byte', name);
    if (name.length === 0 || path.isAbsolute(name) || parts.some((p) => p === '' || p === '.' || p === '..')) throw corrupt('names a file outside the views directory', name);
    if (seen.has(name)) throw corrupt('names a file twice', name);
    seen.add(name);
  }
  for (const name of names) {
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (seen.has(dir)) throw corrupt('names a file that is also a directory', dir);
    }
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let written = 0;
  while (written < bytes.byteLength) written += fs.writeSync(fd, bytes, written, bytes.byteLength - written);
}

export function syncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
