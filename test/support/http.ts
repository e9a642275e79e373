// One HTTP exchange with a node, as a plain client makes it: node:http, no agent, the whole answer.

import * as http from 'node:http';
import { Readable } from 'node:stream';

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export function httpRequest(port: number, method: string, urlPath: string, options: { headers?: Record<string, string | string[]>; body?: Buffer | string | Readable } = {}): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    let responded = false;
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers: options.headers, agent: false }, (res) => {
      responded = true;
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    // A node that answers before it has read the whole body (413, 400) may close the connection
    // while the body is still being written: the answer is what counts.
    req.on('error', (err) => {
      if (!responded) reject(err);
    });
    if (options.body instanceof Readable) options.body.pipe(req);
    // A Buffer, never a string: Node writes the head and a string body as one UTF-8 string, which
    // would re-encode header bytes 0x80-0xFF (metadata values travel as their UTF-8 bytes).
    else req.end(typeof options.body === 'string' ? Buffer.from(options.body) : options.body);
  });
}
