import { LoomError, errorCodes, isLoomError } from '../../src/util';

describe('the LoomError registry', () => {
  it('pins every public code and its HTTP status', () => {
    const pinned = Object.fromEntries(Object.entries(errorCodes).map(([code, spec]) => [code, spec.http]));
    expect(pinned).toEqual({
      INVALID_ARGUMENT: 400,
      UNAUTHENTICATED: 401,
      NOT_FOUND: 404,
      CONFLICT: 409,
      TOO_LARGE: 413,
      NOT_LEADER: 421,
      UNAVAILABLE: 503,
      TIMEOUT: 504,
      CORRUPT: 500,
      INTERNAL: 500,
    });
  });

  it('carries code, message and details through JSON', () => {
    const err = new LoomError('CONFLICT', 'key k is at rev 7', { currentRev: 7 });
    expect(JSON.parse(JSON.stringify(err))).toEqual({ code: 'CONFLICT', message: 'key k is at rev 7', details: { currentRev: 7 } });
    expect(err.httpStatus).toBe(409);
    expect(isLoomError(err, 'CONFLICT')).toBe(true);
    expect(isLoomError(err, 'NOT_FOUND')).toBe(false);
    expect(isLoomError(new Error('x'))).toBe(false);
  });
});
