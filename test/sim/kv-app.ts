// The replicated state machine the simulator runs on every node: a tiny key-value map whose
// entries carry the client and operation ids, so a client learns when its own put was applied.

import type { LogEntry } from '../../src/eventlog';

export const entryTypePut = 'kv.put';

export interface PutCommand {
  client: number;
  op: number;
  key: string;
  value: string;
}

export function encodePut(put: PutCommand): Uint8Array {
  return Buffer.from(JSON.stringify(put));
}

export function decodePut(entry: LogEntry): PutCommand {
  return JSON.parse(Buffer.from(entry.data).toString('utf8')) as PutCommand;
}

export class KvApp {
  applied = 0;
  readonly data = new Map<string, string>();

  /** Applies one committed entry; returns the put it carried, if any. */
  apply(entry: LogEntry): PutCommand | undefined {
    this.applied = entry.index;
    if (entry.type !== entryTypePut) return undefined;
    const put = decodePut(entry);
    this.data.set(put.key, put.value);
    return put;
  }

  snapshot(): Uint8Array {
    return Buffer.from(JSON.stringify({ applied: this.applied, data: [...this.data] }));
  }

  restore(bytes: Uint8Array, index: number): void {
    this.data.clear();
    if (bytes.byteLength > 0) {
      const parsed = JSON.parse(Buffer.from(bytes).toString('utf8')) as { applied: number; data: [string, string][] };
      for (const [k, v] of parsed.data) this.data.set(k, v);
    }
    this.applied = index;
  }
}

/** A stable fingerprint of an entry's identity, for comparing entries across nodes. */
export function fingerprint(entry: LogEntry): string {
  return `${entry.term}|${entry.type}|${Buffer.from(entry.data).toString('latin1')}`;
}
