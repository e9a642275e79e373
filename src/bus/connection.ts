// One NATS client connection's protocol state: CONNECT options, its subscriptions, the outbound
// buffer with its slow-consumer limit. It writes to a Transport, so it runs without a socket in tests.

import { timingSafeEqual } from 'node:crypto';
import { LoomError, assert } from '../util';
import type { Logger } from '../util';
import { allocateClientId, isValidQueueName } from './bus';
import type { Bus } from './bus';
import { ClientParser, PROTOCOL_ERRORS } from './parser';
import type { ClientOpHandler } from './parser';
import { isValidLiteralSubject, isValidSubject } from './subject';
import type { BusClient, Subscriber } from './sublist';

/** What a connection needs from its socket; net.Socket and tls.TLSSocket satisfy it. */
export interface Transport {
  write(data: Buffer): unknown;
  /** Bytes handed to write() that the transport has not yet passed to the kernel. */
  readonly writableLength: number;
  end(): unknown;
  destroy(): unknown;
}

export interface ConnectionLimits {
  maxPayloadBytes: number;
  maxControlLineBytes: number;
  pendingBytesMax: number;
  subscriptionsMax: number;
  pingsOutstandingMax: number;
}

export interface ConnectionAuth {
  authToken?: string;
  user?: string;
  password?: string;
}

export interface ConnectionHooks {
  /** Called once when the connection ends, whatever the reason; the server forgets it. */
  onClosed(connection: Connection, reason: string): void;
  /** Asks for `connection.flush()` once the current turn of work is done (batched writes). */
  scheduleFlush(connection: Connection): void;
}

const OUT_BYTES_INITIAL = 32 * 1024;
/** A flush is forced once this much waits in the outbound buffer, even mid-turn. */
const OUT_BYTES_FLUSH = 64 * 1024;

class RemoteSubscription implements Subscriber {
  closed = false;
  delivered = 0;
  max: number | undefined;

  constructor(
    readonly subject: string,
    readonly queue: string | undefined,
    readonly sid: string,
    readonly client: Connection,
  ) {}

  deliver(subject: string, reply: string | undefined, headerBlock: Buffer | undefined, payload: Buffer): void {
    this.client.sendMsg(this, subject, reply, headerBlock, payload);
  }
}

export class Connection implements BusClient, ClientOpHandler {
  readonly clientId = allocateClientId();
  echo = true;
  headersSupported = false;
  verbose = false;
  pedantic = false;
  noResponders = false;
  connected = false;
  closed = false;
  pingsOutstanding = 0;
  name = '';
  readonly parser: ClientParser;
  private readonly subscriptions = new Map<string, RemoteSubscription>();
  private out: Buffer | undefined;
  private outLength = 0;
  private flushScheduled = false;
  /** The subject of the previous PUB, already validated: a publisher rarely changes subject. */
  private lastValidSubject = '';

  constructor(
    private readonly transport: Transport,
    private readonly bus: Bus,
    private readonly limits: ConnectionLimits,
    private readonly auth: ConnectionAuth,
    private readonly hooks: ConnectionHooks,
    private readonly logger: Logger,
  ) {
    this.parser = new ClientParser(this, limits);
  }

  get authRequired(): boolean {
    return this.auth.authToken !== undefined || this.auth.user !== undefined;
  }

  get subscriptionCount(): number {
    return this.subscriptions.size;
  }

  /** Bytes waiting to reach the kernel: our buffer plus the transport's. */
  get pendingBytes(): number {
    return this.outLength + this.transport.writableLength;
  }

  /** Feeds bytes read from the socket. A protocol violation answers -ERR and closes. */
  receive(chunk: Buffer): void {
    if (this.closed) return;
    try {
      this.parser.parse(chunk);
    } catch (err) {
      if (err instanceof LoomError && typeof err.details.natsError === 'string') {
        this.logger.debug({ clientId: this.clientId, err: err.message }, 'protocol violation');
        this.fail(err.details.natsError, 'protocol violation');
        return;
      }
      throw err;
    }
  }

  // ---- client ops (ClientOpHandler) ----

  connect(json: string): void {
    let options: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(json);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
      options = parsed as Record<string, unknown>;
    } catch {
      this.fail(PROTOCOL_ERRORS.unknownOperation, 'CONNECT arguments are not a JSON object');
      return;
    }
    const protocol = options.protocol ?? 0;
    if (typeof protocol !== 'number' || protocol < 0 || protocol > 1) {
      this.fail(PROTOCOL_ERRORS.badClientProtocol, 'unsupported client protocol');
      return;
    }
    if (!this.authorized(options)) {
      this.fail(PROTOCOL_ERRORS.authorizationViolation, 'authorization violation');
      return;
    }
    const headers = options.headers === true;
    const noResponders = options.no_responders === true;
    if (noResponders && !headers) {
      this.fail(PROTOCOL_ERRORS.noRespondersRequiresHeaders, 'no_responders without headers');
      return;
    }
    this.headersSupported = headers;
    this.noResponders = noResponders;
    this.verbose = options.verbose === true;
    this.pedantic = options.pedantic === true;
    this.echo = options.echo !== false;
    this.name = typeof options.name === 'string' ? options.name : '';
    this.connected = true;
    this.ok_();
  }

  pub(subject: string, reply: string | undefined, source: Buffer, start: number, headerBytes: number, end: number): void {
    if (!this.admitted()) return;
    if (headerBytes >= 0 && !this.headersSupported) {
      this.fail(PROTOCOL_ERRORS.unknownOperation, 'HPUB without headers in CONNECT');
      return;
    }
    if (subject !== this.lastValidSubject) {
      if (!isValidLiteralSubject(subject)) {
        // nats-server only complains in pedantic mode; either way the message goes nowhere.
        if (this.pedantic) this.sendErr(PROTOCOL_ERRORS.invalidPublishSubject);
        else this.ok_();
        return;
      }
      this.lastValidSubject = subject;
    }
    if (reply !== undefined && !isValidLiteralSubject(reply)) {
      if (this.pedantic) this.sendErr(PROTOCOL_ERRORS.invalidPublishSubject);
      else this.ok_();
      return;
    }
    let delivered = 0;
    if (this.bus.hasInterest(subject)) {
      const payloadStart = headerBytes >= 0 ? start + headerBytes : start;
      const headerBlock = headerBytes >= 0 ? source.subarray(start, payloadStart) : undefined;
      delivered = this.bus.route(this, subject, reply, headerBlock, source.subarray(payloadStart, end));
    }
    if (delivered === 0 && reply !== undefined && this.noResponders) this.bus.sendNoResponders(this, reply);
    this.ok_();
  }

  sub(subject: string, queue: string | undefined, sid: string): void {
    if (!this.admitted()) return;
    if (!isValidSubject(subject) || (queue !== undefined && !isValidQueueName(queue))) {
      this.sendErr(PROTOCOL_ERRORS.invalidSubject);
      return;
    }
    if (this.subscriptions.has(sid)) {
      this.ok_(); // A repeated SUB with a known sid keeps the first, as nats-server does.
      return;
    }
    if (this.subscriptions.size >= this.limits.subscriptionsMax) {
      this.sendErr(PROTOCOL_ERRORS.subscriptionsExceeded);
      return;
    }
    const sub = new RemoteSubscription(subject, queue, sid, this);
    this.subscriptions.set(sid, sub);
    this.bus.addSubscriber(sub);
    this.ok_();
  }

  unsub(sid: string, max: number | undefined): void {
    if (!this.admitted()) return;
    const sub = this.subscriptions.get(sid);
    if (sub) {
      if (max !== undefined && max > sub.delivered) sub.max = max;
      else this.removeSubscription(sub);
    }
    this.ok_();
  }

  ping(): void {
    if (!this.admitted()) return;
    this.writeControl('PONG\r\n');
  }

  pong(): void {
    this.pingsOutstanding = 0;
  }

  ok(): void {
    // Clients do not owe the server +OK; accepted and ignored like nats-server does.
  }

  err(message: string): void {
    this.logger.debug({ clientId: this.clientId, message }, 'client sent -ERR');
  }

  // ---- outbound ----

  sendMsg(sub: RemoteSubscription, subject: string, reply: string | undefined, headerBlock: Buffer | undefined, payload: Buffer): void {
    if (this.closed || sub.closed) return;
    const withHeaders = headerBlock !== undefined && this.headersSupported;
    const headerBytes = withHeaders ? headerBlock.length : 0;
    const total = headerBytes + payload.length;
    const line = withHeaders
      ? reply === undefined
        ? `HMSG ${subject} ${sub.sid} ${headerBytes} ${total}\r\n`
        : `HMSG ${subject} ${sub.sid} ${reply} ${headerBytes} ${total}\r\n`
      : reply === undefined
        ? `MSG ${subject} ${sub.sid} ${total}\r\n`
        : `MSG ${subject} ${sub.sid} ${reply} ${total}\r\n`;
    // Worst case for UTF-8 is 3 bytes per UTF-16 unit; subjects are nearly always ASCII.
    const bytesMax = line.length * 3 + total + 2;
    if (this.outLength + this.transport.writableLength + bytesMax > this.limits.pendingBytesMax) {
      this.slowConsumer();
      return;
    }
    const out = this.reserve(bytesMax);
    let at = this.outLength;
    at += out.write(line, at, 'utf8');
    if (withHeaders) at += headerBlock.copy(out, at);
    at += payload.copy(out, at);
    out[at++] = 13;
    out[at++] = 10;
    this.outLength = at;
    sub.delivered++;
    if (sub.max !== undefined && sub.delivered >= sub.max) this.removeSubscription(sub);
    this.afterAppend();
  }

  /** Sends a server PING; the server's timer calls this, and closes stale connections first. */
  sendPing(): void {
    if (this.closed) return;
    if (this.pingsOutstanding >= this.limits.pingsOutstandingMax) {
      this.fail(PROTOCOL_ERRORS.staleConnection, 'stale connection');
      return;
    }
    this.pingsOutstanding++;
    this.writeControl('PING\r\n');
  }

  writeControl(text: string): void {
    if (this.closed) return;
    const bytes = Buffer.byteLength(text);
    if (this.outLength + this.transport.writableLength + bytes > this.limits.pendingBytesMax) {
      this.slowConsumer();
      return;
    }
    const out = this.reserve(bytes);
    this.outLength += out.write(text, this.outLength, 'utf8');
    this.afterAppend();
  }

  /** Hands everything buffered to the transport in one write. */
  flush(): void {
    this.flushScheduled = false;
    if (this.outLength === 0 || this.out === undefined) return;
    const data = this.out.subarray(0, this.outLength);
    this.outLength = 0;
    this.transport.write(data);
    // A write the kernel took at once leaves nothing queued, so the buffer is free to reuse;
    // otherwise the transport still holds a view of it and the next batch needs a new one.
    if (this.transport.writableLength !== 0) this.out = undefined;
  }

  /** Sends `-ERR '<text>'`, flushes, and closes. */
  fail(natsError: string, reason: string): void {
    if (this.closed) return;
    this.parser.halt();
    this.writeControl(`-ERR '${natsError}'\r\n`);
    if (this.closed) return; // writing the error itself overflowed: already closed as slow
    this.flush();
    this.close(reason);
  }

  /** Stops the connection: subscriptions leave the bus, the transport is ended. */
  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.parser.halt();
    for (const sub of this.subscriptions.values()) {
      sub.closed = true;
      this.bus.removeSubscriber(sub);
    }
    this.subscriptions.clear();
    this.transport.end();
    this.hooks.onClosed(this, reason);
  }

  sendErr(natsError: string): void {
    this.writeControl(`-ERR '${natsError}'\r\n`);
  }

  // ---- internals ----

  private slowConsumer(): void {
    // What is queued will never be wanted: drop it so memory stays bounded, then say why.
    this.outLength = 0;
    this.logger.warn({ clientId: this.clientId, name: this.name, pendingBytesMax: this.limits.pendingBytesMax }, 'slow consumer closed');
    this.parser.halt();
    const closing = Buffer.from(`-ERR '${PROTOCOL_ERRORS.slowConsumer}'\r\n`);
    this.transport.write(closing);
    this.close('slow consumer');
  }

  private removeSubscription(sub: RemoteSubscription): void {
    sub.closed = true;
    this.subscriptions.delete(sub.sid);
    this.bus.removeSubscriber(sub);
  }

  /** Before CONNECT, only a server without auth lets ops through (as nats-server does). */
  private admitted(): boolean {
    if (this.closed) return false;
    if (this.connected || !this.authRequired) return true;
    this.fail(PROTOCOL_ERRORS.authorizationViolation, 'op before CONNECT on a server with auth');
    return false;
  }

  private authorized(options: Record<string, unknown>): boolean {
    const { authToken, user, password } = this.auth;
    if (authToken === undefined && user === undefined) return true;
    if (authToken !== undefined && typeof options.auth_token === 'string' && safeEqual(options.auth_token, authToken)) {
      return true;
    }
    if (user !== undefined && typeof options.user === 'string' && typeof options.pass === 'string') {
      return safeEqual(options.user, user) && safeEqual(options.pass, password ?? '');
    }
    return false;
  }

  private ok_(): void {
    if (this.verbose) this.writeControl('+OK\r\n');
  }

  private reserve(bytes: number): Buffer {
    if (this.out !== undefined && this.outLength + bytes > this.out.length && this.outLength > 0) this.flush();
    if (this.out === undefined || this.outLength + bytes > this.out.length) {
      assert(this.outLength === 0, 'outbound buffer replaced while holding bytes');
      this.out = Buffer.allocUnsafe(Math.max(OUT_BYTES_INITIAL, bytes));
    }
    return this.out;
  }

  private afterAppend(): void {
    if (this.outLength >= OUT_BYTES_FLUSH) {
      this.flush();
      return;
    }
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      this.hooks.scheduleFlush(this);
    }
  }
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
