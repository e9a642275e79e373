// The two official NATS clients for Node behind one small shape, so each compatibility case is
// written once and run with `nats` 2.x and `@nats-io/transport-node` 3.x.

import * as natsV2 from 'nats';
import * as natsV3 from '@nats-io/transport-node';

export interface ClientHeaders {
  get(key: string): string;
  set(key: string, value: string): void;
  append(key: string, value: string): void;
  readonly code?: number;
}

export interface ClientMsg {
  readonly subject: string;
  readonly reply?: string;
  readonly data: Uint8Array;
  readonly headers?: ClientHeaders;
  readonly sid: number;
  string(): string;
  respond(data?: Uint8Array | string, opts?: { headers?: ClientHeaders }): boolean;
}

export interface ClientSub extends AsyncIterable<ClientMsg> {
  unsubscribe(max?: number): void;
  drain(): Promise<void>;
  getProcessed(): number;
  isClosed(): boolean;
  closed: Promise<void | Error>;
}

export interface ClientConnection {
  publish(subject: string, data?: Uint8Array | string, opts?: { headers?: ClientHeaders; reply?: string }): void;
  subscribe(
    subject: string,
    opts?: { queue?: string; max?: number; callback?: (err: Error | null, msg: ClientMsg) => void },
  ): ClientSub;
  request(subject: string, data?: Uint8Array | string, opts?: { timeout?: number; headers?: ClientHeaders }): Promise<ClientMsg>;
  flush(): Promise<void>;
  drain(): Promise<void>;
  close(): Promise<void>;
  closed(): Promise<void | Error>;
  isClosed(): boolean;
  status(): AsyncIterable<{ type: string }>;
}

export interface ConnectOptions {
  port: number;
  token?: string;
  user?: string;
  pass?: string;
  reconnect?: boolean;
  noEcho?: boolean;
}

export interface ClientFlavour {
  name: string;
  connect(options: ConnectOptions): Promise<ClientConnection>;
  headers(): ClientHeaders;
}

function natsOptions(o: ConnectOptions): Record<string, unknown> {
  return {
    servers: `127.0.0.1:${o.port}`,
    token: o.token,
    user: o.user,
    pass: o.pass,
    noEcho: o.noEcho,
    reconnect: o.reconnect ?? false,
    reconnectTimeWait: 50,
    maxReconnectAttempts: -1,
    timeout: 5000,
  };
}

export const clientFlavours: ClientFlavour[] = [
  {
    name: 'nats 2.x',
    connect: async (o) => (await natsV2.connect(natsOptions(o) as natsV2.ConnectionOptions)) as unknown as ClientConnection,
    headers: () => natsV2.headers() as unknown as ClientHeaders,
  },
  {
    name: '@nats-io/transport-node 3.x',
    connect: async (o) => (await natsV3.connect(natsOptions(o) as natsV3.NodeConnectionOptions)) as unknown as ClientConnection,
    // The 3.x typings re-export nats-core through a path TypeScript does not resolve; runtime has it.
    headers: () => (natsV3 as unknown as { headers(): ClientHeaders }).headers(),
  },
];

/** Collects `count` messages from a subscription, or fails after `timeoutMs`. */
export async function take(sub: ClientSub, count: number, timeoutMs = 5000): Promise<ClientMsg[]> {
  const got: ClientMsg[] = [];
  if (count === 0) return got;
  const timer = setTimeout(() => sub.unsubscribe(), timeoutMs);
  for await (const m of sub) {
    got.push(m);
    if (got.length === count) break;
  }
  clearTimeout(timer);
  if (got.length < count) throw new Error(`expected ${count} messages, got ${got.length}`);
  return got;
}
