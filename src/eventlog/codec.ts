// How an entry is laid out on disk: a fixed-width big-endian key for its index, and a value framed
// as [u32 CRC32C of the body][msgpack body]. Pure functions, so the framing is tested without LMDB.

import { Packr } from 'msgpackr';
import { LoomError, assert } from '../util';
import { crc32cOf } from './crc32c';
import { entryTypeBytesMax } from './limits';
import type { LogEntry } from './types';

const keyBytes = 8;
const crcBytes = 4;

// One Packr for the log: plain structures (no shared record extension), so any msgpack reader can
// decode a stored entry and the on-disk format does not depend on this process's state.
const packr = new Packr({ useRecords: false, moreTypes: false });

/** The key of entry `index`: 8 bytes, big-endian, so LMDB's byte order is numeric order. */
export function encodeIndexKey(index: number): Buffer {
  return writeIndexKey(Buffer.allocUnsafe(keyBytes), index);
}

/** Writes the key of entry `index` into `key` (8 bytes) and returns it. */
export function writeIndexKey(key: Buffer, index: number): Buffer {
  // Two 32-bit halves: indexes are safe integers (< 2^53), and this avoids a BigInt per key.
  key.writeUInt32BE(Math.floor(index / 0x1_0000_0000), 0);
  key.writeUInt32BE(index >>> 0, 4);
  return key;
}

export function decodeIndexKey(key: Uint8Array, start = 0): number {
  const k = start;
  const high = ((key[k] << 24) | (key[k + 1] << 16) | (key[k + 2] << 8) | key[k + 3]) >>> 0;
  const low = ((key[k + 4] << 24) | (key[k + 5] << 16) | (key[k + 6] << 8) | key[k + 7]) >>> 0;
  return high * 0x1_0000_0000 + low;
}

/** lmdb-js key encoding for the same keys, read and written as numbers without a Buffer per key. */
export const indexKeyEncoder = {
  writeKey(index: number, target: Uint8Array, start: number): number {
    const high = Math.floor(index / 0x1_0000_0000);
    const low = index >>> 0;
    target[start] = high >>> 24;
    target[start + 1] = high >>> 16;
    target[start + 2] = high >>> 8;
    target[start + 3] = high;
    target[start + 4] = low >>> 24;
    target[start + 5] = low >>> 16;
    target[start + 6] = low >>> 8;
    target[start + 7] = low;
    return start + keyBytes;
  },
  readKey(source: Uint8Array, start: number, end: number): number {
    if (end - start !== keyBytes) throw new LoomError('CORRUPT', `log key is ${end - start} bytes, not ${keyBytes}`);
    return decodeIndexKey(source, start);
  },
};

/**
 * lmdb-js value "decoding" for range reads that decode each value in place: hands over the bytes
 * as they are, usually lmdb-js's shared read buffer, valid only until the next read.
 */
export const sharedValueDecoder = {
  needsStableBuffer: false,
  encode(): never {
    throw new Error('entriesReader is for reads; entries are written through the binary handle');
  },
  decode(bytes: Uint8Array, size: number): Uint8Array {
    return bytes.length === size ? bytes : bytes.subarray(0, size);
  },
};

/**
 * Room `allocEntryData` leaves in front of an entry's data for its framing: CRC, array header,
 * index and term (msgpack numbers, at most 9 bytes each), type (str8 header and at most
 * entryTypeBytesMax bytes) and the data's bin32 header.
 */
export const entryFrameHeadBytesMax = crcBytes + 1 + 9 + 9 + 2 + entryTypeBytesMax + 5;
/** Room after an entry's data for the timestamp that ends the record (a msgpack number). */
export const entryFrameTailBytesMax = 9;

/** Buffers from allocEntryData whose room the log has not used yet. */
const roomyBuffers = new WeakSet<ArrayBufferLike>();

/**
 * A buffer of `dataBytesMax` bytes for one entry's data, with room around it (in the same
 * ArrayBuffer) for the log's framing: appending an entry whose data lies in it copies the data
 * only into LMDB. The buffer serves one entry: once it is appended, the log may overwrite every
 * byte of the buffer's memory outside that entry's data.
 */
export function allocEntryData(dataBytesMax: number): Buffer {
  // allocUnsafeSlow: its own memory, never the shared pool, and not zero-filled (the caller fills the data).
  const memory = Buffer.allocUnsafeSlow(entryFrameHeadBytesMax + dataBytesMax + entryFrameTailBytesMax).buffer;
  roomyBuffers.add(memory);
  return Buffer.from(memory, entryFrameHeadBytesMax, dataBytesMax);
}

/** Buffers from allocEntryData whose owner will fill them again (see markEntryDataReused). */
const reusedBuffers = new WeakSet<ArrayBufferLike>();

/**
 * Declares, before `data` is proposed, that its owner will overwrite its memory once the entry is
 * released (Core.releaseEntryData): the log then hands every reader but the applier a copy of it.
 */
export function markEntryDataReused(data: Uint8Array): void {
  reusedBuffers.add(data.buffer);
}

/** Whether `data` lies in memory its owner will overwrite (markEntryDataReused). */
export function isEntryDataReused(data: Uint8Array): boolean {
  return reusedBuffers.has(data.buffer);
}

/**
 * Makes a buffer from allocEntryData serve one more entry: for its owner to call once nothing reads
 * the entry it last held (core/chunk-frames.ts asks the core), since the log will frame the next
 * entry in the same memory.
 */
export function reuseEntryData(data: Buffer): Buffer {
  assert(data.byteOffset === entryFrameHeadBytesMax && data.buffer.byteLength === entryFrameHeadBytesMax + data.byteLength + entryFrameTailBytesMax, 'reuseEntryData takes a buffer from allocEntryData');
  roomyBuffers.add(data.buffer);
  return data;
}

/**
 * Data from allocEntryData has room around it in its own memory: the framing is written around it,
 * so a 256 KiB chunk is not copied before LMDB copies it. Undefined when the data has no such room.
 */
function encodeInPlace(entry: LogEntry): Buffer | undefined {
  if (!roomyBuffers.has(entry.data.buffer)) return undefined;
  const head = Buffer.concat([
    Buffer.from([entry.meta === undefined ? 0x95 : 0x96]),
    packr.pack(entry.index),
    packr.pack(entry.term),
    packr.pack(entry.type),
    binHeaderOf(entry.data.byteLength),
  ]);
  const tail = Buffer.concat(entry.meta === undefined ? [packr.pack(entry.ts)] : [packr.pack(entry.ts), packr.pack(entry.meta)]);
  return frameInPlace(entry.data, head, tail);
}

/** Frames the record around data from allocEntryData, if it has the room; undefined otherwise. */
function frameInPlace(data: Uint8Array, head: Buffer, tail: Buffer): Buffer | undefined {
  const memory = data.buffer;
  const start = data.byteOffset - head.length - crcBytes;
  const end = data.byteOffset + data.byteLength + tail.length;
  if (!roomyBuffers.has(memory) || start < 0 || end > memory.byteLength) return undefined;
  // Used once: a second append of the same data (never done today) must not rewrite a frame
  // that an earlier, still queued write points at.
  roomyBuffers.delete(memory);
  const framed = Buffer.from(memory, start, end - start);
  head.copy(framed, crcBytes);
  tail.copy(framed, crcBytes + head.length + data.byteLength);
  framed.writeUInt32BE(crc32cOf(framed, crcBytes, framed.length), 0);
  return framed;
}

function binHeaderOf(n: number): Buffer {
  const header = Buffer.allocUnsafe(binHeaderBytes(n));
  writeBinHeader(header, 0, n);
  return header;
}

/**
 * Frames an entry: [u32 CRC32C of the body][msgpack body]. The body is the msgpack array
 * [index, term, type, data, ts, meta?], written field by field straight into the one buffer the
 * frame needs, with the same bytes `packr.pack` would produce (tested byte for byte), so values
 * written before and after this encoder read alike. Packing the record and then copying it into
 * the frame cost two allocations and a copy per entry, measurable on the append path.
 */
export function encodeEntryValue(entry: LogEntry): Buffer {
  const inPlace = encodeInPlace(entry);
  if (inPlace !== undefined) return inPlace;
  const { index, term, type, data, ts, meta } = entry;
  // Entry types are short ASCII names in practice; anything else is packed by msgpackr itself, whose
  // UTF-8 encoding of unpaired surrogates differs from Buffer's.
  const typeAsciiBytes = asciiBytes(type);
  const packedType = typeAsciiBytes < 0 ? packr.pack(type) : undefined;
  const packedMeta = meta === undefined ? undefined : packr.pack(meta);
  const dataBytes = data.byteLength;
  const bodyBytes =
    1 +
    numberBytes(index) +
    numberBytes(term) +
    (packedType === undefined ? strHeaderBytes(typeAsciiBytes) + typeAsciiBytes : packedType.length) +
    binHeaderBytes(dataBytes) +
    dataBytes +
    numberBytes(ts) +
    (packedMeta === undefined ? 0 : packedMeta.length);
  const frame = Buffer.allocUnsafe(crcBytes + bodyBytes);
  let at = crcBytes;
  frame[at++] = packedMeta === undefined ? 0x95 : 0x96; // fixarray of 5 or 6
  at = writeNumber(frame, at, index);
  at = writeNumber(frame, at, term);
  if (packedType === undefined) {
    at = writeStrHeader(frame, at, typeAsciiBytes);
    for (let i = 0; i < typeAsciiBytes; i++) frame[at++] = type.charCodeAt(i);
  } else {
    frame.set(packedType, at);
    at += packedType.length;
  }
  at = writeBinHeader(frame, at, dataBytes);
  frame.set(data, at);
  at = writeNumber(frame, at + dataBytes, ts);
  if (packedMeta !== undefined) {
    frame.set(packedMeta, at);
    at += packedMeta.length;
  }
  // Not assert(cond, `...`): the message would be built for every entry.
  if (at !== frame.length) assert(false, `entry ${index} framed to ${at} bytes, ${frame.length} expected`);
  frame.writeUInt32BE(crc32cOf(frame, crcBytes, frame.length), 0);
  return frame;
}

/** The byte length of `s` if it is all ASCII, else -1. */
function asciiBytes(s: string): number {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return -1;
  return s.length;
}

// Numbers as msgpackr writes them with `useRecords: false` and no float32: unsigned 32-bit integers
// in the smallest uint form (fixint up to 0x7f), negative 32-bit integers in the smallest int form,
// anything else (larger integers included) as float64.

function numberBytes(n: number): number {
  if (n >>> 0 === n) return n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
  if (n >> 0 === n) return n >= -0x20 ? 1 : n >= -0x80 ? 2 : n >= -0x8000 ? 3 : 5;
  return 9;
}

function writeNumber(buf: Buffer, at: number, n: number): number {
  if (n >>> 0 === n) {
    if (n < 0x80) {
      buf[at] = n;
      return at + 1;
    }
    if (n < 0x100) {
      buf[at] = 0xcc;
      buf[at + 1] = n;
      return at + 2;
    }
    if (n < 0x10000) {
      buf[at] = 0xcd;
      buf.writeUInt16BE(n, at + 1);
      return at + 3;
    }
    buf[at] = 0xce;
    buf.writeUInt32BE(n, at + 1);
    return at + 5;
  }
  if (n >> 0 === n) {
    if (n >= -0x20) {
      buf[at] = 0x100 + n;
      return at + 1;
    }
    if (n >= -0x80) {
      buf[at] = 0xd0;
      buf[at + 1] = n + 0x100;
      return at + 2;
    }
    if (n >= -0x8000) {
      buf[at] = 0xd1;
      buf.writeInt16BE(n, at + 1);
      return at + 3;
    }
    buf[at] = 0xd2;
    buf.writeInt32BE(n, at + 1);
    return at + 5;
  }
  buf[at] = 0xcb;
  buf.writeDoubleBE(n, at + 1);
  return at + 9;
}

function strHeaderBytes(n: number): number {
  return n < 0x20 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
}

function writeStrHeader(buf: Buffer, at: number, n: number): number {
  if (n < 0x20) {
    buf[at] = 0xa0 | n;
    return at + 1;
  }
  if (n < 0x100) {
    buf[at] = 0xd9;
    buf[at + 1] = n;
    return at + 2;
  }
  if (n < 0x10000) {
    buf[at] = 0xda;
    buf.writeUInt16BE(n, at + 1);
    return at + 3;
  }
  buf[at] = 0xdb;
  buf.writeUInt32BE(n, at + 1);
  return at + 5;
}

function binHeaderBytes(n: number): number {
  return n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
}

function writeBinHeader(buf: Buffer, at: number, n: number): number {
  if (n < 0x100) {
    buf[at] = 0xc4;
    buf[at + 1] = n;
    return at + 2;
  }
  if (n < 0x10000) {
    buf[at] = 0xc5;
    buf.writeUInt16BE(n, at + 1);
    return at + 3;
  }
  buf[at] = 0xc6;
  buf.writeUInt32BE(n, at + 1);
  return at + 5;
}

/**
 * Decodes a stored value, checking its CRC and that it belongs at `index`. Any mismatch is CORRUPT,
 * naming the entry and the file: a damaged entry is never returned as data.
 */
export function decodeEntryValue(value: Uint8Array, index: number, file: string): LogEntry {
  return decodeEntryFrame(value, value.byteLength, index, file);
}

/**
 * The same, from `bytes[0, size)`, which may be a buffer lmdb-js reuses for its next read: the
 * entry returned shares no memory with it (its data is copied out), so a range read need not copy
 * each value first. The common layout (five fields, integer index and term, short type, binary
 * data, numeric ts) is read directly; anything else goes through msgpackr.
 */
export function decodeEntryFrame(bytes: Uint8Array, size: number, index: number, file: string): LogEntry {
  return decodeFrame(bytes, size, index, file, true);
}

/**
 * The same, except that the entry's data may be a view into `bytes`: for a caller that is done
 * with the entry before `bytes` is reused (LmdbLog.visitEntries).
 */
export function decodeEntryFrameView(bytes: Uint8Array, size: number, index: number, file: string): LogEntry {
  return decodeFrame(bytes, size, index, file, false);
}

/**
 * decodeEntryFrameView without the CRC check, for a caller that checks the entry's data itself
 * with something stronger (chunk bytes against their sha256): damage still fails that check, or
 * the decoding. With `uncheckedTypes`, only entries of those types skip the check.
 */
export function decodeEntryFrameUnchecked(bytes: Uint8Array, size: number, index: number, file: string, uncheckedTypes?: ReadonlySet<string>): LogEntry {
  const entry = decodeFrame(bytes, size, index, file, false, false);
  if (uncheckedTypes !== undefined && !uncheckedTypes.has(entry.type)) checkCrc(bytes, size, index, file);
  return entry;
}

function decodeFrame(bytes: Uint8Array, size: number, index: number, file: string, copyData: boolean, crc = true): LogEntry {
  if (size < crcBytes + 1) throw corruptEntry(index, file, `value is ${size} bytes, shorter than its frame`);
  if (crc) checkCrc(bytes, size, index, file);
  const entry = bytes[crcBytes] === 0x95 ? readPlainRecord(bytes, size, crcBytes + 1, copyData) : undefined;
  if (entry === undefined) return unpackRecord(Buffer.from(bytes.subarray(crcBytes, size)), index, file);
  if (entry.index !== index) throw corruptEntry(index, file, `it records index ${entry.index}`);
  return entry;
}

function checkCrc(bytes: Uint8Array, size: number, index: number, file: string): void {
  const stored = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
  const actual = crc32cOf(bytes, crcBytes, size);
  if (stored !== actual) throw corruptEntry(index, file, `CRC32C ${hex(actual)} does not match the stored ${hex(stored)}`);
}

function corruptEntry(index: number, file: string, why: string): LoomError {
  return new LoomError('CORRUPT', `log entry ${index} in ${file} is corrupt: ${why}`, { index, file });
}

function unpackRecord(body: Buffer, index: number, file: string): LogEntry {
  let fields: unknown;
  try {
    fields = packr.unpack(body);
  } catch (err) {
    throw corruptEntry(index, file, `body does not decode (${(err as Error).message})`);
  }
  if (!Array.isArray(fields) || fields.length < 5) throw corruptEntry(index, file, 'body is not an entry record');
  const [storedIndex, term, type, data, ts, meta] = fields as [number, number, string, Uint8Array, number, unknown];
  if (storedIndex !== index) throw corruptEntry(index, file, `it records index ${storedIndex}`);
  const entry: LogEntry = { index, term, type, data, ts };
  if (meta !== undefined) entry.meta = meta as Record<string, unknown>;
  return entry;
}

// Where readPlainRecord's field readers stopped; -1 once a field is not in the common layout.
let at = 0;

/**
 * [index, term, type, data, ts] laid out the way msgpackr writes it, or undefined for any other
 * layout (the caller then decodes with msgpackr, which also reports malformed bodies).
 */
function readPlainRecord(bytes: Uint8Array, size: number, start: number, copyData: boolean): LogEntry | undefined {
  at = start;
  const index = readNumber(bytes, size);
  const term = readNumber(bytes, size);
  const type = readType(bytes, size);
  const data = readBin(bytes, size, copyData);
  const ts = readNumber(bytes, size);
  if (at !== size || type === undefined || data === undefined) return undefined;
  return { index, term, type, data, ts };
}

const float64 = new Float64Array(1);
const float64Bytes = new Uint8Array(float64.buffer);
const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function readNumber(bytes: Uint8Array, size: number): number {
  if (at < 0 || at >= size) return fail();
  const tag = bytes[at];
  if (tag <= 0x7f) {
    at += 1;
    return tag;
  }
  const width = tag === 0xcc ? 1 : tag === 0xcd ? 2 : tag === 0xce ? 4 : tag === 0xcb ? 8 : 0;
  if (width === 0 || at + 1 + width > size) return fail();
  const p = at + 1;
  at = p + width;
  if (tag === 0xcc) return bytes[p];
  if (tag === 0xcd) return (bytes[p] << 8) | bytes[p + 1];
  if (tag === 0xce) return ((bytes[p] << 24) | (bytes[p + 1] << 16) | (bytes[p + 2] << 8) | bytes[p + 3]) >>> 0;
  for (let i = 0; i < 8; i++) float64Bytes[littleEndian ? 7 - i : i] = bytes[p + i];
  return float64[0];
}

function fail(): number {
  at = -1;
  return NaN;
}

/** Entry types seen so far, so that reading one allocates no string. Few types exist. */
const knownTypes: Array<{ bytes: Uint8Array; type: string }> = [];
const knownTypesMax = 32;

function readType(bytes: Uint8Array, size: number): string | undefined {
  if (at < 0 || at >= size) return undefined;
  const tag = bytes[at];
  let length: number;
  let p: number;
  if (tag >= 0xa0 && tag <= 0xbf) {
    length = tag - 0xa0;
    p = at + 1;
  } else if (tag === 0xd9 && at + 1 < size) {
    length = bytes[at + 1];
    p = at + 2;
  } else return undefined;
  if (p + length > size) return undefined;
  at = p + length;
  for (const known of knownTypes) {
    const b = known.bytes;
    if (b.length !== length) continue;
    let same = true;
    for (let i = 0; i < length && same; i++) same = b[i] === bytes[p + i];
    if (same) return known.type;
  }
  const copy = Buffer.from(bytes.subarray(p, p + length));
  const type = copy.toString('utf8');
  if (knownTypes.length < knownTypesMax && Buffer.from(type).equals(copy)) knownTypes.push({ bytes: copy, type });
  return type;
}

function readBin(bytes: Uint8Array, size: number, copy: boolean): Uint8Array | undefined {
  if (at < 0 || at >= size) return undefined;
  const tag = bytes[at];
  let length: number;
  let p: number;
  if (tag === 0xc4 && at + 2 <= size) {
    length = bytes[at + 1];
    p = at + 2;
  } else if (tag === 0xc5 && at + 3 <= size) {
    length = (bytes[at + 1] << 8) | bytes[at + 2];
    p = at + 3;
  } else if (tag === 0xc6 && at + 5 <= size) {
    length = ((bytes[at + 1] << 24) | (bytes[at + 2] << 16) | (bytes[at + 3] << 8) | bytes[at + 4]) >>> 0;
    p = at + 5;
  } else return undefined;
  if (p + length > size) return undefined;
  at = p + length;
  // A plain view costs less to make than a Buffer, and the caller only reads it.
  if (!copy) return new Uint8Array(bytes.buffer, bytes.byteOffset + p, length);
  const data = Buffer.allocUnsafe(length);
  data.set(new Uint8Array(bytes.buffer, bytes.byteOffset + p, length));
  return data;
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}
