// Reading a Readable in tests that need both its bytes and how it ended.

import { type Readable } from 'node:stream';

/** Every byte the stream delivered, and how it ended: undefined if it ended, else its error. */
export async function drain(stream: Readable): Promise<{ bytes: Buffer; failure: unknown }> {
  const pieces: Buffer[] = [];
  try {
    for await (const piece of stream) pieces.push(piece as Buffer);
    return { bytes: Buffer.concat(pieces), failure: undefined };
  } catch (err) {
    return { bytes: Buffer.concat(pieces), failure: err };
  }
}
