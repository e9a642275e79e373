// Multi-process: a real `loom serve` refuses and logs a peer with a wrong cluster secret, and
// fuzzed bytes on its raft port close those connections only — the process keeps serving. A group
// started with peer TLS replicates over it and refuses a peer whose certificate it does not trust.

import * as net from 'node:net';
import * as path from 'node:path';
import pino from 'pino';
import { PeerTransport } from '../../src/replication';
import { seededRandom } from '../../src/eventlog/raft';
import { runLoom, startServe, stopServe, type ServeProcess } from '../support/cli';
import { makeTempDir, removeDir } from '../support/tmp';
import { NatsPool, TestCluster, clusterSecret, freePort, sleep } from './cluster';

jest.setTimeout(60_000);

describe('raft port security', () => {
  let dir: string;
  let serve: ServeProcess;
  let rogue: PeerTransport;
  let raftPort: number;

  beforeAll(async () => {
    dir = makeTempDir('loom-security-');
    raftPort = await freePort();
    const roguePort = await freePort();
    const peers = `1=127.0.0.1:${raftPort},2=127.0.0.1:${roguePort}`;
    serve = await startServe(dir, ['--node-id', '1', '--raft-port', String(raftPort), '--peers', peers, '--cluster-secret', clusterSecret]);
    rogue = new PeerTransport({
      nodeId: 2,
      host: '127.0.0.1',
      port: roguePort,
      peers: [{ id: 1, host: '127.0.0.1', port: raftPort }],
      secret: 'not-the-cluster-secret',
      logger: pino({ level: 'silent' }),
    });
    await rogue.listen();
  });

  afterAll(async () => {
    await rogue?.close();
    if (serve) await stopServe(serve, 'SIGKILL');
    removeDir(dir);
  });

  it('rejects a peer with a wrong cluster secret and logs it', async () => {
    const deadline = Date.now() + 10_000;
    while (!/wrong cluster secret/.test(serve.output()) && Date.now() < deadline) await sleep(100);
    expect(serve.output()).toMatch(/raft peer rejected: wrong cluster secret/);
    expect(rogue.connectedPeers()).toEqual([]);
  });

  it('keeps serving after fuzzed frames on the raft port', async () => {
    const random = seededRandom(7);
    for (let round = 0; round < 200; round++) {
      const socket = net.connect({ host: '127.0.0.1', port: raftPort });
      socket.on('error', () => undefined);
      await new Promise<void>((resolve) => {
        socket.once('connect', () => resolve());
        socket.once('error', () => resolve());
      });
      const length = Math.floor(random() * 300) + 8;
      const bytes = Buffer.from(Array.from({ length }, () => Math.floor(random() * 256)));
      // Half the rounds send a plausible length prefix, so the parser reaches msgpack decoding.
      if (round % 2 === 0) bytes.writeUInt32BE(Math.max(1, length - 4), 0);
      socket.end(bytes);
    }
    await sleep(500);
    expect(serve.child.exitCode).toBeNull();
    const res = await fetch(`http://127.0.0.1:${serve.ports.http}/v1/cluster/status`);
    expect(res.status).toBe(200);
    const status = (await res.json()) as { nodeId: number };
    expect(status.nodeId).toBe(1);
  });

  it('reports the group of the node through loom cluster status', () => {
    const result = runLoom(['cluster', 'status', '--http', `http://127.0.0.1:${serve.ports.http}`]);
    expect(result.status).toBe(0);
    const status = JSON.parse(result.stdout) as { nodeId: number; members: Array<{ id: number; role: string }> };
    expect(status.nodeId).toBe(1);
    expect(status.members.map((m) => m.id)).toEqual([1, 2]);
  });
});

describe('raft port with mutual TLS', () => {
  const fixture = (name: string): string => path.join(__dirname, '../fixtures/tls', name);
  const tlsArgs = ['--peer-tls-cert', fixture('node.pem'), '--peer-tls-key', fixture('node-key.pem'), '--peer-tls-ca', fixture('ca.pem')];

  it.each([
    ['a missing key and CA', ['--peer-tls-cert', 'node.pem'], /--peer-tls-cert, --peer-tls-key, --peer-tls-ca go together; --peer-tls-key is missing/],
    ['a key of another certificate', ['--peer-tls-cert', 'node.pem', '--peer-tls-key', 'other-key.pem', '--peer-tls-ca', 'ca.pem'], /not usable together/],
    ['a file that does not exist', ['--peer-tls-cert', 'node.pem', '--peer-tls-key', 'nope.pem', '--peer-tls-ca', 'ca.pem'], /cannot read --peer-tls-key file/],
  ])('refuses to start with %s, naming the problem', (_what, flags, message) => {
    const dir = makeTempDir('loom-tls-');
    try {
      const files = flags.map((f) => (f.startsWith('--') ? f : fixture(f)));
      const result = runLoom(['serve', '--data', dir, '--http-port', '0', '--nats-port', '0', '--grpc-port', '0', '--raft-port', '0', '--peers', '1=127.0.0.1:1', '--cluster-secret', clusterSecret, ...files]);
      expect(result.status).not.toBe(0);
      expect(result.stderr).toMatch(message);
    } finally {
      removeDir(dir);
    }
  });

  it('replicates over TLS and refuses a peer whose certificate another CA signed', async () => {
    const cluster = await TestCluster.start({ size: 3, extraArgs: tlsArgs });
    const pool = new NatsPool(cluster);
    const dir = makeTempDir('loom-tls-');
    let stranger: ServeProcess | undefined;
    try {
      const leader = await cluster.waitLeader(20_000);
      const put = await pool.request(leader, '$LOOM.API.KV.PUT.tls.k', Buffer.from('over tls'));
      expect(put.ok).toBe(true);
      await cluster.waitConverged(put.rev ?? 0);

      // A node with the right cluster secret but a certificate from another CA gets nowhere.
      const peers = [...cluster.nodes.map((n) => `${n.id}=127.0.0.1:${n.raftPort}`), `4=127.0.0.1:${await freePort()}`].join(',');
      stranger = await startServe(dir, [
        '--node-id', '4', '--peers', peers, '--join', '--cluster-secret', clusterSecret,
        '--peer-tls-cert', fixture('other.pem'), '--peer-tls-key', fixture('other-key.pem'), '--peer-tls-ca', fixture('other-ca.pem'),
      ]);
      const deadline = Date.now() + 10_000;
      const rejected = (): boolean => cluster.nodes.some((n) => /raft peer rejected: TLS handshake failed/.test(n.serve?.output() ?? ''));
      while (!rejected() && Date.now() < deadline) await sleep(100);
      expect(rejected()).toBe(true);
      // And it refuses them in turn: their certificates are not signed by the CA it trusts.
      while (!/raft peer unreachable over TLS/.test(stranger.output()) && Date.now() < deadline) await sleep(100);
      expect(stranger.output()).toMatch(/raft peer unreachable over TLS/);
    } finally {
      if (stranger) await stopServe(stranger, 'SIGKILL');
      removeDir(dir);
      await pool.close();
      await cluster.close();
    }
  });
});
