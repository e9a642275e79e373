// The in-process bus: publish, subscribe (callback or async iterable) and request/reply over one
// subject space that socket clients of the NATS server share. No socket, no copy of payloads.

import { randomBytes } from 'node:crypto';
import { LoomError, assert, silentLogger } from '../util';
import type { Logger } from '../util';
import { MsgHeaders, STATUS_NO_RESPONDERS, statusBlock } from './headers';
import { isValidLiteralSubject, isValidSubject } from './subject';
import { EMPTY_MATCH, Sublist } from './sublist';
import type { BusClient, Subscriber } from './sublist';

export const BUS_DEFAULTS = {
  maxPayloadBytes: 1024 * 1024,
  requestTimeoutMs: 5000,
  /** Messages an async-iterated subscription holds before it drops new ones (slow consumer). */
  pendingMsgsMax: 65536,
  cacheEntriesMax: 1024,
} as const;

export interface BusOptions {
  logger?: Logger;
  maxPayloadBytes?: number;
  cacheEntriesMax?: number;
}

export interface PublishOptions {
  headers?: MsgHeaders;
  reply?: string;
}

export interface SubscribeOptions {
  queue?: string;
  /** Unsubscribe automatically after this many messages. */
  max?: number;
  /** Called synchronously for each message; without it, iterate the subscription. */
  callback?: (msg: Msg) => void;
  pendingMsgsMax?: number;
}

export interface RequestOptions {
  timeoutMs?: number;
  headers?: MsgHeaders;
}

export type Payload = Uint8Array | string;

const EMPTY_PAYLOAD = Buffer.alloc(0);

export function toBuffer(data: Payload | undefined): Buffer {
  if (data === undefined) return EMPTY_PAYLOAD;
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (Buffer.isBuffer(data)) return data;
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** One delivered message. `data` may share memory with the publisher's buffer: do not mutate it. */
export class Msg {
  private decodedHeaders: MsgHeaders | undefined;

  constructor(
    readonly subject: string,
    readonly reply: string | undefined,
    readonly data: Buffer,
    /** The raw `NATS/1.0` block, decoded only if someone reads `headers`. */
    readonly headerBlock: Buffer | undefined,
    private readonly bus: Bus,
  ) {}

  get headers(): MsgHeaders | undefined {
    if (this.headerBlock === undefined) return undefined;
    return (this.decodedHeaders ??= MsgHeaders.decode(this.headerBlock));
  }

  string(): string {
    return this.data.toString('utf8');
  }

  json<T = unknown>(): T {
    return JSON.parse(this.string()) as T;
  }

  /** Publishes to this message's reply subject; false when it has none. */
  respond(data?: Payload, options: { headers?: MsgHeaders } = {}): boolean {
    if (this.reply === undefined) return false;
    this.bus.publish(this.reply, data, { headers: options.headers });
    return true;
  }
}

/** A subscription of the in-process side; iterate it, or pass `callback` when subscribing. */
export class Subscription implements Subscriber, AsyncIterable<Msg> {
  closed = false;
  received = 0;
  /** Messages dropped because an iterating consumer fell `pendingMsgsMax` behind. */
  dropped = 0;
  readonly client: BusClient;
  private max: number | undefined;
  private readonly queued: Msg[] = [];
  private waiter: ((result: IteratorResult<Msg>) => void) | undefined;
  private closedResolve!: () => void;
  private failure: unknown;
  /** Resolves when the subscription is closed (unsubscribe, max reached, bus closed). */
  readonly closedPromise: Promise<void>;

  constructor(
    private readonly bus: Bus,
    readonly subject: string,
    readonly queue: string | undefined,
    private readonly options: SubscribeOptions,
    private readonly logger: Logger,
  ) {
    this.client = bus.localClient;
    this.max = options.max;
    this.closedPromise = new Promise((resolve) => (this.closedResolve = resolve));
  }

  deliver(subject: string, reply: string | undefined, headerBlock: Buffer | undefined, payload: Buffer): void {
    if (this.closed) return;
    this.received++;
    const msg = new Msg(subject, reply, payload, headerBlock, this.bus);
    const last = this.max !== undefined && this.received >= this.max;
    if (last) this.bus.removeSubscriber(this);
    const callback = this.options.callback;
    if (callback) {
      try {
        callback(msg);
      } catch (err) {
        // The publisher must not pay for a subscriber's bug; the subscription ends with the error.
        this.logger.error({ err, subject: this.subject }, 'bus subscription callback threw; closing it');
        this.failure = err;
        this.close();
        return;
      }
    } else if (this.waiter) {
      const waiter = this.waiter;
      this.waiter = undefined;
      waiter({ value: msg, done: false });
    } else if (this.queued.length >= (this.options.pendingMsgsMax ?? BUS_DEFAULTS.pendingMsgsMax)) {
      if (this.dropped++ === 0) this.logger.warn({ subject: this.subject }, 'bus subscriber too slow; dropping');
    } else {
      this.queued.push(msg);
    }
    if (last) this.close();
  }

  /** Stops now, or after `max` messages in total when given and not yet reached. */
  unsubscribe(max?: number): void {
    if (this.closed) return;
    if (max !== undefined && max > this.received) {
      this.max = max;
      return;
    }
    this.close();
  }

  /** Stops receiving, then resolves once an iterating consumer has taken every queued message. */
  async drain(): Promise<void> {
    this.bus.removeSubscriber(this);
    if (this.options.callback || this.queued.length === 0) this.close();
    return this.closedPromise;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** The error a throwing callback ended this subscription with, if any. */
  get error(): unknown {
    return this.failure;
  }

  close(): void {
    if (this.closed) return;
    this.bus.removeSubscriber(this);
    this.closed = true;
    if (this.waiter && this.queued.length === 0) {
      const waiter = this.waiter;
      this.waiter = undefined;
      waiter({ value: undefined, done: true });
    }
    if (this.queued.length === 0) this.closedResolve();
  }

  [Symbol.asyncIterator](): AsyncIterator<Msg> {
    assert(!this.options.callback, 'a subscription with a callback cannot also be iterated');
    return {
      next: () => {
        const msg = this.queued.shift();
        if (msg) {
          if (this.closed && this.queued.length === 0) this.closedResolve();
          return Promise.resolve({ value: msg, done: false });
        }
        if (this.closed || this.draining()) {
          this.close();
          this.closedResolve();
          return Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve) => (this.waiter = resolve));
      },
      return: () => {
        this.queued.length = 0;
        this.close();
        this.closedResolve();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  private draining(): boolean {
    return !this.bus.hasSubscriber(this);
  }
}

let nextClientId = 1;

/** Ids for every bus client (in-process sides and socket connections) share one counter. */
export function allocateClientId(): number {
  return nextClientId++;
}

export class Bus {
  readonly localClient: BusClient = { clientId: allocateClientId(), echo: true, headersSupported: true };
  readonly maxPayloadBytes: number;
  private readonly sublist: Sublist;
  private readonly logger: Logger;
  private readonly members = new Set<Subscriber>();
  private isClosed = false;
  private readonly inboxPrefix = `_INBOX.${randomBytes(12).toString('hex')}.`;
  private inboxSubscription: Subscription | undefined;
  private requestCounter = 0;
  private readonly pendingRequests = new Map<string, { onReply(msg: Msg): void; fail(err: unknown): void }>();

  constructor(options: BusOptions = {}) {
    this.logger = (options.logger ?? silentLogger()).child({ component: 'bus' });
    this.maxPayloadBytes = options.maxPayloadBytes ?? BUS_DEFAULTS.maxPayloadBytes;
    this.sublist = new Sublist({ cacheEntriesMax: options.cacheEntriesMax ?? BUS_DEFAULTS.cacheEntriesMax });
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Number of subscriptions of every client, in-process and socket. */
  get subscriptionCount(): number {
    return this.sublist.count;
  }

  publish(subject: string, data?: Payload, options: PublishOptions = {}): void {
    this.checkOpen();
    this.publishCounted(subject, data, options.headers, options.reply);
  }

  subscribe(subject: string, options: SubscribeOptions = {}): Subscription {
    this.checkOpen();
    if (!isValidSubject(subject)) throw new LoomError('INVALID_ARGUMENT', 'invalid subscription subject', { subject });
    if (options.queue !== undefined && !isValidQueueName(options.queue)) {
      throw new LoomError('INVALID_ARGUMENT', 'invalid queue group name', { queue: options.queue });
    }
    if (options.max !== undefined && !(Number.isInteger(options.max) && options.max > 0)) {
      throw new LoomError('INVALID_ARGUMENT', 'max must be a positive integer', { max: options.max });
    }
    const sub = new Subscription(this, subject, options.queue, options, this.logger);
    this.addSubscriber(sub);
    return sub;
  }

  /**
   * Publishes with a reply inbox and resolves with the first reply. Rejects UNAVAILABLE when nobody
   * is subscribed to `subject` (no responders), TIMEOUT after `timeoutMs`.
   */
  request(subject: string, data?: Payload, options: RequestOptions = {}): Promise<Msg> {
    this.checkOpen();
    const timeoutMs = options.timeoutMs ?? BUS_DEFAULTS.requestTimeoutMs;
    this.inboxSubscription ??= this.subscribe(`${this.inboxPrefix}*`, {
      callback: (msg) => this.pendingRequests.get(msg.subject.slice(this.inboxPrefix.length))?.onReply(msg),
    });
    const token = (this.requestCounter++).toString(36);
    return new Promise<Msg>((resolve, reject) => {
      const fail = (err: unknown): void => {
        clearTimeout(timer);
        this.pendingRequests.delete(token);
        reject(err);
      };
      const timer = setTimeout(
        () => fail(new LoomError('TIMEOUT', `request on ${subject} got no reply within ${timeoutMs} ms`, { subject, timeoutMs })),
        timeoutMs,
      );
      const onReply = (msg: Msg): void => {
        if (msg.headerBlock !== undefined && msg.headers?.status === STATUS_NO_RESPONDERS) return fail(noResponders(subject));
        clearTimeout(timer);
        this.pendingRequests.delete(token);
        resolve(msg);
      };
      // Registered before publishing: an in-process responder answers inside publish itself.
      this.pendingRequests.set(token, { onReply, fail });
      try {
        const delivered = this.publishCounted(subject, data, options.headers, `${this.inboxPrefix}${token}`);
        if (delivered === 0 && this.pendingRequests.has(token)) fail(noResponders(subject));
      } catch (err) {
        fail(err);
      }
    });
  }

  /** Stops every in-process subscription after its queued messages are consumed. */
  async drain(): Promise<void> {
    const local = [...this.members].filter((s): s is Subscription => s instanceof Subscription);
    await Promise.all(local.map((s) => s.drain()));
    await this.close();
  }

  /** Ends every in-process subscription and fails pending requests; publish then throws. */
  async close(): Promise<void> {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const sub of [...this.members]) if (sub instanceof Subscription) sub.close();
    for (const pending of [...this.pendingRequests.values()]) pending.fail(new LoomError('UNAVAILABLE', 'the bus is closed'));
  }

  // ---- used by the NATS server in this folder; not part of the API other folders use ----

  addSubscriber(sub: Subscriber): void {
    this.members.add(sub);
    this.sublist.insert(sub);
  }

  removeSubscriber(sub: Subscriber): void {
    if (!this.members.delete(sub)) return;
    this.sublist.remove(sub);
  }

  /** True when some subscription matches: lets a caller skip building a message nobody gets. */
  hasInterest(subject: string): boolean {
    return this.sublist.match(subject) !== EMPTY_MATCH;
  }

  /** False when no subscription can match a subject that starts with `token` (e.g. `$KV`). */
  hasInterestUnder(token: string): boolean {
    return this.sublist.mayMatchUnder(token);
  }

  hasSubscriber(sub: Subscriber): boolean {
    return this.members.has(sub);
  }

  /** Delivers to every plain subscriber and one member per queue group; returns deliveries made. */
  route(from: BusClient, subject: string, reply: string | undefined, headerBlock: Buffer | undefined, payload: Buffer): number {
    const result = this.sublist.match(subject);
    let delivered = 0;
    const plain = result.plain;
    for (let i = 0; i < plain.length; i++) {
      const sub = plain[i];
      if (sub.closed || (sub.client === from && !from.echo)) continue;
      sub.deliver(subject, reply, headerBlock, payload);
      delivered++;
    }
    const queues = result.queues;
    for (let q = 0; q < queues.length; q++) {
      const members = queues[q];
      const start = (Math.random() * members.length) | 0;
      // Start at a random member and take the first that can receive: each group gets one copy.
      for (let k = 0; k < members.length; k++) {
        const sub = members[(start + k) % members.length];
        if (sub.closed || (sub.client === from && !from.echo)) continue;
        sub.deliver(subject, reply, headerBlock, payload);
        delivered++;
        break;
      }
    }
    return delivered;
  }

  /** Tells a requester that nobody listens: a `NATS/1.0 503` status message on its reply subject. */
  sendNoResponders(to: BusClient, reply: string): void {
    const result = this.sublist.match(reply);
    const block = statusBlock(STATUS_NO_RESPONDERS);
    for (const sub of result.plain) {
      if (sub.client === to && !sub.closed) sub.deliver(reply, undefined, block, EMPTY_PAYLOAD);
    }
    for (const members of result.queues) {
      const sub = members.find((m) => m.client === to && !m.closed);
      if (sub) sub.deliver(reply, undefined, block, EMPTY_PAYLOAD);
    }
  }

  private publishCounted(subject: string, data: Payload | undefined, headers: MsgHeaders | undefined, reply: string | undefined): number {
    if (!isValidLiteralSubject(subject)) {
      throw new LoomError('INVALID_ARGUMENT', 'publish subject must be a valid subject without wildcards', { subject });
    }
    if (reply !== undefined && !isValidLiteralSubject(reply)) {
      throw new LoomError('INVALID_ARGUMENT', 'reply subject must be a valid subject without wildcards', { reply });
    }
    const payload = toBuffer(data);
    const headerBlock = headers?.encode();
    const size = payload.length + (headerBlock === undefined ? 0 : headerBlock.length);
    if (size > this.maxPayloadBytes) {
      throw new LoomError('TOO_LARGE', 'message exceeds maxPayloadBytes', { size, maxPayloadBytes: this.maxPayloadBytes });
    }
    return this.route(this.localClient, subject, reply, headerBlock, payload);
  }

  private checkOpen(): void {
    if (this.isClosed) throw new LoomError('UNAVAILABLE', 'the bus is closed');
  }
}

function noResponders(subject: string): LoomError {
  return new LoomError('UNAVAILABLE', `no responders on ${subject}`, { subject, noResponders: true });
}

/** Queue group names follow the subject token rules: no whitespace, non-empty. */
export function isValidQueueName(queue: string): boolean {
  if (queue.length === 0) return false;
  for (let i = 0; i < queue.length; i++) {
    const c = queue.charCodeAt(i);
    if (c === 32 || c === 9 || c === 13 || c === 10) return false;
  }
  return true;
}
