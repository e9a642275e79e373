// The doors into a node: HTTP today; NATS request/reply and gRPC arrive with the doors issue.

export { createHttpServer, listenError } from './http/server';
export type { HttpServer, HttpServerOptions } from './http/server';
