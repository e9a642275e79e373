// The window of AppendEntries in flight to one follower, bounded in messages and in bytes: the
// leader's flow control. Each entry remembers the last index a message carried and its size.

import { assert } from '../../util';

export class Inflights {
  private readonly lastIndexes: number[] = [];
  private readonly sizesBytes: number[] = [];
  private bytes = 0;

  constructor(
    private readonly messagesMax: number,
    private readonly bytesMax: number,
  ) {
    assert(messagesMax > 0 && bytesMax > 0, 'inflight limits must be positive');
  }

  /** Records a message whose last entry is `lastIndex`; indexes must grow. */
  add(lastIndex: number, sizeBytes: number): void {
    assert(!this.full(), 'inflights: add while full');
    const previous = this.lastIndexes[this.lastIndexes.length - 1];
    assert(previous === undefined || lastIndex > previous, `inflights: ${lastIndex} after ${previous}`);
    this.lastIndexes.push(lastIndex);
    this.sizesBytes.push(sizeBytes);
    this.bytes += sizeBytes;
  }

  /** Frees every message whose entries are all at or below `index` (acknowledged). */
  freeLE(index: number): void {
    let n = 0;
    while (n < this.lastIndexes.length && this.lastIndexes[n] <= index) {
      this.bytes -= this.sizesBytes[n];
      n++;
    }
    this.lastIndexes.splice(0, n);
    this.sizesBytes.splice(0, n);
  }

  freeFirstOne(): void {
    if (this.lastIndexes.length > 0) this.freeLE(this.lastIndexes[0]);
  }

  full(): boolean {
    return this.lastIndexes.length >= this.messagesMax || this.bytes >= this.bytesMax;
  }

  count(): number {
    return this.lastIndexes.length;
  }

  reset(): void {
    this.lastIndexes.length = 0;
    this.sizesBytes.length = 0;
    this.bytes = 0;
  }
}
