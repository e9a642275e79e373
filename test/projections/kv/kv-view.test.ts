// The KV view reads most puts in place (readKvPutFields) and the rest through msgpackr; both ways
// must leave byte-identical views and give the same outcomes, conflicts, TTLs and history included.

import { Packr } from 'msgpackr';
import * as path from 'node:path';
import type { LogEntry } from '../../../src/eventlog';
import { KvProjection, ProjectionRunner, ViewStore, encodeMutation } from '../../../src/projections';
import { silentLogger } from '../../../src/util';
import { seededRandom } from '../../support/seeded';
import { makeTempDir, removeDir } from '../../support/tmp';

const packr = new Packr({ useRecords: false, moreTypes: false });

/**
 * A log of puts (plain, conditional, with TTL, into a bucket with history), deletes and bucket
 * settings over names of every printable ASCII character, some longer than 64 bytes. With
 * `inPlace` false every put carries a field the view ignores, which sends it through msgpackr.
 */
function mixedLog(inPlace: boolean): LogEntry[] {
  const random = seededRandom(7);
  const keys = ['k', 'a/b', 'user/1', ' spaced key ', '~!"#$%&()*+,:;<>?@[\\]^`{|}', 'x'.repeat(65), 'y'.repeat(300), 'user/10'];
  const buckets = ['plain', 'kept', 'Z-9_'];
  const out: LogEntry[] = [];
  const entry = (type: string, data: Uint8Array): void => {
    const index = out.length + 1;
    out.push({ index, term: 1, type, data, ts: 1_000_000 + index * 10 });
  };
  entry('kv.bucket', encodeMutation('kv.bucket', { bucket: 'kept', history: 3 }).data);
  for (let i = 0; i < 1500; i++) {
    const bucket = buckets[Math.floor(random() * buckets.length)];
    const key = keys[Math.floor(random() * keys.length)];
    const roll = random();
    if (roll < 0.1) {
      entry('kv.del', encodeMutation('kv.del', { bucket, key: 'k' }).data);
      continue;
    }
    const body: Record<string, unknown> = { v: 1, bucket, key, value: Buffer.from(`value ${i}`.repeat(1 + (i % 20))) };
    if (roll < 0.25) body.expectRev = Math.floor(random() * (out.length + 1));
    else if (roll < 0.35) body.create = random() < 0.7;
    else if (roll < 0.45) body.ttlMs = 1 + Math.floor(random() * 100_000);
    if (!inPlace) body.ignored = true;
    entry('kv.put', packr.pack(body));
  }
  return out;
}

function applyAll(dir: string, log: LogEntry[]): { outcomes: unknown[]; dump: Array<[string, string, string]> } {
  const store = new ViewStore(dir);
  const runner = new ProjectionRunner(new KvProjection(store), store, silentLogger());
  const outcomes: unknown[] = [];
  for (let i = 0; i < log.length; ) {
    const size = 1 + ((i * 7919) % 97);
    outcomes.push(...runner.apply(log.slice(i, i + size)));
    i += size;
  }
  const dump = [...store.dump()].map(([db, key, value]): [string, string, string] => [db, key.toString('hex'), value.toString('hex')]);
  void store.close();
  return { outcomes, dump };
}

describe('the KV view', () => {
  let dir: string;
  beforeEach(() => {
    dir = makeTempDir();
  });
  afterEach(() => removeDir(dir));

  it('leaves the same bytes and outcomes whether it reads a put in place or through msgpackr', () => {
    const inPlace = applyAll(path.join(dir, 'in-place'), mixedLog(true));
    const decoded = applyAll(path.join(dir, 'decoded'), mixedLog(false));
    expect(inPlace.outcomes.filter((o) => (o as { ok?: boolean } | undefined)?.ok === false).length).toBeGreaterThan(50);
    expect(inPlace.dump.filter(([db]) => db === 'kv').length).toBeGreaterThan(10);
    expect(inPlace.dump.filter(([db]) => db === 'kv-history').length).toBeGreaterThan(10);
    expect(inPlace.dump.filter(([db]) => db === 'ttl').length).toBeGreaterThan(0);
    expect(inPlace.outcomes).toEqual(decoded.outcomes);
    expect(inPlace.dump).toEqual(decoded.dump);
  });

  it('finds a key it wrote in place through the readers that name it by strings', () => {
    const store = new ViewStore(path.join(dir, 'v'));
    const runner = new ProjectionRunner(new KvProjection(store), store, silentLogger());
    const put = (index: number, key: string, value: string): LogEntry => ({
      index,
      term: 1,
      type: 'kv.put',
      data: encodeMutation('kv.put', { bucket: 'b', key, value: Buffer.from(value) }).data,
      ts: index,
    });
    // Keys that are prefixes of one another, written longest first, then rewritten shortest first.
    runner.apply([put(1, 'abcdefgh', '1'), put(2, 'abcd', '2'), put(3, 'abc', '3'), put(4, 'a', '4')]);
    runner.apply([put(5, 'a', '5'), put(6, 'abc', '6'), put(7, 'abcd', '7'), put(8, 'abcdefgh', '8')]);
    const got = ['a', 'abc', 'abcd', 'abcdefgh'].map((key) => {
      const record = store.getKv('b', key);
      return [key, Buffer.from(record?.value ?? []).toString(), record?.createRev];
    });
    expect(got).toEqual([
      ['a', '5', 4],
      ['abc', '6', 3],
      ['abcd', '7', 2],
      ['abcdefgh', '8', 1],
    ]);
    void store.close();
  });
});
