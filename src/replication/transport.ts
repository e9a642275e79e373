// TCP transport between Raft peers: one outgoing connection per peer (this node's messages to it)
// plus the peer's own connection for the other direction, each authenticated by the cluster secret.
// With `tls`, every connection is mutual TLS: each side presents its certificate and accepts only
// a peer whose certificate the configured CA signed (and, when dialling, whose name matches).

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { Message } from '../eventlog/raft';
import { LoomError, assert, type Logger } from '../util';
import { FrameParser, encodeFrame, validateFrame, validateMessage, type NodeAddresses } from './frames';
import {
  frameBytesMax,
  frameMessagesMax,
  handshakeFrameBytesMax,
  handshakeTimeoutMs,
  peerQueueBytesMax,
  reconnectDelayMsMax,
  reconnectDelayMsMin,
} from './limits';

export interface PeerAddress {
  id: number;
  host: string;
  port: number;
}

export interface TransportOptions {
  nodeId: number;
  host: string;
  port: number;
  peers: PeerAddress[];
  secret: string;
  logger: Logger;
  /** PEM certificate, key and CA: mutual TLS on every peer connection. */
  tls?: PeerTls;
}

export interface PeerTls {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

/**
 * Proof that the sender knows the secret, bound to the receiver's fresh nonce (no replay) and to
 * the id it claims (a node cannot pass off another's proof as its own).
 */
function handshakeMac(secret: string, nonce: Uint8Array, id: number): Buffer {
  return createHmac('sha256', secret).update('loom-raft-v1\0').update(nonce).update(`\0${id}`).digest();
}

type MessagesHandler = (from: number, messages: Message[]) => void;

/** One authenticated TCP connection, either direction. */
class PeerConnection {
  private readonly parser = new FrameParser(handshakeFrameBytesMax);
  private readonly nonce = randomBytes(32);
  private sentHello = false;
  private corked = false;
  /** The peer's id once its hello was verified. */
  peerId: number | undefined;
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  constructor(
    readonly socket: net.Socket,
    private readonly transport: PeerTransport,
    /** The id we dialled; an inbound connection learns it from the hello. */
    private readonly expectedId: number | undefined,
    private readonly onReady: (conn: PeerConnection) => void,
    private readonly onClose: (conn: PeerConnection) => void,
  ) {
    socket.setNoDelay(true);
    this.timer = setTimeout(() => this.fail('handshake timed out'), handshakeTimeoutMs);
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', () => this.close());
    socket.on('close', () => this.close());
    this.write(encodeFrame({ t: 'challenge', nonce: this.nonce }));
  }

  ready(): boolean {
    return this.peerId !== undefined && this.sentHello && !this.closed;
  }

  write(bytes: Buffer): boolean {
    if (this.closed) return false;
    if (this.socket.writableLength > peerQueueBytesMax) return false;
    // Frames written in one tick (a Ready's messages, acks, early appends) leave in one system call.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(bytes);
    return true;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.socket.destroy();
    this.onClose(this);
  }

  private fail(reason: string, details: Record<string, unknown> = {}): void {
    this.transport.logger.warn({ remote: `${this.socket.remoteAddress}:${this.socket.remotePort}`, peer: this.peerId ?? this.expectedId, reason, ...details }, 'raft peer connection closed');
    this.close();
  }

  private receive(chunk: Buffer): void {
    if (this.closed) return;
    let frames: unknown[];
    try {
      frames = this.parser.push(chunk);
    } catch (err) {
      return this.fail((err as Error).message);
    }
    for (const raw of frames) {
      if (this.closed) return;
      try {
        this.handle(raw);
      } catch (err) {
        // Only a malformed frame is expected here; anything else is a bug and must surface.
        if (!(err instanceof LoomError) || err.code !== 'INVALID_ARGUMENT') throw err;
        return this.fail(err.message);
      }
    }
  }

  private handle(raw: unknown): void {
    const frame = validateFrame(raw);
    if (this.peerId === undefined) {
      // Before authentication only the handshake is accepted; nothing reaches Raft.
      if (frame.t === 'challenge') {
        if (this.sentHello) return this.fail('second challenge');
        this.sentHello = true;
        const me = this.transport.nodeId;
        this.write(encodeFrame({ t: 'hello', id: me, mac: handshakeMac(this.transport.secret, frame.nonce, me), info: this.transport.localInfo }));
        return this.maybeReady();
      }
      if (frame.t === 'hello') {
        const expected = handshakeMac(this.transport.secret, this.nonce, frame.id);
        if (frame.mac.length !== expected.length || !timingSafeEqual(frame.mac, expected)) {
          this.transport.logger.warn(
            { remote: `${this.socket.remoteAddress}:${this.socket.remotePort}`, claimedId: frame.id },
            'raft peer rejected: wrong cluster secret',
          );
          this.transport.rejectedPeers++;
          return this.close();
        }
        if (frame.id === this.transport.nodeId) return this.fail('peer claims this node\'s own id');
        if (this.expectedId !== undefined && frame.id !== this.expectedId) return this.fail(`dialled node ${this.expectedId}, answered by node ${frame.id}`);
        this.peerId = frame.id;
        this.transport.learnInfo(frame.id, frame.info, this.socket.remoteAddress);
        return this.maybeReady();
      }
      return this.fail(`${frame.t} frame before the handshake`);
    }
    switch (frame.t) {
      case 'info':
        this.transport.learnInfo(this.peerId, frame.info, this.socket.remoteAddress);
        return;
      case 'messages': {
        // Validate the whole frame before acting on any of it.
        const messages = frame.m.map((m) => validateMessage(m, this.peerId!, this.transport.nodeId));
        this.transport.deliver(this.peerId, messages);
        return;
      }
      default:
        return this.fail(`${frame.t} frame after the handshake`);
    }
  }

  private maybeReady(): void {
    if (!this.ready()) return;
    clearTimeout(this.timer);
    this.parser.setFrameBytesMax(frameBytesMax);
    this.onReady(this);
  }
}

/** Dials one peer and keeps dialling, with backoff, whenever the connection drops. */
class PeerLink {
  conn: PeerConnection | undefined;
  private delayMs = reconnectDelayMsMin;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private lastTlsError: string | undefined;

  constructor(
    readonly peer: PeerAddress,
    private readonly transport: PeerTransport,
  ) {}

  start(): void {
    this.dial();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.conn?.close();
  }

  send(bytes: Buffer): void {
    // Messages to an unreachable peer are dropped: Raft retransmits what matters on its own.
    if (this.conn?.ready()) this.conn.write(bytes);
  }

  private dial(): void {
    if (this.stopped) return;
    const secure = this.transport.tls;
    const socket = secure
      ? tls.connect({ host: this.peer.host, port: this.peer.port, ...secure, minVersion: 'TLSv1.2' })
      : net.connect({ host: this.peer.host, port: this.peer.port });
    if (secure) {
      // Said once per cause, not at every reconnect.
      socket.once('error', (err: Error & { code?: string }) => {
        if ((socket as tls.TLSSocket).authorized || this.lastTlsError === err.message) return;
        this.lastTlsError = err.message;
        this.transport.logger.warn({ peer: this.peer.id, err: err.message, code: err.code }, 'raft peer unreachable over TLS');
      });
      socket.once('secureConnect', () => (this.lastTlsError = undefined));
    }
    this.conn = new PeerConnection(
      socket,
      this.transport,
      this.peer.id,
      (conn) => {
        this.delayMs = reconnectDelayMsMin;
        if (conn.peerId !== undefined) this.transport.logger.info({ peer: this.peer.id }, 'raft peer connected');
        // The addresses may have been set before this connection existed; the hello carried them.
      },
      () => {
        this.conn = undefined;
        if (this.stopped) return;
        this.timer = setTimeout(() => this.dial(), this.delayMs);
        this.delayMs = Math.min(this.delayMs * 2, reconnectDelayMsMax);
      },
    );
  }
}

export class PeerTransport {
  readonly nodeId: number;
  readonly secret: string;
  readonly logger: Logger;
  localInfo: NodeAddresses = {};
  /** Hellos refused for a wrong secret, and TLS handshakes refused, since start (metrics, tests). */
  rejectedPeers = 0;
  readonly tls: PeerTls | undefined;
  private readonly options: TransportOptions;
  private readonly links = new Map<number, PeerLink>();
  private readonly inbound = new Set<PeerConnection>();
  private readonly peerInfo = new Map<number, NodeAddresses>();
  private readonly handlers: MessagesHandler[] = [];
  private readonly downHandlers: Array<(id: number) => void> = [];
  private readonly raftAddressHandlers: Array<(peer: PeerAddress) => void> = [];
  private server: net.Server | undefined;
  private closing = false;

  constructor(options: TransportOptions) {
    assert(options.secret.length > 0, 'a peer transport needs a cluster secret');
    this.options = options;
    this.nodeId = options.nodeId;
    this.secret = options.secret;
    this.logger = options.logger;
    this.tls = options.tls;
  }

  /** Listens on the raft port and starts dialling every peer; resolves with the bound port. */
  async listen(): Promise<number> {
    const accept = (socket: net.Socket): void => {
      const conn = new PeerConnection(socket, this, undefined, () => undefined, (c) => {
        this.inbound.delete(c);
        // The peer's own connection to us closed: its process may be gone (a SIGKILL closes it at once).
        if (c.peerId !== undefined && !this.closing) for (const handler of this.downHandlers) handler(c.peerId);
      });
      this.inbound.add(conn);
    };
    let server: net.Server;
    if (this.tls) {
      server = tls.createServer({ ...this.tls, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' }, accept);
      server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
        this.rejectedPeers++;
        this.logger.warn({ remote: `${socket.remoteAddress}:${socket.remotePort}`, err: err.message }, 'raft peer rejected: TLS handshake failed');
      });
    } else server = net.createServer(accept);
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port, this.options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    // Every hello and info frame carries it (a wildcard host is replaced by the address the peer sees).
    this.localInfo = { ...this.localInfo, raft: `${this.options.host}:${(server.address() as net.AddressInfo).port}` };
    for (const peer of this.options.peers) {
      if (peer.id === this.nodeId) continue;
      const link = new PeerLink(peer, this);
      this.links.set(peer.id, link);
      link.start();
    }
    return (server.address() as net.AddressInfo).port;
  }

  /** A member added at runtime (its address came in the membership change): dial it too. */
  addPeer(peer: PeerAddress): void {
    if (peer.id === this.nodeId || this.links.has(peer.id) || this.server === undefined || this.closing) return;
    this.logger.info({ peer: peer.id, host: peer.host, port: peer.port }, 'raft peer added');
    const link = new PeerLink(peer, this);
    this.links.set(peer.id, link);
    link.start();
  }

  /** A member removed at runtime: stop dialling it (its own connection to us closes with it). */
  removePeer(id: number): void {
    const link = this.links.get(id);
    if (!link) return;
    this.logger.info({ peer: id }, 'raft peer removed');
    link.stop();
    this.links.delete(id);
  }

  /** Called with a peer's id when its authenticated connection to this node closes. */
  onPeerDown(handler: (id: number) => void): void {
    this.downHandlers.push(handler);
  }

  onMessages(handler: MessagesHandler): void {
    this.handlers.push(handler);
  }

  /** Sends messages, one frame per peer (and per frameMessagesMax messages). */
  send(messages: Message[]): void {
    if (messages.length === 0) return;
    const byPeer = new Map<number, Message[]>();
    for (const m of messages) {
      const list = byPeer.get(m.to);
      if (list) list.push(m);
      else byPeer.set(m.to, [m]);
    }
    for (const [to, list] of byPeer) {
      const link = this.links.get(to);
      if (!link) continue;
      for (let i = 0; i < list.length; i += frameMessagesMax) {
        link.send(encodeFrame({ t: 'messages', m: list.slice(i, i + frameMessagesMax) }));
      }
    }
  }

  /** Announces this node's client addresses to every peer (they quote them in NOT_LEADER). */
  setLocalInfo(doors: NodeAddresses): void {
    const info: NodeAddresses = { ...doors, raft: this.localInfo.raft };
    this.localInfo = info;
    const frame = encodeFrame({ t: 'info', info });
    for (const link of this.links.values()) link.send(frame);
  }

  infoOf(id: number): NodeAddresses | undefined {
    return id === this.nodeId ? this.localInfo : this.peerInfo.get(id);
  }

  /**
   * Addresses an authenticated peer announced. Its raft address goes to the onRaftAddress handlers,
   * which decide whether to dial it (a member added while this node was down is in no --peers list).
   */
  learnInfo(id: number, info: NodeAddresses, remoteHost: string | undefined): void {
    this.peerInfo.set(id, info);
    const match = info.raft === undefined ? null : /^(.*):(\d{1,5})$/.exec(info.raft);
    if (match === null || this.links.has(id)) return;
    const announced = match[1].replace(/^\[(.*)\]$/, '$1');
    const wildcard = announced === '' || announced === '0.0.0.0' || announced === '::';
    const host = wildcard ? remoteHost : announced;
    if (host === undefined) return;
    for (const handler of this.raftAddressHandlers) handler({ id, host, port: Number(match[2]) });
  }

  /** Called with the raft address of a peer this node does not dial yet, as the peer announces it. */
  onRaftAddress(handler: (peer: PeerAddress) => void): void {
    this.raftAddressHandlers.push(handler);
  }

  deliver(from: number, messages: Message[]): void {
    for (const handler of this.handlers) handler(from, messages);
  }

  /** Peers with an authenticated outgoing connection right now. */
  connectedPeers(): number[] {
    return [...this.links.values()].filter((l) => l.conn?.ready()).map((l) => l.peer.id);
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const link of this.links.values()) link.stop();
    for (const conn of [...this.inbound]) conn.close();
    const server = this.server;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
