// An HTTP/2 PING round trip, to learn that a client's frames sent before some moment have arrived.
//
// A grpc-js client (Node's HTTP/2) that cancels a call sends END_STREAM first and its RST_STREAM
// only once that write has finished, so a server sees the request stream end as if the upload
// were complete, and the reset some milliseconds later (more on a busy client). A PING sent once
// the end has arrived reaches the client after it queued the reset, or while the write holding
// it back is still in flight; Node's HTTP/2 sends nothing more until that write is done, and then
// sends the reset with the PING's ACK (nghttp2 puts the ACK first) or before it. So once the ACK
// and the frames read with it are in, a cancel sent before the client knew the upload was over has
// arrived too.

import type * as http2 from 'node:http2';

/** Longest wait for an ACK: a client that answers no PING must not hold an upload for ever. */
export const roundTripTimeoutMs = 10_000;

interface SessionPings {
  /** A PING of this session is waiting for its ACK. */
  inFlight: boolean;
  /** Waiters for the next PING: one sent after they asked, so the one in flight does not count. */
  next: Array<() => void>;
}

const pings = new WeakMap<http2.Http2Session, SessionPings>();

/**
 * Resolves once a PING sent after this call has been answered, the session has closed, or
 * `roundTripTimeoutMs` has passed. Waiters share PINGs: at most one per session is in flight, and
 * Node refuses more than a few outstanding ones (maxOutstandingPings). A stream whose session is
 * gone (undefined) has nothing more to hear.
 */
export function roundTrip(session: http2.Http2Session | undefined): Promise<void> {
  if (session === undefined) return Promise.resolve();
  let state = pings.get(session);
  if (state === undefined) {
    state = { inFlight: false, next: [] };
    pings.set(session, state);
  }
  const waiting = state;
  return new Promise<void>((resolve) => {
    waiting.next.push(resolve);
    if (!waiting.inFlight) sendPing(session, waiting);
  });
}

function sendPing(session: http2.Http2Session, state: SessionPings): void {
  const waiters = state.next;
  state.next = [];
  state.inFlight = true;
  let settled = false;
  const done = (): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    state.inFlight = false;
    // Node calls back on the ACK while it reads the frames that came with it: a RST_STREAM sent
    // right after the ACK (a client sends its PING ACKs ahead of its resets) is read in this turn.
    setImmediate(() => {
      for (const resolve of waiters) resolve();
    });
    if (state.next.length > 0) sendPing(session, state);
  };
  const timer = setTimeout(done, roundTripTimeoutMs);
  // An error (the session closed, the PING cancelled) settles it too: the caller then finds the
  // stream closed, which is what it asks about. PINGs of others (keepalive) may fill Node's
  // outstanding limit for a moment: then this one tries again shortly.
  const send = (): void => {
    if (settled) return;
    if (session.closed || session.destroyed) done();
    else if (!session.ping(() => done())) setTimeout(send, 5);
  };
  send();
}
