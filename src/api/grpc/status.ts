// How a loom error leaves the gRPC door: a gRPC status code chosen from the loom code, with the loom
// code in trailer `loom-error` and its details as JSON in trailer `loom-error-details`.

import { Metadata, status as Status, type ServiceError } from '@grpc/grpc-js';
import { LoomError, type ErrorCode, type Logger } from '../../util';
import { errorDetailsBytesMax } from './limits';

export const errorTrailer = 'loom-error';
export const errorDetailsTrailer = 'loom-error-details';

/**
 * One gRPC status per loom code. A Record over ErrorCode, so a new code in the registry does not
 * type-check until it is mapped here. CONFLICT is always FAILED_PRECONDITION (never ALREADY_EXISTS,
 * even for `create`), so a client tests one status and reads `loom-error` and the details for more.
 */
export const grpcStatusOf: Record<ErrorCode, Status> = {
  INVALID_ARGUMENT: Status.INVALID_ARGUMENT,
  UNAUTHENTICATED: Status.UNAUTHENTICATED,
  NOT_FOUND: Status.NOT_FOUND,
  CONFLICT: Status.FAILED_PRECONDITION,
  TOO_LARGE: Status.RESOURCE_EXHAUSTED,
  // A follower's answer to a write: retry at the leader named in the details.
  NOT_LEADER: Status.UNAVAILABLE,
  UNAVAILABLE: Status.UNAVAILABLE,
  TIMEOUT: Status.DEADLINE_EXCEEDED,
  // As etcd answers its corrupt-data error: the stored bytes failed their check, not loom.
  CORRUPT: Status.DATA_LOSS,
  INTERNAL: Status.INTERNAL,
};

/** The status (as grpc-js sends it) for anything a handler threw. */
export function toServiceError(err: unknown, logger: Logger): Partial<ServiceError> & { code: Status; details: string; metadata: Metadata } {
  const loomError = err instanceof LoomError ? err : internalError(err, logger);
  const metadata = new Metadata();
  metadata.set(errorTrailer, loomError.code);
  metadata.set(errorDetailsTrailer, detailsJson(loomError.details));
  return { code: grpcStatusOf[loomError.code], details: loomError.message, metadata, name: 'LoomError', message: loomError.message };
}

function internalError(err: unknown, logger: Logger): LoomError {
  // Not an expected failure: keep the stack in the server's log; the client gets the message only.
  logger.error({ err }, 'grpc call failed unexpectedly');
  return new LoomError('INTERNAL', err instanceof Error ? err.message : String(err));
}

/**
 * Details as JSON that fits in an ASCII header value: grpc-js refuses non-ASCII in text metadata,
 * so characters outside printable ASCII are written as \u escapes (still the same JSON value).
 */
export function detailsJson(details: Record<string, unknown>): string {
  let json: string;
  try {
    json = JSON.stringify(details);
  } catch {
    json = '{"unserializable":true}';
  }
  json = json.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (json.length > errorDetailsBytesMax) {
    return JSON.stringify({ truncated: true, bytes: json.length, errorDetailsBytesMax });
  }
  return json;
}
