// Starting the servers a benchmark compares: `loom serve` (built CLI) and anchors such as etcd,
// each as its own process on loopback with free ports, stopped when the benchmark ends.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { loomNodeFlags } from '../src/cli/node-flags';
import { freePort } from '../test/support/ports';


export function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
}

export interface Running {
  child: ChildProcess;
  stop(): Promise<void>;
}

function stopper(child: ChildProcess): () => Promise<void> {
  return () =>
    new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    });
}

const loomMain = path.join(__dirname, '../../../dist/cli/main.js');

/**
 * `loom serve` on free ports (node run with `nodeFlags`); resolves with its ports once ports.json
 * exists. Its log (JSON lines on stdout, warnings and worse) is dropped unless `onLogLine` takes it.
 */
export async function startLoom(
  dataDir: string,
  args: string[] = [],
  nodeFlags: readonly string[] = loomNodeFlags,
  onLogLine?: (line: string) => void,
): Promise<Running & { ports: Record<string, number> }> {
  const child = spawn(process.execPath, [...nodeFlags, loomMain, 'serve', '--data', dataDir, '--http-port', '0', '--nats-port', '0', '--grpc-port', '0', '--raft-port', '0', '--log-level', 'warn', ...args], {
    stdio: ['ignore', onLogLine ? 'pipe' : 'ignore', 'inherit'],
  });
  if (onLogLine && child.stdout) createInterface({ input: child.stdout }).on('line', onLogLine);
  const portsFile = path.join(dataDir, 'ports.json');
  for (let i = 0; i < 300; i++) {
    if (existsSync(portsFile)) return { child, ports: JSON.parse(readFileSync(portsFile, 'utf8')) as Record<string, number>, stop: stopper(child) };
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  child.kill('SIGKILL');
  throw new Error('loom serve did not start');
}

/** A single-node etcd with its data on the same disk, as the anchor of the API benchmark. */
export async function startEtcd(dataDir: string): Promise<Running & { endpoint: string }> {
  const client = await freePort();
  const peer = await freePort();
  const endpoint = `http://127.0.0.1:${client}`;
  const child = spawn(
    'etcd',
    ['--data-dir', dataDir, '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint, '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`, '--initial-cluster', `default=http://127.0.0.1:${peer}`, '--log-level', 'error'],
    { stdio: ['ignore', 'ignore', 'ignore'] },
  );
  for (let i = 0; i < 200; i++) {
    try {
      const response = await fetch(`${endpoint}/health`);
      if (response.ok) return { child, endpoint, stop: stopper(child) };
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  child.kill('SIGKILL');
  throw new Error('etcd did not start');
}
