import { createHash, randomBytes } from 'node:crypto';
import { blobChunkHeaderBytesMax, decodeMutation, encodeBlobChunkInPlace, encodeMutation } from '../../src/projections';

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
