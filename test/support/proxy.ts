// A TCP proxy in front of a node's HTTP door that misbehaves on request, as a network would: it
// cuts a response, stops forwarding (a black hole), or lets bytes through only a few at a time.

import * as net from 'node:net';

/** `up` is client to node, `down` node to client. */
export type Direction = 'up' | 'down';

/**
 * What the proxy does with the bytes of one direction, counted from when it is set, across
 * every connection: `cut` passes `bytes` more and then ends the connection; `stall` passes
 * `bytes` more and then forwards nothing (and stops reading, so the sender's buffers fill);
 * `trickle` passes at most `bytes` every `everyMs`.
 */
export type Misbehaviour = { kind: 'cut'; bytes: number } | { kind: 'stall'; bytes: number } | { kind: 'trickle'; bytes: number; everyMs: number };

export class TcpProxy {
  private readonly rules: Partial<Record<Direction, Misbehaviour>> = {};
  private readonly sockets = new Set<net.Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  /** GET requests that passed through, counted from their request lines. */
  gets = 0;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number): Promise<TcpProxy> {
    let proxy: TcpProxy | undefined;
    const server = net.createServer((downstream) => proxy?.join(downstream, net.connect(targetPort, '127.0.0.1')));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    proxy = new TcpProxy(server, (server.address() as net.AddressInfo).port);
    return proxy;
  }

  /** From now on, the bytes going `direction` meet `rule`; undefined forwards them again as they come. */
  set(direction: Direction, rule: Misbehaviour | undefined): void {
    this.rules[direction] = rule === undefined ? undefined : { ...rule };
  }

  /** After the next `bytes` bytes the node sends, the connection ends (a network cut). */
  cutAfter(bytes: number): void {
    this.set('down', { kind: 'cut', bytes });
  }

  /** Closes the proxy and every connection through it, stalled ones too. */
  close(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      for (const socket of this.sockets) socket.destroy();
    });
  }

  private join(downstream: net.Socket, upstream: net.Socket): void {
    for (const socket of [downstream, upstream]) {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => (socket === downstream ? upstream : downstream).destroy());
    }
    // Object GETs carry no body, so every request line the client sends starts a request.
    let sent = '';
    downstream.on('data', (data: Buffer) => {
      sent += data.toString('latin1');
      const lines = sent.split('\r\n');
      sent = lines.pop() as string;
      this.gets += lines.filter((line) => /^GET \S+ HTTP\/1\.1$/.test(line)).length;
      if (sent.length > 8192) sent = '';
    });
    this.forward('up', downstream, upstream);
    this.forward('down', upstream, downstream);
  }

  private forward(direction: Direction, from: net.Socket, to: net.Socket): void {
    const queue: Buffer[] = [];
    let trickling: NodeJS.Timeout | undefined;
    const send = (data: Buffer): void => {
      if (!to.write(data)) from.pause();
    };
    to.on('drain', () => trickling === undefined && this.rules[direction]?.kind !== 'stall' && from.resume());
    from.on('end', () => {
      if (trickling === undefined) to.end();
    });
    from.on('data', (data: Buffer) => {
      const rule = this.rules[direction];
      if (rule === undefined) return send(data);
      if (rule.kind === 'trickle') {
        queue.push(data);
        from.pause();
        if (trickling !== undefined) return;
        trickling = setInterval(() => {
          let budget = rule.bytes;
          while (budget > 0 && queue.length > 0) {
            const piece = queue[0].subarray(0, budget);
            queue[0] = queue[0].subarray(piece.byteLength);
            if (queue[0].byteLength === 0) queue.shift();
            budget -= piece.byteLength;
            to.write(piece);
          }
          if (queue.length > 0) return;
          clearInterval(trickling);
          this.timers.delete(trickling as NodeJS.Timeout);
          trickling = undefined;
          if (from.readableEnded) to.end();
          else from.resume();
        }, rule.everyMs);
        this.timers.add(trickling);
        return;
      }
      if (data.byteLength < rule.bytes) {
        rule.bytes -= data.byteLength;
        return send(data);
      }
      const passed = data.subarray(0, rule.bytes);
      rule.bytes = 0;
      if (rule.kind === 'cut') {
        this.rules[direction] = undefined;
        to.end(passed);
        from.destroy();
        return;
      }
      // A stall holds the rest and reads no more: the sender's writes back up, as into a black hole.
      to.write(passed);
      from.pause();
    });
  }
}
