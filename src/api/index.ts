// The doors into a node: NATS request/reply on the bus, HTTP (fastify), gRPC — all over one table
// of operations so that every door has the same semantics and error codes.

export { createHttpServer, listenError } from './http/server';
export type { HttpServer, HttpServerOptions } from './http/server';
export { NatsApi, apiQueueGroup, apiSubjectPrefix } from './nats';
export type { NatsApiOptions } from './nats';
export { operationSchemas, parseInput, runOperation } from './operations';
export type { ClusterStatus, OperationContext, OperationInput, OperationName, OperationOutputs } from './operations';
export { createGrpcServer } from './grpc';
export type { GrpcServer, GrpcServerOptions } from './grpc';
