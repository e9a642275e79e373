// `npm run bench -- bus`: one harness with the `nats` client against loom's NATS server and the
// real nats-server in the same run, printing msgs/s and loom/nats-server ratios; plus in-process.

import { fork, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import { connect } from 'nats';
import type { NatsConnection } from 'nats';
import { Bus, NatsServer } from '../src/bus';
import { freePort } from '../test/support/ports';

interface Target {
  name: string;
  port: number;
  stop(): Promise<void>;
}

interface Scenario {
  name: string;
  /** Messages (or requests) per run; sized so a run takes roughly a second. */
  count: number;
  run(port: number, size: number, count: number): Promise<number>; // returns elapsed ms
}

const SIZES = [16, 128];
const SERVE_FLAG = '--serve-loom-for-bench';

// The loom server runs in its own process, like nats-server does, so neither shares the client's core.
if (process.argv.includes(SERVE_FLAG)) {
  const bus = new Bus();
  const server = new NatsServer(bus, { host: '127.0.0.1', port: 0 });
  void server.listen().then(({ port }) => process.send?.({ port }));
  process.on('message', (m) => {
    if (m === 'stop') void server.close().then(() => process.exit(0));
  });
}

export async function run(args: string[]): Promise<void> {
  const repeat = Number(args.find((a) => a.startsWith('--repeat='))?.slice(9) ?? 2);
  const targets: Target[] = [await startLoom()];
  const natsServer = await startNatsServer();
  if (natsServer) targets.push(natsServer);
  else process.stdout.write('nats-server not on PATH (apt-get install nats-server): skipping the anchor\n');

  const rows: string[] = [];
  const header = `| scenario | size | loom msgs/s | nats-server msgs/s | ratio |`;
  rows.push(header, '|---|---:|---:|---:|---:|');
  for (const scenario of scenarios()) {
    for (const size of SIZES) {
      // Targets alternate within each repeat, so a burst of load from elsewhere hits both alike;
      // the best run of each is kept.
      const rates: number[] = targets.map(() => 0);
      for (let r = 0; r < repeat; r++) {
        for (let t = 0; t < targets.length; t++) {
          const ms = await scenario.run(targets[t].port, size, scenario.count);
          rates[t] = Math.max(rates[t], (scenario.count / ms) * 1000);
        }
      }
      const ratio = rates.length > 1 ? (rates[0] / rates[1]).toFixed(2) : 'n/a';
      const line = `| ${scenario.name} | ${size} B | ${fmt(rates[0])} | ${rates[1] ? fmt(rates[1]) : 'n/a'} | ${ratio} |`;
      rows.push(line);
      process.stdout.write(`${line}\n`);
    }
  }
  for (const size of SIZES) {
    const rate = inProcessRate(size);
    const line = `| in-process publish→subscribe | ${size} B | ${fmt(rate)} | n/a | n/a |`;
    rows.push(line);
    process.stdout.write(`${line}\n`);
  }
  for (const t of targets) await t.stop();
  process.stdout.write(`\n${rows.join('\n')}\n`);
}

function fmt(rate: number): string {
  return Math.round(rate).toLocaleString('en-US');
}

function scenarios(): Scenario[] {
  return [
    { name: 'publish-only', count: 1_000_000, run: publishOnly },
    { name: '1→1 pub/sub', count: 500_000, run: (p, s, n) => fanOut(p, s, n, 1, undefined) },
    { name: '1→4 fan-out', count: 200_000, run: (p, s, n) => fanOut(p, s, n, 4, undefined) },
    { name: 'queue group (4 members)', count: 500_000, run: (p, s, n) => fanOut(p, s, n, 4, 'q') },
    { name: 'serial request/reply', count: 10_000, run: requestReply },
  ];
}

async function open(port: number): Promise<NatsConnection> {
  return connect({ servers: `127.0.0.1:${port}`, reconnect: false });
}

async function publishOnly(port: number, size: number, count: number): Promise<number> {
  const nc = await open(port);
  const payload = new Uint8Array(size);
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    nc.publish('bench.pub', payload);
    if ((i & 0x3fff) === 0) await nc.flush(); // keep the client's buffer bounded, as nats bench does
  }
  await nc.flush();
  const elapsed = performance.now() - started;
  await nc.close();
  return elapsed;
}

async function fanOut(port: number, size: number, count: number, subscribers: number, queue: string | undefined): Promise<number> {
  const subs = await Promise.all(Array.from({ length: subscribers }, () => open(port)));
  const expected = queue ? count : count * subscribers;
  let received = 0;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  for (const nc of subs) {
    nc.subscribe('bench.fan', {
      queue,
      callback: () => {
        if (++received === expected) done();
      },
    });
    await nc.flush();
  }
  const pub = await open(port);
  const payload = new Uint8Array(size);
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    pub.publish('bench.fan', payload);
    if ((i & 0x3fff) === 0) await pub.flush();
  }
  await pub.flush();
  await finished;
  const elapsed = performance.now() - started;
  await pub.close();
  for (const nc of subs) await nc.close();
  return elapsed;
}

async function requestReply(port: number, size: number, count: number): Promise<number> {
  const responder = await open(port);
  responder.subscribe('bench.req', { callback: (_e, m) => m.respond(m.data) });
  await responder.flush();
  const nc = await open(port);
  const payload = new Uint8Array(size);
  const started = performance.now();
  for (let i = 0; i < count; i++) await nc.request('bench.req', payload, { timeout: 5000 });
  const elapsed = performance.now() - started;
  await nc.close();
  await responder.close();
  return elapsed;
}

function inProcessRate(size: number): number {
  const bus = new Bus();
  let received = 0;
  bus.subscribe('bench.local', { callback: () => received++ });
  const payload = Buffer.alloc(size);
  const count = 2_000_000;
  const started = performance.now();
  for (let i = 0; i < count; i++) bus.publish('bench.local', payload);
  const elapsed = performance.now() - started;
  if (received !== count) throw new Error(`in-process bench lost messages: ${received}/${count}`);
  void bus.close();
  return (count / elapsed) * 1000;
}

async function startLoom(): Promise<Target> {
  const child = fork(__filename, [SERVE_FLAG], { stdio: 'inherit' });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m) => resolve((m as { port: number }).port));
    child.once('exit', (code) => reject(new Error(`loom bench server exited with ${code}`)));
  });
  return { name: 'loom', port, stop: () => stopChild(child, () => child.send('stop')) };
}

async function startNatsServer(): Promise<Target | undefined> {
  if (spawnSync('sh', ['-c', 'command -v nats-server']).status !== 0) return undefined;
  const port = await freePort();
  const child = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    if (await canConnect(port)) return { name: 'nats-server', port, stop: () => stopChild(child, () => child.kill('SIGTERM')) };
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error('nats-server did not start listening');
}

function stopChild(child: ChildProcess, ask: () => void): Promise<void> {
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    ask();
  });
}


function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
