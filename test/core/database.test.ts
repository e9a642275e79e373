import { Bus } from '../../src/bus';
import { openDatabase, type OpenDatabase } from '../../src/core';
import { LmdbLog, type LogStore } from '../../src/eventlog';
import type { Change } from '../../src/projections';
import { LoomError, silentLogger } from '../../src/util';
import { makeTempDir, removeDir } from '../support/tmp';

async function expectCode(promise: Promise<unknown>, code: string): Promise<LoomError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LoomError);
  expect((err as LoomError).code).toBe(code);
  return err as LoomError;
}

describe('the database API on one node', () => {
  let dir: string;
  let log: LogStore;
  let opened: OpenDatabase;
  let clock: number;
  let bus: Bus;

  beforeEach(async () => {
    dir = makeTempDir();
    clock = 1_800_000_000_000;
    bus = new Bus();
    log = LmdbLog.open({ path: `${dir}/log` });
    opened = await openDatabase({ log, viewsDir: `${dir}/views`, logger: silentLogger(), bus, now: () => clock, ttlScanIntervalMs: 60_000 });
  });
  afterEach(async () => {
    await opened.close();
    await log.close();
    removeDir(dir);
  });

  describe('KV', () => {
    it('puts and gets a key with its revisions and timestamp', async () => {
      const { db } = opened;
      const first = await db.kv.put('users', 'alice', '{"age":30}');
      const second = await db.kv.put('users', 'alice', '{"age":31}');
      const got = await db.kv.get('users', 'alice');
      expect(Buffer.from(got.value).toString()).toBe('{"age":31}');
      expect(got).toMatchObject({ rev: second.rev, createRev: first.rev, updatedAt: clock });
      expect(second.rev).toBe(first.rev + 1);
    });

    it('rejects a put whose expected revision is stale, with the current revision, identically on replay', async () => {
      const { db } = opened;
      const { rev } = await db.kv.put('users', 'bob', 'v1');
      await db.kv.put('users', 'bob', 'v2', { expectRev: rev });
      const err = await expectCode(db.kv.put('users', 'bob', 'v3', { expectRev: rev }), 'CONFLICT');
      expect(err.details).toMatchObject({ bucket: 'users', key: 'bob', currentRev: rev + 1 });
      expect(Buffer.from((await db.kv.get('users', 'bob')).value).toString()).toBe('v2');
      await expectCode(db.kv.put('users', 'bob', 'again', { create: true }), 'CONFLICT');
      const created = await db.kv.put('users', 'carol', 'new', { create: true });
      expect(created.rev).toBeGreaterThan(0);
    });

    it('deletes a key, and a stale expected revision on delete conflicts', async () => {
      const { db } = opened;
      const { rev } = await db.kv.put('b', 'k', 'v');
      await expectCode(db.kv.delete('b', 'k', { expectRev: rev - 1 }), 'CONFLICT');
      await db.kv.delete('b', 'k', { expectRev: rev });
      await expectCode(db.kv.get('b', 'k'), 'NOT_FOUND');
    });

    it('lists by prefix with a limit and a cursor, every key exactly once under concurrent writes', async () => {
      const { db } = opened;
      for (let i = 0; i < 25; i++) await db.kv.put('cfg', `app/${String(i).padStart(2, '0')}`, `${i}`);
      await db.kv.put('cfg', 'other/x', 'x');
      const seen: string[] = [];
      let cursor: string | undefined;
      let round = 0;
      do {
        const page = await db.kv.list('cfg', { prefix: 'app/', limit: 7, cursor });
        seen.push(...page.items.map((i) => i.key));
        cursor = page.cursor;
        // A writer rewrites keys already listed and adds one ahead of the cursor.
        await db.kv.put('cfg', 'app/00', `rewrite-${round}`);
        if (round === 0) await db.kv.put('cfg', 'app/99', 'late');
        round++;
      } while (cursor);
      const expected = [...Array.from({ length: 25 }, (_, i) => `app/${String(i).padStart(2, '0')}`), 'app/99'];
      expect(seen).toEqual(expected);
      await expectCode(db.kv.list('cfg', { cursor: '!!' }), 'INVALID_ARGUMENT');
    });

    it('keeps the last N revisions when the bucket asks for history', async () => {
      const { db } = opened;
      await db.kv.setHistory('h', 3);
      const revs: number[] = [];
      for (let i = 1; i <= 5; i++) revs.push((await db.kv.put('h', 'k', `v${i}`)).rev);
      expect(Buffer.from((await db.kv.getRevision('h', 'k', revs[2])).value as Uint8Array).toString()).toBe('v3');
      expect(Buffer.from((await db.kv.getRevision('h', 'k', revs[4])).value as Uint8Array).toString()).toBe('v5');
      await expectCode(db.kv.getRevision('h', 'k', revs[1]), 'NOT_FOUND');
      const other = await db.kv.put('default-bucket', 'k', 'a');
      await db.kv.put('default-bucket', 'k', 'b');
      await expectCode(db.kv.getRevision('default-bucket', 'k', other.rev), 'NOT_FOUND');
    });

    it('expires a key through a kv.del the leader proposes, publishing a DEL', async () => {
      const { db } = opened;
      const sub = bus.subscribe('$KV.sessions.>');
      await db.kv.put('sessions', 's1', 'token', { ttlMs: 1000 });
      await db.kv.put('sessions', 's2', 'token', { ttlMs: 5000 });
      const rewritten = await db.kv.put('sessions', 's3', 'token', { ttlMs: 1000 });
      await db.kv.put('sessions', 's3', 'kept', { expectRev: rewritten.rev });
      clock += 2000;
      const expirer = new (await import('../../src/core')).Expirer({ db, logger: silentLogger(), now: () => clock, isLeader: () => true });
      expect(await expirer.scan()).toBe(1);
      await expectCode(db.kv.get('sessions', 's1'), 'NOT_FOUND');
      expect((await db.kv.get('sessions', 's2')).expiresAt).toBe(clock - 2000 + 5000);
      expect(Buffer.from((await db.kv.get('sessions', 's3')).value).toString()).toBe('kept');
      const ops: string[] = [];
      for await (const msg of sub) {
        ops.push(`${msg.subject} ${msg.headers?.get('Loom-Op')}`);
        if (ops.length === 5) break;
      }
      expect(ops).toEqual(['$KV.sessions.s1 PUT', '$KV.sessions.s2 PUT', '$KV.sessions.s3 PUT', '$KV.sessions.s3 PUT', '$KV.sessions.s1 DEL']);
    });

    it('refuses bad names and oversized values at the door, appending nothing', async () => {
      const { db } = opened;
      const before = log.lastIndex();
      expect((await expectCode(db.kv.put('bad bucket', 'k', 'v'), 'INVALID_ARGUMENT')).message).toMatch(/bucket "bad bucket" is invalid/);
      expect((await expectCode(db.kv.put('b', '.dot', 'v'), 'INVALID_ARGUMENT')).message).toMatch(/key ".dot" is invalid/);
      await expectCode(db.kv.put('b', 'a b', 'v'), 'INVALID_ARGUMENT');
      await expectCode(db.kv.put('b', 'k'.repeat(1025), 'v'), 'INVALID_ARGUMENT');
      expect((await expectCode(db.kv.put('b', 'k', Buffer.alloc(1024 * 1024)), 'TOO_LARGE')).message).toMatch(/valueBytesMax/);
      await expectCode(db.kv.put('b', 'k', 'v', { expectRev: -1 }), 'INVALID_ARGUMENT');
      await expectCode(db.kv.list('b', { limit: 0 }), 'INVALID_ARGUMENT');
      expect(log.lastIndex()).toBe(before);
    });
  });

  describe('event streams', () => {
    it('appends with optimistic concurrency and reads a stream and all streams', async () => {
      const { db } = opened;
      const a1 = await db.events.append('orders-1', { type: 'order.created', data: { id: 1 }, expectVersion: 0 });
      const a2 = await db.events.append('orders-1', { type: 'order.paid', data: { amount: 5 }, expectVersion: 1 });
      await db.events.append('orders-2', { type: 'order.created', data: { id: 2 } });
      expect([a1.version, a2.version]).toEqual([1, 2]);
      const err = await expectCode(db.events.append('orders-1', { type: 'order.paid', data: {}, expectVersion: 1 }), 'CONFLICT');
      expect(err.details).toMatchObject({ stream: 'orders-1', currentVersion: 2 });
      await expectCode(db.events.append('orders-3', { type: 'x', data: {}, expectVersion: 0 }).then(() => db.events.append('orders-3', { type: 'x', data: {}, expectVersion: 0 })), 'CONFLICT');
      const read = await db.events.read('orders-1', { fromVersion: 2 });
      expect(read).toEqual([{ seq: a2.seq, stream: 'orders-1', version: 2, type: 'order.paid', data: { amount: 5 }, ts: clock }]);
      const all = await db.events.readAll({ fromSeq: 0, limit: 3 });
      expect(all.map((e) => `${e.stream}:${e.version}`)).toEqual(['orders-1:1', 'orders-1:2', 'orders-2:1']);
    });

    it('refuses ill-typed event input, appending nothing', async () => {
      const { db } = opened;
      const before = log.lastIndex();
      await expectCode(db.events.append('s', { type: '', data: {} }), 'INVALID_ARGUMENT');
      await expectCode(db.events.append('s', { type: 'ok', data: undefined }), 'INVALID_ARGUMENT');
      await expectCode(db.events.append('s', { type: 'ok', data: 1n as unknown }), 'INVALID_ARGUMENT');
      await expectCode(db.events.append('s', { type: 'ok', data: {}, expectVersion: 1.5 }), 'INVALID_ARGUMENT');
      await expectCode(db.events.append('s', { type: 'ok', data: 'x'.repeat(1024 * 1024) }), 'TOO_LARGE');
      await expectCode(db.events.append('s', { type: 'ok', data: {}, extra: 1 } as never), 'INVALID_ARGUMENT');
      expect(log.lastIndex()).toBe(before);
    });
  });

  describe('watch', () => {
    async function take(watch: AsyncIterableIterator<Change>, n: number): Promise<Change[]> {
      const out: Change[] = [];
      for await (const change of watch) {
        out.push(change);
        if (out.length === n) break;
      }
      return out;
    }

    it('replays from a seq, then follows live writes, with no gap and no duplicate', async () => {
      const { db } = opened;
      for (let i = 0; i < 50; i++) await db.kv.put('w', `k${i}`, `${i}`);
      const watch = db.watch('$KV.w.>', { fromSeq: 20 });
      const writers = (async () => {
        for (let i = 50; i < 150; i++) await db.kv.put(i % 2 ? 'w' : 'other', `k${i}`, `${i}`);
      })();
      const got = await take(watch, 30 + 50);
      await writers;
      const seqs = got.map((c) => c.seq);
      expect(seqs[0]).toBe(21);
      for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBeGreaterThan(seqs[i - 1]);
      expect(got.every((c) => c.subject.startsWith('$KV.w.'))).toBe(true);
      expect(new Set(seqs).size).toBe(seqs.length);
    });

    it('resumes after a restart of the watcher from its last seq, delivering exactly the rest', async () => {
      const { db } = opened;
      const writers = (async () => {
        for (let i = 0; i < 200; i++) await db.events.append('s', { type: 'tick', data: { i } });
      })();
      const first = await take(db.watch('$EV.s.>', { fromSeq: 0 }), 60);
      const resumed = await take(db.watch('$EV.s.>', { fromSeq: first[first.length - 1].seq }), 140);
      await writers;
      const all = [...first, ...resumed].map((c) => (c.kind === 'event' ? (c.data as { i: number }).i : -1));
      expect(all).toEqual(Array.from({ length: 200 }, (_, i) => i));
    });

    it('tells a watcher and a bus subscriber that arrive after unobserved writes all they should', async () => {
      const { db } = opened;
      // Nobody watches or subscribes yet: these batches publish no change at all.
      for (let i = 0; i < 30; i++) await db.kv.put('late', `k${i}`, `${i}`);
      const onBus: string[] = [];
      bus.subscribe('$KV.late.>', { callback: (m) => onBus.push(`${m.subject} ${Buffer.from(m.data).toString()}`) });
      const watch = db.watch('$KV.late.>', { fromSeq: 0 });
      for (let i = 30; i < 35; i++) await db.kv.put('late', `k${i}`, `${i}`);
      const changes = await take(watch, 35);
      expect(changes.map((c) => (c.kind === 'kv' ? `${c.key}=${Buffer.from(c.value).toString()}` : '?'))).toEqual(
        Array.from({ length: 35 }, (_, i) => `k${i}=${i}`),
      );
      // Live bus delivery is at-most-once: the subscriber hears of the writes after it subscribed.
      expect(onBus).toEqual(Array.from({ length: 5 }, (_, i) => `$KV.late.k${30 + i} ${30 + i}`));
      // And a watcher that comes later still replays everything.
      expect((await take(db.watch('$KV.late.>', { fromSeq: 0 }), 35)).map((c) => c.seq)).toEqual(changes.map((c) => c.seq));
    });

    it('skips conflicting entries in both replay and live delivery', async () => {
      const { db } = opened;
      await db.kv.put('c', 'k', 'a');
      await expectCode(db.kv.put('c', 'k', 'b', { create: true }), 'CONFLICT');
      const live = db.watch('$KV.c.>', { fromSeq: 0 });
      await db.kv.put('c', 'k', 'c');
      const changes = await take(live, 2);
      expect(changes.map((c) => Buffer.from(c.kind === 'kv' ? c.value : new Uint8Array()).toString())).toEqual(['a', 'c']);
    });

    it('keeps a slow watcher gap-free by falling back to the log when its buffer overflows', async () => {
      const { db, core, feed } = opened;
      const watch = (await import('../../src/core')).watchChanges(
        '$KV.slow.>',
        { fromSeq: 0, bufferChangesMax: 5 },
        { log, reader: db.reader, feed, appliedIndex: () => core.status().appliedIndex },
      );
      const pendingFirst = watch.next();
      await Promise.all(Array.from({ length: 100 }, (_, i) => db.kv.put('slow', `k${i}`, 'v')));
      const firstChange = await pendingFirst;
      const rest = await take(watch, 99);
      const seqs = [firstChange.value as Change, ...rest].map((c) => c.seq);
      expect(seqs).toEqual(Array.from({ length: 100 }, (_, i) => seqs[0] + i));
      watch.close();
    });

    it('answers overlapping next() calls in order, each change once', async () => {
      const { db } = opened;
      for (let i = 0; i < 30; i++) await db.kv.put(i % 3 ? 'o' : 'other', `k${i}`, `${i}`);
      const watch = db.watch('$KV.o.>', { fromSeq: 0 });
      const results = await Promise.all(Array.from({ length: 20 }, () => watch.next()));
      expect(results.map((r) => (r.value as Change & { key: string }).key)).toEqual(Array.from({ length: 30 }, (_, i) => i).filter((i) => i % 3).map((i) => `k${i}`));
      watch.close();
      expect(await watch.next()).toEqual({ done: true, value: undefined });
    });

    it('matches filters on every kind of change, including wildcards in the first token', async () => {
      const { db } = opened;
      await db.kv.put('m', 'k', 'v');
      await db.events.append('m', { type: 't', data: 1 });
      await db.kv.delete('m', 'k');
      const subjects = async (filter: string): Promise<string[]> => (await take(db.watch(filter, { fromSeq: 0 }), 3)).map((c) => c.subject);
      expect(await subjects('>')).toEqual(['$KV.m.k', '$EV.m.t', '$KV.m.k']);
      expect(await subjects('*.m.*')).toEqual(['$KV.m.k', '$EV.m.t', '$KV.m.k']);
      const none = db.watch('KV.m.>', { fromSeq: 0 });
      await db.kv.put('m', 'k2', 'v');
      await db.events.append('m', { type: 'after', data: 2 });
      const next = await take(db.watch('$EV.>', { fromSeq: 0 }), 2);
      expect(next.map((c) => c.seq)).toEqual([2, 5]);
      none.close();
      expect(await none.next()).toEqual({ done: true, value: undefined });
    });

    it('replays event versions and values exactly as they were delivered live', async () => {
      const { db } = opened;
      const live = db.watch('>', { fromSeq: 0 });
      for (let i = 0; i < 3; i++) {
        await db.events.append('v', { type: 't', data: { i } });
        await db.kv.put('v', `k${i}`, `value ${i}`);
      }
      const form = (c: Change): unknown => (c.kind === 'event' ? [c.seq, c.version, c.data] : c.kind === 'kv' ? [c.seq, Buffer.from(c.value).toString()] : c.seq);
      const delivered = (await take(live, 6)).map(form);
      const replayed = (await take(db.watch('>', { fromSeq: 0 }), 6)).map(form);
      expect(replayed).toEqual(delivered);
      expect(delivered).toEqual([[1, 1, { i: 0 }], [2, 'value 0'], [3, 2, { i: 1 }], [4, 'value 1'], [5, 3, { i: 2 }], [6, 'value 2']]);
    });

    it('refuses an invalid subject filter', () => {
      expect(() => opened.db.watch('$KV..x')).toThrow(/not a valid subject filter/);
    });
  });
});
