// Reads the PEM files a TLS flag group names: all of the group or none, each readable, and together
// a usable certificate, or start-up stops with an error naming the flag.

import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { LoomError } from '../util';
import { keyToFlag } from './config';

/** `files` maps config fields to paths (undefined when not given); returns their contents by field. */
export function readTlsFiles<K extends string>(files: Record<K, string | undefined>): Record<K, Buffer> | undefined {
  const fields = Object.keys(files) as K[];
  const missing = fields.filter((field) => files[field] === undefined);
  if (missing.length === fields.length) return undefined;
  if (missing.length > 0) {
    throw new LoomError('INVALID_ARGUMENT', `${fields.map(keyToFlag).join(', ')} go together; ${keyToFlag(missing[0])} is missing`, { field: missing[0] });
  }
  const pem = {} as Record<K, Buffer>;
  for (const field of fields) {
    try {
      pem[field] = readFileSync(files[field] as string);
    } catch (err) {
      throw new LoomError('INVALID_ARGUMENT', `cannot read ${keyToFlag(field)} file ${files[field]}: ${(err as Error).message}`, { field });
    }
  }
  return pem;
}

/** Throws, naming `field`, when the certificate, key (and CA) cannot make a TLS context. */
export function checkUsable(pem: { cert: Buffer; key: Buffer; ca?: Buffer }, field: string): void {
  try {
    createSecureContext(pem);
  } catch (err) {
    throw new LoomError('INVALID_ARGUMENT', `${keyToFlag(field)} and its key are not usable together: ${(err as Error).message}`, { field });
  }
}
