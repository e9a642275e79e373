// Watch with resume: every committed change matching a subject filter with seq > fromSeq, in
// order, with no gap and no duplicate. A watcher replays from the log until it reaches the applied
// index, then follows the live feed; if it falls too far behind live, it drops its buffer and
// replays from the log again, so memory stays bounded whatever the watcher's speed.

import { isValidSubject, subjectMatchesFilter } from '../bus';
import type { LogEntry, LogStore } from '../eventlog';
import { changeEntryTypes, replayedChangeOf, type Change, type KvReader } from '../projections';
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

/**
 * Entries read from the log per replay step when the caller does not say. A step's changes stay
 * alive until the watcher has taken them all, so much larger steps make every young-generation GC
 * copy thousands of them (4096 measured slower than 1024 in a process with a large heap).
 */
export const replayEntriesMaxDefault = 1024;

/**
 * Entries a replay never turns into a change and whose data it never reads: it does not check
 * their CRC, so a chunk damaged on disk (which downloads report CORRUPT, by its sha256) does not
 * stop every watch whose replay passes it.
 */
const unreadTypes: ReadonlySet<string> = new Set(['blob.chunk']);

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
  const replayMax = options.replayEntriesMax ?? replayEntriesMaxDefault;
  let closed = false;
  let wake: (() => void) | undefined;
  const matches = compileFilter(filter);
  const types = changeEntryTypes(filter);

  // Yields changes a batch at a time: one step of the generator per log read or live batch rather
  // than per change. A batch handed over counts as delivered (the wrapper below hands out all of
  // it unless the watch is closed), so an overflow replays from after its last change.
  async function* run(): AsyncGenerator<Change[]> {
    let last = options.fromSeq;
    while (!closed) {
      // Replay from the log up to the applied index.
      while (!closed && last < sources.appliedIndex()) {
        const first = sources.log.firstIndex();
        if (last + 1 < first) {
          throw new LoomError('NOT_FOUND', `cannot watch from seq ${last}: the log now starts at ${first} (compacted)`, { firstSeq: first });
        }
        const hi = Math.min(sources.appliedIndex(), last + replayMax) + 1;
        const unchanged = sources.reader.unchangedIn(last + 1, hi);
        const changes: Change[] = [];
        const collect = (entry: LogEntry): void => {
          // Entries whose changes cannot match are not decoded at all.
          if (!types.has(entry.type)) return;
          const change = replayedChangeOf(entry, sources.reader, unchanged);
          if (change && matches(change)) changes.push(change);
        };
        // Changes keep nothing of an entry's bytes, so the log need not copy them out (visitEntries).
        const log = sources.log;
        const read = log.visitEntries ? log.visitEntries(last + 1, hi, collect, undefined, unreadTypes) : readEach(log, last + 1, hi, collect);
        last += read;
        if (changes.length > 0) yield changes;
      }
      if (closed) return;
      // Caught up: follow the live feed. Nothing can be applied between the check above and
      // this subscription, since both happen in the same synchronous step.
      let queue: Change[] = [];
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
          if (queue.length > 0) {
            const changes = queue;
            queue = [];
            last = changes[changes.length - 1].seq;
            yield changes;
            continue;
          }
          // Everything buffered is delivered; after a snapshot there is no live position to go on from.
          if (gap) throw gap;
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

  const batches = run();
  return changesOneByOne(batches, () => {
    closed = true;
    wake?.();
  });
}

/**
 * Hands out the changes of `batches` one at a time: a `next()` with changes in hand resolves at
 * once, without stepping the generator. Calls that overlap (a caller not awaiting each `next()`)
 * are served in call order.
 */
function changesOneByOne(batches: AsyncGenerator<Change[]>, stop: () => void): Watch {
  let held: Change[] = [];
  let at = 0;
  let finished = false;
  /** The latest `next()` that had to wait; later calls queue behind it. */
  let waiting: Promise<IteratorResult<Change>> | undefined;

  const take = async (): Promise<IteratorResult<Change>> => {
    while (at >= held.length) {
      if (finished) return { done: true, value: undefined };
      const step = await batches.next();
      if (step.done || finished) {
        finished = true;
        held = [];
        at = 0;
        return { done: true, value: undefined };
      }
      held = step.value;
      at = 0;
    }
    return { done: false, value: held[at++] };
  };

  const watch: Watch = {
    next(): Promise<IteratorResult<Change>> {
      if (waiting === undefined && at < held.length) return Promise.resolve({ done: false, value: held[at++] });
      const previous = waiting;
      const result = previous === undefined ? take() : previous.then(take, take);
      waiting = result;
      const clear = (): void => {
        if (waiting === result) waiting = undefined;
      };
      result.then(clear, clear);
      return result;
    },
    async return(): Promise<IteratorResult<Change>> {
      stop();
      finished = true;
      held = [];
      at = 0;
      await batches.return(undefined);
      return { done: true, value: undefined };
    },
    async throw(err?: unknown): Promise<IteratorResult<Change>> {
      stop();
      finished = true;
      held = [];
      at = 0;
      await batches.throw(err);
      return { done: true, value: undefined };
    },
    [Symbol.asyncIterator](): Watch {
      return watch;
    },
    close(): void {
      stop();
      finished = true;
      held = [];
      at = 0;
      void batches.return(undefined);
    },
  };
  return watch;
}

function readEach(log: LogStore, lo: number, hi: number, visit: (entry: LogEntry) => void): number {
  const entries = log.entries(lo, hi);
  for (const entry of entries) visit(entry);
  return entries.length;
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
