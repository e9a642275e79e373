// After a burst of large transfers (object uploads and downloads), gives back the memory they
// churned through once the node has been quiet for a moment, so its RSS returns near where it was.
//
// Every byte moved passes through short-lived Buffers (socket reads, chunk frames, chunk copies).
// V8 frees them only when a collection finds them dead, and lets 100 MiB and more of them pile up
// during a fast transfer; glibc then keeps the freed heap for reuse rather than return it. Neither
// costs anything while traffic flows, but a node that moved a gigabyte otherwise sat on that memory
// long after. Once enough has moved and then nothing for a moment, a full collection runs (where the
// process has one to call), then malloc_trim, and the map pages the reads touched are given back.

import { loadLibc } from './libc';
import { releaseMappedPages } from './mapped-memory';

/** Bytes that must have moved since the last release before there is another. */
export const transferBytesPerRelease = 64 * 1024 * 1024;
/** How long nothing may move before the memory is given back. */
export const quietMsBeforeRelease = 500;
/**
 * Bytes that must have moved since the last release for the end of one transfer to give the memory
 * back at once, without waiting to be quiet: a large transfer then leaves nothing for the next one
 * to pile onto (a 1 GiB upload and then its download peaked ~15 MiB higher without it).
 */
export const transferBytesPerReleaseAtEnd = 256 * 1024 * 1024;

let movedSinceRelease = 0;
let lastMovedAt = 0;
let timer: NodeJS.Timeout | undefined;
let collect: (() => void) | undefined;
const releaseHooks: Array<() => void> = [];

/**
 * Lets releases run a full collection. `loom serve` passes V8's `gc` (docs/decisions.md §16); an
 * application embedding loom leaves its collector to itself, and releases only trim.
 */
export function collectGarbageOnRelease(gc: () => void): void {
  collect = gc;
}

/** Runs `hook` at each release, before the collection: it lets go of memory kept for transfers. */
export function onTransferMemoryRelease(hook: () => void): void {
  releaseHooks.push(hook);
}

/**
 * Counts bytes an upload or download moved. Once transferBytesPerRelease have moved and then none
 * for quietMsBeforeRelease, the memory is given back. Counting bytes rather than open transfers
 * means a download its consumer never finished or closed cannot hold releases off.
 */
export function noteTransferred(bytes: number): void {
  movedSinceRelease += bytes;
  lastMovedAt = performance.now();
  if (timer === undefined && movedSinceRelease >= transferBytesPerRelease) armRelease(quietMsBeforeRelease);
}

/**
 * An upload or download has ended. After transferBytesPerReleaseAtEnd, the memory is given back in
 * the next turn (once the transfer's last reply has gone out), whatever else is moving.
 */
export function noteTransferEnded(): void {
  if (movedSinceRelease < transferBytesPerReleaseAtEnd) return;
  movedSinceRelease = 0;
  setImmediate(releaseTransferMemory);
}

function armRelease(delayMs: number): void {
  timer = setTimeout(() => {
    const quietMs = performance.now() - lastMovedAt;
    if (quietMs >= quietMsBeforeRelease) releaseTransferMemory();
    else armRelease(quietMsBeforeRelease - quietMs);
  }, delayMs);
  timer.unref();
}

/** Gives back what transfers left behind. */
export function releaseTransferMemory(): void {
  if (timer !== undefined) clearTimeout(timer);
  timer = undefined;
  movedSinceRelease = 0;
  for (const hook of releaseHooks) hook();
  collect?.();
  releaseMappedPages();
  const loaded = loadLibc();
  if (loaded.available) loaded.libc.mallocTrim(0);
}
