// Names and limits of the data model (CONTRACT.md "Names"), checked at every door (and by the client)
// before a bad name becomes a subject token or reaches the log. Every limit is named here, unit last.

import { LoomError } from './errors';

export const bucketNamePattern = /^[A-Za-z0-9_-]{1,64}$/;
export const streamNamePattern = bucketNamePattern;
/** The NATS JetStream KV key rule: `$KV.<bucket>.<key>` must be a valid subject. */
export const keyPattern = /^[-/=.\w]{1,1024}$/;
export const eventTypePattern = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$/;

export const keyBytesMax = 1024;
/** Largest KV value. Leaves room in a log entry (entryBytesMax, 1 MiB) for the rest of the entry. */
export const valueBytesMax = 1024 * 1024 - 4096;
/** Largest event data, encoded as JSON. */
export const eventDataBytesMax = 1024 * 1024 - 4096;
export const historyMax = 64;
export const ttlMsMax = 10 * 365 * 24 * 3600 * 1000;
export const listLimitDefault = 100;
export const listLimitMax = 10_000;
export const readLimitDefault = 100;
export const readLimitMax = 10_000;

export function checkBucket(bucket: unknown, field = 'bucket'): string {
  if (typeof bucket !== 'string' || !bucketNamePattern.test(bucket)) {
    throw new LoomError('INVALID_ARGUMENT', `${field} ${JSON.stringify(bucket)} is invalid: expected 1-64 of A-Z a-z 0-9 _ -`, { field });
  }
  return bucket;
}

export function checkStream(stream: unknown): string {
  return checkBucket(stream, 'stream');
}

export function checkKey(key: unknown): string {
  if (typeof key !== 'string' || !keyPattern.test(key) || key.startsWith('.') || key.endsWith('.') || key.includes('..')) {
    throw new LoomError(
      'INVALID_ARGUMENT',
      `key ${JSON.stringify(typeof key === 'string' && key.length > 80 ? `${key.slice(0, 80)}…` : key)} is invalid: expected 1-1024 of A-Z a-z 0-9 _ - / = . with no leading, trailing or double dot`,
      { field: 'key' },
    );
  }
  return key;
}

export function checkEventType(type: unknown): string {
  if (typeof type !== 'string' || !eventTypePattern.test(type) || type.endsWith('.') || type.includes('..')) {
    throw new LoomError('INVALID_ARGUMENT', `event type ${JSON.stringify(type)} is invalid: expected 1-128 of A-Z a-z 0-9 _ - . (dots separate tokens)`, {
      field: 'type',
    });
  }
  return type;
}

export function checkLimit(limit: unknown, field: string, fallback: number, max: number): number {
  if (limit === undefined || limit === null) return fallback;
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > max) {
    throw new LoomError('INVALID_ARGUMENT', `${field} must be an integer from 1 to ${max}, got ${JSON.stringify(limit)}`, { field, max });
  }
  return limit;
}

export function checkSeq(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new LoomError('INVALID_ARGUMENT', `${field} must be a non-negative integer, got ${JSON.stringify(value)}`, { field });
  }
  return value;
}

// Buckets (blob storage). A chunk travels in one log entry, which the log's default entryBytesMax
// (1 MiB + 4 KiB) leaves room for; an object's chunk list travels in one `blob.commit` entry, which
// bounds how many chunks an object may have.

/** Default chunk size of an upload. */
export const chunkBytesDefault = 256 * 1024;
/** Largest chunk: 1 MiB; its `blob.chunk` entry fits the log's default entryBytesMax (1 MiB + 4 KiB). */
export const chunkBytesMax = 1024 * 1024;
/** Smallest chunk size an upload may ask for (smaller ones would need too many chunks per object). */
export const chunkBytesMin = 4096;
/** Most chunks one object may have: 32-byte digests, 896 KiB of a `blob.commit` entry. */
export const objectChunksMax = 28_672;
/** Default largest object. */
export const objectBytesMaxDefault = 5 * 1024 ** 3;
export const objectNameBytesMax = 1024;
export const contentTypeBytesMax = 256;
/**
 * Largest object metadata, counted as HTTP carries it: `x-loom-meta-<key>: <value>` and CRLF per
 * entry, the value as UTF-8 (metadataHeaderBytes). 8 KiB leaves room for an upload's or a download's
 * other headers in the 16 KiB header block Node's HTTP parser takes by default, on the node and in
 * clients alike; 16 KiB of metadata as JSON did not fit in it (a client could not download it).
 */
export const objectMetadataBytesMax = 8 * 1024;
/** Bytes of each metadata entry's header besides its key and value: `x-loom-meta-`, `: ` and CRLF. */
const metadataHeaderOverheadBytes = 'x-loom-meta-: \r\n'.length;

export function checkObjectName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0 || name.includes('\u0000') || Buffer.byteLength(name) > objectNameBytesMax || !isWellFormedUtf16(name)) {
    throw new LoomError('INVALID_ARGUMENT', `object name ${JSON.stringify(typeof name === 'string' && name.length > 80 ? `${name.slice(0, 80)}…` : name)} is invalid: expected 1-1024 bytes of UTF-8 without NUL`, {
      field: 'name',
    });
  }
  return name;
}

// Object metadata and content type travel as HTTP headers (`x-loom-meta-<key>`, Content-Type) as
// well as in gRPC, NATS and SQL, so they follow rules every door can carry back unchanged. Keys are
// header-name characters, unique ignoring case (HTTP header names ignore case: `K` and `k` would be
// one header; HTTP hands keys over lower-cased, as S3 does). Values are any text without control
// characters and without space or tab at either end (HTTP drops those); over HTTP a value travels
// as its UTF-8 bytes. A content type is printable US-ASCII by the same rule, as media types are.

/** Object metadata keys: letters, digits, `.`, `-` and `_`. */
export const metadataKeyPattern = /^[A-Za-z0-9._-]{1,128}$/;
export const metadataKeyCharsMax = 128;
/** Printable US-ASCII and tab (0x20-0x7E, 0x09), not starting or ending with a space or tab; may be empty. */
export const headerValuePattern = /^(?:[\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?)?$/;
/** Any text but C0/C1 controls (tab allowed inside), not starting or ending with a space or tab; may be empty. */
export const metadataValuePattern = /^(?:[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x08\x0a-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?)?$/;
export const contentTypeDefault = 'application/octet-stream';

/** Object metadata as every door can carry it unchanged; the field of an error names the key. */
export function checkObjectMetadata(metadata: unknown): Record<string, string> {
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
    throw new LoomError('INVALID_ARGUMENT', 'metadata must be an object of string keys and string values', { field: 'metadata' });
  }
  const lowerKeys = new Set<string>();
  for (const [key, value] of Object.entries(metadata)) {
    const field = `metadata.${key}`;
    if (!metadataKeyPattern.test(key)) {
      throw new LoomError('INVALID_ARGUMENT', `metadata key ${quoted(key)} is invalid: expected 1-${metadataKeyCharsMax} of A-Z a-z 0-9 . - _`, { field });
    }
    if (lowerKeys.has(key.toLowerCase())) {
      throw new LoomError('INVALID_ARGUMENT', `metadata key ${quoted(key)} differs from another only in case (HTTP header names ignore case)`, { field });
    }
    lowerKeys.add(key.toLowerCase());
    if (typeof value !== 'string' || !metadataValuePattern.test(value) || !isWellFormedUtf16(value)) {
      throw new LoomError('INVALID_ARGUMENT', `metadata ${key} value ${quoted(value)} is invalid: expected text without control characters (tab allowed inside), no space or tab at either end`, { field });
    }
  }
  const metadataBytes = metadataHeaderBytes(metadata as Record<string, string>);
  if (metadataBytes > objectMetadataBytesMax) {
    throw new LoomError('TOO_LARGE', `metadata is ${metadataBytes} bytes as HTTP headers (x-loom-meta-<key>: <value>); objectMetadataBytesMax is ${objectMetadataBytesMax}`, {
      field: 'metadata',
      limit: 'objectMetadataBytesMax',
      max: objectMetadataBytesMax,
    });
  }
  return metadata as Record<string, string>;
}

/** The bytes of `metadata` as HTTP headers: `x-loom-meta-<key>: <value>` and CRLF per entry, values as UTF-8. */
export function metadataHeaderBytes(metadata: Record<string, string>): number {
  let bytes = 0;
  for (const [key, value] of Object.entries(metadata)) bytes += metadataHeaderOverheadBytes + key.length + Buffer.byteLength(value);
  return bytes;
}

/** A metadata value as an HTTP header carries it: its UTF-8 bytes, one char per byte (Node writes headers as Latin-1). */
export function metadataValueToHeader(value: string): string {
  return Buffer.from(value, 'utf8').toString('latin1');
}

/**
 * A metadata value from an HTTP header: Node hands header bytes over one char per byte (Latin-1),
 * read back as UTF-8; bytes that are not UTF-8 are INVALID_ARGUMENT naming `field`.
 */
export function metadataValueFromHeader(value: string, field: string): string {
  const bytes = Buffer.from(value, 'latin1');
  const text = bytes.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(bytes)) throw new LoomError('INVALID_ARGUMENT', `${field} is not UTF-8`, { field });
  return text;
}

/** An object's content type: 1-256 characters by the same rule as a metadata value. */
export function checkContentType(contentType: unknown): string {
  if (typeof contentType === 'string' && Buffer.byteLength(contentType) > contentTypeBytesMax) {
    throw new LoomError('TOO_LARGE', `contentType is longer than ${contentTypeBytesMax} bytes`, { field: 'contentType', limit: 'contentTypeBytesMax', max: contentTypeBytesMax });
  }
  if (typeof contentType !== 'string' || contentType === '' || !headerValuePattern.test(contentType)) {
    throw new LoomError('INVALID_ARGUMENT', `contentType ${quoted(contentType)} is invalid: expected 1-${contentTypeBytesMax} of printable US-ASCII or tab, no CR or LF, no space or tab at either end`, {
      field: 'contentType',
    });
  }
  return contentType;
}

/** A value for an error message: JSON (escapes CR, LF and the like), cut short if long. */
function quoted(value: unknown): string {
  const text = typeof value === 'string' && value.length > 80 ? `${value.slice(0, 80)}…` : value;
  return JSON.stringify(text) ?? String(text);
}

/** An object name's subject token: base64url of its UTF-8 bytes (CONTRACT.md "Names"). */
export function objectNameToken(name: string): string {
  return Buffer.from(name).toString('base64url');
}

/** Lone surrogates have no UTF-8 form: such a name would not survive a round trip. */
function isWellFormedUtf16(s: string): boolean {
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);
}
