// The node's HTTP door (fastify): health, readiness and Prometheus metrics for now; the doors
// issue adds the /v1 routes. Errors leave as the JSON body of a LoomError with its HTTP status.

import * as http from 'node:http';
import * as https from 'node:https';
import type { Duplex } from 'node:stream';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Registry } from 'prom-client';
import type { OpenDatabase } from '../../core';
import { LoomError, type Logger } from '../../util';
import { openApiDocument } from './openapi';
import { answerExpectContinue, registerBucketRoutes } from './buckets';
import { httpBodyIdleTimeoutMsDefault, orderConnections, type ConnectionOrder } from './connections';
import { registerRoutes } from './routes';

export interface HttpServerOptions {
  host: string;
  port: number;
  opened: OpenDatabase;
  registry: Registry;
  logger: Logger;
  nodeId: number;
  /** With a token, every route but /healthz and /readyz needs `Authorization: Bearer <token>`. */
  authToken?: string;
  /** Largest request body, bytes. */
  bodyBytesMax?: number;
  /** A request body on which no byte arrives for this long is cut off (connections.ts). */
  bodyIdleTimeoutMs?: number;
  /** PEM certificate and key: serve HTTPS only. */
  tls?: { cert: Buffer; key: Buffer };
}

const openPaths = new Set(['/healthz', '/readyz']);

export interface HttpServer {
  readonly app: FastifyInstance;
  listen(): Promise<number>;
  close(): Promise<void>;
}

export function createHttpServer(options: HttpServerOptions): HttpServer {
  const bodyBytesMax = options.bodyBytesMax ?? 1024 * 1024 + 64 * 1024;
  let order: ConnectionOrder | undefined;
  const settings = {
    loggerInstance: options.logger.child({ door: 'http' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: bodyBytesMax,
    // The server Fastify would make, with its handler run in each connection's order (connections.ts).
    serverFactory: (handler: http.RequestListener): http.Server => {
      order = orderConnections(handler, options.bodyIdleTimeoutMs ?? httpBodyIdleTimeoutMsDefault);
      // Over TLS the routes are the same; only the server underneath differs.
      const server = options.tls ? (https.createServer({ cert: options.tls.cert, key: options.tls.key }, order.handler) as unknown as http.Server) : http.createServer(order.handler);
      // No limit on a whole request: an upload takes as long as its bytes take to come, and the
      // body's idle limit cuts one that stops. Node still limits the headers (60 s). Idle
      // keep-alive connections close after Fastify's 72 s, as they did when Fastify made the server.
      server.requestTimeout = 0;
      server.keepAliveTimeout = 72_000;
      return server;
    },
    // Errors Fastify raises before routing (a URL that is not valid percent-encoding): the same
    // {code, message, details} body as every other error.
    frameworkErrors: (error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void => {
      void reply
        .status(error.statusCode ?? 400)
        .header('content-type', 'application/json; charset=utf-8')
        .send({ code: 'INVALID_ARGUMENT', message: `the request URL is not valid: ${error.message}`, details: { field: 'url' } });
    },
    // Requests Node's HTTP parser refuses before Fastify sees them (headers over its 16 KiB limit, a
    // malformed header line): the same body, and the connection closes, as Fastify's default does.
    clientErrorHandler: (err: Error & { code?: string }, socket: Duplex): void => {
      if (err.code === 'ECONNRESET' || !socket.writable) {
        socket.destroy();
        return;
      }
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      const error =
        status === 431
          ? new LoomError('TOO_LARGE', 'the request headers are larger than the HTTP server accepts (16 KiB)', { limit: 'maxHeaderSize' })
          : status === 408
            ? new LoomError('TIMEOUT', 'the request did not arrive in time')
            : new LoomError('INVALID_ARGUMENT', `the request is not valid HTTP/1.1 (${err.code ?? err.message})`, { field: 'request' });
      const body = JSON.stringify(error.toJSON());
      const answer = (): void => {
        if (!socket.writable) {
          socket.destroy();
          return;
        }
        socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      };
      // After the answers to the requests before it on this connection: they go out first.
      void (order?.answeredBeforeError(socket) ?? Promise.resolve()).then(answer);
    },
  };
  const app = Fastify(settings) as unknown as FastifyInstance;
  /** The refusal of a request without the token, or undefined (no token set, an open path, the right token). */
  const unauthorized = (url: string | undefined, authorization: string | undefined): LoomError | undefined => {
    if (options.authToken === undefined || openPaths.has((url ?? '').split('?')[0]) || authorization === `Bearer ${options.authToken}`) return undefined;
    return new LoomError('UNAUTHENTICATED', 'this node needs Authorization: Bearer <token> (--auth-token)');
  };
  if (options.authToken !== undefined) {
    app.addHook('onRequest', async (request) => {
      const refusal = unauthorized(request.url, request.headers.authorization);
      if (refusal) throw refusal;
    });
  }
  const { opened, registry } = options;
  const core = opened.core;

  app.setErrorHandler((err, _request, reply) => {
    // The route may have described a body it then failed to send (an object download whose chunk
    // fails its check): the error answer is JSON and carries none of those headers.
    for (const name of Object.keys(reply.getHeaders())) reply.removeHeader(name);
    reply.header('content-type', 'application/json; charset=utf-8');
    if (err instanceof LoomError) {
      void reply.status(err.httpStatus).send(err.toJSON());
      return;
    }
    const status = (err as { statusCode?: number }).statusCode ?? 500;
    const code = status === 413 ? 'TOO_LARGE' : status === 404 ? 'NOT_FOUND' : status < 500 ? 'INVALID_ARGUMENT' : 'INTERNAL';
    if (status >= 500) options.logger.error({ err }, 'http request failed');
    // Errors fastify raises itself come from reading the request body (bad JSON, too large).
    void reply.status(status).send({ code, message: (err as Error).message, details: status < 500 ? { field: 'body' } : {} });
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send(new LoomError('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`).toJSON());
  });

  app.get('/healthz', async () => ({ ok: true }));
  app.get('/readyz', async (_request, reply) => {
    const status = core.status();
    const ready = core.ready();
    return reply.status(ready ? 200 : 503).send({ ready, ...status, projections: opened.projections() });
  });
  app.get('/metrics', async (_request, reply) => {
    const body = await registry.metrics();
    return reply.header('content-type', registry.contentType).send(body);
  });

  app.get('/openapi.json', async () => openApiDocument());
  registerRoutes(app, { db: opened.db, nodeId: options.nodeId, bodyBytesMax });
  registerBucketRoutes(app, { db: opened.db, nodeId: options.nodeId });
  answerExpectContinue(app.server as http.Server, opened.db.objects.objectBytesMax, (req) => unauthorized(req.url, req.headers.authorization));

  return {
    app,
    async listen() {
      try {
        await app.listen({ host: options.host, port: options.port });
      } catch (err) {
        throw listenError(err, 'http', options.host, options.port);
      }
      const address = app.server.address();
      return typeof address === 'object' && address !== null ? address.port : options.port;
    },
    async close() {
      await app.close();
    },
  };
}

/** Turns a listen failure into a LoomError that names the door, address and flag. */
export function listenError(err: unknown, door: string, host: string, port: number): LoomError {
  const code = (err as NodeJS.ErrnoException).code;
  const flag = `--${door}-port`;
  // grpc-js reports bind failures in its message only.
  if (code === 'EADDRINUSE' || /EADDRINUSE/.test((err as Error).message)) {
    return new LoomError('UNAVAILABLE', `${door} port ${port} on ${host} is already in use; choose another with ${flag} (0 picks a free one)`, {
      door,
      host,
      port,
    });
  }
  if (code === 'EACCES') {
    return new LoomError('UNAVAILABLE', `not allowed to listen on ${host}:${port} for ${door} (${flag})`, { door, host, port });
  }
  return new LoomError('UNAVAILABLE', `cannot listen on ${host}:${port} for ${door}: ${(err as Error).message}`, { door, host, port });
}
