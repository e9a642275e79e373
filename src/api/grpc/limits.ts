// Named limits of the gRPC door (STYLE.md convention 4): message size, calls per connection,
// trailer size and how long a shutdown waits for calls in flight.

/** Largest request message the server accepts; a larger one is answered RESOURCE_EXHAUSTED. */
export const messageBytesMaxDefault = 4 * 1024 * 1024;

/** Concurrent calls (HTTP/2 streams) one client connection may have open; more wait on the client. */
export const callsPerConnectionMaxDefault = 100;

/**
 * Largest `loom-error-details` trailer. HTTP/2 peers cap the size of a header block (Node: 16 KiB by
 * default), so larger details are replaced by a note rather than breaking the error reply itself.
 */
export const errorDetailsBytesMax = 4 * 1024;

/**
 * The server pings an idle connection this often, and drops it if a ping is not answered within
 * keepaliveTimeoutMs: a watch whose client vanished without closing its TCP connection would
 * otherwise hold its resources until the operating system gives up on the socket (hours).
 */
export const keepaliveMs = 60_000;
export const keepaliveTimeoutMs = 20_000;

/** How long close() lets calls in flight finish before it cuts the connections. */
export const shutdownGraceMsMax = 2_000;

/** Longest time a read waits for its consistency level, whatever the call's deadline (operations.ts). */
export const readTimeoutMsMax = 60_000;
