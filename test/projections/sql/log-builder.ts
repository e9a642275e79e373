// Builds committed log entries for SQL view tests with the real door (encodeMutation), so the
// tests feed exactly what a node would append, timestamps included.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { LogEntry } from '../../../src/eventlog';
import { encodeMutation, type MutationType } from '../../../src/projections/entries';

export const baseTs = 1_700_000_000_000;

export class LogBuilder {
  readonly entries: LogEntry[] = [];

  add(type: MutationType | 'raft.noop', body: unknown = {}): this {
    const index = this.entries.length + 1;
    const data = type === 'raft.noop' ? new Uint8Array(0) : encodeMutation(type, body).data;
    this.entries.push({ index, term: 1, type, data, ts: baseTs + index * 1000 });
    return this;
  }

  put(bucket: string, key: string, value: string | Uint8Array, extra: { expectRev?: number; create?: boolean } = {}): this {
    const bytes = typeof value === 'string' ? new TextEncoder().encode(value) : value;
    return this.add('kv.put', { bucket, key, value: bytes, ...extra });
  }

  del(bucket: string, key: string, extra: { expectRev?: number } = {}): this {
    return this.add('kv.del', { bucket, key, ...extra });
  }

  append(stream: string, type: string, data: unknown, expectVersion?: number): this {
    return this.add('event.append', expectVersion === undefined ? { stream, type, data } : { stream, type, data, expectVersion });
  }

  /** The entries in batches of `size`, as the applier hands them over. */
  batches(size: number): LogEntry[][] {
    const out: LogEntry[][] = [];
    for (let i = 0; i < this.entries.length; i += size) out.push(this.entries.slice(i, i + size));
    return out;
  }
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `loom-${prefix}-`));
}
