// CRC32C (Castagnoli) of a byte range, as framed around every log entry. Short ranges are summed
// here in JavaScript; long ones by @node-rs/crc32 (hardware CRC), whose call costs more than a
// short range takes to sum.

import { crc32c as nativeCrc32c } from '@node-rs/crc32';

/** At or above this many bytes the native CRC wins over the table-driven one below (measured). */
const nativeBytesMin = 256;

// Slicing-by-8 tables for the reflected polynomial 0x82F63B78: table k maps a byte to its CRC
// after k more zero bytes, so eight bytes are folded per step.
const tables = new Int32Array(8 * 256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  tables[n] = c;
}
for (let n = 0; n < 256; n++) {
  let c = tables[n];
  for (let k = 1; k < 8; k++) {
    c = tables[c & 0xff] ^ (c >>> 8);
    tables[k * 256 + n] = c;
  }
}

/** The CRC32C of bytes[start, end). */
export function crc32c(bytes: Uint8Array, start: number, end: number): number {
  if (end - start >= nativeBytesMin) {
    return nativeCrc32c(Buffer.from(bytes.buffer, bytes.byteOffset + start, end - start));
  }
  const t = tables;
  let crc = -1;
  let i = start;
  const end8 = end - ((end - start) & 7);
  for (; i < end8; i += 8) {
    const low = crc ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24));
    crc =
      t[1792 + (low & 0xff)] ^
      t[1536 + ((low >>> 8) & 0xff)] ^
      t[1280 + ((low >>> 16) & 0xff)] ^
      t[1024 + (low >>> 24)] ^
      t[768 + bytes[i + 4]] ^
      t[512 + bytes[i + 5]] ^
      t[256 + bytes[i + 6]] ^
      t[bytes[i + 7]];
  }
  for (; i < end; i++) crc = t[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return ~crc >>> 0;
}
