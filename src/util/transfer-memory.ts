// After a burst of large transfers (object uploads and downloads), gives back the memory they
// churned through once the node has been quiet for a moment, so its RSS returns near where it was.
//
// Every byte moved passes through short-lived Buffers (socket reads, download pieces; upload frames
// are reused, docs/decisions.md §17). V8 frees them only when a collection finds them dead, and glibc
// keeps the freed heap for reuse rather than return it. Neither costs anything while traffic flows,
// but a node that moved a gigabyte otherwise sat on that memory long after. Once enough has moved and
// then nothing for a moment (or a large transfer ends), a full collection runs (where the process
// has one to call), then malloc_trim, and the map pages reads and writes touched are given back.

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
/** Holders of memory kept for transfers, held weakly: one that is dropped is forgotten. */
const releaseTargets = new Set<WeakRef<TransferMemoryHolder>>();

/** Something that keeps memory for transfers and lets go of it when asked. */
export interface TransferMemoryHolder {
  dropTransferMemory(): void;
}

/**
 * Lets releases run a full collection. `loom serve` passes V8's `gc` (docs/decisions.md §16); an
 * application embedding loom leaves its collector to itself, and releases only trim.
 */
export function collectGarbageOnRelease(gc: () => void): void {
  collect = gc;
}

/** Asks `holder` at each release, before the collection, to let go of what it keeps. */
export function onTransferMemoryRelease(holder: TransferMemoryHolder): void {
  releaseTargets.add(new WeakRef(holder));
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
  for (const target of releaseTargets) {
    const holder = target.deref();
    if (holder === undefined) releaseTargets.delete(target);
    else holder.dropTransferMemory();
  }
  collect?.();
  releaseMappedPages();
  const loaded = loadLibc();
  if (loaded.available) loaded.libc.mallocTrim(0);
}
