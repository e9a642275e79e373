// Listing a bucket's names (keys, objects) page by page. The cursor is the last name returned,
// opaque to clients, so a listing is stable under concurrent writes: every name that exists
// throughout shows up exactly once, and names added behind the cursor are not.

import type { Database } from 'lmdb';
import { LoomError } from '../util';

export interface NamePage<T> {
  items: T[];
  cursor?: string;
}

/** Entries of `db` keyed `[bucket, name]` whose name starts with `prefix`, after `cursor`. */
export function pageByName<V, T>(
  db: Database<V, [string, string]>,
  bucket: string,
  prefix: string,
  limit: number,
  cursor: string | undefined,
  toItem: (name: string, value: V) => T,
): NamePage<T> {
  const after = cursor === undefined ? undefined : decodeCursor(cursor);
  if (after !== undefined && !after.startsWith(prefix)) {
    throw new LoomError('INVALID_ARGUMENT', 'cursor does not belong to this prefix', { field: 'cursor' });
  }
  const items: T[] = [];
  let lastName = '';
  let more = false;
  // No end key: the names under a prefix sort together (LMDB orders keys by their UTF-8 bytes), so
  // the scan stops at the first that is not. An end of `${prefix}\uffff` left out every name with a
  // character beyond U+FFFF after the prefix (an emoji: F0 ... sorts after EF BF BF).
  for (const { key, value } of db.getRange({ start: [bucket, after ?? prefix] })) {
    const [keyBucket, name] = key;
    if (keyBucket !== bucket || !name.startsWith(prefix)) break;
    if (name === after) continue;
    if (items.length === limit) {
      more = true;
      break;
    }
    items.push(toItem(name, value));
    lastName = name;
  }
  const page: NamePage<T> = { items };
  if (more) page.cursor = nameCursor(lastName);
  return page;
}

/** The cursor that continues a listing after `name`: a door that sends fewer items makes it from the last one it sends. */
export function nameCursor(name: string): string {
  return Buffer.from(name).toString('base64url');
}

/** Bytes of the longest name a cursor may hold (object names and keys: 1024). */
const cursorNameBytesMax = 1024;

/**
 * The name a cursor holds. Only what nameCursor could have written is accepted: canonical
 * base64url of 1-1024 bytes of well-formed UTF-8 without NUL. Anything else would start the page
 * at some arbitrary place (often past every name: an empty page that looks like the end).
 */
function decodeCursor(cursor: unknown): string {
  const invalid = (): LoomError => new LoomError('INVALID_ARGUMENT', `cursor ${JSON.stringify(cursor)} is not one this server issued`, { field: 'cursor' });
  if (typeof cursor !== 'string' || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw invalid();
  const bytes = Buffer.from(cursor, 'base64url');
  const name = bytes.toString();
  // Invalid UTF-8 decodes to U+FFFD, and stray bits of a non-canonical encoding are dropped: either
  // way the name does not encode back to the same cursor.
  if (bytes.length === 0 || bytes.length > cursorNameBytesMax || name.includes('\u0000') || nameCursor(name) !== cursor) throw invalid();
  return name;
}
