// The in-memory LogStore: same contract as the LMDB log, nothing durable. For tests, simulation
// and embedders who explicitly ask for a throwaway node.

import { LoomError, assert } from '../util';
import { entryBytesMaxDefault, readBytesMaxDefault } from './limits';
import type { HardState, LogEntry, LogStats, LogStore, SnapshotMeta } from './types';
import { checkAppend, checkIndex, entrySizeBytes } from './validate';

export interface MemoryLogOptions {
  entryBytesMax?: number;
}

export class MemoryLog implements LogStore {
  private log: LogEntry[] = [];
  private snapshot: SnapshotMeta = { index: 0, term: 0 };
  private hard: HardState = { term: 0, vote: 0, commit: 0 };
  private closed = false;
  private readonly entryBytesMax: number;

  constructor(options: MemoryLogOptions = {}) {
    this.entryBytesMax = options.entryBytesMax ?? entryBytesMaxDefault;
  }

  append(entries: LogEntry[]): Promise<void> {
    this.checkOpen();
    checkAppend(entries, this.lastIndex(), this.term(this.lastIndex()), this.entryBytesMax);
    for (const entry of entries) this.log.push(copyEntry(entry));
    return Promise.resolve();
  }

  entries(lo: number, hi: number, bytesMax = readBytesMaxDefault): LogEntry[] {
    this.checkOpen();
    this.checkRange(lo, hi);
    const out: LogEntry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const entry = this.log[i - this.firstIndex()];
      bytes += entrySizeBytes(entry);
      if (out.length > 0 && bytes > bytesMax) break;
      out.push(copyEntry(entry));
    }
    return out;
  }

  term(i: number): number {
    this.checkOpen();
    checkIndex(i, 'term');
    if (i === this.snapshot.index) return this.snapshot.term;
    if (i < this.firstIndex() || i > this.lastIndex()) {
      throw new LoomError('NOT_FOUND', `log has no entry ${i} (first ${this.firstIndex()}, last ${this.lastIndex()})`, { index: i });
    }
    return this.log[i - this.firstIndex()].term;
  }

  firstIndex(): number {
    return this.snapshot.index + 1;
  }

  lastIndex(): number {
    return this.snapshot.index + this.log.length;
  }

  async truncateSuffix(i: number): Promise<void> {
    this.checkOpen();
    checkIndex(i, 'truncateSuffix');
    assert(i > this.hard.commit, `truncateSuffix(${i}) would remove committed entries (commit ${this.hard.commit})`);
    if (i > this.lastIndex()) return;
    assert(i >= this.firstIndex(), `truncateSuffix(${i}) reaches below the first index ${this.firstIndex()}`);
    this.log.length = i - this.firstIndex();
  }

  async compactPrefix(i: number, conf?: SnapshotMeta['conf']): Promise<void> {
    this.checkOpen();
    checkIndex(i, 'compactPrefix');
    if (i <= this.snapshot.index) return;
    assert(i <= this.lastIndex(), `compactPrefix(${i}) beyond last index ${this.lastIndex()}`);
    const term = this.term(i);
    this.log = this.log.slice(i - this.firstIndex() + 1);
    this.snapshot = conf ? { index: i, term, conf } : { index: i, term };
  }

  hardState(): HardState {
    return { ...this.hard };
  }

  async setHardState(state: HardState): Promise<void> {
    this.checkOpen();
    this.hard = { ...state };
  }

  snapshotMeta(): SnapshotMeta {
    return { ...this.snapshot };
  }

  async resetToSnapshot(meta: SnapshotMeta): Promise<void> {
    this.checkOpen();
    this.log = [];
    this.snapshot = { ...meta };
  }

  stats(): LogStats {
    let sizeBytes = 0;
    for (const entry of this.log) sizeBytes += entrySizeBytes(entry);
    const last = this.lastIndex();
    return { firstIndex: this.firstIndex(), lastIndex: last, lastTerm: this.term(last), sizeBytes };
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private checkOpen(): void {
    if (this.closed) throw new LoomError('UNAVAILABLE', 'the log is closed');
  }

  private checkRange(lo: number, hi: number): void {
    if (lo < this.firstIndex() || hi > this.lastIndex() + 1 || lo > hi) {
      throw new LoomError('NOT_FOUND', `entries [${lo}, ${hi}) are outside the log [${this.firstIndex()}, ${this.lastIndex()}]`, {
        lo,
        hi,
      });
    }
  }
}

function copyEntry(entry: LogEntry): LogEntry {
  const copy: LogEntry = { index: entry.index, term: entry.term, type: entry.type, data: entry.data, ts: entry.ts };
  if (entry.meta !== undefined) copy.meta = entry.meta;
  return copy;
}
