// Every loom error code leaves the gRPC door as the status CONTRACT.md names, with the loom code in
// trailer `loom-error` and the details as JSON in `loom-error-details` (a stub database raises them).

import * as grpc from '@grpc/grpc-js';
import { grpcStatusOf } from '../../../src/api/grpc';
import { detailsJson } from '../../../src/api/grpc/status';
import type { Database } from '../../../src/core';
import { LoomError, errorCodes, type ErrorCode } from '../../../src/util';
import { failure, startGrpc, type GrpcHarness } from './harness';

const expected: Record<ErrorCode, grpc.status> = {
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  UNAUTHENTICATED: grpc.status.UNAUTHENTICATED,
  NOT_FOUND: grpc.status.NOT_FOUND,
  CONFLICT: grpc.status.FAILED_PRECONDITION,
  TOO_LARGE: grpc.status.RESOURCE_EXHAUSTED,
  NOT_LEADER: grpc.status.UNAVAILABLE,
  UNAVAILABLE: grpc.status.UNAVAILABLE,
  TIMEOUT: grpc.status.DEADLINE_EXCEEDED,
  CORRUPT: grpc.status.DATA_LOSS,
  INTERNAL: grpc.status.INTERNAL,
};

/** A database whose kv.get raises the error named by the key, and whose sqlQuery throws a plain Error. */
function failingDatabase(): Database {
  const stub = {
    kv: {
      get: async (_bucket: string, key: string) => {
        throw new LoomError(key as ErrorCode, `failed with ${key} — détails`, { leader: '10.0.0.2:50051', note: 'ünïcode ✓', code: key });
      },
    },
    sqlQuery: async () => {
      throw new TypeError('a bug, not an expected failure');
    },
  };
  return stub as unknown as Database;
}

describe('gRPC error mapping', () => {
  let h: GrpcHarness;
  beforeAll(async () => {
    h = await startGrpc({ db: failingDatabase() });
  });
  afterAll(async () => {
    await h.close();
  });

  it('pins the status of every code in the registry', () => {
    expect(grpcStatusOf).toEqual(expected);
    expect(Object.keys(grpcStatusOf).sort()).toEqual(Object.keys(errorCodes).sort());
  });

  it.each(Object.keys(errorCodes) as ErrorCode[])('sends %s with its status, trailer and JSON details', async (code) => {
    const err = await failure(h.door.kvGet({ bucket: 'b', key: code }));
    expect(err.grpcCode).toBe(expected[code]);
    expect(err.fromTrailer).toBe(true);
    expect(err.code).toBe(code);
    expect(err.message).toBe(`failed with ${code} — détails`);
    expect(err.details).toEqual({ leader: '10.0.0.2:50051', note: 'ünïcode ✓', code });
  });

  it('sends an unexpected exception as INTERNAL with the trailer, and keeps serving', async () => {
    const err = await failure(h.door.sqlQuery({ sql: 'SELECT 1' }));
    expect(err).toMatchObject({ code: 'INTERNAL', grpcCode: grpc.status.INTERNAL, fromTrailer: true });
    expect((await failure(h.door.kvGet({ bucket: 'b', key: 'NOT_FOUND' }))).code).toBe('NOT_FOUND');
  });

  it('keeps the details trailer ASCII and bounded', () => {
    expect(detailsJson({ s: 'é\u0001✓' })).toBe('{"s":"\\u00e9\\u0001\\u2713"}');
    expect(JSON.parse(detailsJson({ s: 'é\u0001✓' }))).toEqual({ s: 'é\u0001✓' });
    const huge = JSON.parse(detailsJson({ s: 'x'.repeat(100_000) })) as Record<string, unknown>;
    expect(huge.truncated).toBe(true);
  });
});
