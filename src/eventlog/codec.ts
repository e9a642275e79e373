// How an entry is laid out on disk: a fixed-width big-endian key for its index, and a value framed
// as [u32 CRC32C of the body][msgpack body]. Pure functions, so the framing is tested without LMDB.

import { Packr } from 'msgpackr';
import { LoomError, assert } from '../util';
import { crc32c } from './crc32c';
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

export function decodeIndexKey(key: Uint8Array): number {
  const high = ((key[0] << 24) | (key[1] << 16) | (key[2] << 8) | key[3]) >>> 0;
  const low = ((key[4] << 24) | (key[5] << 16) | (key[6] << 8) | key[7]) >>> 0;
  return high * 0x1_0000_0000 + low;
}

/**
 * Frames an entry: [u32 CRC32C of the body][msgpack body]. The body is the msgpack array
 * [index, term, type, data, ts, meta?], written field by field straight into the one buffer the
 * frame needs, with the same bytes `packr.pack` would produce (tested byte for byte), so values
 * written before and after this encoder read alike. Packing the record and then copying it into
 * the frame cost two allocations and a copy per entry, measurable on the append path.
 */
export function encodeEntryValue(entry: LogEntry): Buffer {
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
  frame.writeUInt32BE(crc32c(frame, crcBytes, frame.length), 0);
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
  const buf = Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  const corrupt = (why: string): LoomError =>
    new LoomError('CORRUPT', `log entry ${index} in ${file} is corrupt: ${why}`, { index, file });
  if (buf.length < crcBytes + 1) throw corrupt(`value is ${buf.length} bytes, shorter than its frame`);
  const body = buf.subarray(crcBytes);
  const stored = buf.readUInt32BE(0);
  const actual = crc32c(buf, crcBytes, buf.length);
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
