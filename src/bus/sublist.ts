// The subject trie: subscriptions stored by token, matched against literal publish subjects, with
// a bounded match cache so that publishing to a hot subject (or to one nobody wants) costs a Map get.

import { assert } from '../util';
import { subjectMatchesFilter } from './subject';

/** Whoever owns subscriptions: one socket connection, or the in-process side of a Bus. */
export interface BusClient {
  readonly clientId: number;
  /** False when the client asked not to receive its own publications (CONNECT echo:false). */
  readonly echo: boolean;
  /** False when the client cannot parse HMSG; it then gets MSG with the headers stripped. */
  readonly headersSupported: boolean;
}

/** One subscription as the trie sees it. Delivery gets raw bytes: no decode on the routing path. */
export interface Subscriber {
  readonly subject: string;
  readonly queue: string | undefined;
  readonly client: BusClient;
  /** Set once the subscriber leaves the trie; a cached match result may still hold it. */
  closed: boolean;
  deliver(subject: string, reply: string | undefined, headerBlock: Buffer | undefined, payload: Buffer): void;
}

export interface MatchResult {
  readonly plain: readonly Subscriber[];
  /** One array per queue group; each group gets one copy of the message. */
  readonly queues: readonly (readonly Subscriber[])[];
}

export const EMPTY_MATCH: MatchResult = Object.freeze({ plain: [], queues: [] });

class TrieNode {
  readonly literals = new Map<string, TrieNode>();
  star: TrieNode | undefined;
  full: TrieNode | undefined;
  readonly plain = new Set<Subscriber>();
  readonly queues = new Map<string, Set<Subscriber>>();

  isEmpty(): boolean {
    return this.literals.size === 0 && !this.star && !this.full && this.plain.size === 0 && this.queues.size === 0;
  }
}

export interface SublistOptions {
  /** Distinct subjects whose match results are remembered; oldest forgotten first. */
  cacheEntriesMax?: number;
}

export class Sublist {
  private readonly root = new TrieNode();
  private readonly cache = new Map<string, MatchResult>();
  private readonly cacheEntriesMax: number;
  private subscriberCount = 0;

  constructor(options: SublistOptions = {}) {
    this.cacheEntriesMax = options.cacheEntriesMax ?? 4096;
    assert(this.cacheEntriesMax >= 0, 'cacheEntriesMax must not be negative');
  }

  get count(): number {
    return this.subscriberCount;
  }

  insert(sub: Subscriber): void {
    let node = this.root;
    for (const token of sub.subject.split('.')) {
      if (token === '*') node = node.star ??= new TrieNode();
      else if (token === '>') node = node.full ??= new TrieNode();
      else {
        let next = node.literals.get(token);
        if (!next) node.literals.set(token, (next = new TrieNode()));
        node = next;
      }
    }
    if (sub.queue === undefined) node.plain.add(sub);
    else {
      let group = node.queues.get(sub.queue);
      if (!group) node.queues.set(sub.queue, (group = new Set()));
      group.add(sub);
    }
    this.subscriberCount++;
    this.invalidate(sub.subject);
  }

  /** Removes `sub`; returns false when it was not in the trie (already removed). */
  remove(sub: Subscriber): boolean {
    const removed = this.removeAt(this.root, sub.subject.split('.'), 0, sub);
    if (removed) {
      this.subscriberCount--;
      this.invalidate(sub.subject);
    }
    return removed;
  }

  /**
   * False only when no subscription can match any subject whose first token is `token` (none
   * starts with that token, `*` or `>`): a publisher may then skip building such messages at all.
   */
  mayMatchUnder(token: string): boolean {
    const root = this.root;
    return root.full !== undefined || root.star !== undefined || root.literals.has(token);
  }

  match(subject: string): MatchResult {
    // No subscription starts with this subject's first token (and none at the root is a wildcard):
    // answered without the cache, so change subjects nobody watches do not crowd it out.
    if (this.root.star === undefined && this.root.full === undefined) {
      const dot = subject.indexOf('.');
      if (!this.root.literals.has(dot < 0 ? subject : subject.slice(0, dot))) return EMPTY_MATCH;
    }
    const cached = this.cache.get(subject);
    if (cached !== undefined) return cached;
    const found: Found = { plain: undefined, queues: undefined };
    collect(this.root, subject.split('.'), 0, found);
    const result: MatchResult =
      found.plain === undefined && found.queues === undefined
        ? EMPTY_MATCH
        : { plain: found.plain ?? [], queues: found.queues ? [...found.queues.values()] : [] };
    if (this.cacheEntriesMax > 0) {
      if (this.cache.size >= this.cacheEntriesMax) this.evictOldest();
      this.cache.set(subject, result);
    }
    return result;
  }

  /**
   * Forgets the oldest quarter of the cache (Map iteration is insertion order). In batches: a Map
   * iterated from its start walks past the slots of deleted keys until V8 next rehashes it, so
   * evicting one entry per miss made every miss pay for all earlier evictions — and with unique
   * subjects (request inboxes, many keys) nearly every publish is a miss.
   */
  private evictOldest(): void {
    let evict = Math.max(1, this.cacheEntriesMax >> 2);
    for (const subject of this.cache.keys()) {
      this.cache.delete(subject);
      if (--evict === 0) break;
    }
  }

  private removeAt(node: TrieNode, tokens: string[], i: number, sub: Subscriber): boolean {
    if (i === tokens.length) {
      if (sub.queue === undefined) return node.plain.delete(sub);
      const group = node.queues.get(sub.queue);
      if (!group || !group.delete(sub)) return false;
      if (group.size === 0) node.queues.delete(sub.queue);
      return true;
    }
    const token = tokens[i];
    const child = token === '*' ? node.star : token === '>' ? node.full : node.literals.get(token);
    if (!child) return false;
    const removed = this.removeAt(child, tokens, i + 1, sub);
    if (removed && child.isEmpty()) {
      // Prune so that a churn of short-lived subjects (inboxes) does not grow the trie forever.
      if (token === '*') node.star = undefined;
      else if (token === '>') node.full = undefined;
      else node.literals.delete(token);
    }
    return removed;
  }

  // Only cached subjects the changed filter matches can have a different result now.
  private invalidate(filter: string): void {
    for (const subject of this.cache.keys()) {
      if (subjectMatchesFilter(subject, filter)) this.cache.delete(subject);
    }
  }
}

/** What a match collects; allocated only when a subscriber is found (most misses find none). */
interface Found {
  plain: Subscriber[] | undefined;
  queues: Map<string, Subscriber[]> | undefined;
}

function collect(node: TrieNode, tokens: string[], i: number, found: Found): void {
  if (i === tokens.length) {
    addSubscribers(node, found);
    return;
  }
  if (node.full) addSubscribers(node.full, found);
  if (node.star) collect(node.star, tokens, i + 1, found);
  const literal = node.literals.get(tokens[i]);
  if (literal) collect(literal, tokens, i + 1, found);
}

function addSubscribers(node: TrieNode, found: Found): void {
  if (node.plain.size > 0) {
    const plain = (found.plain ??= []);
    for (const sub of node.plain) plain.push(sub);
  }
  if (node.queues.size === 0) return;
  const queues = (found.queues ??= new Map());
  for (const [name, group] of node.queues) {
    let members = queues.get(name);
    if (!members) queues.set(name, (members = []));
    for (const sub of group) members.push(sub);
  }
}
