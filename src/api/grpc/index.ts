// The gRPC door: a server over proto/loom.proto that runs the shared operations, and the pieces a
// client or a test needs to speak the same contract (proto path and loader options, error trailers).

export { createGrpcServer } from './server';
export type { GrpcServer, GrpcServerLimits, GrpcServerOptions } from './server';
export { loadLoomProto, protoLoaderOptions, protoPath } from './proto';
export { errorDetailsTrailer, errorTrailer, grpcStatusOf } from './status';
export * from './limits';
