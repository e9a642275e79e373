// Opens the HTTP/2 receive windows of the gRPC server's connections wider than HTTP/2's 64 KiB, so an
// upload is not stopped for a window update every 64 KiB. grpc-js has no server option for this.

import type * as http2 from 'node:http2';
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from '../../util';

/**
 * Bytes a client may send on one call before the server has read them (HTTP/2 default 64 KiB):
 * the most a stalled upload holds in the server's buffers.
 */
export const streamWindowBytes = 1024 * 1024;
/** Bytes a client may send on one connection, over all its calls, before the server has read them. */
export const connectionWindowBytes = 4 * 1024 * 1024;

/**
 * Sets the windows on every connection the server accepts from now on. Reaches into grpc-js's
 * HTTP/2 servers (a private field, checked here): if a grpc-js upgrade renames it, the windows
 * stay at their defaults, which costs speed only, and the log says so.
 */
export function widenReceiveWindows(server: grpc.Server, logger: Logger): void {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map)) {
    logger.warn('grpc-js keeps no http2Servers map: gRPC uploads keep the 64 KiB HTTP/2 receive window');
    return;
  }
  for (const http2Server of servers.keys() as IterableIterator<http2.Http2Server>) {
    if (http2Server.listeners('session').some((l) => l === widen)) continue;
    http2Server.on('session', widen);
  }
}

function widen(session: http2.ServerHttp2Session): void {
  // SETTINGS_INITIAL_WINDOW_SIZE is per stream; the connection's own window grows by WINDOW_UPDATE.
  session.settings({ initialWindowSize: streamWindowBytes });
  session.setLocalWindowSize(connectionWindowBytes);
}
