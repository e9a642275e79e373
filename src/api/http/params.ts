// Query parameters and headers as the HTTP routes read them: a value given twice arrives as an
// array, which is refused like any other malformed value, never read as something else.

import { LoomError } from '../../util';

/**
 * A decimal integer parameter; INVALID_ARGUMENT naming `field` for anything else: an array, and the
 * other forms `Number` reads (0x10, 1e3, 0b11, " 7").
 */
export function intParam(value: unknown, field: string, label = field): number {
  const n = typeof value === 'string' && /^-?[0-9]+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n)) throw new LoomError('INVALID_ARGUMENT', `${label} must be an integer, got ${JSON.stringify(value)}`, { field });
  return n;
}

/** A yes/no parameter: 1 or true, 0 or false; anything else is refused rather than read as no. */
export function flagParam(value: unknown, name: string): boolean {
  if (value === '1' || value === 'true') return true;
  if (value === '0' || value === 'false') return false;
  throw new LoomError('INVALID_ARGUMENT', `${name} must be 1, true, 0 or false, got ${JSON.stringify(value)}`, { field: name });
}
