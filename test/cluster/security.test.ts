// Multi-process: a real `loom serve` refuses and logs a peer with a wrong cluster secret, and
// fuzzed bytes on its raft port close those connections only — the process keeps serving.

import * as net from 'node:net';
import pino from 'pino';
import { PeerTransport } from '../../src/replication';
import { seededRandom } from '../../src/eventlog/raft';
import { runLoom, startServe, stopServe, type ServeProcess } from '../support/cli';
import { makeTempDir, removeDir } from '../support/tmp';
import { clusterSecret, freePort, sleep } from './cluster';

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
