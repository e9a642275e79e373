// Subject validation and the subject trie: the NATS rules for tokens and wildcards, queue groups,
// and a match cache that stays exact as subscriptions come and go.

import { isValidLiteralSubject, isValidSubject } from '../../src/bus';
import { hasWildcard, subjectMatchesFilter } from '../../src/bus/subject';
import { EMPTY_MATCH, Sublist } from '../../src/bus/sublist';
import type { BusClient, Subscriber } from '../../src/bus/sublist';

describe('subject validation', () => {
  it.each(['foo', 'foo.bar', 'foo.*', 'foo.>', '*', '>', 'foo.*.baz', 'foo*', 'foo>', 'foo.bar*', '$KV.b.k', 'a.b.c.d.e'])(
    'accepts %s as a subscription subject',
    (s) => expect(isValidSubject(s)).toBe(true),
  );
  it.each(['', '.', 'foo.', '.foo', 'foo..bar', 'foo.>.bar', '>.foo', 'foo bar', 'foo\tbar', 'foo\r\n'])(
    'refuses %j as a subscription subject',
    (s) => expect(isValidSubject(s)).toBe(false),
  );
  it.each(['foo.*', 'foo.>', '*', '>', 'foo.', '.foo', 'foo..*'])('refuses %j as a publish subject', (s) =>
    expect(isValidLiteralSubject(s)).toBe(false),
  );
  it.each(['foo', 'foo*', 'foo>', 'foo.bar*', '_INBOX.abc.1'])('accepts %j as a publish subject (literal tokens)', (s) =>
    expect(isValidLiteralSubject(s)).toBe(true),
  );
  it('sees wildcards only as whole tokens', () => {
    expect(hasWildcard('foo.*')).toBe(true);
    expect(hasWildcard('>')).toBe(true);
    expect(hasWildcard('foo*')).toBe(false);
    expect(hasWildcard('a.b>.c')).toBe(false);
  });
  it.each([
    ['foo.bar', 'foo.*', true],
    ['foo.bar', 'foo.>', true],
    ['foo', 'foo.>', false],
    ['foo.bar.baz', 'foo.*', false],
    ['foo.bar.baz', '*.bar.*', true],
    ['foo.bar', 'foo.bar', true],
    ['foo*', 'foo.*', false],
  ])('matches %s against filter %s: %s', (subject, filter, expected) =>
    expect(subjectMatchesFilter(subject as string, filter as string)).toBe(expected),
  );
});

const client: BusClient = { clientId: 1, echo: true, headersSupported: true };
function sub(subject: string, queue?: string): Subscriber {
  return { subject, queue, client, closed: false, deliver: () => undefined };
}

describe('Sublist', () => {
  it('matches literals, * and > like NATS', () => {
    const list = new Sublist();
    const subs = ['foo.bar', 'foo.*', 'foo.>', '>', '*.bar', 'foo.bar.baz'].map((s) => sub(s));
    subs.forEach((s) => list.insert(s));
    const names = (subject: string): string[] => list.match(subject).plain.map((s) => s.subject).sort();
    expect(names('foo.bar')).toEqual(['*.bar', '>', 'foo.*', 'foo.>', 'foo.bar'].sort());
    expect(names('foo.bar.baz')).toEqual(['>', 'foo.>', 'foo.bar.baz'].sort());
    expect(names('foo')).toEqual(['>']);
  });

  it('groups queue subscribers by name across different filters', () => {
    const list = new Sublist();
    list.insert(sub('work.a', 'g'));
    list.insert(sub('work.*', 'g'));
    list.insert(sub('work.>', 'h'));
    const result = list.match('work.a');
    expect(result.plain).toHaveLength(0);
    expect(result.queues.map((q) => q.length).sort()).toEqual([1, 2]);
  });

  it('keeps the cache exact when subscriptions are added and removed', () => {
    const list = new Sublist();
    expect(list.match('a.b')).toBe(EMPTY_MATCH);
    const wide = sub('a.>');
    list.insert(wide);
    expect(list.match('a.b').plain).toEqual([wide]);
    const unrelated = sub('x.y');
    list.insert(unrelated);
    expect(list.match('a.b').plain).toEqual([wide]);
    expect(list.remove(wide)).toBe(true);
    expect(list.match('a.b')).toBe(EMPTY_MATCH);
    expect(list.remove(wide)).toBe(false);
    expect(list.count).toBe(1);
  });

  it('matches a subject after its first token gains a subscription, having matched nothing before', () => {
    const list = new Sublist({ cacheEntriesMax: 4 });
    list.insert(sub('$LOOM.API.>'));
    expect(list.match('$KV.b.k')).toBe(EMPTY_MATCH);
    const watcher = sub('$KV.b.*');
    list.insert(watcher);
    expect(list.match('$KV.b.k').plain).toEqual([watcher]);
    list.remove(watcher);
    expect(list.match('$KV.b.k')).toBe(EMPTY_MATCH);
  });

  it('forgets the oldest cached subject when the cache is full', () => {
    const list = new Sublist({ cacheEntriesMax: 2 });
    const s = sub('>');
    list.insert(s);
    for (const subject of ['a', 'b', 'c', 'd']) expect(list.match(subject).plain).toEqual([s]);
  });

  it('prunes empty trie nodes so inbox churn does not grow it', () => {
    const list = new Sublist();
    for (let i = 0; i < 1000; i++) {
      const s = sub(`_INBOX.${i}.x`);
      list.insert(s);
      list.remove(s);
    }
    expect(list.count).toBe(0);
    expect((list as unknown as { root: { literals: Map<string, unknown> } }).root.literals.size).toBe(0);
  });
});
