// Raw HTTP/2 gRPC calls for tests that compare the lean path's answers (lean-unary.ts) with grpc-js's.

import type * as http2 from 'node:http2';

export interface Answer {
  headers: Record<string, unknown>;
  body: Buffer;
  trailers?: Record<string, unknown>;
}

/** A message with the 5-byte gRPC prefix (compressed flag, length). */
export function frame(message: Buffer, flag = 0): Buffer {
  const out = Buffer.alloc(5 + message.length);
  out[0] = flag;
  out.writeUInt32BE(message.length, 1);
  message.copy(out, 5);
  return out;
}

/**
 * Headers grpc-js's answers carry and the lean path's leave out: optional in the gRPC protocol
 * (grpc-go sends none of them), and each one a client reads on every call.
 */
export const leftOut = new Set(['date', 'grpc-accept-encoding', 'grpc-encoding']);

/** Everything the client sees of a call but the headers in `leftOut`, once the server has ended it. */
export function answerOf(stream: http2.ClientHttp2Stream): Promise<Answer> {
  const fields = (h: http2.IncomingHttpHeaders): Record<string, unknown> => Object.fromEntries(Object.entries(h).filter(([name]) => !leftOut.has(name)));
  return new Promise((resolve, reject) => {
    let headers: Record<string, unknown> = {};
    let trailers: Record<string, unknown> | undefined;
    const chunks: Buffer[] = [];
    const done = (): void => resolve({ headers, body: Buffer.concat(chunks), trailers });
    stream.on('response', (h) => (headers = fields(h)));
    stream.on('trailers', (t) => (trailers = fields(t)));
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('error', reject);
    // A server may answer before the client has sent all: the call is over when the server's side ends.
    stream.on('end', () => {
      done();
      stream.close();
    });
    stream.on('close', done);
  });
}
