// TTL expiry driven through the log: the leader looks for keys whose TTL ran out (by its own clock)
// and proposes a `kv.del` expecting the revision that set the TTL. Every replica applies the same
// delete; no replica's clock decides anything, and a key rewritten meanwhile survives (CONFLICT).

import { isLoomError, type Logger } from '../util';
import type { Database } from './database';

export interface ExpirerOptions {
  db: Database;
  logger: Logger;
  now: () => number;
  isLeader: () => boolean;
  /** How often the leader looks for expired keys. */
  scanIntervalMs?: number;
  /** Most deletes proposed per scan. */
  scanKeysMax?: number;
}

export class Expirer {
  private timer: NodeJS.Timeout | undefined;
  private readonly inflight = new Set<string>();
  private scanning = false;

  constructor(private readonly options: ExpirerOptions) {}

  start(): void {
    const interval = this.options.scanIntervalMs ?? 1000;
    this.timer = setInterval(() => void this.scan(), interval);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One pass: proposes the deletes of every expired key not already being deleted. */
  async scan(): Promise<number> {
    if (this.scanning || !this.options.isLeader()) return 0;
    this.scanning = true;
    try {
      const { db, logger } = this.options;
      const expired = db.reader.expired(this.options.now(), this.options.scanKeysMax ?? 1000);
      const deletes = expired
        .filter((e) => !this.inflight.has(`${e.bucket}\u0000${e.key}\u0000${e.rev}`))
        .map(async (e) => {
          const id = `${e.bucket}\u0000${e.key}\u0000${e.rev}`;
          this.inflight.add(id);
          try {
            await db.mutate('kv.del', { bucket: e.bucket, key: e.key, expectRev: e.rev, expired: true });
          } catch (err) {
            // A CONFLICT means the key was rewritten after its TTL was set: it must not expire.
            if (!isLoomError(err, 'CONFLICT')) logger.warn({ err, bucket: e.bucket, key: e.key }, 'TTL delete failed; retrying on the next scan');
          } finally {
            this.inflight.delete(id);
          }
        });
      await Promise.all(deletes);
      return deletes.length;
    } finally {
      this.scanning = false;
    }
  }
}
