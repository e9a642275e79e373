// Message headers: an ordered multimap with an optional status (`NATS/1.0 503 No Responders`),
// and the codec for the `NATS/1.0` header block that HPUB/HMSG carry on the wire.

import { LoomError } from '../util';

const VERSION_LINE = 'NATS/1.0';
const CRLF = '\r\n';

/** Status code the server sends to a requester when nobody is subscribed to the subject. */
export const STATUS_NO_RESPONDERS = 503;

export class MsgHeaders {
  /** 0 when the block has no status line; otherwise the 3-digit code (503, 408, …). */
  status = 0;
  description = '';
  private readonly entries = new Map<string, string[]>();

  static fromRecord(record: Record<string, string | string[]>): MsgHeaders {
    const headers = new MsgHeaders();
    for (const [key, value] of Object.entries(record)) {
      for (const v of Array.isArray(value) ? value : [value]) headers.append(key, v);
    }
    return headers;
  }

  /** The first value of `key`; an exact-case match wins, else any case (HTTP habits die hard). */
  get(key: string): string | undefined {
    return this.values(key)[0];
  }

  values(key: string): string[] {
    const exact = this.entries.get(key);
    if (exact) return exact;
    const lower = key.toLowerCase();
    for (const [k, v] of this.entries) if (k.toLowerCase() === lower) return v;
    return [];
  }

  has(key: string): boolean {
    return this.values(key).length > 0;
  }

  set(key: string, value: string): this {
    checkHeader(key, value);
    this.entries.set(key, [value]);
    return this;
  }

  append(key: string, value: string): this {
    checkHeader(key, value);
    const existing = this.entries.get(key);
    if (existing) existing.push(value);
    else this.entries.set(key, [value]);
    return this;
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  keys(): string[] {
    return [...this.entries.keys()];
  }

  get size(): number {
    return this.entries.size;
  }

  /** The wire block, ending with the empty line: what HPUB's header-size counts. */
  encode(): Buffer {
    let text = this.statusLine() + CRLF;
    for (const [key, values] of this.entries) {
      for (const value of values) text += `${key}: ${value}${CRLF}`;
    }
    return Buffer.from(text + CRLF, 'utf8');
  }

  /** encode()'s length, without building the block: for a size check before a publish, which encodes. */
  encodedBytes(): number {
    let bytes = Buffer.byteLength(this.statusLine()) + 2 * CRLF.length;
    for (const [key, values] of this.entries) {
      for (const value of values) bytes += Buffer.byteLength(key) + 2 + Buffer.byteLength(value) + CRLF.length;
    }
    return bytes;
  }

  private statusLine(): string {
    if (this.status === 0) return VERSION_LINE;
    return this.description ? `${VERSION_LINE} ${this.status} ${this.description}` : `${VERSION_LINE} ${this.status}`;
  }

  /** Parses a header block as sent by any NATS client or server; malformed blocks are refused. */
  static decode(block: Uint8Array): MsgHeaders {
    // nats.js sends `HPUB … 0 <size>` for an empty headers object: no block means no headers.
    if (block.byteLength === 0) return new MsgHeaders();
    const text = Buffer.from(block.buffer, block.byteOffset, block.byteLength).toString('utf8');
    const lines = text.split(CRLF);
    const first = lines[0];
    if (!first.startsWith(VERSION_LINE)) {
      throw new LoomError('INVALID_ARGUMENT', `header block must start with ${VERSION_LINE}`, { line: first });
    }
    const headers = new MsgHeaders();
    const statusText = first.slice(VERSION_LINE.length).trim();
    if (statusText.length > 0) {
      const space = statusText.indexOf(' ');
      const code = space < 0 ? statusText : statusText.slice(0, space);
      if (!/^\d{3}$/.test(code)) {
        throw new LoomError('INVALID_ARGUMENT', 'header status must be a 3-digit code', { line: first });
      }
      headers.status = Number(code);
      headers.description = space < 0 ? '' : statusText.slice(space + 1).trim();
    }
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i];
      if (line.length === 0) continue;
      const colon = line.indexOf(':');
      if (colon <= 0) throw new LoomError('INVALID_ARGUMENT', 'header line has no key', { line });
      const key = line.slice(0, colon);
      const value = line.slice(colon + 1).trim();
      const existing = headers.entries.get(key);
      if (existing) existing.push(value);
      else headers.entries.set(key, [value]);
    }
    return headers;
  }
}

// A CR or LF would end the header block early and let a value forge another header or message.
function checkHeader(key: string, value: string): void {
  if (key.length === 0 || /[\s:]/.test(key)) {
    throw new LoomError('INVALID_ARGUMENT', 'header key must be non-empty, without whitespace or colon', { key });
  }
  if (/[\r\n]/.test(value)) {
    throw new LoomError('INVALID_ARGUMENT', 'header value must not contain CR or LF', { key });
  }
}

/** The header block of a status-only message, e.g. the 503 a requester gets with no responders. */
export function statusBlock(status: number, description = ''): Buffer {
  const headers = new MsgHeaders();
  headers.status = status;
  headers.description = description;
  return headers.encode();
}
