// Watch with resume: every committed change matching a subject filter with seq > fromSeq, in
// order, with no gap and no duplicate. A watcher replays from the log until it reaches the applied
// index, then follows the live feed; if it falls too far behind live, it drops its buffer and
// replays from the log again, so memory stays bounded whatever the watcher's speed.

import { isValidSubject, subjectMatchesFilter } from '../bus';
import type { LogStore } from '../eventlog';
import { replayedChangeOf, type Change, type KvReader } from '../projections';
import { LoomError, assert } from '../util';

export interface ChangeBatch {
  /** Index range of the applied batch the changes come from (every index in it, matching or not). */
  first: number;
  last: number;
  changes: Change[];
  /**
   * Set when the views were replaced by a snapshot ending at `last`: the entries before it were
   * never applied here, so a live watcher cannot go on without a gap.
   */
  snapshot?: true;
}

/** The live feed of applied changes, fed by the core right after each batch is applied. */
export class ChangeFeed {
  private readonly listeners = new Set<(batch: ChangeBatch) => void>();

  publish(batch: ChangeBatch): void {
    for (const listener of this.listeners) listener(batch);
  }

  subscribe(listener: (batch: ChangeBatch) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get size(): number {
    return this.listeners.size;
  }
}

export interface WatchSources {
  log: LogStore;
  reader: KvReader;
  feed: ChangeFeed;
  appliedIndex: () => number;
}

export interface WatchOptions {
  fromSeq: number;
  /** Live changes buffered for a slow watcher before it falls back to replaying from the log. */
  bufferChangesMax?: number;
  /** Entries read from the log per step of a replay. */
  replayEntriesMax?: number;
}

export interface Watch extends AsyncIterableIterator<Change> {
  close(): void;
}

export function watchChanges(filter: string, options: WatchOptions, sources: WatchSources): Watch {
  if (typeof filter !== 'string' || !isValidSubject(filter)) {
    throw new LoomError('INVALID_ARGUMENT', `watch subject ${JSON.stringify(filter)} is not a valid subject filter`, { field: 'subject' });
  }
  if (!Number.isSafeInteger(options.fromSeq) || options.fromSeq < 0) {
    throw new LoomError('INVALID_ARGUMENT', `fromSeq must be a non-negative integer, got ${JSON.stringify(options.fromSeq)}`, { field: 'fromSeq' });
  }
  const bufferMax = options.bufferChangesMax ?? 10_000;
  const replayMax = options.replayEntriesMax ?? 1_000;
  let closed = false;
  let wake: (() => void) | undefined;
  const matches = compileFilter(filter);

  async function* run(): AsyncGenerator<Change> {
    let last = options.fromSeq;
    while (!closed) {
      // Replay from the log up to the applied index.
      while (!closed && last < sources.appliedIndex()) {
        const first = sources.log.firstIndex();
        if (last + 1 < first) {
          throw new LoomError('NOT_FOUND', `cannot watch from seq ${last}: the log now starts at ${first} (compacted)`, { firstSeq: first });
        }
        const hi = Math.min(sources.appliedIndex(), last + replayMax) + 1;
        const conflicts = sources.reader.conflictsIn(last + 1, hi);
        for (const entry of sources.log.entries(last + 1, hi)) {
          last = entry.index;
          const change = replayedChangeOf(entry, sources.reader, conflicts);
          if (change && matches(change)) yield change;
          if (closed) return;
        }
      }
      if (closed) return;
      // Caught up: follow the live feed. Nothing can be applied between the check above and
      // this subscription, since both happen in the same synchronous step.
      const queue: Change[] = [];
      let liveLast = last;
      let overflow = false;
      let gap: LoomError | undefined;
      const unsubscribe = sources.feed.subscribe((batch) => {
        if (overflow || gap) return;
        if (batch.snapshot) {
          gap = new LoomError('NOT_FOUND', `cannot watch on from seq ${liveLast}: this node installed a snapshot at ${batch.last} and never saw the changes before it`, {
            firstSeq: batch.last + 1,
          });
          wake?.();
          return;
        }
        assert(batch.first === liveLast + 1, `watch feed skipped from ${liveLast} to ${batch.first}`);
        liveLast = batch.last;
        for (const change of batch.changes) if (matches(change)) queue.push(change);
        if (queue.length > bufferMax) overflow = true;
        wake?.();
      });
      try {
        while (!closed && !overflow) {
          if (gap && queue.length === 0) throw gap;
          const change = queue.shift();
          if (change) {
            last = change.seq;
            yield change;
            continue;
          }
          // Everything buffered is delivered; the watcher is at the live position.
          last = liveLast;
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
        }
      } finally {
        unsubscribe();
      }
      // On overflow, `last` is the last change delivered: replay resumes right after it.
    }
  }

  const iterator = run();
  return Object.assign(iterator, {
    close(): void {
      closed = true;
      wake?.();
      void iterator.return(undefined);
    },
  });
}

/** A matcher for one subject filter, split once; `prefix.>` filters become a string prefix test. */
function compileFilter(filter: string): (change: Change) => boolean {
  if (filter === '>') return () => true;
  if (filter.endsWith('.>') && !filter.includes('*')) {
    const prefix = filter.slice(0, -1);
    return (change) => change.subject.startsWith(prefix);
  }
  return (change) => subjectMatchesFilter(change.subject, filter);
}
