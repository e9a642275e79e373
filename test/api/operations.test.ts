// The operations' input check: the hand-written check of well-formed KV requests must accept only
// what the zod schema accepts, and return what the schema would.
import fc from 'fast-check';
import { operationSchemas, parseInput } from '../../src/api';
import { isLoomError } from '../../src/util';

describe('parseInput for KV requests', () => {
  const value = Buffer.from('v');
  const candidates: unknown[] = [undefined, null, 0, 1, -1, 1.5, 2 ** 53, 60_000, 60_001, 'x', '', 'local', 'linearizable', true, false, value, {}, []];
  const inputs = fc.record(
    {
      bucket: fc.constantFrom<unknown>('b', '', 1, undefined),
      key: fc.constantFrom<unknown>('k', 'a.b', 2, undefined),
      value: fc.constantFrom<unknown>(value, 'v', undefined),
      expectRev: fc.constantFrom<unknown>(...candidates),
      create: fc.constantFrom<unknown>(...candidates),
      ttlMs: fc.constantFrom<unknown>(...candidates),
      consistency: fc.constantFrom<unknown>(...candidates),
      atLeast: fc.constantFrom<unknown>(...candidates),
      timeoutMs: fc.constantFrom<unknown>(...candidates),
      other: fc.constantFrom<unknown>(...candidates),
    },
    { requiredKeys: [] },
  );

  it.each(['kv.put', 'kv.get', 'kv.del'] as const)('accepts and returns exactly what the %s schema does', (name) => {
    fc.assert(
      fc.property(inputs, (input) => {
        const expected = operationSchemas[name].safeParse(input);
        let got: unknown;
        let error: unknown;
        try {
          got = parseInput(name, input);
        } catch (err) {
          error = err;
        }
        if (expected.success) expect(got).toEqual(expected.data);
        else expect(isLoomError(error) && error.code === 'INVALID_ARGUMENT').toBe(true);
      }),
      { seed: 7, numRuns: 3000 },
    );
  });

  it('words an error as the schema does when a well-known field has the wrong type', () => {
    expect(() => parseInput('kv.put', { bucket: 'b', key: 'k', value: 'text' })).toThrow('kv.put: value: expected bytes');
    expect(() => parseInput('kv.get', { bucket: 'b', key: 'k', consistency: 'eventual' })).toThrow(/^kv\.get: consistency: /);
    expect(() => parseInput('kv.del', { bucket: 'b', key: 'k', value: Buffer.from('v') })).toThrow('kv.del: unknown field "value"');
  });
});
