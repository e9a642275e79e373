// How an entry is laid out on disk: a fixed-width big-endian key for its index, and a value framed
// as [u32 CRC32C of the body][msgpack body]. Pure functions, so the framing is tested without LMDB.

import { crc32c } from '@node-rs/crc32';
import { Packr } from 'msgpackr';
import { LoomError } from '../util';
import { entryTypeBytesMax } from './limits';
import type { LogEntry } from './types';

const keyBytes = 8;
const crcBytes = 4;

// One Packr for the log: plain structures (no shared record extension), so any msgpack reader can
// decode a stored entry and the on-disk format does not depend on this process's state.
const packr = new Packr({ useRecords: false, moreTypes: false });

/** The key of entry `index`: 8 bytes, big-endian, so LMDB's byte order is numeric order. */
export function encodeIndexKey(index: number): Buffer {
  const key = Buffer.allocUnsafe(keyBytes);
  // Two 32-bit halves: indexes are safe integers (< 2^53), and this avoids a BigInt per key.
  key.writeUInt32BE(Math.floor(index / 0x1_0000_0000), 0);
  key.writeUInt32BE(index >>> 0, 4);
  return key;
}

export function decodeIndexKey(key: Uint8Array): number {
  const high = ((key[0] << 24) | (key[1] << 16) | (key[2] << 8) | key[3]) >>> 0;
  const low = ((key[4] << 24) | (key[5] << 16) | (key[6] << 8) | key[7]) >>> 0;
  return high * 0x1_0000_0000 + low;
}

/** Entries with at least this much data are framed piece by piece, copying the data only once. */
const largeDataBytesMin = 16 * 1024;

export function encodeEntryValue(entry: LogEntry): Buffer {
  if (entry.data.byteLength >= largeDataBytesMin) return encodeLargeEntryValue(entry);
  const body = packr.pack(
    entry.meta === undefined
      ? [entry.index, entry.term, entry.type, entry.data, entry.ts]
      : [entry.index, entry.term, entry.type, entry.data, entry.ts, entry.meta],
  );
  const framed = Buffer.allocUnsafe(crcBytes + body.length);
  framed.writeUInt32BE(crc32c(body), 0);
  body.copy(framed, crcBytes);
  return framed;
}

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

/**
 * The same bytes as packing the whole record (msgpack is a concatenation: an array header, then
 * each element), written into one buffer: a 256 KiB chunk is copied once, not twice, and only one
 * buffer of its size is allocated. Data from allocEntryData is not copied at all: the framing is
 * written around it.
 */
function encodeLargeEntryValue(entry: LogEntry): Buffer {
  const n = entry.data.byteLength;
  const head = Buffer.concat([
    Buffer.from([entry.meta === undefined ? 0x95 : 0x96]),
    packr.pack(entry.index),
    packr.pack(entry.term),
    packr.pack(entry.type),
    binHeader(n),
  ]);
  const tail = Buffer.concat(entry.meta === undefined ? [packr.pack(entry.ts)] : [packr.pack(entry.ts), packr.pack(entry.meta)]);
  const inPlace = frameInPlace(entry.data, head, tail);
  if (inPlace !== undefined) return inPlace;
  const framed = Buffer.allocUnsafe(crcBytes + head.length + n + tail.length);
  head.copy(framed, crcBytes);
  framed.set(entry.data, crcBytes + head.length);
  tail.copy(framed, crcBytes + head.length + n);
  framed.writeUInt32BE(crc32c(framed.subarray(crcBytes)), 0);
  return framed;
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
  framed.writeUInt32BE(crc32c(framed.subarray(crcBytes)), 0);
  return framed;
}

function binHeader(n: number): Buffer {
  if (n < 0x100) return Buffer.from([0xc4, n]);
  const header = Buffer.allocUnsafe(n < 0x10000 ? 3 : 5);
  header[0] = n < 0x10000 ? 0xc5 : 0xc6;
  if (n < 0x10000) header.writeUInt16BE(n, 1);
  else header.writeUInt32BE(n, 1);
  return header;
}

/**
 * Decodes a stored value, checking its CRC and that it belongs at `index`. Any mismatch is CORRUPT,
 * naming the entry and the file: a damaged entry is never returned as data.
 */
export function decodeEntryValue(value: Uint8Array, index: number, file: string): LogEntry {
  const buf = Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  const corrupt = (why: string): LoomError =>
    new LoomError('CORRUPT', `log entry ${index} in ${file} is corrupt: ${why}`, { index, file });
  if (buf.length < crcBytes + 1) throw corrupt(`value is ${buf.length} bytes, shorter than its frame`);
  const body = buf.subarray(crcBytes);
  const stored = buf.readUInt32BE(0);
  const actual = crc32c(body);
  if (stored !== actual) throw corrupt(`CRC32C ${hex(actual)} does not match the stored ${hex(stored)}`);
  let fields: unknown;
  try {
    fields = packr.unpack(body);
  } catch (err) {
    throw corrupt(`body does not decode (${(err as Error).message})`);
  }
  if (!Array.isArray(fields) || fields.length < 5) throw corrupt('body is not an entry record');
  const [storedIndex, term, type, data, ts, meta] = fields as [number, number, string, Uint8Array, number, unknown];
  if (storedIndex !== index) throw corrupt(`it records index ${storedIndex}`);
  const entry: LogEntry = { index, term, type, data, ts };
  if (meta !== undefined) entry.meta = meta as Record<string, unknown>;
  return entry;
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}
