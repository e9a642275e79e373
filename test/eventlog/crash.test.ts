// Crash test: a child process appends concurrently and prints every index the log acknowledged;
// it is SIGKILLed at seeded moments. After each kill every acknowledged entry must be present,
// intact and dense, and the log must accept appends again.

import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { LmdbLog } from '../../src/eventlog';
import { seededRandom } from '../support/seeded';
import { makeTempDir, removeDir } from '../support/tmp';

const fixture = path.join(__dirname, 'fixtures', 'crash-appender.js');
const rounds = 20;
const seed = 20261126;

/** Runs the appender until it has acknowledged `killAfterAcks` entries, then SIGKILLs it. */
function runAndKill(dir: string, appenders: number, killAfterAcks: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fixture, dir, String(appenders)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let highestAck = 0;
    let acks = 0;
    let buffered = '';
    child.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        if (line === 'ready') continue;
        highestAck = Math.max(highestAck, Number(line));
        if (++acks === killAfterAcks) child.kill('SIGKILL');
      }
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL') reject(new Error(`appender exited with ${code ?? signal} before it was killed`));
      else resolve(highestAck);
    });
  });
}

describe('the LMDB log under SIGKILL', () => {
  it(`keeps every acknowledged entry intact and dense across ${rounds} seeded kills`, async () => {
    const dir = makeTempDir();
    const random = seededRandom(seed);
    try {
      let acknowledged = 0;
      for (let round = 0; round < rounds; round++) {
        const appenders = [1, 16, 64][Math.floor(random() * 3)];
        const killAfterAcks = 1 + Math.floor(random() * 1000);
        const highestAck = await runAndKill(dir, appenders, killAfterAcks);
        acknowledged = Math.max(acknowledged, highestAck);

        const log = LmdbLog.open({ path: dir });
        try {
          expect(log.lastIndex()).toBeGreaterThanOrEqual(acknowledged);
          const report = log.verify();
          expect(report).toMatchObject({ ok: true, checked: log.lastIndex() });
          const sample = log.entries(1, log.lastIndex() + 1, Number.MAX_SAFE_INTEGER);
          for (const entry of sample) expect(Buffer.from(entry.data).toString()).toBe(`entry ${entry.index} `.repeat(8));
          const next = log.lastIndex() + 1;
          await log.append([{ index: next, term: 1, type: 'test.put', data: Buffer.from(`entry ${next} `.repeat(8)), ts: next }]);
          acknowledged = next;
        } finally {
          await log.close();
        }
      }
    } finally {
      removeDir(dir);
    }
  }, 120_000);
});
