// A simulated disk behind the LogStore contract: writes land in a volatile copy (what reads see,
// like a page cache) and become durable only at fsync(). crash() throws the volatile copy away,
// keeping what was flushed plus, sometimes, a torn prefix of the first unflushed write.

import { assert } from '../../src/util';
import type { HardState, LogEntry, LogStats, LogStore, SnapshotMeta } from '../../src/eventlog';
import type { RaftSnapshot } from '../../src/eventlog/raft';
import type { Rng } from './rng';

interface DiskState {
  snapshot: RaftSnapshot;
  /** entries[k] has index snapshot.meta.index + 1 + k. */
  entries: LogEntry[];
  hard: HardState;
}

type Write =
  | { kind: 'append'; entries: LogEntry[] }
  | { kind: 'truncate'; index: number }
  | { kind: 'hard'; hard: HardState }
  | { kind: 'reset'; snapshot: RaftSnapshot }
  | { kind: 'compact'; snapshot: RaftSnapshot };

export class SimStore implements LogStore {
  private volatile: DiskState;
  private durable: DiskState;
  private pending: Write[] = [];

  constructor() {
    const empty: RaftSnapshot = { meta: { index: 0, term: 0, conf: { voters: [], learners: [] } }, data: new Uint8Array(0) };
    this.durable = { snapshot: empty, entries: [], hard: { term: 0, vote: 0, commit: 0 } };
    this.volatile = clone(this.durable);
  }

  // ---- writes the simulated driver issues (synchronous; durable only after fsync) ----------

  write(w: Write): void {
    applyWrite(this.volatile, w);
    this.pending.push(w);
  }

  hasUnflushed(): boolean {
    return this.pending.length > 0;
  }

  fsync(): void {
    for (const w of this.pending) applyWrite(this.durable, w);
    this.pending = [];
  }

  /** Power loss: unflushed writes vanish, except that the first may land torn (a prefix of its entries). */
  crash(rng: Rng, tornWriteChance: number): void {
    const first = this.pending[0];
    if (first !== undefined && first.kind === 'append' && first.entries.length > 0 && rng.chance(tornWriteChance)) {
      // A checksummed entry codec detects and drops a half-written entry, so a torn append keeps
      // a prefix of whole entries.
      const kept = rng.int(0, first.entries.length - 1);
      applyWrite(this.durable, { kind: 'append', entries: first.entries.slice(0, kept) });
    }
    this.pending = [];
    this.volatile = clone(this.durable);
  }

  durableHardState(): HardState {
    return { ...this.durable.hard };
  }

  durableLastIndex(): number {
    return this.durable.snapshot.meta.index + this.durable.entries.length;
  }

  latestSnapshot(): RaftSnapshot {
    return this.volatile.snapshot;
  }

  // ---- the LogStore contract (reads see the volatile copy) ---------------------------------

  async append(entries: LogEntry[]): Promise<void> {
    this.write({ kind: 'append', entries });
  }

  entries(lo: number, hi: number, bytesMax = Infinity): LogEntry[] {
    assert(lo >= this.firstIndex() && hi <= this.lastIndex() + 1 && lo <= hi, `sim store: entries [${lo}, ${hi}) outside the log`);
    const base = this.volatile.snapshot.meta.index + 1;
    const out: LogEntry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const entry = this.volatile.entries[i - base];
      bytes += entry.data.byteLength + 32;
      if (out.length > 0 && bytes > bytesMax) break;
      out.push(entry);
    }
    return out;
  }

  term(i: number): number {
    const snap = this.volatile.snapshot.meta;
    if (i === snap.index) return snap.term;
    assert(i > snap.index && i <= this.lastIndex(), `sim store: no term for ${i}`);
    return this.volatile.entries[i - snap.index - 1].term;
  }

  firstIndex(): number {
    return this.volatile.snapshot.meta.index + 1;
  }

  lastIndex(): number {
    return this.volatile.snapshot.meta.index + this.volatile.entries.length;
  }

  async truncateSuffix(i: number): Promise<void> {
    this.write({ kind: 'truncate', index: i });
  }

  async compactPrefix(): Promise<void> {
    throw new Error('the simulator compacts with write({kind: compact}) so the snapshot travels with it');
  }

  hardState(): HardState {
    return { ...this.volatile.hard };
  }

  async setHardState(state: HardState): Promise<void> {
    this.write({ kind: 'hard', hard: { ...state } });
  }

  snapshotMeta(): SnapshotMeta {
    const meta = this.volatile.snapshot.meta;
    return { index: meta.index, term: meta.term, conf: meta.conf } as SnapshotMeta;
  }

  async resetToSnapshot(): Promise<void> {
    throw new Error('the simulator resets with write({kind: reset}) so the snapshot data travels with it');
  }

  stats(): LogStats {
    const last = this.lastIndex();
    return { firstIndex: this.firstIndex(), lastIndex: last, lastTerm: this.term(last), sizeBytes: 0 };
  }

  async close(): Promise<void> {}
}

function applyWrite(state: DiskState, w: Write): void {
  const base = state.snapshot.meta.index + 1;
  switch (w.kind) {
    case 'append': {
      if (w.entries.length === 0) return;
      const at = w.entries[0].index;
      assert(at === base + state.entries.length, `sim store: append at ${at} does not continue ${base + state.entries.length - 1}`);
      state.entries.push(...w.entries);
      return;
    }
    case 'truncate':
      if (w.index < base + state.entries.length) {
        assert(w.index >= base, `sim store: truncate ${w.index} below first index ${base}`);
        state.entries.length = w.index - base;
      }
      return;
    case 'hard':
      state.hard = { ...w.hard };
      return;
    case 'reset':
      state.snapshot = w.snapshot;
      state.entries = [];
      return;
    case 'compact': {
      const index = w.snapshot.meta.index;
      if (index <= state.snapshot.meta.index) return;
      assert(index <= base + state.entries.length - 1, `sim store: compact ${index} beyond the log`);
      state.entries = state.entries.slice(index - base + 1);
      state.snapshot = w.snapshot;
      return;
    }
  }
}

function clone(state: DiskState): DiskState {
  return { snapshot: state.snapshot, entries: [...state.entries], hard: { ...state.hard } };
}
