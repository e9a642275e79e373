// The mutation entries loom appends to the log, as versioned zod schemas with a binary encoding.
// Commands are validated in full at the door (`encodeMutation`); on apply, entries come from the
// log and are only decoded (`decodeMutation`), which keeps replay fast.

import { Packr } from 'msgpackr';
import { z } from 'zod';
import type { LogEntry } from '../eventlog';
import { createHash } from 'node:crypto';
import { LoomError, assert } from '../util';
import {
  checkBucket,
  checkObjectName,
  chunkBytesMax,
  chunkBytesMin,
  checkContentType,
  checkObjectMetadata,
  objectChunksMax,
  checkEventType,
  checkKey,
  checkStream,
  eventDataBytesMax,
  historyMax,
  ttlMsMax,
  valueBytesMax,
} from '../util/names';

const revision = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const bytes = z.instanceof(Uint8Array, { message: 'expected bytes' });

export const kvPutSchema = z
  .object({
    v: z.literal(1).default(1),
    bucket: z.string(),
    key: z.string(),
    value: bytes,
    expectRev: revision.optional(),
    create: z.boolean().optional(),
    ttlMs: z.number().int().min(1).max(ttlMsMax).optional(),
  })
  .strict();

export const kvDelSchema = z
  .object({
    v: z.literal(1).default(1),
    bucket: z.string(),
    key: z.string(),
    expectRev: revision.optional(),
    /** Set when the leader deletes a key whose TTL ran out. */
    expired: z.boolean().optional(),
  })
  .strict();

export const kvBucketSchema = z
  .object({
    v: z.literal(1).default(1),
    bucket: z.string(),
    /** How many revisions of each key to keep, the current one included. */
    history: z.number().int().min(1).max(historyMax),
  })
  .strict();

export const eventAppendSchema = z
  .object({
    v: z.literal(1).default(1),
    stream: z.string(),
    type: z.string(),
    data: z.unknown(),
    expectVersion: revision.optional(),
  })
  .strict();

const sha256 = bytes.refine((b) => b.byteLength === 32, { message: 'expected a 32-byte SHA-256 digest' });

/** One chunk's bytes, stored once under its SHA-256 (proposed only for chunks not already stored). */
export const blobChunkSchema = z
  .object({
    v: z.literal(1).default(1),
    sha256,
    bytes,
  })
  .strict();

/**
 * A conditional object write carries `expectRev` (the object's current rev; 0: it must not exist)
 * and is version 2, which builds before conditions refuse (CORRUPT, the applier stops) rather than
 * apply unconditionally and diverge from the replicas that decided it (docs/decisions.md §21).
 */
const objectWriteVersion = z.union([z.literal(1), z.literal(2)]).default(1);
export const conditionalObjectWriteVersion = 2 as const;

/** Makes an object visible: its chunks (concatenated 32-byte digests, in order) must all be stored. */
export const blobCommitSchema = z
  .object({
    v: objectWriteVersion,
    bucket: z.string(),
    name: z.string(),
    size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    sha256,
    /** Size of every chunk but the last, which holds the rest (1..chunkBytes bytes; none for 0 B). */
    chunkBytes: z.number().int().min(chunkBytesMin).max(chunkBytesMax),
    chunks: bytes,
    contentType: z.string().default('application/octet-stream'),
    metadata: z.record(z.string(), z.string()).default({}),
    expectRev: revision.optional(),
  })
  .strict();

export const blobDelSchema = z
  .object({
    v: objectWriteVersion,
    bucket: z.string(),
    name: z.string(),
    expectRev: revision.optional(),
  })
  .strict();

/** Removes up to `limit` chunks no object references that became unreferenced before `beforeTs`. */
export const blobGcSchema = z
  .object({
    v: z.literal(1).default(1),
    beforeTs: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    limit: z.number().int().min(1).max(100_000),
  })
  .strict();

export type KvPut = z.infer<typeof kvPutSchema>;
export type KvDel = z.infer<typeof kvDelSchema>;
export type KvBucket = z.infer<typeof kvBucketSchema>;
export type EventAppend = z.infer<typeof eventAppendSchema>;
export type BlobChunk = z.infer<typeof blobChunkSchema>;
export type BlobCommit = z.infer<typeof blobCommitSchema>;
export type BlobDel = z.infer<typeof blobDelSchema>;
export type BlobGc = z.infer<typeof blobGcSchema>;

export interface MutationByType {
  'kv.put': KvPut;
  'kv.del': KvDel;
  'kv.bucket': KvBucket;
  'event.append': EventAppend;
  'blob.chunk': BlobChunk;
  'blob.commit': BlobCommit;
  'blob.del': BlobDel;
  'blob.gc': BlobGc;
}
export type MutationType = keyof MutationByType;
export type Mutation = { [T in MutationType]: { type: T; body: MutationByType[T] } }[MutationType];

const schemas: { [T in MutationType]: z.ZodType<MutationByType[T]> } = {
  'kv.put': kvPutSchema as z.ZodType<KvPut>,
  'kv.del': kvDelSchema as z.ZodType<KvDel>,
  'kv.bucket': kvBucketSchema as z.ZodType<KvBucket>,
  'event.append': eventAppendSchema as z.ZodType<EventAppend>,
  'blob.chunk': blobChunkSchema as z.ZodType<BlobChunk>,
  'blob.commit': blobCommitSchema as z.ZodType<BlobCommit>,
  'blob.del': blobDelSchema as z.ZodType<BlobDel>,
  'blob.gc': blobGcSchema as z.ZodType<BlobGc>,
};

export const mutationTypes = Object.keys(schemas) as MutationType[];

// Plain msgpack, no record extension, so entries decode the same in any process and on replay.
const packr = new Packr({ useRecords: false, moreTypes: false });

/** Validates a command fully (schema, names, sizes) and encodes it as a log entry body. */
export function encodeMutation<T extends MutationType>(type: T, input: unknown): { type: T; data: Uint8Array; body: MutationByType[T] } {
  const body = ((type === 'kv.put' ? plainKvPut(input) : undefined) as MutationByType[T] | undefined) ?? parseMutation(type, input);
  checkNames(type, body);
  if (type === 'blob.commit' || type === 'blob.del') {
    // The version says whether the write is conditional; an unconditional one packs as it always did.
    const write = body as BlobCommit | BlobDel;
    write.v = write.expectRev === undefined ? 1 : conditionalObjectWriteVersion;
  }
  return { type, data: packr.pack(body), body };
}

function parseMutation<T extends MutationType>(type: T, input: unknown): MutationByType[T] {
  const schema = schemas[type];
  if (!schema) throw new LoomError('INVALID_ARGUMENT', `unknown mutation type ${JSON.stringify(type)}`, { field: 'type' });
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue.path.join('.') || 'body';
    throw new LoomError('INVALID_ARGUMENT', `${type}: ${field}: ${issue.message}`, { field });
  }
  return parsed.data;
}

/**
 * A put as every door sends it, checked by hand and built in the schema's field order, so it packs
 * to the very bytes the schema's output would; undefined for anything else (the schema then decides
 * and words the error). The schema costs several µs per put on the hottest path.
 */
function plainKvPut(input: unknown): KvPut | undefined {
  if (typeof input !== 'object' || input === null || Object.getPrototypeOf(input) !== Object.prototype) return undefined;
  const fields = input as Record<string, unknown>;
  const { bucket, key, value } = fields;
  if (typeof bucket !== 'string' || typeof key !== 'string' || !(value instanceof Uint8Array)) return undefined;
  for (const field in fields) {
    const v = fields[field];
    if (field === 'bucket' || field === 'key' || field === 'value') continue;
    if (field === 'v' && v === 1) continue;
    if (field === 'expectRev' && Number.isSafeInteger(v) && (v as number) >= 0) continue;
    if (field === 'create' && typeof v === 'boolean') continue;
    if (field === 'ttlMs' && Number.isSafeInteger(v) && (v as number) >= 1 && (v as number) <= ttlMsMax) continue;
    return undefined;
  }
  const body: KvPut = { v: 1, bucket, key, value: value as KvPut['value'] };
  if (fields.expectRev !== undefined) body.expectRev = fields.expectRev as number;
  if (fields.create !== undefined) body.create = fields.create as boolean;
  if (fields.ttlMs !== undefined) body.ttlMs = fields.ttlMs as number;
  return body;
}

function checkNames(type: MutationType, body: MutationByType[MutationType]): void {
  switch (type) {
    case 'kv.put': {
      const put = body as KvPut;
      checkBucket(put.bucket);
      checkKey(put.key);
      if (put.value.byteLength > valueBytesMax) {
        throw new LoomError('TOO_LARGE', `value is ${put.value.byteLength} bytes; valueBytesMax is ${valueBytesMax}`, {
          field: 'value',
          limit: 'valueBytesMax',
          max: valueBytesMax,
        });
      }
      if (put.create && put.expectRev !== undefined && put.expectRev !== 0) {
        throw new LoomError('INVALID_ARGUMENT', 'create and expectRev contradict each other; create means expectRev 0', { field: 'create' });
      }
      return;
    }
    case 'kv.del':
      checkBucket((body as KvDel).bucket);
      checkKey((body as KvDel).key);
      return;
    case 'kv.bucket':
      checkBucket((body as KvBucket).bucket);
      return;
    case 'event.append': {
      const append = body as EventAppend;
      checkStream(append.stream);
      checkEventType(append.type);
      if (append.data === undefined) throw new LoomError('INVALID_ARGUMENT', 'event data is required (any JSON value)', { field: 'data' });
      let json: string;
      try {
        json = JSON.stringify(append.data);
      } catch (err) {
        throw new LoomError('INVALID_ARGUMENT', `event data is not JSON-serialisable: ${(err as Error).message}`, { field: 'data' });
      }
      if (json === undefined) throw new LoomError('INVALID_ARGUMENT', 'event data must be a JSON value', { field: 'data' });
      const size = Buffer.byteLength(json);
      if (size > eventDataBytesMax) {
        throw new LoomError('TOO_LARGE', `event data is ${size} bytes as JSON; eventDataBytesMax is ${eventDataBytesMax}`, {
          field: 'data',
          limit: 'eventDataBytesMax',
          max: eventDataBytesMax,
        });
      }
      // Keep exactly the JSON form, so every replica and every replay sees the same value.
      append.data = JSON.parse(json) as unknown;
      return;
    }
    case 'blob.chunk':
      checkBlobChunk(body as BlobChunk);
      return;
    case 'blob.commit':
      checkBlobCommit(body as BlobCommit);
      return;
    case 'blob.del':
      checkBucket((body as BlobDel).bucket);
      checkObjectName((body as BlobDel).name);
      return;
    case 'blob.gc':
      return;
  }
}

function checkBlobChunk(chunk: BlobChunk): void {
  if (chunk.bytes.byteLength === 0 || chunk.bytes.byteLength > chunkBytesMax) {
    throw new LoomError('TOO_LARGE', `a chunk is 1 to ${chunkBytesMax} bytes (chunkBytesMax), got ${chunk.bytes.byteLength}`, {
      field: 'bytes',
      limit: 'chunkBytesMax',
      max: chunkBytesMax,
    });
  }
  // The digest names the chunk forever: a wrong one would poison every object that shares it.
  const actual = createHash('sha256').update(chunk.bytes).digest();
  if (!actual.equals(chunk.sha256)) throw new LoomError('INVALID_ARGUMENT', 'the chunk does not match its sha256', { field: 'sha256' });
}

function checkBlobCommit(commit: BlobCommit): void {
  checkBucket(commit.bucket);
  checkObjectName(commit.name);
  if (commit.chunks.byteLength % 32 !== 0) throw new LoomError('INVALID_ARGUMENT', 'chunks must be concatenated 32-byte digests', { field: 'chunks' });
  const count = commit.chunks.byteLength / 32;
  if (count > objectChunksMax) {
    throw new LoomError('TOO_LARGE', `an object has at most ${objectChunksMax} chunks (objectChunksMax), got ${count}`, { field: 'chunks', limit: 'objectChunksMax', max: objectChunksMax });
  }
  const expected = Math.ceil(commit.size / commit.chunkBytes);
  if (count !== expected) {
    throw new LoomError('INVALID_ARGUMENT', `an object of ${commit.size} bytes in chunks of ${commit.chunkBytes} has ${expected} chunks, not ${count}`, { field: 'chunks' });
  }
  // The rule every door shares (names.ts): a value no door can carry unchanged never reaches the log.
  checkContentType(commit.contentType);
  checkObjectMetadata(commit.metadata);
}

/**
 * Room an upload leaves in front of a chunk's bytes for the `blob.chunk` body's msgpack header
 * ({v, sha256, bytes}, in that order: the bytes come last, so the chunk is never copied to encode it).
 */
export const blobChunkHeaderBytesMax = 58;

/**
 * Encodes a `blob.chunk` body around bytes already placed at `frame[blobChunkHeaderBytesMax ..
 * + length]`, without copying them: the same msgpack `encodeMutation` writes. Only for a caller
 * that computed `sha256` from these very bytes (the objects API), so it skips the schema and the
 * re-hash that `encodeMutation` does for bodies from elsewhere.
 */
export function encodeBlobChunkInPlace(frame: Buffer, length: number, sha256: Uint8Array): Uint8Array {
  assert(sha256.byteLength === 32, 'a chunk digest is 32 bytes');
  assert(length >= 1 && length <= chunkBytesMax && frame.byteLength >= blobChunkHeaderBytesMax + length, `chunk length ${length} does not fit its frame`);
  const binHeader = length < 0x100 ? 2 : length < 0x10000 ? 3 : 5;
  const headerBytes = blobChunkFixedBytes + binHeader;
  let at = blobChunkHeaderBytesMax - headerBytes;
  const start = at;
  blobChunkPrefix.copy(frame, at);
  at += blobChunkPrefix.length;
  frame.set(sha256, at);
  at += 32;
  blobChunkBytesKey.copy(frame, at);
  at += blobChunkBytesKey.length;
  if (binHeader === 2) {
    frame[at] = 0xc4;
    frame[at + 1] = length;
  } else if (binHeader === 3) {
    frame[at] = 0xc5;
    frame.writeUInt16BE(length, at + 1);
  } else {
    frame[at] = 0xc6;
    frame.writeUInt32BE(length, at + 1);
  }
  assert(at + binHeader === blobChunkHeaderBytesMax, 'blob.chunk header ends where the bytes begin');
  return frame.subarray(start, blobChunkHeaderBytesMax + length);
}

// map16(3) (msgpackr's map header), "v": 1, "sha256": bin8(32) — then the digest, then "bytes": bin header and the bytes.
const blobChunkPrefix = Buffer.from([0xde, 0x00, 0x03, 0xa1, 0x76, 0x01, 0xa6, ...Buffer.from('sha256'), 0xc4, 0x20]);
const blobChunkBytesKey = Buffer.from([0xa5, ...Buffer.from('bytes')]);
const blobChunkFixedBytes = blobChunkPrefix.length + 32 + blobChunkBytesKey.length;

/** Decodes a mutation entry from the log; undefined for entries that are not mutations (e.g. raft.noop). */
export function decodeMutation(entry: LogEntry): Mutation | undefined {
  return entry.type in schemas ? unpackMutation(entry, false) : undefined;
}

/**
 * Bodies up to this size are decoded by `decodeMutationTransient` from one reused buffer: msgpackr
 * then reuses that buffer's DataView instead of making one for every entry's data.
 */
const scratchBytes = 64 * 1024;
const scratch = Buffer.allocUnsafe(scratchBytes);

/**
 * The same, except that byte fields (a put's value, a chunk's bytes) may point into a buffer the
 * next call overwrites: for a view that copies what it keeps before it decodes the next entry.
 */
export function decodeMutationTransient(entry: LogEntry): Mutation | undefined {
  return entry.type in schemas ? unpackMutation(entry, entry.data.byteLength <= scratchBytes) : undefined;
}

function unpackMutation(entry: LogEntry, inScratch: boolean): Mutation {
  let body: unknown;
  try {
    if (inScratch) {
      scratch.set(entry.data);
      body = packr.unpack(scratch, entry.data.byteLength);
    } else body = packr.unpack(entry.data);
  } catch (err) {
    throw new LoomError('CORRUPT', `entry ${entry.index} (${entry.type}) does not decode: ${(err as Error).message}`, { index: entry.index });
  }
  const version = typeof body === 'object' && body !== null ? (body as { v?: unknown }).v : undefined;
  if (version !== 1 && !(version === conditionalObjectWriteVersion && (entry.type === 'blob.commit' || entry.type === 'blob.del'))) {
    throw new LoomError('CORRUPT', `entry ${entry.index} (${entry.type}) has an unknown version`, { index: entry.index });
  }
  return { type: entry.type, body } as Mutation;
}

/**
 * Where the fields of a `kv.put` body lie in its bytes, read without msgpackr and without making a
 * string: the KV view builds its LMDB key straight from the name bytes, and the change feed makes
 * its strings from them. Offsets are into `bytes` (the entry's data); undefined numbers are absent.
 */
export interface KvPutFields {
  bytes: Uint8Array;
  bucketStart: number;
  bucketEnd: number;
  keyStart: number;
  keyEnd: number;
  valueStart: number;
  valueEnd: number;
  expectRev: number | undefined;
  create: boolean | undefined;
  ttlMs: number | undefined;
}

// One reused result: readKvPutFields allocates nothing, and its caller is done with one entry's
// fields before it reads the next.
const kvPutFields: KvPutFields = {
  bytes: new Uint8Array(0),
  bucketStart: 0,
  bucketEnd: 0,
  keyStart: 0,
  keyEnd: 0,
  valueStart: 0,
  valueEnd: 0,
  expectRev: undefined,
  create: undefined,
  ttlMs: undefined,
};

// Field names of a kv.put body as msgpack fixstr bytes, and the bit each sets in `seen`.
const fieldV = 1;
const fieldBucket = 2;
const fieldKey = 4;
const fieldValue = 8;
const fieldExpectRev = 16;
const fieldCreate = 32;
const fieldTtlMs = 64;
const fieldsRequired = fieldV | fieldBucket | fieldKey | fieldValue;

// Where readKvPutFields' readers stopped; -1 once something is outside the common layout.
let cursor = 0;

/**
 * The fields of a `kv.put` body in the layout msgpackr writes for every body `encodeMutation`
 * accepts (a map of the known fields, each once, `v` 1, names of printable ASCII), or undefined
 * for anything else, which the caller then decodes with `decodeMutation`: so both ways give the
 * same mutation for the same bytes. The result is reused by the next call.
 */
export function readKvPutFields(bytes: Uint8Array): KvPutFields | undefined {
  const size = bytes.byteLength;
  let count: number;
  cursor = 0;
  if (size < 1) return undefined;
  const head = bytes[0];
  if (head === 0xde) {
    if (size < 3) return undefined;
    count = (bytes[1] << 8) | bytes[2];
    cursor = 3;
  } else if ((head & 0xf0) === 0x80) {
    count = head & 0x0f;
    cursor = 1;
  } else return undefined;
  const f = kvPutFields;
  f.bytes = bytes;
  f.expectRev = undefined;
  f.create = undefined;
  f.ttlMs = undefined;
  let seen = 0;
  for (let i = 0; i < count; i++) {
    const field = readFieldName(bytes, size);
    if (field === 0 || (seen & field) !== 0) return undefined;
    seen |= field;
    switch (field) {
      case fieldV:
        if (cursor >= size || bytes[cursor] !== 0x01) return undefined;
        cursor++;
        break;
      case fieldBucket:
        if (!readName(bytes, size)) return undefined;
        f.bucketStart = nameStart;
        f.bucketEnd = cursor;
        break;
      case fieldKey:
        if (!readName(bytes, size)) return undefined;
        f.keyStart = nameStart;
        f.keyEnd = cursor;
        break;
      case fieldValue:
        if (!readBinField(bytes, size)) return undefined;
        f.valueStart = nameStart;
        f.valueEnd = cursor;
        break;
      case fieldExpectRev:
        f.expectRev = readUnsigned(bytes, size);
        break;
      case fieldCreate:
        if (cursor >= size || (bytes[cursor] !== 0xc2 && bytes[cursor] !== 0xc3)) return undefined;
        f.create = bytes[cursor++] === 0xc3;
        break;
      case fieldTtlMs:
        f.ttlMs = readUnsigned(bytes, size);
        break;
    }
    if (cursor < 0) return undefined;
  }
  if (cursor !== size || (seen & fieldsRequired) !== fieldsRequired) return undefined;
  return f;
}

/** The field a fixstr name at the cursor denotes (one of the field bits), or 0. */
function readFieldName(bytes: Uint8Array, size: number): number {
  if (cursor >= size) return 0;
  const length = bytes[cursor] - 0xa0;
  const p = cursor + 1;
  if (length < 1 || length > 9 || p + length > size) return 0;
  cursor = p + length;
  const c = bytes[p];
  switch (length) {
    case 1:
      return c === 0x76 ? fieldV : 0; // v
    case 3:
      return c === 0x6b && bytes[p + 1] === 0x65 && bytes[p + 2] === 0x79 ? fieldKey : 0; // key
    case 5:
      if (sameBytes(bytes, p, nameValue)) return fieldValue;
      return sameBytes(bytes, p, nameTtlMs) ? fieldTtlMs : 0;
    case 6:
      if (sameBytes(bytes, p, nameBucket)) return fieldBucket;
      return sameBytes(bytes, p, nameCreate) ? fieldCreate : 0;
    case 9:
      return sameBytes(bytes, p, nameExpectRev) ? fieldExpectRev : 0;
    default:
      return 0;
  }
}

const nameValue = Buffer.from('value');
const nameTtlMs = Buffer.from('ttlMs');
const nameBucket = Buffer.from('bucket');
const nameCreate = Buffer.from('create');
const nameExpectRev = Buffer.from('expectRev');

function sameBytes(bytes: Uint8Array, at: number, name: Uint8Array): boolean {
  for (let i = 0; i < name.length; i++) if (bytes[at + i] !== name[i]) return false;
  return true;
}

// Start of the last name or bin readName / readBinField read (its end is the cursor).
let nameStart = 0;

/**
 * A msgpack str of 1 or more bytes, each printable ASCII (0x20-0x7e): every bucket and key name
 * loom accepts. Such a string is the same in UTF-8, Latin-1 and the LMDB key encoding.
 */
function readName(bytes: Uint8Array, size: number): boolean {
  if (cursor >= size) return false;
  const tag = bytes[cursor];
  let length: number;
  let p: number;
  if (tag >= 0xa0 && tag <= 0xbf) {
    length = tag - 0xa0;
    p = cursor + 1;
  } else if (tag === 0xd9 && cursor + 1 < size) {
    length = bytes[cursor + 1];
    p = cursor + 2;
  } else if (tag === 0xda && cursor + 2 < size) {
    length = (bytes[cursor + 1] << 8) | bytes[cursor + 2];
    p = cursor + 3;
  } else return false;
  const end = p + length;
  if (length === 0 || end > size) return false;
  for (let i = p; i < end; i++) {
    const c = bytes[i];
    if (c < 0x20 || c > 0x7e) return false;
  }
  nameStart = p;
  cursor = end;
  return true;
}

function readBinField(bytes: Uint8Array, size: number): boolean {
  if (cursor >= size) return false;
  const tag = bytes[cursor];
  let length: number;
  let p: number;
  if (tag === 0xc4 && cursor + 1 < size) {
    length = bytes[cursor + 1];
    p = cursor + 2;
  } else if (tag === 0xc5 && cursor + 2 < size) {
    length = (bytes[cursor + 1] << 8) | bytes[cursor + 2];
    p = cursor + 3;
  } else if (tag === 0xc6 && cursor + 4 < size) {
    length = ((bytes[cursor + 1] << 24) | (bytes[cursor + 2] << 16) | (bytes[cursor + 3] << 8) | bytes[cursor + 4]) >>> 0;
    p = cursor + 5;
  } else return false;
  if (p + length > size) return false;
  nameStart = p;
  cursor = p + length;
  return true;
}

/** A non-negative integer as msgpackr writes one (fixint, uint8/16/32, or float64 beyond); else fails. */
function readUnsigned(bytes: Uint8Array, size: number): number | undefined {
  if (cursor >= size) return failField();
  const tag = bytes[cursor];
  const p = cursor + 1;
  if (tag <= 0x7f) {
    cursor = p;
    return tag;
  }
  if (tag === 0xcc && p < size) {
    cursor = p + 1;
    return bytes[p];
  }
  if (tag === 0xcd && p + 1 < size) {
    cursor = p + 2;
    return (bytes[p] << 8) | bytes[p + 1];
  }
  if (tag === 0xce && p + 3 < size) {
    cursor = p + 4;
    return ((bytes[p] << 24) | (bytes[p + 1] << 16) | (bytes[p + 2] << 8) | bytes[p + 3]) >>> 0;
  }
  if (tag === 0xcb && p + 7 < size) {
    cursor = p + 8;
    const value = new DataView(bytes.buffer, bytes.byteOffset + p, 8).getFloat64(0);
    // Only what a validated body holds; any other number goes the msgpackr way.
    return Number.isSafeInteger(value) && value >= 0 ? value : failField();
  }
  return failField();
}

function failField(): undefined {
  cursor = -1;
  return undefined;
}

/**
 * Copies `source[start, end)` into `target` at `at`. Short ranges (most KV values) are copied
 * faster by hand than through a subarray and set().
 */
export function copyRange(source: Uint8Array, start: number, end: number, target: Uint8Array, at: number): void {
  if (end - start <= 64) for (let i = start; i < end; i++) target[at++] = source[i];
  else target.set(source.subarray(start, end), at);
}

/** The string of printable-ASCII bytes `bytes[start, end)` (a name readKvPutFields accepted). */
export function asciiString(bytes: Uint8Array, start: number, end: number): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset + start, end - start).toString('latin1');
}

/**
 * Remembers the last name it decoded: the same bytes again (one bucket, put after put) give the
 * same string without decoding. Names are those readKvPutFields accepted (printable ASCII).
 */
export class RepeatedName {
  private bytes = new Uint8Array(0);
  private name = '';

  of(bytes: Uint8Array, start: number, end: number): string {
    const length = end - start;
    const last = this.bytes;
    if (last.length === length) {
      let i = 0;
      while (i < length && bytes[start + i] === last[i]) i++;
      if (i === length) return this.name;
    }
    this.bytes = bytes.slice(start, end);
    this.name = asciiString(bytes, start, end);
    return this.name;
  }
}
