// Tests of the linearizability checker itself, on histories known to be linearizable or not,
// including concurrent, pending (never returned) and per-key partitioned operations.

import { checkOperations, kvModel } from './linearizability';
import type { KvInput, KvOutput, Operation } from './linearizability';

type Op = Operation<KvInput, KvOutput>;

function put(clientId: number, key: string, value: string, call: number, ret: number): Op {
  return { clientId, input: { kind: 'put', key, value }, output: null, call, ret };
}

function get(clientId: number, key: string, output: string | null, call: number, ret: number): Op {
  return { clientId, input: { kind: 'get', key }, output, call, ret };
}

const linearizable = (ops: Op[]) => checkOperations(kvModel, ops).ok;

describe('the linearizability checker (Wing & Gong with memoization, per key)', () => {
  it('accepts an empty history and a sequential one', () => {
    expect(linearizable([])).toBe(true);
    expect(linearizable([put(1, 'k', 'a', 1, 2), get(2, 'k', 'a', 3, 4), put(1, 'k', 'b', 5, 6), get(2, 'k', 'b', 7, 8)])).toBe(true);
  });

  it('rejects a stale read after a completed write', () => {
    expect(linearizable([put(1, 'k', 'a', 1, 2), get(2, 'k', null, 3, 4)])).toBe(false);
    expect(linearizable([put(1, 'k', 'a', 1, 2), put(1, 'k', 'b', 3, 4), get(2, 'k', 'a', 5, 6)])).toBe(false);
  });

  it('lets a read overlapping a write see either value', () => {
    expect(linearizable([put(1, 'k', 'a', 1, 10), get(2, 'k', null, 2, 3)])).toBe(true);
    expect(linearizable([put(1, 'k', 'a', 1, 10), get(2, 'k', 'a', 2, 3)])).toBe(true);
  });

  it('rejects reads that see a value appear and then disappear', () => {
    // the write overlaps both reads, but once a read saw 'a' a later read cannot see the old value
    expect(linearizable([put(1, 'k', 'a', 1, 10), get(2, 'k', 'a', 2, 3), get(3, 'k', null, 4, 5)])).toBe(false);
  });

  it('orders concurrent writes consistently for every reader', () => {
    const writes = [put(1, 'k', 'a', 1, 10), put(2, 'k', 'b', 1, 10)];
    expect(linearizable([...writes, get(3, 'k', 'a', 11, 12), get(4, 'k', 'a', 13, 14)])).toBe(true);
    // after both writes completed, a reader sees b then a: impossible
    expect(linearizable([...writes, get(3, 'k', 'b', 11, 12), get(4, 'k', 'a', 13, 14)])).toBe(false);
    // while they are in flight, readers may see a then b
    expect(linearizable([put(1, 'k', 'a', 1, 20), put(2, 'k', 'b', 1, 20), get(3, 'k', 'a', 2, 3), get(4, 'k', 'b', 4, 5)])).toBe(true);
  });

  it('lets a write that never returned take effect at any later point, or never', () => {
    expect(linearizable([put(1, 'k', 'a', 1, Infinity), get(2, 'k', null, 2, 3), get(2, 'k', 'a', 4, 5)])).toBe(true);
    expect(linearizable([put(1, 'k', 'a', 1, Infinity), get(2, 'k', null, 2, 3)])).toBe(true);
    // but not before it was called
    expect(linearizable([get(2, 'k', 'a', 1, 2), put(1, 'k', 'a', 3, Infinity)])).toBe(false);
  });

  it('checks each key on its own: a violation on one key is found among many', () => {
    const ops: Op[] = [];
    let t = 0;
    for (let i = 0; i < 200; i++) {
      const key = `k${i % 10}`;
      ops.push(put(1, key, `v${i}`, ++t, ++t));
      ops.push(get(2, key, `v${i}`, ++t, ++t));
    }
    expect(linearizable(ops)).toBe(true);
    ops.push(get(3, 'k7', 'v7', ++t, ++t)); // k7 was overwritten since
    expect(checkOperations(kvModel, ops)).toMatchObject({ ok: false, failedPartition: 7 });
  });

  it('stays fast on a wide concurrent history thanks to memoization', () => {
    // 12 writes all concurrent, then reads of the last value: 12! orders without the memo
    const ops: Op[] = [];
    for (let c = 0; c < 12; c++) ops.push(put(c, 'k', `v${c}`, 1, 100));
    ops.push(get(99, 'k', 'v11', 101, 102));
    const started = Date.now();
    expect(linearizable(ops)).toBe(true);
    ops.push(get(98, 'k', 'v10', 103, 104));
    expect(linearizable(ops)).toBe(false);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});
