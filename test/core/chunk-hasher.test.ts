import { createHash, randomBytes } from 'node:crypto';
import { ChunkHasher, hashSlotBytes, hashSlotsMax } from '../../src/core/chunk-hasher';
import { LoomError } from '../../src/util';

function sha256(...parts: Uint8Array[]): Buffer {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest();
}

describe('ChunkHasher', () => {
  let hasher: ChunkHasher;
  beforeEach(() => {
    hasher = new ChunkHasher();
  });
  afterEach(async () => {
    await hasher.close();
  });

  it('gives each chunk its sha256 and the stream the sha256 of every chunk in call order, beyond the slots at once', async () => {
    const chunks = Array.from({ length: hashSlotsMax * 3 }, (_, i) => randomBytes(1000 + i * 977));
    const whole = hasher.openStream();
    // All at once: more than the slots, so some wait for one and must still reach the stream in order.
    const digests = await Promise.all(chunks.map((chunk) => hasher.digest(chunk, whole)));
    expect(digests).toEqual(chunks.map((chunk) => sha256(chunk)));
    expect(await hasher.finishStream(whole)).toEqual(sha256(...chunks));
  });

  it('lets the caller reuse a borrowed chunk as soon as digest() returns', async () => {
    const bytes = Buffer.alloc(hashSlotBytes, 1);
    const digest = hasher.digest(bytes);
    bytes.fill(2);
    expect(await digest).toEqual(sha256(Buffer.alloc(hashSlotBytes, 1)));
  });

  it('moves an owned buffer to the worker and back without changing it', async () => {
    const bytes = Buffer.allocUnsafeSlow(300_000);
    randomBytes(300_000).copy(bytes);
    const expected = Buffer.from(bytes);
    const checked = await hasher.digestOwned(bytes);
    expect(checked.bytes.equals(expected)).toBe(true);
    expect(checked.digest).toEqual(sha256(expected));
  });

  it('keeps streams apart, and an empty stream has the empty sha256', async () => {
    const a = hasher.openStream();
    const b = hasher.openStream();
    const empty = hasher.openStream();
    await Promise.all([hasher.digest(Buffer.from('one'), a), hasher.digest(Buffer.from('two'), b), hasher.digest(Buffer.from('three'), a)]);
    expect(await hasher.finishStream(a)).toEqual(sha256(Buffer.from('onethree')));
    expect(await hasher.finishStream(b)).toEqual(sha256(Buffer.from('two')));
    expect(await hasher.finishStream(empty)).toEqual(sha256());
  });

  it('fails what is pending with UNAVAILABLE when closed, and everything after', async () => {
    const pending = hasher.digest(randomBytes(hashSlotBytes)).then(
      () => 'hashed',
      (err: unknown) => err,
    );
    await hasher.close();
    expect(await pending).toMatchObject({ code: 'UNAVAILABLE' });
    await expect(hasher.digest(Buffer.from('late'))).rejects.toBeInstanceOf(LoomError);
  });
});
