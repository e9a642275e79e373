// TLS: INFO goes out in clear with tls_required, then the official client upgrades the socket.
// The certificate is made with the openssl CLI; without it the case is skipped, loudly.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { connect } from 'nats';
import { Bus, NatsServer } from '../../src/bus';

const hasOpenssl = spawnSync('sh', ['-c', 'command -v openssl']).status === 0;
const maybe = hasOpenssl ? it : it.skip;
if (!hasOpenssl) process.stderr.write('openssl not found: skipping the TLS bus test\n');

describe('NATS server over TLS', () => {
  maybe('serves the nats client after the TLS upgrade', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'loom-bus-tls-'));
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'cert.pem');
    const made = spawnSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ]);
    expect(made.status).toBe(0);
    const bus = new Bus();
    const server = new NatsServer(bus, { host: '127.0.0.1', port: 0, tls: { key: readFileSync(key), cert: readFileSync(cert) } });
    const { port } = await server.listen();
    try {
      const nc = await connect({ servers: `127.0.0.1:${port}`, tls: { ca: readFileSync(cert, 'utf8') }, reconnect: false });
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
      rmSync(dir, { recursive: true, force: true });
    }
  }, 15000);
});
