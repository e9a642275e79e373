// Named limits and defaults of replication in the node: timers, frames, reconnects (STYLE.md: a
// limit on everything, unit last).

/** How often the driver ticks Raft; one tick is one heartbeat interval. */
export const heartbeatMsDefault = 100;
/** Base election timeout; Raft randomizes it within [timeout, 2·timeout). */
export const electionTimeoutMsDefault = 1000;
/** Largest frame an authenticated peer may send (a batch of AppendEntries plus headers). */
export const frameBytesMax = 64 * 1024 * 1024;
/** Largest frame before the handshake completes: an unauthenticated peer cannot make us buffer more. */
export const handshakeFrameBytesMax = 4 * 1024;
/** Raft messages packed into one frame. */
export const frameMessagesMax = 4096;
/** Bytes queued for one peer connection before further messages are dropped (Raft resends). */
export const peerQueueBytesMax = 128 * 1024 * 1024;
/** A peer that has not completed the handshake in this time is disconnected. */
export const handshakeTimeoutMs = 5000;
/** Reconnect backoff: first delay, doubling up to the maximum. */
export const reconnectDelayMsMin = 50;
export const reconnectDelayMsMax = 1000;
/** Longest a ReadIndex request waits for the leader's quorum confirmation. */
export const readIndexTimeoutMsDefault = 3000;
/** Longest a string field (ReadIndex context, entry type, addresses) in a peer message may be. */
export const stringBytesMax = 1024;
/** Longest `cluster add` waits for a new learner to catch up before promoting it to voter. */
export const learnerCatchUpMsMax = 60_000;
/**
 * When the leader's connection closes, the survivors campaign in turns by id, one turn every
 * electionTimeoutMs / this (250 ms by default), so that two of them rarely split the vote.
 */
export const earlyCampaignSlotDivisor = 4;
/** Bytes of committed entries a leader reads back from its log at once to hand them to the applier. */
export const releaseBatchBytesMax = 4 * 1024 * 1024;
