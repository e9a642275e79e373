// ReadIndex bookkeeping on the leader: each read waits for a heartbeat round, started after it
// arrived, to be acknowledged by a quorum, proving the leader was still the leader at that time.

import { assert } from '../../util';
import { readIndexPendingMax } from './limits';

export interface ReadRequest {
  context: string;
  /** The commit index when the request arrived: the read may be served once it is applied. */
  index: number;
  /** Who asked: this node (answer with a ReadState) or a follower (answer with readIndexResp). */
  from: number;
  acks: Set<number>;
}

export class ReadOnly {
  private queue: ReadRequest[] = [];

  add(context: string, index: number, from: number): ReadRequest | undefined {
    if (this.queue.some((r) => r.context === context)) return undefined;
    assert(this.queue.length < readIndexPendingMax, `more than readIndexPendingMax (${readIndexPendingMax}) reads outstanding`);
    const request: ReadRequest = { context, index, from, acks: new Set() };
    this.queue.push(request);
    return request;
  }

  /**
   * Records that `voter` answered the heartbeat carrying `context`. If `isQuorum` then holds for
   * that request, it and every request queued before it are released (removed and returned).
   */
  ack(context: string, voter: number, isQuorum: (acks: Set<number>) => boolean): ReadRequest[] {
    const at = this.queue.findIndex((r) => r.context === context);
    if (at < 0) return [];
    const request = this.queue[at];
    request.acks.add(voter);
    if (!isQuorum(request.acks)) return [];
    return this.queue.splice(0, at + 1);
  }

  lastContext(): string | undefined {
    return this.queue[this.queue.length - 1]?.context;
  }

  pendingCount(): number {
    return this.queue.length;
  }

  reset(): void {
    this.queue = [];
  }
}
