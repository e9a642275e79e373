// The outcome of each mutation as a pure function of (view state, entry): the same CONFLICT on
// every replica and on every replay. Every view that applies mutations decides through these.

import type { EventAppend, KvDel, KvPut } from './entries';

export type Outcome =
  | { ok: true; seq: number; rev?: number; version?: number; deleted?: boolean; collected?: number }
  | { ok: false; seq: number; code: 'CONFLICT'; message: string; details: Record<string, unknown> };

export interface KeyState {
  rev: number;
}

export function decideKvPut(seq: number, current: KeyState | undefined, put: KvPut): Outcome {
  const currentRev = current?.rev ?? 0;
  if (put.create && current) {
    return conflict(seq, `key ${put.key} already exists in bucket ${put.bucket} (rev ${currentRev})`, put.bucket, put.key, currentRev);
  }
  if (put.expectRev !== undefined && put.expectRev !== currentRev) {
    return conflict(seq, `key ${put.key} in bucket ${put.bucket} is at rev ${currentRev}, not the expected ${put.expectRev}`, put.bucket, put.key, currentRev);
  }
  return { ok: true, seq, rev: seq };
}

export function decideKvDel(seq: number, current: KeyState | undefined, del: KvDel): Outcome {
  const currentRev = current?.rev ?? 0;
  if (del.expectRev !== undefined && del.expectRev !== currentRev) {
    return conflict(seq, `key ${del.key} in bucket ${del.bucket} is at rev ${currentRev}, not the expected ${del.expectRev}`, del.bucket, del.key, currentRev);
  }
  return { ok: true, seq, rev: seq, deleted: current !== undefined };
}

export function decideEventAppend(seq: number, streamVersion: number, append: EventAppend): Outcome {
  if (append.expectVersion !== undefined && append.expectVersion !== streamVersion) {
    return {
      ok: false,
      seq,
      code: 'CONFLICT',
      message: `stream ${append.stream} is at version ${streamVersion}, not the expected ${append.expectVersion}`,
      details: { stream: append.stream, currentVersion: streamVersion },
    };
  }
  return { ok: true, seq, version: streamVersion + 1 };
}

function conflict(seq: number, message: string, bucket: string, key: string, currentRev: number): Outcome {
  return { ok: false, seq, code: 'CONFLICT', message, details: { bucket, key, currentRev } };
}
