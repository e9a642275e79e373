// Raft's view of the log: the durable entries read through LogStore, followed by the entries and
// snapshot not yet persisted (etcd's `unstable`), plus the commit and apply positions.

import { assert } from '../../util';
import { entrySizeBytes } from '../validate';
import type { LogEntry, LogStore } from '../types';
import type { RaftSnapshot } from './types';

export class RaftLog {
  /** Highest index known to be stored on a quorum. Invariant: applied <= committed <= lastIndex(). */
  committed: number;
  /** Highest index the driver has applied (after advance). */
  applied: number;
  /** A received snapshot the driver has not yet persisted; it replaces the whole stored log. */
  private unstableSnapshot: RaftSnapshot | undefined;
  /** Entries not yet persisted; unstableEntries[0] has index unstableOffset. */
  private unstableEntries: LogEntry[] = [];
  private unstableOffset: number;

  constructor(
    private readonly store: LogStore,
    applied: number,
    committed: number,
  ) {
    this.unstableOffset = store.lastIndex() + 1;
    this.committed = committed;
    this.applied = applied;
    assert(applied <= committed || committed === 0, `applied ${applied} beyond committed ${committed}`);
  }

  firstIndex(): number {
    if (this.unstableSnapshot) return this.unstableSnapshot.meta.index + 1;
    return this.store.firstIndex();
  }

  lastIndex(): number {
    if (this.unstableEntries.length > 0) return this.unstableOffset + this.unstableEntries.length - 1;
    if (this.unstableSnapshot) return this.unstableSnapshot.meta.index;
    return this.store.lastIndex();
  }

  lastTerm(): number {
    return this.term(this.lastIndex()) ?? 0;
  }

  /** The term of entry i, or undefined if i is compacted away or beyond the log. */
  term(i: number): number | undefined {
    if (i === 0) return 0;
    const snap = this.unstableSnapshot;
    if (snap && i === snap.meta.index) return snap.meta.term;
    if (i >= this.unstableOffset) {
      const entry = this.unstableEntries[i - this.unstableOffset];
      return entry?.term;
    }
    if (snap) return undefined;
    if (i < this.store.firstIndex() - 1 || i > this.store.lastIndex()) return undefined;
    return this.store.term(i);
  }

  matchTerm(i: number, term: number): boolean {
    return this.term(i) === term;
  }

  /** Last index known durable here: what a leader may count for itself towards a quorum. */
  persistedLastIndex(): number {
    if (this.unstableSnapshot) return 0;
    if (this.unstableEntries.length > 0) return Math.min(this.unstableOffset - 1, this.store.lastIndex());
    return this.store.lastIndex();
  }

  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const myTerm = this.lastTerm();
    return lastTerm > myTerm || (lastTerm === myTerm && lastIndex >= this.lastIndex());
  }

  /** Entries lo <= index < hi, at least one if any, stopping once bytesMax is passed. */
  slice(lo: number, hi: number, bytesMax: number): LogEntry[] {
    assert(lo >= this.firstIndex() && hi <= this.lastIndex() + 1 && lo <= hi, `slice [${lo}, ${hi}) outside the log`);
    const out: LogEntry[] = [];
    let bytes = 0;
    if (lo < this.unstableOffset) {
      const stored = this.store.entries(lo, Math.min(hi, this.unstableOffset), bytesMax);
      for (const entry of stored) {
        bytes += entrySizeBytes(entry);
        out.push(entry);
      }
      if (bytes > bytesMax || out.length < Math.min(hi, this.unstableOffset) - lo) return out;
    }
    for (let i = Math.max(lo, this.unstableOffset); i < hi; i++) {
      const entry = this.unstableEntries[i - this.unstableOffset];
      bytes += entrySizeBytes(entry);
      if (out.length > 0 && bytes > bytesMax) break;
      out.push(entry);
    }
    return out;
  }

  /** Leader: appends new entries at the end. */
  append(entries: LogEntry[]): void {
    if (entries.length === 0) return;
    const after = entries[0].index;
    assert(after > this.committed, `append at ${after} would overwrite committed ${this.committed}`);
    const unstableEnd = this.unstableOffset + this.unstableEntries.length;
    if (after === unstableEnd) {
      this.unstableEntries.push(...entries);
    } else if (after <= this.unstableOffset) {
      // The new entries replace everything from `after`, including stored ones (the driver
      // truncates the store's suffix before appending).
      this.unstableOffset = after;
      this.unstableEntries = [...entries];
    } else {
      this.unstableEntries = this.unstableEntries.slice(0, after - this.unstableOffset).concat(entries);
    }
  }

  /**
   * Follower: appends entries following (prevIndex, prevTerm) if that entry matches, skipping those
   * already present, and advances commit. Returns the last index now known to match, or undefined.
   */
  maybeAppend(prevIndex: number, prevTerm: number, commit: number, entries: LogEntry[], checkPrevTerm = true): number | undefined {
    // checkPrevTerm is false only under the acceptMismatchedPrevTerm mutation.
    if (checkPrevTerm ? !this.matchTerm(prevIndex, prevTerm) : prevIndex > this.lastIndex()) return undefined;
    const lastNew = prevIndex + entries.length;
    const conflict = this.findConflict(entries);
    if (conflict !== 0) {
      assert(conflict > this.committed, `entry ${conflict} conflicts with committed ${this.committed}`);
      this.append(entries.slice(conflict - (prevIndex + 1)));
    }
    this.commitTo(Math.min(commit, lastNew));
    return lastNew;
  }

  /** Index of the first entry that is new or disagrees with ours, or 0 if all are present. */
  private findConflict(entries: LogEntry[]): number {
    for (const entry of entries) {
      if (!this.matchTerm(entry.index, entry.term)) return entry.index;
    }
    return 0;
  }

  /**
   * For a rejection hint: the largest index <= `index` whose term is <= `term`, with its term.
   * The leader can then skip a whole term of mismatches in one round trip.
   */
  findConflictByTerm(index: number, term: number): { index: number; term: number } {
    let i = Math.min(index, this.lastIndex());
    for (;;) {
      const t = this.term(i);
      if (t === undefined) return { index: i, term: 0 };
      if (t <= term) return { index: i, term: t };
      i--;
    }
  }

  commitTo(index: number): void {
    if (index <= this.committed) return;
    assert(index <= this.lastIndex(), `commit ${index} beyond last index ${this.lastIndex()}`);
    this.committed = index;
  }

  appliedTo(index: number): void {
    if (index === 0) return;
    assert(index <= this.applyCeiling(), `applied ${index} beyond committed ${this.committed}`);
    assert(index >= this.applied, `applied goes back from ${this.applied} to ${index}`);
    this.applied = index;
  }

  /** How far entries may be handed out for apply: the commit index (the applyBeforeCommit mutation widens it). */
  applyCeiling = (): number => this.committed;

  /** Entries to hand out for apply: after applied, up to the apply ceiling, within bytesMax. */
  nextCommittedEntries(bytesMax: number): LogEntry[] {
    if (this.unstableSnapshot) return [];
    const hi = Math.min(this.applyCeiling(), this.lastIndex());
    const lo = this.applied + 1;
    if (lo > hi) return [];
    // The driver may compact only what it has applied; entries it never saw would be lost to it.
    assert(lo >= this.firstIndex(), `entries from ${lo} are compacted (first index ${this.firstIndex()}) before being applied`);
    return this.slice(lo, hi + 1, bytesMax);
  }

  hasNextCommittedEntries(): boolean {
    if (this.unstableSnapshot) return false;
    return Math.min(this.applyCeiling(), this.lastIndex()) > this.applied;
  }

  unstable(): LogEntry[] {
    return this.unstableEntries;
  }

  pendingSnapshot(): RaftSnapshot | undefined {
    return this.unstableSnapshot;
  }

  /** The driver persisted entries up to (index, term); drop them from unstable if still ours. */
  stableTo(index: number, term: number): void {
    if (index < this.unstableOffset) return;
    const entry = this.unstableEntries[index - this.unstableOffset];
    // A newer leader may have replaced the entry while it was being written; then it is not stable.
    if (entry === undefined || entry.term !== term) return;
    this.unstableEntries = this.unstableEntries.slice(index + 1 - this.unstableOffset);
    this.unstableOffset = index + 1;
  }

  stableSnapshotTo(index: number): void {
    if (this.unstableSnapshot && this.unstableSnapshot.meta.index === index) {
      this.unstableSnapshot = undefined;
      this.applied = Math.max(this.applied, index);
    }
  }

  /** Replaces the whole log with a snapshot (the follower's log did not contain it). */
  restore(snapshot: RaftSnapshot): void {
    assert(snapshot.meta.index > this.committed, `restoring snapshot ${snapshot.meta.index} at or below commit ${this.committed}`);
    this.unstableSnapshot = snapshot;
    this.unstableEntries = [];
    this.unstableOffset = snapshot.meta.index + 1;
    this.committed = snapshot.meta.index;
  }
}
