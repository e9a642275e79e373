// The buffers uploads fill with chunk bytes, used again once nothing in the node can read them.
//
// A chunk's frame lives from its first byte until its entry is durable, applied and out of the log's
// memory: longer than V8's young generation keeps anything, so every frame was promoted and died in
// the old generation, where only a full collection frees it. A fast upload piled up 60 MiB and more
// of dead frames between collections (docs/decisions.md §17). A frame handed back here instead is
// filled again by the next chunk, so an upload at full speed allocates almost none.
//
// Safety rests on one question asked of the node's core: whether the entry's data may be released
// (Core.releaseEntryData). A frame whose entry failed is never lent, and is left to the GC.

import { allocEntryData, reuseEntryData } from '../eventlog';
import { onTransferMemoryRelease } from '../util';

/** Most bytes of frames waiting here (lent or idle); beyond it the oldest are left to the GC. */
export const chunkFramesBytesMax = 32 * 1024 * 1024;

interface Lent {
  frame: Buffer;
  /** Whether nothing reads the data of the entry this frame holds any more (it lets go of it). */
  released: () => boolean;
}

/** Oldest first: entries are applied in log order. */
const lent: Lent[] = [];
let lentBytes = 0;
let allocated = 0;
let reused = 0;

/**
 * A frame for `dataBytes` of entry data (as eventlog's allocEntryData gives, with room for the log's
 * framing around it): the oldest lent frame of that size if its entry is released, else a new one.
 */
export function takeChunkFrame(dataBytes: number): Buffer {
  while (lent.length > 0) {
    const oldest = lent[0];
    if (!oldest.released()) break;
    forgetOldest();
    if (oldest.frame.byteLength === dataBytes) {
      reused++;
      return reuseEntryData(oldest.frame);
    }
  }
  allocated++;
  return allocEntryData(dataBytes);
}

/**
 * Hands back a frame whose bytes went into a proposed entry; it is reused once `released` says
 * nothing reads that entry's data from memory any more.
 */
export function lendChunkFrame(frame: Buffer, released: () => boolean): void {
  lent.push({ frame, released });
  lentBytes += frame.byteLength;
  while (lentBytes > chunkFramesBytesMax) forgetOldest();
}

/** Frames waiting here (lent or idle), and how many frames were taken new and taken again. */
export function chunkFrameStats(): { held: number; heldBytes: number; allocated: number; reused: number } {
  return { held: lent.length, heldBytes: lentBytes, allocated, reused };
}

/** Leaves every frame to the GC: after a burst of transfers, idle frames are memory nobody uses. */
export function dropChunkFrames(): void {
  lent.length = 0;
  lentBytes = 0;
}

function forgetOldest(): void {
  lentBytes -= (lent.shift() as Lent).frame.byteLength;
}

onTransferMemoryRelease(dropChunkFrames);
