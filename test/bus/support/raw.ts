// A raw TCP client for protocol tests: send bytes, wait until what came back matches, see the close.

import * as net from 'node:net';

export class RawClient {
  received = '';
  closed = false;
  private readonly socket: net.Socket;
  private readonly waiters = new Set<() => void>();

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.received += d.toString('latin1');
      for (const w of [...this.waiters]) w();
    });
    socket.on('close', () => {
      this.closed = true;
      for (const w of [...this.waiters]) w();
    });
    socket.on('error', () => undefined); // a reset from a closing server is part of what is tested
  }

  static connect(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  /** Connects, reads INFO, and sends CONNECT with `options` (verbose/pedantic off by default). */
  static async ready(port: number, options: Record<string, unknown> = {}): Promise<RawClient> {
    const c = await RawClient.connect(port);
    await c.expect(/^INFO .*\r\n/);
    c.send(`CONNECT ${JSON.stringify({ verbose: false, pedantic: false, ...options })}\r\n`);
    return c;
  }

  send(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Waits until the unread input matches `re`; returns the match and consumes input up to its end. */
  async expect(re: RegExp, timeoutMs = 3000): Promise<RegExpMatchArray> {
    const found = await this.waitFor(() => this.received.match(re) ?? undefined, timeoutMs, `no match for ${re}`);
    this.received = this.received.slice((found.index ?? 0) + found[0].length);
    return found;
  }

  /** PING/PONG round trip: everything the server sent before it is now in `received`. */
  async sync(): Promise<string> {
    this.send('PING\r\n');
    const m = await this.expect(/^([\s\S]*?)PONG\r\n/);
    return m[1];
  }

  waitClosed(timeoutMs = 3000): Promise<true> {
    return this.waitFor(() => (this.closed ? true : undefined), timeoutMs, 'connection still open');
  }

  close(): void {
    this.socket.destroy();
  }

  private waitFor<T>(check: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const attempt = (): boolean => {
        const value = check();
        if (value === undefined) return false;
        clearTimeout(timer);
        this.waiters.delete(onEvent);
        resolve(value);
        return true;
      };
      const onEvent = (): void => void attempt();
      const timer = setTimeout(() => {
        this.waiters.delete(onEvent);
        reject(new Error(`${what}; got ${JSON.stringify(this.received.slice(0, 300))}`));
      }, timeoutMs);
      if (!attempt()) this.waiters.add(onEvent);
    });
  }
}
