// CRC32C (Castagnoli) of a byte range, as @node-rs/crc32 computes it. Small log entries are read
// far more often than large ones, and for them a table lookup in JavaScript beats a native call.

import { crc32c as nativeCrc32c } from '@node-rs/crc32';

/**
 * Below this many bytes the JavaScript loop is cheaper than the native call (whose fixed cost,
 * about half a microsecond, includes a view of the range); above it the native code's speed wins.
 */
const jsBytesMax = 256;

// Slicing-by-8 tables: table k maps a byte to the CRC of that byte followed by k zero bytes.
const table = new Int32Array(256 * 8);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  table[n] = c;
}
for (let n = 0; n < 256; n++) {
  let c = table[n];
  for (let k = 1; k < 8; k++) {
    c = table[c & 0xff] ^ (c >>> 8);
    table[k * 256 + n] = c;
  }
}

/** The CRC32C of `bytes[start, end)`. */
export function crc32cOf(bytes: Uint8Array, start: number, end: number): number {
  if (end - start > jsBytesMax) return nativeCrc32c(new Uint8Array(bytes.buffer, bytes.byteOffset + start, end - start));
  const t = table;
  let c = -1;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    const low = c ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24));
    c =
      t[1792 + (low & 0xff)] ^
      t[1536 + ((low >>> 8) & 0xff)] ^
      t[1280 + ((low >>> 16) & 0xff)] ^
      t[1024 + (low >>> 24)] ^
      t[768 + bytes[i + 4]] ^
      t[512 + bytes[i + 5]] ^
      t[256 + bytes[i + 6]] ^
      t[bytes[i + 7]];
  }
  for (; i < end; i++) c = t[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
