// Change events: what a committed entry changed, as published on the bus and delivered by watch.
// A live change is built from an entry and its outcome; a replayed one from the entry and the
// views (which remember conflicts and event versions), so both paths yield the same changes.

import type { LogEntry } from '../eventlog';
import type { Outcome } from './decide';
import { RepeatedName, copyRange, decodeMutationTransient, readKvPutFields, type KvPutFields } from './entries';
import type { KvReader } from './kv/kv-read';
import { objectNameToken } from '../util/names';

/**
 * What an object change carries: after a PUT, the object's info, the same as OBJ.INFO answers
 * (ObjectInfo, in its field order); after a DEL, bucket, name, rev, updatedAt and `deleted`.
 */
export interface ObjectChangeInfo {
  bucket: string;
  name: string;
  size?: number;
  sha256?: string;
  contentType?: string;
  metadata?: Record<string, string>;
  rev: number;
  updatedAt: number;
  chunkBytes?: number;
  chunkCount?: number;
  deleted?: boolean;
}

export type Change =
  | { kind: 'kv'; seq: number; subject: string; op: 'PUT' | 'DEL'; bucket: string; key: string; value: Uint8Array; ts: number }
  | { kind: 'event'; seq: number; subject: string; stream: string; type: string; version: number; data: unknown; ts: number }
  | { kind: 'object'; seq: number; subject: string; op: 'PUT' | 'DEL'; bucket: string; name: string; info: ObjectChangeInfo; ts: number };

export function kvSubject(bucket: string, key: string): string {
  return `$KV.${bucket}.${key}`;
}

export function eventSubject(stream: string, type: string): string {
  return `$EV.${stream}.${type}`;
}

/** `$OBJ.<bucket>.<token>`, the token being base64url of the object name (any UTF-8 fits a subject that way). */
export function objectSubject(bucket: string, name: string): string {
  return `$OBJ.${bucket}.${objectNameToken(name)}`;
}

/** Entry types whose changes have subjects under each first token (see changeOf). */
const entryTypesBySubjectRoot: Record<string, string[]> = {
  $KV: ['kv.put', 'kv.del'],
  $EV: ['event.append'],
  $OBJ: ['blob.commit', 'blob.del'],
};

/** The first token of every change subject. */
export const changeSubjectRoots: readonly string[] = Object.keys(entryTypesBySubjectRoot);

/**
 * The entry types whose changes can match a subject filter: a replay need not decode any other.
 * Decided by the filter's first token alone, so it may include types whose changes then do not match.
 */
export function changeEntryTypes(filter: string): Set<string> {
  const root = filter.split('.', 1)[0];
  if (root === '*' || root === '>') return new Set(Object.values(entryTypesBySubjectRoot).flat());
  return new Set(entryTypesBySubjectRoot[root] ?? []);
}

const empty = new Uint8Array(0);

/**
 * The change an applied entry made, given its outcome; undefined when it changed nothing visible.
 * The change shares no memory with `entry.data` (a put's value is copied), so the entry may come
 * from LogStore.visitEntries.
 */
export function changeOf(entry: LogEntry, outcome: Outcome | undefined): Change | undefined {
  if (!outcome || !outcome.ok) return undefined;
  if (entry.type === 'kv.put') {
    // Most puts: read in place, no msgpackr (readKvPutFields); the rest are decoded below.
    const fields = readKvPutFields(entry.data);
    if (fields) return kvPutChange(entry, fields);
  }
  const mutation = decodeMutationTransient(entry);
  if (!mutation) return undefined;
  switch (mutation.type) {
    case 'kv.put': {
      const { bucket, key } = mutation.body;
      const value = Buffer.from(mutation.body.value);
      return { kind: 'kv', seq: entry.index, subject: kvSubject(bucket, key), op: 'PUT', bucket, key, value, ts: entry.ts };
    }
    case 'kv.del': {
      const { bucket, key } = mutation.body;
      return { kind: 'kv', seq: entry.index, subject: kvSubject(bucket, key), op: 'DEL', bucket, key, value: empty, ts: entry.ts };
    }
    case 'event.append': {
      const { stream, type, data } = mutation.body;
      return { kind: 'event', seq: entry.index, subject: eventSubject(stream, type), stream, type, version: outcome.version ?? 0, data, ts: entry.ts };
    }
    case 'blob.commit': {
      const { bucket, name, size, sha256, contentType, metadata, chunkBytes, chunks } = mutation.body;
      const info: ObjectChangeInfo = {
        bucket,
        name,
        size,
        sha256: Buffer.from(sha256).toString('hex'),
        contentType,
        metadata,
        rev: entry.index,
        updatedAt: entry.ts,
        chunkBytes,
        chunkCount: chunks.byteLength / 32,
      };
      return { kind: 'object', seq: entry.index, subject: objectSubject(bucket, name), op: 'PUT', bucket, name, info, ts: entry.ts };
    }
    case 'blob.del': {
      // A delete of an object that did not exist changed nothing: watchers hear of no delete.
      if (outcome.deleted !== true) return undefined;
      const { bucket, name } = mutation.body;
      const info: ObjectChangeInfo = { bucket, name, rev: entry.index, updatedAt: entry.ts, deleted: true };
      return { kind: 'object', seq: entry.index, subject: objectSubject(bucket, name), op: 'DEL', bucket, name, info, ts: entry.ts };
    }
    default:
      return undefined;
  }
}

const bucketNames = new RepeatedName();

/** Where kvPutChange writes a subject's bytes: `$KV.` stays, bucket, dot and key follow. */
let subjectScratch = Buffer.from('$KV.'.padEnd(256, ' '), 'latin1');

/**
 * The change of a put read in place: the same as changeOf makes of the decoded put. The subject
 * is made as one flat string from its bytes, and the key is a slice of it: cheaper than making
 * the key, then the subject from it.
 */
function kvPutChange(entry: LogEntry, f: KvPutFields): Change {
  const bytes = f.bytes;
  const bucket = bucketNames.of(bytes, f.bucketStart, f.bucketEnd);
  const keyAt = 4 + (f.bucketEnd - f.bucketStart) + 1;
  const subjectBytes = keyAt + (f.keyEnd - f.keyStart);
  if (subjectScratch.length < subjectBytes) {
    const grown = Buffer.alloc(Math.max(subjectBytes, 2 * subjectScratch.length));
    subjectScratch.copy(grown, 0, 0, 4);
    subjectScratch = grown;
  }
  const out = subjectScratch;
  let at = 4;
  for (let i = f.bucketStart; i < f.bucketEnd; i++) out[at++] = bytes[i];
  out[at++] = 0x2e; // .
  for (let i = f.keyStart; i < f.keyEnd; i++) out[at++] = bytes[i];
  // Printable ASCII (readKvPutFields), so Latin-1 gives the same string as UTF-8.
  const subject = out.toString('latin1', 0, subjectBytes);
  const key = subject.substring(keyAt);
  const length = f.valueEnd - f.valueStart;
  const value = Buffer.allocUnsafe(length);
  copyRange(bytes, f.valueStart, f.valueEnd, value, 0);
  return { kind: 'kv', seq: entry.index, subject, op: 'PUT', bucket, key, value, ts: entry.ts };
}

/**
 * The same change, rebuilt from the log and the views for a replay (watch from an old seq).
 * `unchanged` holds the seqs of the batch that changed nothing: a CONFLICT outcome, or a delete of
 * an object that did not exist (KvReader.unchangedIn).
 */
export function replayedChangeOf(entry: LogEntry, reader: KvReader, unchanged: Set<number>): Change | undefined {
  if (unchanged.has(entry.index)) return undefined;
  // The entry is decoded before the views are read: its data may live in lmdb-js's shared read
  // buffer, which the read of the stored event overwrites (LmdbLog.visitEntries).
  // Any blob.del left deleted an object: the view records those that did not in `unchanged`.
  const change = changeOf(entry, { ok: true, seq: entry.index, deleted: true });
  if (change?.kind === 'event') change.version = reader.event(entry.index)?.version ?? 0;
  return change;
}

/** Header and payload form of a change on the bus (CONTRACT.md "Change subjects"). */
export function changeMessage(change: Change): { subject: string; payload: Uint8Array; headers: Record<string, string> } {
  if (change.kind === 'kv') {
    return { subject: change.subject, payload: change.value, headers: { 'Loom-Rev': String(change.seq), 'Loom-Op': change.op, 'Loom-Seq': String(change.seq) } };
  }
  if (change.kind === 'object') {
    return { subject: change.subject, payload: Buffer.from(JSON.stringify(change.info)), headers: { 'Loom-Rev': String(change.seq), 'Loom-Op': change.op, 'Loom-Seq': String(change.seq) } };
  }
  return {
    subject: change.subject,
    payload: Buffer.from(JSON.stringify(change.data)),
    headers: { 'Loom-Seq': String(change.seq), 'Loom-Version': String(change.version) },
  };
}
