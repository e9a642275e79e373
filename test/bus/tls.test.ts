// TLS: INFO goes out in clear with tls_required, then the official client upgrades the socket.
// The certificate is a committed test fixture (test/fixtures/tls, signed by the test CA).

import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { connect } from 'nats';
import { Bus, NatsServer } from '../../src/bus';

const fixture = (name: string): Buffer => readFileSync(path.join(__dirname, '../fixtures/tls', name));

describe('NATS server over TLS', () => {
  it('serves the nats client after the TLS upgrade', async () => {
    const bus = new Bus();
    const server = new NatsServer(bus, { host: '127.0.0.1', port: 0, tls: { key: fixture('node-key.pem'), cert: fixture('node.pem') } });
    const { port } = await server.listen();
    try {
      const nc = await connect({ servers: `127.0.0.1:${port}`, tls: { ca: fixture('ca.pem').toString() }, reconnect: false });
      const sub = nc.subscribe('secure', { max: 1 });
      await nc.flush(); // the SUB has reached the server
      bus.publish('secure', 'over tls');
      for await (const m of sub) {
        expect(m.string()).toBe('over tls');
      }
      expect(sub.getProcessed()).toBe(1);
      await nc.close();
    } finally {
      await server.close();
      await bus.close();
    }
  }, 15000);
});
