// `npm run bench -- <name> [args]`: runs bench/<name>.ts, whose `run(args)` prints its figures.
// Benchmarks never run inside `npm test`; their latest figures live in bench/RESULTS.md.

import { readdirSync } from 'node:fs';
import * as path from 'node:path';

interface Bench {
  run(args: string[]): Promise<void>;
}

async function main(): Promise<void> {
  const [name, ...args] = process.argv.slice(2);
  const available = readdirSync(__dirname)
    .filter((f) => f.endsWith('.js') && f !== 'run.js')
    .map((f) => f.slice(0, -3));
  if (!name || !available.includes(name)) {
    process.stderr.write(`usage: npm run bench -- <name>\navailable: ${available.join(', ')}\n`);
    process.exit(2);
  }
  const bench = require(path.join(__dirname, name)) as Bench;
  await bench.run(args);
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
