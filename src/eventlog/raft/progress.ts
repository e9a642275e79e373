// The leader's view of one follower: how much of the log matches (match), what to send next
// (next), and the replication state that decides how eagerly to send (etcd's tracker/progress.go).

import { assert } from '../../util';
import { Inflights } from './inflights';

/**
 * probe: we do not know where the follower's log diverges; send one message per heartbeat
 * interval and wait for its answer. replicate: the follower is in step; stream entries as fast as
 * the inflight window allows (pipelining). snapshot: the follower needs entries we compacted; send
 * the snapshot in chunks and nothing else until it is installed.
 */
export type ProgressState = 'probe' | 'replicate' | 'snapshot';

export class Progress {
  /** Invariant: match < next. Everything up to match is known to be on the follower's durable log. */
  match = 0;
  next: number;
  state: ProgressState = 'probe';
  /** In probe state, true once a message was sent and no answer or heartbeat came back since. */
  probeSent = false;
  /** In snapshot state: the snapshot being sent and how many of its bytes the follower has. */
  pendingSnapshotIndex = 0;
  snapshotOffset = 0;
  /** In snapshot state: the end of the last chunk sent. The next goes once the follower has it all. */
  snapshotSentTo = 0;
  /** Set by any message from the follower; CheckQuorum clears it every election timeout. */
  recentActive = false;
  readonly inflights: Inflights;

  constructor(next: number, messagesMax: number, bytesMax: number) {
    this.next = next;
    this.inflights = new Inflights(messagesMax, bytesMax);
  }

  becomeProbe(): void {
    // Coming out of snapshot state, the follower has at least the snapshot; start after it.
    if (this.state === 'snapshot') {
      const pending = this.pendingSnapshotIndex;
      this.resetState('probe');
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.resetState('probe');
      this.next = this.match + 1;
    }
  }

  becomeReplicate(): void {
    this.resetState('replicate');
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.resetState('snapshot');
    this.pendingSnapshotIndex = snapshotIndex;
    this.snapshotOffset = 0;
    this.snapshotSentTo = 0;
  }

  /** Records an acknowledgement of `index`; false if it was stale (already known). */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /** Optimistically moves next past a message just sent in replicate state. */
  sentEntries(lastIndex: number, sizeBytes: number): void {
    if (this.state === 'replicate') {
      this.inflights.add(lastIndex, sizeBytes);
      this.next = lastIndex + 1;
    } else {
      this.probeSent = true;
    }
  }

  /**
   * Handles a rejection of the message whose previous entry was `rejected`; `matchHint` is where
   * the follower suggests to retry. Returns false if the rejection is stale.
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === 'replicate') {
      // Answers to messages we sent before the last one that matched are stale.
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    assert(this.next >= 1, 'progress next below 1');
    this.probeSent = false;
    return true;
  }

  /** Whether the leader must hold back AppendEntries to this follower now. */
  isPaused(): boolean {
    if (this.state === 'probe') return this.probeSent;
    if (this.state === 'replicate') return this.inflights.full();
    return true;
  }

  private resetState(state: ProgressState): void {
    this.state = state;
    this.probeSent = false;
    this.pendingSnapshotIndex = 0;
    this.snapshotOffset = 0;
    this.snapshotSentTo = 0;
    this.inflights.reset();
  }
}
