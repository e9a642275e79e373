// Runs the deterministic cluster simulation over 300 seeds inside `npm test`; every seed checks
// the safety invariants after each event, liveness after faults stop, and linearizability.

import { runSeed } from './simulation';

const seedsInTest = 300;
const seedsPerBatch = 50;

describe('the deterministic Raft simulation', () => {
  for (let from = 1; from <= seedsInTest; from += seedsPerBatch) {
    it(`keeps every invariant, stays live and linearizable for seeds ${from}..${from + seedsPerBatch - 1}`, () => {
      for (let seed = from; seed < from + seedsPerBatch; seed++) {
        const result = runSeed({ seed });
        if (!result.ok) throw new Error(`seed ${seed}: ${result.violation}\nreproduce: npm run sim -- --seeds 1 --from ${seed} --trace`);
      }
    });
  }

  it('replays a seed exactly', () => {
    const a = runSeed({ seed: 42 });
    const b = runSeed({ seed: 42 });
    expect(b).toEqual(a);
  });

  it('catches a deliberate bug (a vote granted twice in one term)', () => {
    let caught = 0;
    for (let seed = 1; seed <= 200 && caught === 0; seed++) if (!runSeed({ seed, mutation: 'voteTwiceInTerm' }).ok) caught++;
    expect(caught).toBe(1);
  });
});
