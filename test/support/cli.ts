// Runs the built `loom` CLI (dist/) as a child process, for tests of the command line and of
// real server processes.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { loomNodeFlags } from '../../src/cli/node-flags';

export const loomMain = path.join(__dirname, '../../dist/cli/main.js');

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function runLoom(args: string[], env: NodeJS.ProcessEnv = {}): CliResult {
  const result = spawnSync(process.execPath, [...loomNodeFlags, loomMain, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

export interface ServeProcess {
  child: ChildProcess;
  ports: Record<string, number>;
  output(): string;
}

/** Starts `loom serve` with free ports and resolves once it has written ports.json. */
export async function startServe(dataDir: string, extraArgs: string[] = [], timeoutMs = 15_000): Promise<ServeProcess> {
  const portsFile = path.join(dataDir, 'ports.json');
  const args = ['serve', '--data', dataDir, '--http-port', '0', '--nats-port', '0', '--grpc-port', '0', '--raft-port', '0', '--log-level', 'warn', ...extraArgs];
  const child = spawn(process.execPath, [...loomNodeFlags, loomMain, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (output += c.toString()));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`loom serve exited with ${child.exitCode}: ${output}`);
    if (existsSync(portsFile)) {
      const ports = JSON.parse(readFileSync(portsFile, 'utf8')) as Record<string, number>;
      return { child, ports, output: () => output };
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`loom serve did not write ${portsFile} within ${timeoutMs} ms: ${output}`);
}

export function stopServe(serve: ServeProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  return new Promise((resolve) => {
    if (serve.child.exitCode !== null) return resolve(serve.child.exitCode);
    serve.child.once('exit', (code) => resolve(code));
    serve.child.kill(signal);
  });
}
