import { createHash, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { blobChunkHeaderBytesMax, decodeMutation, encodeBlobChunkInPlace, encodeMutation } from '../../src/projections';
import { kvPutSchema } from '../../src/projections/entries';
import { isLoomError } from '../../src/util';

describe('the blob.chunk body written in place', () => {
  it('is byte for byte what encodeMutation writes, for 1-byte, bin16 and bin32 chunks', () => {
    for (const size of [1, 255, 256, 4096, 65_535, 65_536, 256 * 1024]) {
      const bytes = randomBytes(size);
      const sha256 = createHash('sha256').update(bytes).digest();
      const frame = Buffer.alloc(blobChunkHeaderBytesMax + size);
      bytes.copy(frame, blobChunkHeaderBytesMax);
      const data = encodeBlobChunkInPlace(frame, size, sha256);
      expect(Buffer.from(data).equals(Buffer.from(encodeMutation('blob.chunk', { sha256, bytes }).data))).toBe(true);
      const decoded = decodeMutation({ index: 1, term: 1, type: 'blob.chunk', data, ts: 0 });
      expect(decoded?.type).toBe('blob.chunk');
      expect(Buffer.from((decoded?.body as { bytes: Uint8Array }).bytes).equals(bytes)).toBe(true);
    }
  });
});

describe('a kv.put body', () => {
  const packr = new Packr({ useRecords: false, moreTypes: false });
  const value = Buffer.from('v');
  const candidates: unknown[] = [undefined, null, 0, 1, -1, 1.5, 2 ** 53, 'x', '', true, false, value, {}, []];
  const inputs = fc.record(
    {
      bucket: fc.constantFrom<unknown>('b', 'bench_1', '', 1, undefined),
      key: fc.constantFrom<unknown>('k', 'a/b=c.d', '.k', 2, undefined),
      value: fc.constantFrom<unknown>(value, new Uint8Array(0), 'v', undefined),
      v: fc.constantFrom<unknown>(...candidates),
      expectRev: fc.constantFrom<unknown>(...candidates),
      create: fc.constantFrom<unknown>(...candidates),
      ttlMs: fc.constantFrom<unknown>(...candidates, 3_600_000),
      other: fc.constantFrom<unknown>(...candidates),
    },
    { requiredKeys: [] },
  );

  it('encodes a command to the bytes of the schema output, or fails with the schema error, whichever shape it has', () => {
    fc.assert(
      fc.property(inputs, (input) => {
        const expected = kvPutSchema.safeParse(input);
        let got: Uint8Array | undefined;
        let error: unknown;
        try {
          got = encodeMutation('kv.put', input).data;
        } catch (err) {
          error = err;
        }
        if (!expected.success) {
          const issue = expected.error.issues[0];
          expect(isLoomError(error) && error.code === 'INVALID_ARGUMENT').toBe(true);
          expect((error as Error).message).toBe(`kv.put: ${issue.path.join('.') || 'body'}: ${issue.message}`);
          return;
        }
        // Valid by the schema; names and sizes are checked after it (and may still refuse).
        if (got === undefined) {
          expect(isLoomError(error)).toBe(true);
          return;
        }
        expect(Buffer.from(got).equals(packr.pack(expected.data))).toBe(true);
      }),
      { seed: 5, numRuns: 3000 },
    );
  });
});

describe('a blob.commit body', () => {
  const commit = (extra: Record<string, unknown>): Record<string, unknown> => ({
    bucket: 'b',
    name: 'o',
    size: 1,
    sha256: Buffer.alloc(32),
    chunkBytes: 4096,
    chunks: Buffer.alloc(32),
    ...extra,
  });

  it.each([
    [{ metadata: { k: 'line1\nline2' } }, 'metadata.k'],
    [{ metadata: { K: 'v', k: 'w' } }, 'metadata.k'],
    [{ metadata: { '': 'v' } }, 'metadata.'],
    [{ contentType: 'text/plain\r\nX-Evil: 1' }, 'contentType'],
    [{ contentType: 'text/é' }, 'contentType'],
  ])('never reaches the log with metadata or a content type no door can carry (%j)', (extra, field) => {
    let caught: unknown;
    try {
      encodeMutation('blob.commit', commit(extra));
    } catch (err) {
      caught = err;
    }
    expect(isLoomError(caught, 'INVALID_ARGUMENT') && caught.details.field).toBe(field);
  });

  it('keeps metadata and a content type every door carries', () => {
    const { body } = encodeMutation('blob.commit', commit({ contentType: 'text/plain; charset=utf-8', metadata: { 'a-b_1': 'x\ty', e: '', Author: 'Zoë ✓' } }));
    expect(body).toMatchObject({ contentType: 'text/plain; charset=utf-8', metadata: { 'a-b_1': 'x\ty', e: '', Author: 'Zoë ✓' } });
  });
});
