// Checks every append must pass, shared by all LogStore implementations so that they refuse the
// same things with the same errors: density, term order, type names and size limits.

import { LoomError, assert } from '../util';
import { appendEntriesMax, entryOverheadBytes, entryTypeBytesMax } from './limits';
import type { LogEntry } from './types';

export function entrySizeBytes(entry: LogEntry): number {
  let metaBytes = 0;
  if (entry.meta) metaBytes = Buffer.byteLength(JSON.stringify(entry.meta));
  return entry.data.byteLength + Buffer.byteLength(entry.type) + metaBytes + entryOverheadBytes;
}

/** Validates a batch that must continue a log whose last entry is (lastIndex, lastTerm). */
export function checkAppend(entries: LogEntry[], lastIndex: number, lastTerm: number, entryBytesMax: number): void {
  if (entries.length > appendEntriesMax) {
    throw new LoomError('TOO_LARGE', `append carries ${entries.length} entries; appendEntriesMax is ${appendEntriesMax}`, {
      limit: 'appendEntriesMax',
      max: appendEntriesMax,
    });
  }
  let expectedIndex = lastIndex + 1;
  let previousTerm = lastTerm;
  for (const entry of entries) {
    if (!Number.isSafeInteger(entry.index) || entry.index !== expectedIndex) {
      throw new LoomError('INVALID_ARGUMENT', `entry index ${entry.index} does not continue the log at ${expectedIndex}`, {
        field: 'index',
        expected: expectedIndex,
      });
    }
    if (!Number.isSafeInteger(entry.term) || entry.term < previousTerm) {
      throw new LoomError('INVALID_ARGUMENT', `entry ${entry.index} has term ${entry.term}, below the previous term ${previousTerm}`, {
        field: 'term',
      });
    }
    if (typeof entry.type !== 'string' || entry.type.length === 0 || Buffer.byteLength(entry.type) > entryTypeBytesMax) {
      throw new LoomError('INVALID_ARGUMENT', `entry ${entry.index} type must be 1..${entryTypeBytesMax} bytes`, { field: 'type' });
    }
    if (!(entry.data instanceof Uint8Array)) {
      throw new LoomError('INVALID_ARGUMENT', `entry ${entry.index} data must be bytes (Uint8Array)`, { field: 'data' });
    }
    if (!Number.isFinite(entry.ts)) {
      throw new LoomError('INVALID_ARGUMENT', `entry ${entry.index} ts must be a number of milliseconds`, { field: 'ts' });
    }
    checkEntrySize(entry, entryBytesMax);
    previousTerm = entry.term;
    expectedIndex++;
  }
}

/** TOO_LARGE if `entry` counts more than entryBytesMax (entrySizeBytes). */
export function checkEntrySize(entry: LogEntry, entryBytesMax: number): void {
  const size = entrySizeBytes(entry);
  if (size > entryBytesMax) {
    throw new LoomError('TOO_LARGE', `a ${entry.type} entry of ${size} bytes is over entryBytesMax (${entryBytesMax})`, { limit: 'entryBytesMax', max: entryBytesMax, size });
  }
}

export function checkIndex(i: number, what: string): void {
  assert(Number.isSafeInteger(i) && i >= 0, `${what}: index ${i} is not a non-negative safe integer`);
}
