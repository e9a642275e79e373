import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { LmdbLog } from '../../src/eventlog';
import { loomNodeFlags } from '../../src/cli/node-flags';
import { LoomError } from '../../src/util';
import { runLoom, startServe, stopServe } from '../support/cli';
import { makeTempDir, removeDir } from '../support/tmp';

async function writeEntries(dataDir: string, count: number): Promise<void> {
  const log = LmdbLog.open({ path: path.join(dataDir, 'log') });
  for (let i = 1; i <= count; i++) {
    await log.append([{ index: i, term: 1, type: 'test.put', data: Buffer.from(`marker-${String(i).padStart(4, '0')}-payload`), ts: 1_700_000_000_000 + i }]);
  }
  await log.close();
}

describe('loom log', () => {
  let dir: string;
  beforeEach(() => {
    dir = makeTempDir();
  });
  afterEach(() => removeDir(dir));

  it('stat reports first and last index, last term and size', async () => {
    await writeEntries(dir, 7);
    const result = runLoom(['log', 'stat', '--data', dir]);
    expect(result.status).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ firstIndex: 1, lastIndex: 7, lastTerm: 1, sizeBytes: expect.any(Number) });
  });

  it('tail prints entries from an index', async () => {
    await writeEntries(dir, 5);
    const result = runLoom(['log', 'tail', '--data', dir, '--from', '4']);
    expect(result.status).toBe(0);
    const lines = result.stdout.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^4\tterm 1\t.*\ttest\.put\t"marker-0004-payload"$/);
  });

  it('verify passes a healthy log', async () => {
    await writeEntries(dir, 20);
    const result = runLoom(['log', 'verify', '--data', dir]);
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/ok: 20 entries \[1, 20\] verified/);
  });

  it('verify names a flipped byte inside an entry, and reading that entry raises CORRUPT', async () => {
    await writeEntries(dir, 20);
    const file = path.join(dir, 'log', 'data.mdb');
    const bytes = readFileSync(file);
    // LMDB is copy-on-write: stale copies of the page may sit in free pages, so flip every copy.
    let flipped = 0;
    for (let at = bytes.indexOf('marker-0013-payload'); at >= 0; at = bytes.indexOf('marker-0013-payload', at + 1)) {
      bytes[at + 10] ^= 0x01;
      flipped++;
    }
    expect(flipped).toBeGreaterThan(0);
    writeFileSync(file, bytes);

    const result = runLoom(['log', 'verify', '--data', dir]);
    expect(result.status).toBe(1);
    expect(result.stdout).toMatch(/CORRUPT: entry 13: .*CRC32C/);

    const log = LmdbLog.open({ path: path.join(dir, 'log') });
    try {
      expect(log.entries(12, 13)).toHaveLength(1);
      let caught: unknown;
      try {
        log.entries(13, 14);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(LoomError);
      expect((caught as LoomError).code).toBe('CORRUPT');
      expect((caught as LoomError).message).toMatch(/entry 13 in .*data\.mdb is corrupt/);
    } finally {
      await log.close();
    }
  });

  it('reports a missing log clearly', () => {
    const result = runLoom(['log', 'stat', '--data', path.join(dir, 'nothing-here')]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/loom: NOT_FOUND: no loom log at/);
  });
});

describe('loom serve', () => {
  let dir: string;
  beforeEach(() => {
    dir = makeTempDir();
  });
  afterEach(() => removeDir(dir));

  it('answers /healthz, refuses a second process on the same data directory, and stops on SIGTERM', async () => {
    const serve = await startServe(dir);
    try {
      const health = await fetch(`http://127.0.0.1:${serve.ports.http}/healthz`);
      expect(health.status).toBe(200);
      const second = runLoom(['serve', '--data', dir, '--http-port', '0', '--log-level', 'warn']);
      expect(second.status).toBe(1);
      expect(second.stderr).toMatch(/data directory .* is in use by another loom process \(pid \d+\)/);
    } finally {
      expect(await stopServe(serve)).toBe(0);
    }
  });

  it('refuses an unknown flag and a bad value with a usage message', () => {
    const unknown = runLoom(['serve', '--data', dir, '--htp-port', '1']);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(/unknown flag --htp-port/);
    const bad = runLoom(['serve', '--data', dir, '--sync', 'maybe']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/INVALID_ARGUMENT: invalid configuration sync = "maybe" \(from flag --sync\)/);
  });

  it('runs with the V8 flags of loom when started as bin/loom, by npm start or by its systemd unit', async () => {
    const root = path.join(__dirname, '../..');
    const child = spawn(path.join(root, 'bin/loom'), ['serve', '--data', dir, '--http-port', '0', '--nats-port', '0', '--grpc-port', '0', '--raft-port', '0', '--log-level', 'warn'], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 300 && !existsSync(path.join(dir, 'ports.json')); i++) await new Promise((r) => setTimeout(r, 50));
      // The kernel ran the shebang: node's own command line carries the flags.
      const commandLine = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0');
      for (const flag of loomNodeFlags) expect(commandLine).toContain(flag);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    const start = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts.start;
    expect(start).toContain(`node ${loomNodeFlags.join(' ')} dist/cli/main.js serve`);
    // And the systemd unit of deploy/.
    expect(readFileSync(path.join(root, 'deploy/loom.service'), 'utf8')).toContain(`/usr/bin/node ${loomNodeFlags.join(' ')} /opt/loom/dist/cli/main.js serve`);
  });
});
