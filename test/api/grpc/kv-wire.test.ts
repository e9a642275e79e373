// The hand-written KV answers must be byte for byte what proto-loader writes for the same message.
import fc from 'fast-check';
import type * as grpc from '@grpc/grpc-js';
import { loadLoomProto } from '../../../src/api/grpc';
import { encodeKvGetResponse, encodeRevResponse } from '../../../src/api/grpc/kv-wire';

function serializerOf(method: string): (message: unknown) => Buffer {
  const service = loadLoomProto()['loom.v1.KV'] as unknown as grpc.ServiceDefinition;
  return service[method].responseSerialize as (message: unknown) => Buffer;
}

const uint = fc.oneof(fc.constantFrom(0, 1, 127, 128, 16_383, 16_384, 2 ** 31 - 1, 2 ** 31, 2 ** 32, Number.MAX_SAFE_INTEGER), fc.nat());
const ascii = fc.string({ unit: fc.integer({ min: 0, max: 0x7f }).map((c) => String.fromCharCode(c)), maxLength: 300 });

describe('hand-written protobuf for KV answers', () => {
  it('writes a KvGetResponse exactly as proto-loader does, whichever fields are set', () => {
    const serialize = serializerOf('Get');
    fc.assert(
      fc.property(
        fc.record(
          {
            bucket: ascii,
            key: ascii,
            value: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
            rev: uint,
            create_rev: uint,
            updated_at: uint,
            expires_at: fc.option(uint, { nil: undefined }),
          },
          { requiredKeys: [] },
        ),
        (message) => {
          const fast = encodeKvGetResponse(message);
          expect(fast).toBeDefined();
          expect(Buffer.from(fast as Buffer).equals(serialize(message))).toBe(true);
        },
      ),
      { seed: 11, numRuns: 2000 },
    );
  });

  it('writes KvPutResponse and KvDeleteResponse exactly as proto-loader does', () => {
    for (const method of ['Put', 'Delete']) {
      const serialize = serializerOf(method);
      fc.assert(
        fc.property(fc.record({ rev: uint }, { requiredKeys: [] }), (message) => {
          expect(Buffer.from(encodeRevResponse(message) as Buffer).equals(serialize(message))).toBe(true);
        }),
        { seed: 13, numRuns: 500 },
      );
    }
  });

  it('leaves any other shape to proto-loader', () => {
    expect(encodeKvGetResponse({ bucket: 'b', key: 'ключ' })).toBeUndefined();
    expect(encodeKvGetResponse({ rev: 1.5 })).toBeUndefined();
    expect(encodeKvGetResponse({ value: 'text' })).toBeUndefined();
    expect(encodeRevResponse({ rev: -1 })).toBeUndefined();
    expect(encodeRevResponse({ rev: '7' })).toBeUndefined();
  });
});
