// The NATS wire-protocol server: accepts TCP (optionally TLS) connections, sends INFO, runs one
// Connection per socket over a shared Bus, pings, enforces connection limits, shuts down gracefully.

import * as net from 'node:net';
import * as tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { LoomError, assert, silentLogger } from '../util';
import type { Logger } from '../util';
import type { Bus } from './bus';
import { Connection } from './connection';
import type { ConnectionLimits } from './connection';
import { PROTOCOL_ERRORS } from './parser';

/** The nats-server protocol level loom speaks; clients gate features (headers …) on it. */
export const NATS_COMPATIBLE_VERSION = '2.9.0';

export const SERVER_DEFAULTS = {
  host: '127.0.0.1',
  port: 4222,
  maxPayloadBytes: 1024 * 1024,
  maxControlLineBytes: 4096,
  pendingBytesMax: 64 * 1024 * 1024,
  connectionsMax: 65536,
  subscriptionsMax: 0, // 0: no limit, as in nats-server
  authTimeoutMs: 2000,
  pingIntervalMs: 2 * 60 * 1000,
  pingsOutstandingMax: 2,
  /** How long a closing connection may take to hand its last bytes to the kernel. */
  closeLingerMs: 1000,
  /** How long close() waits for clients to leave before destroying their sockets. */
  shutdownGraceMs: 2000,
} as const;

export interface NatsServerOptions {
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  maxPayloadBytes?: number;
  maxControlLineBytes?: number;
  pendingBytesMax?: number;
  connectionsMax?: number;
  subscriptionsMax?: number;
  authTimeoutMs?: number;
  pingIntervalMs?: number;
  pingsOutstandingMax?: number;
  authToken?: string;
  user?: string;
  password?: string;
  /** Key and certificate: INFO then says tls_required and clients upgrade after it. */
  tls?: tls.SecureContextOptions;
  serverName?: string;
  logger?: Logger;
}

export class NatsServer {
  readonly serverId = `N${randomBytes(27).toString('hex').toUpperCase()}`.slice(0, 56);
  private readonly options: Required<Omit<NatsServerOptions, 'authToken' | 'user' | 'password' | 'tls' | 'logger'>> &
    Pick<NatsServerOptions, 'authToken' | 'user' | 'password' | 'tls'>;
  private readonly logger: Logger;
  private readonly connections = new Set<Connection>();
  private readonly sockets = new Map<Connection, net.Socket>();
  private readonly flushQueue: Connection[] = [];
  private flushScheduled = false;
  private server: net.Server | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  private boundPort = 0;
  private secureContext: tls.SecureContext | undefined;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly bus: Bus,
    options: NatsServerOptions = {},
  ) {
    this.logger = (options.logger ?? silentLogger()).child({ component: 'nats-server' });
    this.options = {
      host: options.host ?? SERVER_DEFAULTS.host,
      port: options.port ?? SERVER_DEFAULTS.port,
      maxPayloadBytes: options.maxPayloadBytes ?? SERVER_DEFAULTS.maxPayloadBytes,
      maxControlLineBytes: options.maxControlLineBytes ?? SERVER_DEFAULTS.maxControlLineBytes,
      pendingBytesMax: options.pendingBytesMax ?? SERVER_DEFAULTS.pendingBytesMax,
      connectionsMax: options.connectionsMax ?? SERVER_DEFAULTS.connectionsMax,
      subscriptionsMax: options.subscriptionsMax ?? SERVER_DEFAULTS.subscriptionsMax,
      authTimeoutMs: options.authTimeoutMs ?? SERVER_DEFAULTS.authTimeoutMs,
      pingIntervalMs: options.pingIntervalMs ?? SERVER_DEFAULTS.pingIntervalMs,
      pingsOutstandingMax: options.pingsOutstandingMax ?? SERVER_DEFAULTS.pingsOutstandingMax,
      serverName: options.serverName ?? 'loom',
      authToken: options.authToken,
      user: options.user,
      password: options.password,
      tls: options.tls,
    };
    const o = this.options;
    for (const [name, value] of Object.entries(o)) {
      if (typeof value === 'number') {
        assert(Number.isInteger(value) && value >= 0, `NatsServer option ${name} must be a non-negative integer`);
      }
    }
    if (o.user !== undefined && o.password === undefined) {
      throw new LoomError('INVALID_ARGUMENT', 'a NATS user needs a password', { field: 'password' });
    }
    if (o.tls) this.secureContext = tls.createSecureContext(o.tls);
  }

  get port(): number {
    return this.boundPort;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  async listen(): Promise<{ host: string; port: number }> {
    assert(this.server === undefined, 'listen called twice');
    // Paused on connect so that no byte is read before INFO is sent (and, with TLS, before the
    // socket is handed to the TLS layer, which must see the client's first handshake byte).
    const server = net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port, this.options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.logger.error({ err }, 'NATS listener error'));
    this.boundPort = (server.address() as net.AddressInfo).port;
    if (this.options.pingIntervalMs > 0) {
      this.pingTimer = setInterval(() => this.pingAll(), this.options.pingIntervalMs);
      this.pingTimer.unref();
    }
    this.logger.info({ host: this.options.host, port: this.boundPort }, 'NATS server listening');
    return { host: this.options.host, port: this.boundPort };
  }

  /** Stops accepting, flushes what each connection has pending, closes them, waits for the sockets. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    if (this.pingTimer) clearInterval(this.pingTimer);
    const server = this.server;
    const listenerClosed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    const socketsClosed = [...this.sockets.values()].map(
      (socket) => new Promise<void>((resolve) => (socket.destroyed ? resolve() : socket.once('close', () => resolve()))),
    );
    for (const connection of [...this.connections]) {
      connection.flush();
      connection.close('server shutdown');
    }
    const grace = setTimeout(() => {
      for (const socket of this.sockets.values()) socket.destroy();
    }, SERVER_DEFAULTS.shutdownGraceMs);
    await Promise.all([listenerClosed, ...socketsClosed]);
    clearTimeout(grace);
    this.logger.info({ port: this.boundPort }, 'NATS server closed');
  }

  private accept(raw: net.Socket): void {
    raw.on('error', (err) => this.logger.debug({ err: err.message }, 'client socket error'));
    if (this.closing) {
      raw.destroy();
      return;
    }
    if (this.connections.size >= this.options.connectionsMax) {
      raw.end(`${this.info(0)}-ERR '${PROTOCOL_ERRORS.connectionsExceeded}'\r\n`);
      setTimeout(() => raw.destroy(), SERVER_DEFAULTS.closeLingerMs).unref();
      return;
    }
    const limits: ConnectionLimits = {
      maxPayloadBytes: this.options.maxPayloadBytes,
      maxControlLineBytes: this.options.maxControlLineBytes,
      pendingBytesMax: this.options.pendingBytesMax,
      subscriptionsMax: this.options.subscriptionsMax === 0 ? Number.MAX_SAFE_INTEGER : this.options.subscriptionsMax,
      pingsOutstandingMax: this.options.pingsOutstandingMax,
    };
    let socket: net.Socket = raw;
    const connection = new Connection(
      { write: (d) => socket.write(d), end: () => socket.end(), destroy: () => socket.destroy(), get writableLength() { return socket.writableLength; } },
      this.bus,
      limits,
      { authToken: this.options.authToken, user: this.options.user, password: this.options.password },
      { onClosed: (c, reason) => this.forget(c, socket, reason), scheduleFlush: (c) => this.scheduleFlush(c) },
      this.logger,
    );
    this.connections.add(connection);
    raw.write(this.info(connection.clientId, raw.remoteAddress));
    if (this.secureContext) {
      socket = new tls.TLSSocket(raw, { isServer: true, secureContext: this.secureContext });
      socket.on('error', (err) => {
        this.logger.debug({ err: err.message }, 'TLS error');
        connection.close('tls error');
        socket.destroy();
      });
    }
    this.sockets.set(connection, socket);
    socket.on('data', (chunk: Buffer) => connection.receive(chunk));
    socket.on('end', () => connection.close('client closed'));
    socket.on('close', () => connection.close('socket closed'));
    if (socket === raw) raw.resume();
    if (connection.authRequired && this.options.authTimeoutMs > 0) {
      const timer = setTimeout(() => {
        if (!connection.connected) connection.fail(PROTOCOL_ERRORS.authenticationTimeout, 'authentication timeout');
      }, this.options.authTimeoutMs);
      timer.unref();
      socket.once('close', () => clearTimeout(timer));
    }
  }

  private info(clientId: number, clientIp?: string): string {
    const o = this.options;
    const info: Record<string, unknown> = {
      server_id: this.serverId,
      server_name: o.serverName,
      version: NATS_COMPATIBLE_VERSION,
      proto: 1,
      go: 'loom',
      host: o.host,
      port: this.boundPort,
      headers: true,
      max_payload: o.maxPayloadBytes,
      client_id: clientId,
    };
    if (clientIp) info.client_ip = clientIp;
    if (o.authToken !== undefined || o.user !== undefined) {
      info.auth_required = true;
      info.nonce = randomBytes(16).toString('base64url');
    }
    if (o.tls) {
      info.tls_required = true;
      info.tls_verify = false;
    }
    return `INFO ${JSON.stringify(info)}\r\n`;
  }

  private forget(connection: Connection, socket: net.Socket, reason: string): void {
    this.connections.delete(connection);
    this.logger.debug({ clientId: connection.clientId, reason }, 'client connection closed');
    // end() lets the last bytes (an -ERR) out; a peer that never reads them must not hold us.
    if (!socket.destroyed) {
      const linger = setTimeout(() => socket.destroy(), SERVER_DEFAULTS.closeLingerMs);
      linger.unref();
      socket.once('close', () => {
        clearTimeout(linger);
        this.sockets.delete(connection);
      });
    } else {
      this.sockets.delete(connection);
    }
  }

  // Writes are batched: every connection that got bytes in this turn is flushed once, after it.
  private scheduleFlush(connection: Connection): void {
    this.flushQueue.push(connection);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    process.nextTick(() => this.flushAll());
  }

  private flushAll(): void {
    this.flushScheduled = false;
    const queue = this.flushQueue.splice(0);
    for (const connection of queue) if (!connection.closed) connection.flush();
  }

  private pingAll(): void {
    for (const connection of [...this.connections]) connection.sendPing();
  }
}
