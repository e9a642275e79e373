// `npm run sim -- --seeds N --from S [--mutation NAME] [--trace] [--no-durability-check]`: runs
// seeds S … S+N−1, prints progress, and stops at the first violation with the command to replay it.

import type { RaftMutation } from '../../src/eventlog/raft';
import { runSeed } from './simulation';

interface CliOptions {
  seeds: number;
  from: number;
  mutation?: RaftMutation;
  trace: boolean;
  checkDurability: boolean;
}

function parseArgs(argv: string[]): CliOptions {
  const options: CliOptions = { seeds: 100, from: 1, trace: false, checkDurability: true };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--seeds') options.seeds = Number(argv[++i]);
    else if (arg === '--from') options.from = Number(argv[++i]);
    else if (arg === '--seed') {
      options.from = Number(argv[++i]);
      options.seeds = 1;
    } else if (arg === '--mutation') options.mutation = argv[++i] as RaftMutation;
    else if (arg === '--trace') options.trace = true;
    else if (arg === '--no-durability-check') options.checkDurability = false;
    else throw new Error(`unknown argument ${arg}`);
  }
  if (!Number.isSafeInteger(options.seeds) || options.seeds < 1) throw new Error('--seeds must be a positive integer');
  if (!Number.isSafeInteger(options.from)) throw new Error('--from must be an integer');
  return options;
}

function reproduceCommand(options: CliOptions, seed: number): string {
  let cmd = `npm run sim -- --seeds 1 --from ${seed}`;
  if (options.mutation) cmd += ` --mutation ${options.mutation}`;
  if (!options.checkDurability) cmd += ' --no-durability-check';
  return `${cmd} --trace`;
}

function main(): number {
  const options = parseArgs(process.argv.slice(2));
  const started = Date.now();
  let events = 0;
  const progressEvery = Math.max(1, Math.floor(options.seeds / 20));
  for (let i = 0; i < options.seeds; i++) {
    const seed = options.from + i;
    const result = runSeed({ seed, mutation: options.mutation, trace: options.trace, checkDurability: options.checkDurability });
    events += result.events;
    if (options.trace) console.log(result.trace.join('\n'));
    if (!result.ok) {
      console.log(`\nVIOLATION at seed ${seed} (after ${i} passing seeds, ${((Date.now() - started) / 1000).toFixed(1)} s):`);
      console.log(result.violation);
      console.log(`\nreproduce: ${reproduceCommand(options, seed)}`);
      return 1;
    }
    if ((i + 1) % progressEvery === 0 || i + 1 === options.seeds) {
      const s = ((Date.now() - started) / 1000).toFixed(1);
      console.log(`${i + 1}/${options.seeds} seeds passed (up to seed ${seed}), ${events} events, ${s} s`);
    }
  }
  console.log(`all ${options.seeds} seeds from ${options.from} passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return 0;
}

process.exitCode = main();
