// Whether the SDK's NATS connection is up, from the client's own status events, so a request made
// while it reconnects waits for the reconnect instead of being lost.
//
// The `nats` client (v2) empties its outbound buffer each time it dials a server again: a request
// published while it is disconnected is never sent, and its caller waited out the whole timeout
// although the node was back within a few hundred milliseconds.

import type { NatsConnection } from 'nats';

export class ConnectionState {
  private connected = true;
  private closed = false;
  private readonly waiters = new Set<(connected: boolean) => void>();

  constructor(nc: NatsConnection) {
    void this.follow(nc);
    void nc.closed().then(() => this.end());
  }

  isConnected(): boolean {
    return this.connected;
  }

  /** The connection is closed for good: nothing will reconnect it. */
  isClosed(): boolean {
    return this.closed;
  }

  /**
   * Resolves true at once while connected, else when the client reconnects; false if it has not
   * within `ms`, or the connection is closed for good.
   */
  untilConnected(ms: number): Promise<boolean> {
    if (this.connected) return Promise.resolve(true);
    if (this.closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (connected: boolean): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve(connected);
      };
      const timer = setTimeout(() => done(false), ms);
      this.waiters.add(done);
    });
  }

  private async follow(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      if (this.closed) return;
      if (status.type === 'disconnect') this.connected = false;
      else if (status.type === 'reconnect') {
        this.connected = true;
        for (const done of [...this.waiters]) done(true);
      }
    }
  }

  private end(): void {
    this.closed = true;
    this.connected = false;
    for (const done of [...this.waiters]) done(false);
  }
}
