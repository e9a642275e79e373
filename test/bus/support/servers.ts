// Servers the bus test suites run against: a factory that starts one, tells its port, restarts it —
// in this process, or as a real `loom serve` process (the built CLI in dist/).

import { Bus, NatsServer } from '../../../src/bus';
import type { NatsServerOptions } from '../../../src/bus';
import { startServe, stopServe, type ServeProcess } from '../../support/cli';
import { makeTempDir, removeDir } from '../../support/tmp';

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

/** A real `loom serve` process; restart is SIGTERM and a new process on the same port and data. */
export const loomServeProcess: ServerFactory = async (setup = {}) => {
  const dir = makeTempDir('loom-bus-');
  const flags: string[] = [];
  if (setup.authToken) flags.push('--auth-token', setup.authToken);
  if (setup.user) flags.push('--nats-user', setup.user);
  if (setup.password) flags.push('--nats-password', setup.password);
  if (setup.maxPayloadBytes) flags.push('--nats-max-payload-bytes', String(Math.max(1024, setup.maxPayloadBytes)));
  let serve: ServeProcess = await startServe(dir, flags);
  const port = serve.ports.nats;
  return {
    name: 'loom serve',
    port: () => port,
    bus: undefined,
    async restart() {
      await stopServe(serve);
      serve = await startServe(dir, [...flags, '--nats-port', String(port)]);
    },
    async stop() {
      await stopServe(serve);
      removeDir(dir);
    },
  };
};

export const serverFactories: Array<[string, ServerFactory]> = [
  ['in-process', inProcessServer],
  ['loom serve', loomServeProcess],
];
