// Servers the bus test suites run against: a factory that starts one, tells its port, restarts it.
// The in-process factory is used today; a `loom serve` process factory can implement the same shape.

import { Bus, NatsServer } from '../../../src/bus';
import type { NatsServerOptions } from '../../../src/bus';

export interface ServerUnderTest {
  readonly name: string;
  port(): number;
  /** The in-process side of the same subject space, when the server runs in this process. */
  readonly bus: Bus | undefined;
  /** Stops the server and starts it again on the same port (clients should reconnect). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export type ServerSetup = Pick<NatsServerOptions, 'authToken' | 'user' | 'password' | 'maxPayloadBytes'>;

export type ServerFactory = (setup?: ServerSetup) => Promise<ServerUnderTest>;

/** A Bus and a NatsServer in this process, on 127.0.0.1 and a free port. */
export const inProcessServer: ServerFactory = async (setup = {}) => {
  const bus = new Bus();
  let server = new NatsServer(bus, { host: '127.0.0.1', port: 0, ...setup });
  let { port } = await server.listen();
  return {
    name: 'in-process NatsServer',
    port: () => port,
    bus,
    async restart() {
      await server.close();
      server = new NatsServer(bus, { host: '127.0.0.1', port, ...setup });
      ({ port } = await server.listen());
    },
    async stop() {
      await server.close();
      await bus.close();
    },
  };
};

export const serverFactories: Array<[string, ServerFactory]> = [['in-process', inProcessServer]];
