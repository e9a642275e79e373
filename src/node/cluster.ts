// Builds a node's replication from its config: the peer transport on the raft port, the Raft
// driver over the log, leader changes announced on $SYS.LEADER.<service>.<id>.

import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import type { Bus } from '../bus';
import type { LogStore } from '../eventlog';
import { PeerTransport, RaftReplicator, type PeerTls } from '../replication';
import { LoomError, type Logger } from '../util';
import type { Config } from './config';

export interface Replication {
  replicator: RaftReplicator;
  transport: PeerTransport;
  raftPort: number;
}

/** The peer TLS files, read; all three flags or none. */
function peerTls(config: Config): PeerTls | undefined {
  const files = { peerTlsCert: config.peerTlsCert, peerTlsKey: config.peerTlsKey, peerTlsCa: config.peerTlsCa };
  const given = Object.entries(files).filter(([, file]) => file !== undefined);
  if (given.length === 0) return undefined;
  if (given.length < 3) {
    const missing = Object.keys(files).find((key) => files[key as keyof typeof files] === undefined) as string;
    throw new LoomError('INVALID_ARGUMENT', '--peer-tls-cert, --peer-tls-key and --peer-tls-ca go together', { field: missing });
  }
  const read = (field: keyof typeof files): Buffer => {
    try {
      return readFileSync(files[field] as string);
    } catch (err) {
      throw new LoomError('INVALID_ARGUMENT', `cannot read ${field} file ${files[field]}: ${(err as Error).message}`, { field });
    }
  };
  const pem: PeerTls = { cert: read('peerTlsCert'), key: read('peerTlsKey'), ca: read('peerTlsCa') };
  try {
    createSecureContext(pem);
  } catch (err) {
    throw new LoomError('INVALID_ARGUMENT', `the peer TLS certificate, key and CA are not usable together: ${(err as Error).message}`, { field: 'peerTlsCert' });
  }
  return pem;
}

/** Subject on which every node of a group announces the leader it follows. */
export function leaderSubject(config: Config): string {
  return `$SYS.LEADER.${config.service}.${config.id}`;
}

export async function startReplication(config: Config, log: LogStore, bus: Bus, logger: Logger): Promise<Replication> {
  if (config.clusterSecret === undefined) {
    throw new LoomError('INVALID_ARGUMENT', '--peers needs --cluster-secret: peers authenticate each other with it', { field: 'clusterSecret' });
  }
  const ids = new Set(config.peers.map((p) => p.id));
  if (ids.size !== config.peers.length) throw new LoomError('INVALID_ARGUMENT', '--peers names a node id twice', { field: 'peers' });
  const transport = new PeerTransport({
    nodeId: config.nodeId,
    host: config.host,
    port: config.raftPort,
    peers: config.peers,
    secret: config.clusterSecret,
    logger,
    tls: peerTls(config),
  });
  let raftPort: number;
  try {
    raftPort = await transport.listen();
  } catch (err) {
    await transport.close();
    throw new LoomError('UNAVAILABLE', `cannot listen on raft port ${config.host}:${config.raftPort}: ${(err as Error).message}`, { field: 'raftPort' });
  }
  const replicator = new RaftReplicator({
    nodeId: config.nodeId,
    // Every node starts from the same genesis voters. A joining node (--join, or one missing from
    // --peers) is not among them: it learns the membership from the leader's log and neither
    // votes nor campaigns until a committed change makes it a voter.
    voters: config.peers.map((p) => p.id).filter((id) => !config.join || id !== config.nodeId),
    log,
    network: transport,
    logger,
    heartbeatMs: config.heartbeatMs,
    electionTimeoutMs: config.electionTimeoutMs,
  });
  replicator.onLeaderChange((change) => {
    const body = { leader: change.leader, term: change.term, address: change.addresses?.nats ?? null, addresses: change.addresses ?? {} };
    bus.publish(leaderSubject(config), Buffer.from(JSON.stringify(body)));
  });
  logger.info({ nodeId: config.nodeId, raftPort, peers: config.peers }, 'raft transport listening');
  return { replicator, transport, raftPort };
}
