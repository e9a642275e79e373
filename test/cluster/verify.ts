// Checks after a cluster test: every node's log holds the same committed entries, and every
// acknowledged write is in it exactly once, at its revision, in each writer's order.

import * as path from 'node:path';
import { LmdbLog, type LogEntry } from '../../src/eventlog';
import { decodeMutation, type KvPut } from '../../src/projections';
import type { Ack, TestCluster } from './cluster';

export function readCommitted(dir: string): LogEntry[] {
  const log = LmdbLog.open({ path: path.join(dir, 'log'), readOnly: true });
  try {
    const commit = log.hardState().commit;
    const out: LogEntry[] = [];
    for (let i = log.firstIndex(); i <= commit; ) {
      const batch = log.entries(i, commit + 1);
      out.push(...batch);
      i += batch.length;
    }
    return out;
  } finally {
    void log.close();
  }
}

export function putValue(entry: LogEntry): string | undefined {
  if (entry.type !== 'kv.put') return undefined;
  const m = decodeMutation(entry);
  return Buffer.from((m?.body as KvPut).value as Uint8Array).toString();
}

/** Fails with a description of the first broken promise; returns the number of entries compared. */
export function verifyAcks(cluster: TestCluster, acks: Ack[], commitIndex: number, nodeIds = cluster.nodes.map((n) => n.id)): number {
  const logs = nodeIds.map((id) => readCommitted(cluster.node(id).dir).filter((e) => e.index <= commitIndex));
  const reference = logs[0];
  expect(reference.length).toBe(commitIndex);
  for (let n = 1; n < logs.length; n++) {
    expect(logs[n].length).toBe(reference.length);
    for (let i = 0; i < reference.length; i++) {
      const a = reference[i];
      const b = logs[n][i];
      if (a.index !== b.index || a.term !== b.term || a.type !== b.type || Buffer.compare(Buffer.from(a.data), Buffer.from(b.data)) !== 0) {
        throw new Error(`node ${nodeIds[n]} differs from node ${nodeIds[0]} at index ${a.index}`);
      }
    }
  }
  const where = new Map<string, number[]>();
  for (const e of reference) {
    const v = putValue(e);
    if (v === undefined) continue;
    const list = where.get(v) ?? [];
    list.push(e.index);
    where.set(v, list);
  }
  const lastRev = new Map<number, number>();
  for (const ack of acks) {
    const at = where.get(ack.value);
    if (!at || at.length !== 1 || at[0] !== ack.rev) throw new Error(`acknowledged write ${ack.value} (rev ${ack.rev}) is in the log at ${JSON.stringify(at ?? [])}`);
    const before = lastRev.get(ack.writer) ?? 0;
    if (ack.rev <= before) throw new Error(`writer ${ack.writer}'s write ${ack.value} at ${ack.rev} is not after its previous one at ${before}`);
    lastRev.set(ack.writer, ack.rev);
  }
  return reference.length;
}
