// Reads over the built-in LMDB views: keys, revisions, prefix listings with cursors, event streams.
// Reads never write; they see the latest applied batch (each batch commits as one transaction).

import type { Database } from 'lmdb';
import { pageByName } from '../paging';
import { kvRecordRev, type HistoryRecord, type KvRecord, type StoredEvent, type ViewStore } from './kv-view';

export interface KvListItem {
  key: string;
  rev: number;
}

export interface KvListPage {
  items: KvListItem[];
  cursor?: string;
}

export class KvReader {
  /**
   * `moreUnchanged`: sets of seqs whose entries changed nothing, kept by other views of the same
   * store (the blob view's conflicts, and its deletes of objects that did not exist).
   */
  constructor(
    private readonly store: ViewStore,
    private readonly moreUnchanged: Array<Database<true, number>> = [],
  ) {}

  get(bucket: string, key: string): KvRecord | undefined {
    return this.store.getKv(bucket, key);
  }

  /** The value of a key at one revision, while the bucket's history still keeps it. */
  getRevision(bucket: string, key: string, rev: number): HistoryRecord | undefined {
    const current = this.store.getKv(bucket, key);
    if (current && current.rev === rev) return { rev, op: 'PUT', value: current.value, updatedAt: current.updatedAt };
    return this.store.history.get([bucket, key, rev]);
  }

  /** Keys of a bucket in key order, from after `cursor` (see paging.ts for what is stable). */
  list(bucket: string, prefix: string, limit: number, cursor?: string): KvListPage {
    return pageByName(this.store.kvRaw, bucket, prefix, limit, cursor, (key, value) => ({ key, rev: kvRecordRev(value) }));
  }

  streamVersion(stream: string): number {
    return this.store.streams.get(stream)?.version ?? 0;
  }

  /** Events of one stream from `fromVersion` (inclusive), in order. */
  readStream(stream: string, fromVersion: number, limit: number): StoredEvent[] {
    const out: StoredEvent[] = [];
    for (const { value: seq } of this.store.streamEvents.getRange({ start: [stream, Math.max(1, fromVersion)], end: [stream, Number.MAX_SAFE_INTEGER], limit })) {
      const event = this.store.events.get(seq);
      if (event) out.push(event);
    }
    return out;
  }

  /** Events of every stream with seq >= fromSeq, in log order. */
  readAll(fromSeq: number, limit: number): StoredEvent[] {
    const out: StoredEvent[] = [];
    for (const { value } of this.store.events.getRange({ start: fromSeq, limit })) out.push(value);
    return out;
  }

  event(seq: number): StoredEvent | undefined {
    return this.store.events.get(seq);
  }

  /**
   * The seqs in [lo, hi) whose entries changed nothing (a CONFLICT, or a delete that found
   * nothing): a replay shows no change for them. One range read per set for a whole replay batch.
   */
  unchangedIn(lo: number, hi: number): Set<number> {
    const out = new Set<number>();
    for (const db of [this.store.conflicts, ...this.moreUnchanged]) for (const key of db.getKeys({ start: lo, end: hi })) out.add(key);
    return out;
  }

  /** Keys whose TTL ran out at or before `now`, oldest first, with the revision that set the TTL. */
  expired(now: number, limit: number): Array<{ bucket: string; key: string; rev: number }> {
    const out: Array<{ bucket: string; key: string; rev: number }> = [];
    for (const { key, value } of this.store.ttl.getRange({ start: [0, '', ''], end: [now, '\uffff', '\uffff'], limit })) {
      out.push({ bucket: key[1], key: key[2], rev: value });
    }
    return out;
  }
}
