import { existsSync, readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { loadConfig, startNode } from '../../src/node';
import { silentLogger } from '../../src/util';
import { makeTempDir, removeDir } from '../support/tmp';

const freePorts = { 'http-port': '0', 'nats-port': '0', 'grpc-port': '0', 'raft-port': '0' };

describe('a node started in-process', () => {
  let dir: string;
  beforeEach(() => {
    dir = makeTempDir();
  });
  afterEach(() => removeDir(dir));

  it('serves health, readiness and metrics, and writes ports.json once listening', async () => {
    const node = await startNode(loadConfig({ flags: { data: dir, ...freePorts } }), { logger: silentLogger() });
    try {
      const ports = JSON.parse(readFileSync(path.join(dir, 'ports.json'), 'utf8'));
      // A single node runs no Raft transport: the raft key is there, null, as nothing listens.
      expect(ports).toEqual({ nats: node.ports.nats, grpc: node.ports.grpc, http: node.ports.http, raft: null });
      expect([ports.nats, ports.grpc, ports.http].every((p: unknown) => typeof p === 'number' && p > 0)).toBe(true);
      const base = `http://127.0.0.1:${ports.http}`;
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      await node.opened.core.propose({ type: 'test.put', data: Buffer.from('x') });
      const ready = await fetch(`${base}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toMatchObject({ ready: true, lastIndex: 1, commitIndex: 1, appliedIndex: 1 });
      const metrics = await (await fetch(`${base}/metrics`)).text();
      expect(metrics).toMatch(/^loom_log_last_index 1$/m);
      expect(metrics).toMatch(/^loom_log_append_seconds_count 1$/m);
      expect(metrics).toMatch(/^loom_log_fsyncs_total [1-9]/m);
      expect(metrics).toMatch(/^loom_projection_lag_entries\{projection="kv",state="RUNNING"\} 0$/m);
    } finally {
      await node.close();
    }
    expect(existsSync(path.join(dir, 'LOCK'))).toBe(false);
  });

  it('writes the raft port it listens on to ports.json when --raft-port 0 picks a free one', async () => {
    const flags = { data: dir, ...freePorts, 'node-id': '1', peers: '1=127.0.0.1:7000', 'cluster-secret': 'a secret of the group' };
    const node = await startNode(loadConfig({ flags }), { logger: silentLogger() });
    try {
      const ports = JSON.parse(readFileSync(path.join(dir, 'ports.json'), 'utf8'));
      expect(ports).toEqual({ nats: node.ports.nats, grpc: node.ports.grpc, http: node.ports.http, raft: node.ports.raft });
      expect(ports.raft).toBeGreaterThan(0);
      // Something listens there: the raft transport accepts a connection.
      const socket = net.connect(ports.raft, '127.0.0.1');
      await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      socket.destroy();
    } finally {
      await node.close();
    }
  });

  it('refuses, TOO_LARGE, a replicated proposal over entryBytesMax, and keeps serving', async () => {
    // A one-voter Raft group: without the check, Raft took the entry and the log refused it only
    // when persisting it, which ended the process.
    const flags = { data: dir, ...freePorts, 'node-id': '1', peers: '1=127.0.0.1:7000', 'cluster-secret': 'a secret of the group', 'entry-bytes-max': String(1024 * 1024) };
    const node = await startNode(loadConfig({ flags }), { logger: silentLogger() });
    try {
      // Once it has elected itself, a small write goes through.
      for (let i = 0; ; i++) {
        const written = await node.opened.db.objects.put('b', 'first', Buffer.from('x')).then(
          () => true,
          (err: { code?: string }) => (err.code === 'NOT_LEADER' && i < 100 ? false : Promise.reject(err)),
        );
        if (written) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      await expect(node.opened.db.objects.put('b', 'big', Buffer.alloc(1024 * 1024, 1), { chunkBytes: 1024 * 1024 })).rejects.toMatchObject({
        code: 'TOO_LARGE',
        details: { limit: 'entryBytesMax' },
      });
      const info = await node.opened.db.objects.put('b', 'small', Buffer.from('still here'));
      expect(info.size).toBe(10);
    } finally {
      await node.close();
    }
  });

  it('refuses a second node on the same data directory', async () => {
    const node = await startNode(loadConfig({ flags: { data: dir, ...freePorts } }), { logger: silentLogger() });
    try {
      await expect(startNode(loadConfig({ flags: { data: dir, ...freePorts } }), { logger: silentLogger() })).rejects.toMatchObject({
        code: 'UNAVAILABLE',
        message: expect.stringMatching(/data directory .* is already open/),
      });
    } finally {
      await node.close();
    }
  });

  it('refuses a port already in use, naming it, and leaves the data directory free', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const taken = (blocker.address() as net.AddressInfo).port;
    try {
      await expect(
        startNode(loadConfig({ flags: { data: dir, ...freePorts, 'http-port': String(taken) } }), { logger: silentLogger() }),
      ).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringMatching(new RegExp(`http port ${taken} .* already in use`)) });
      expect(existsSync(path.join(dir, 'LOCK'))).toBe(false);
    } finally {
      blocker.close();
    }
  });

  it('keeps what it acknowledged across a restart', async () => {
    let node = await startNode(loadConfig({ flags: { data: dir, ...freePorts } }), { logger: silentLogger() });
    for (let i = 0; i < 10; i++) await node.opened.core.propose({ type: 'test.put', data: Buffer.from(`v${i}`) });
    await node.close();
    node = await startNode(loadConfig({ flags: { data: dir, ...freePorts } }), { logger: silentLogger() });
    try {
      expect(node.opened.core.status()).toMatchObject({ lastIndex: 10, commitIndex: 10, appliedIndex: 10 });
      expect((await node.opened.core.propose({ type: 'test.put', data: Buffer.from('next') })).seq).toBe(11);
    } finally {
      await node.close();
    }
  });
});
