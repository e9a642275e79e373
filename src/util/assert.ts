// Assertions for invariants that must never break. A failed assertion is a bug in loom, not bad
// input: it throws an AssertionError that nothing should catch, so the process stops loudly.

import { AssertionError } from 'node:assert';

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError({ message: `loom invariant broken: ${message}` });
}
