// A `loom serve` started with --tls-cert/--tls-key serves all three doors over TLS only: the client
// SDK (NATS), a grpc-js client and HTTPS requests that trust the test CA work; plain HTTP and
// plaintext gRPC get nothing.

import { readFileSync } from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadLoomProto } from '../../src/api/grpc';
import { connect } from '../../src/client';
import { startServe, stopServe, type ServeProcess } from '../support/cli';
import { makeTempDir, removeDir } from '../support/tmp';

jest.setTimeout(60_000);

const fixture = (name: string): string => path.join(__dirname, '../fixtures/tls', name);
const ca = readFileSync(fixture('ca.pem'));

function httpsGet(port: number, route: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    https
      .get({ host: '127.0.0.1', port, path: route, ca }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

type KvClient = grpc.Client & { Get(req: unknown, cb: (err: grpc.ServiceError | null, res: { value: Buffer; rev: string }) => void): void };

function grpcGet(port: number, credentials: grpc.ChannelCredentials, key: string): Promise<{ value: Buffer; rev: string }> {
  const loaded = grpc.loadPackageDefinition(loadLoomProto()) as unknown as { loom: { v1: { KV: new (address: string, creds: grpc.ChannelCredentials) => KvClient } } };
  const client = new loaded.loom.v1.KV(`127.0.0.1:${port}`, credentials);
  return new Promise((resolve, reject) => {
    client.Get({ bucket: 'tls', key }, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(res);
    });
  });
}

describe('client doors over TLS', () => {
  let dir: string;
  let serve: ServeProcess;

  beforeAll(async () => {
    dir = makeTempDir('loom-doors-tls-');
    serve = await startServe(dir, ['--tls-cert', fixture('node.pem'), '--tls-key', fixture('node-key.pem')]);
  });

  afterAll(async () => {
    if (serve) await stopServe(serve);
    removeDir(dir);
  });

  it('serves the NATS door to the client SDK, gRPC and HTTPS to clients that trust the CA', async () => {
    const client = await connect({ servers: `127.0.0.1:${serve.ports.nats}`, nats: { tls: { ca: ca.toString() } } });
    try {
      const { rev } = await client.kv.put('tls', 'k', Buffer.from('secret value'));
      expect(rev).toBeGreaterThan(0);
    } finally {
      await client.close();
    }
    const got = await grpcGet(serve.ports.grpc, grpc.credentials.createSsl(ca), 'k');
    expect(Buffer.from(got.value).toString()).toBe('secret value');
    const health = await httpsGet(serve.ports.http, '/healthz');
    expect(health.status).toBe(200);
    const value = await httpsGet(serve.ports.http, '/v1/kv/tls/k');
    expect(value).toEqual({ status: 200, body: 'secret value' });
  });

  it('answers nothing over plain HTTP or plaintext gRPC', async () => {
    const plain = await fetch(`http://127.0.0.1:${serve.ports.http}/healthz`).then(
      (res) => res.status,
      () => 'refused',
    );
    expect(plain).not.toBe(200);
    await expect(grpcGet(serve.ports.grpc, grpc.credentials.createInsecure(), 'k')).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
  });

  it('refuses to start with a certificate and a key that do not belong together', async () => {
    const other = makeTempDir('loom-doors-tls-');
    try {
      await expect(startServe(other, ['--tls-cert', fixture('node.pem'), '--tls-key', fixture('other-key.pem')])).rejects.toThrow(/--tls-cert and its key are not usable together/);
    } finally {
      removeDir(other);
    }
  });
});
