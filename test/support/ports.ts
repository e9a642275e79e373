// A free TCP port on 127.0.0.1, for servers whose port must be known before they start (a
// restart on the same port, peer lists). Servers that can report their port should use port 0.
//
// The port comes from below the kernel's ephemeral range: a port the kernel hands out for a
// listen on port 0 or for an outgoing connection's local end could otherwise be taken between this
// check and the server's bind (a cluster test's fourth node once found its raft port in use).

import { readFileSync } from 'node:fs';
import * as net from 'node:net';

/** Lowest port tried; the highest is just below the ephemeral range. */
const chosenPortMin = 10_000;
const attemptsMax = 50;

function ephemeralPortMin(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > chosenPortMin + 1000 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

function listenable(port: number): Promise<boolean> {
  const server = net.createServer();
  return new Promise((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

export async function freePort(): Promise<number> {
  const high = ephemeralPortMin();
  for (let i = 0; i < attemptsMax; i++) {
    const port = chosenPortMin + Math.floor(Math.random() * (high - chosenPortMin));
    if (await listenable(port)) return port;
  }
  throw new Error(`no free port in [${chosenPortMin}, ${high}) after ${attemptsMax} tries`);
}
