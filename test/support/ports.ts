// A free TCP port on 127.0.0.1, for servers whose port must be known before they start (a
// restart on the same port, peer lists). Servers that can report their port should use port 0.

import * as net from 'node:net';

export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
