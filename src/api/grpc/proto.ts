// Loads proto/loom.proto once, with the options every loom gRPC peer uses, so the server and the
// test clients agree on how protobuf values appear in JavaScript.

import { existsSync } from 'node:fs';
import * as path from 'node:path';
import * as protoLoader from '@grpc/proto-loader';

/**
 * The proto file at the package root. This file sits at the same depth under `src/` (ts-jest) and
 * under `dist/` (the build), so one relative path serves both.
 */
/**
 * The package's proto/loom.proto: found by walking up from this file, so the same code works from
 * src/ (ts-jest), dist/ and the benchmarks' build/tools/ output.
 */
export const protoPath = findProto(__dirname);

function findProto(from: string): string {
  let dir = from;
  for (let depth = 0; depth < 8; depth++) {
    const candidate = path.join(dir, 'proto', 'loom.proto');
    if (existsSync(candidate)) return candidate;
    dir = path.dirname(dir);
  }
  return path.join(from, '../../../proto/loom.proto');
}

/**
 * snake_case field names as in the .proto; uint64 as JS numbers (loom keeps them below 2^53 and the
 * operation schemas reject anything larger); bytes as Buffers; proto3 defaults filled in, except for
 * `optional` fields, which stay absent when unset so "absent" and "zero" differ.
 */
export const protoLoaderOptions: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  bytes: Buffer,
  defaults: true,
  arrays: true,
  oneofs: true,
};

let cached: protoLoader.PackageDefinition | undefined;

export function loadLoomProto(): protoLoader.PackageDefinition {
  cached ??= protoLoader.loadSync(protoPath, protoLoaderOptions);
  return cached;
}
