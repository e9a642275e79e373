// The one error type loom raises for expected failures, and the registry of its stable codes.
// Adapters (gRPC, HTTP, NATS) map these codes; renaming one is a breaking change (CONTRACT.md).

export const errorCodes = {
  INVALID_ARGUMENT: { http: 400, description: 'the request is malformed or names an invalid value' },
  UNAUTHENTICATED: { http: 401, description: 'credentials are missing or wrong' },
  NOT_FOUND: { http: 404, description: 'the named thing does not exist' },
  CONFLICT: { http: 409, description: 'an expected revision or version did not match' },
  TOO_LARGE: { http: 413, description: 'a payload, key or batch exceeds its named limit' },
  NOT_LEADER: { http: 421, description: 'this node is not the leader; details name the leader' },
  UNAVAILABLE: { http: 503, description: 'the node cannot serve this now (closed, starting, no quorum)' },
  TIMEOUT: { http: 504, description: 'the operation did not finish within its time limit' },
  CORRUPT: { http: 500, description: 'stored data failed its checksum or structure check' },
  INTERNAL: { http: 500, description: 'an unexpected failure inside loom' },
} as const;

export type ErrorCode = keyof typeof errorCodes;

export type ErrorDetails = Record<string, unknown>;

export class LoomError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}) {
    super(message);
    this.name = 'LoomError';
    this.code = code;
    this.details = details;
  }

  get httpStatus(): number {
    return errorCodes[this.code].http;
  }

  toJSON(): { code: ErrorCode; message: string; details: ErrorDetails } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

export function isLoomError(err: unknown, code?: ErrorCode): err is LoomError {
  return err instanceof LoomError && (code === undefined || err.code === code);
}
