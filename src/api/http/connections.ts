// What the HTTP door does per connection, beneath Fastify (its request handler, wrapped through
// Fastify's `serverFactory`):
// - A connection's requests run one after another, in the order they arrived. Node parses
//   pipelined requests as their bytes come and would run their handlers side by side, answering
//   in order but deciding out of order (a pipelined PUT then DELETE could delete first); RFC 9112
//   §9.3.2 lets a server do that only for safe methods.
// - A malformed request after others on the same connection is answered once they are: its 400
//   must not go out, and the connection close, before their answers. (A body longer than its
//   Content-Length makes its tail look like a malformed next request.)
// - A request body on which no byte arrives for `bodyIdleTimeoutMs` is cut off (an upload cut off
//   stores nothing). It is not a limit on a whole request: a slow upload that keeps moving goes on.

import type * as http from 'node:http';
import type { Duplex } from 'node:stream';

/** Request bodies on which no byte arrives for this long are cut off, unless the node says otherwise. */
export const httpBodyIdleTimeoutMsDefault = 60_000;

export interface ConnectionOrder {
  /** Fastify's request handler, run for each request once the one before it was answered. */
  handler: http.RequestListener;
  /**
   * Resolves once the requests that arrived whole on `socket` have been answered (or cut off): a
   * request whose body is still arriving is not waited for, since the bad bytes are its own.
   */
  answeredBeforeError(socket: Duplex): Promise<void>;
}

/** A connection's last request and the answer to the one before it (undefined once given). */
interface LastRequest {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  before: Promise<void> | undefined;
}

export function orderConnections(fastifyHandler: http.RequestListener, bodyIdleTimeoutMs: number): ConnectionOrder {
  const lastRequest = new WeakMap<Duplex, LastRequest>();
  return {
    handler(req, res) {
      const socket = req.socket;
      const last = lastRequest.get(socket);
      // On a keep-alive connection that is not pipelined, the answer before is long gone.
      const previous = last === undefined ? undefined : answerOf(last.res);
      lastRequest.set(socket, { req, res, before: previous });
      // A body that came whole with its headers (most) is in by the next tick: no limit to set.
      if (hasBody(req)) process.nextTick(() => req.complete || limitBodyIdle(req, bodyIdleTimeoutMs));
      if (previous === undefined) fastifyHandler(req, res);
      else void previous.then(() => fastifyHandler(req, res));
    },
    answeredBeforeError(socket) {
      const last = lastRequest.get(socket);
      return (last?.req.complete ? answerOf(last.res) : last?.before) ?? Promise.resolve();
    },
  };
}

/** Resolves after the last byte of the answer, or when the connection ends without it; undefined if that is past. */
function answerOf(res: http.ServerResponse): Promise<void> | undefined {
  if (res.closed) return undefined;
  return new Promise<void>((resolve) => res.once('close', () => resolve()));
}

function hasBody(req: http.IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** The request whose body each connection is receiving under a limit. */
const receiving = new WeakMap<Duplex, http.IncomingMessage>();

/**
 * Cuts the connection when no byte of the body arrives for `ms` while the body is being received.
 * Node's socket timeout counts bytes either way; while a body arrives the node writes nothing but
 * a 100 Continue. Once the body is in (or the request is over), the connection has no limit again.
 */
function limitBodyIdle(req: http.IncomingMessage, ms: number): void {
  const socket = req.socket;
  receiving.set(socket, req);
  socket.setTimeout(ms);
  // Node emits the socket's timeout on the request still being received; with a listener, it
  // leaves the connection to it.
  const onTimeout = (): void => {
    socket.destroy();
  };
  req.once('timeout', onTimeout);
  const done = (): void => {
    req.off('timeout', onTimeout);
    // A request pipelined behind this one may have set its own limit since.
    if (receiving.get(socket) !== req) return;
    receiving.delete(socket);
    socket.setTimeout(0);
  };
  req.once('end', done);
  req.once('close', done);
}
