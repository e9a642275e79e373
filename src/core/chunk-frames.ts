// The buffers a database's uploads fill with chunk bytes, used again once nothing can read them.
//
// A chunk's frame lives from its first byte until its entry is durable, applied and out of the log's
// memory: longer than V8's young generation keeps anything, so every frame was promoted and died in
// the old generation, where only a full collection frees it. A fast upload piled up 60 MiB and more
// of dead frames between collections (docs/decisions.md §17). A frame handed back here instead is
// filled again by a later chunk, so an upload at full speed allocates almost none.
//
// Safety rests on one question asked of the database's core: whether the entry may be released
// (Core.releaseEntryData). A frame is marked before its entry is proposed (markEntryDataReused), so
// the log copies it for every reader but the applier; a frame whose proposal failed is never lent.

import { allocEntryData, markEntryDataReused, reuseEntryData } from '../eventlog';
import { onTransferMemoryRelease, type TransferMemoryHolder } from '../util';
import type { Core } from './core';

/** Most bytes of frames one database keeps lent or idle; beyond it the oldest are left to the GC. */
export const chunkFramesBytesMax = 32 * 1024 * 1024;

interface Lent {
  frame: Buffer;
  index: number;
}

export interface ChunkFrameStats {
  /** Frames lent or idle here. */
  held: number;
  heldBytes: number;
  /** Frames made new, and frames taken again, since the database opened. */
  allocated: number;
  reused: number;
}

/** One database's chunk frames. Only a core that can release entries (a single voter) lends any. */
export class ChunkFrames implements TransferMemoryHolder {
  /** Oldest first: entries are applied, and released, in log order. */
  private readonly lent: Lent[] = [];
  private lentBytes = 0;
  private allocated = 0;
  private reused = 0;

  constructor(private readonly core: Core) {
    // After a burst of transfers, idle frames are memory nobody uses. Held weakly there: a database
    // that is closed and dropped leaves nothing behind.
    onTransferMemoryRelease(this);
  }

  /**
   * A frame for `dataBytes` of entry data (as eventlog's allocEntryData gives, with room for the
   * log's framing around it): the oldest lent frame of that size whose entry is released, else a
   * new one, marked as reused (markEntryDataReused) where the core can release entries.
   */
  take(dataBytes: number): Buffer {
    while (this.lent.length > 0) {
      const oldest = this.lent[0];
      if (!this.core.releaseEntryData(oldest.index)) break;
      this.forgetOldest();
      if (oldest.frame.byteLength === dataBytes) {
        this.reused++;
        return reuseEntryData(oldest.frame);
      }
    }
    this.allocated++;
    const frame = allocEntryData(dataBytes);
    if (this.core.releasesEntryData()) markEntryDataReused(frame);
    return frame;
  }

  /** Hands back a frame whose bytes went into the committed entry at `index`. */
  lend(frame: Buffer, index: number): void {
    if (!this.core.releasesEntryData()) return;
    this.lent.push({ frame, index });
    this.lentBytes += frame.byteLength;
    while (this.lentBytes > chunkFramesBytesMax) this.forgetOldest();
  }

  stats(): ChunkFrameStats {
    return { held: this.lent.length, heldBytes: this.lentBytes, allocated: this.allocated, reused: this.reused };
  }

  /** Leaves every frame held here to the GC. */
  dropTransferMemory(): void {
    this.lent.length = 0;
    this.lentBytes = 0;
  }

  private forgetOldest(): void {
    this.lentBytes -= (this.lent.shift() as Lent).frame.byteLength;
  }
}
