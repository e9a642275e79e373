// Builds a node's replication from its config: the peer transport on the raft port, the Raft
// driver over the log, leader changes announced on $SYS.LEADER.<service>.<id>.

import type { Bus } from '../bus';
import type { LogStore } from '../eventlog';
import { PeerTransport, RaftReplicator, type PeerTls } from '../replication';
import { LoomError, type Logger } from '../util';
import type { Config } from './config';
import { checkUsable, readTlsFiles } from './tls-files';

export interface Replication {
  replicator: RaftReplicator;
  transport: PeerTransport;
  raftPort: number;
}

/** The peer TLS files, read; all three flags or none. */
function peerTls(config: Config): PeerTls | undefined {
  const pem = readTlsFiles({ peerTlsCert: config.peerTlsCert, peerTlsKey: config.peerTlsKey, peerTlsCa: config.peerTlsCa });
  if (pem === undefined) return undefined;
  const tls: PeerTls = { cert: pem.peerTlsCert, key: pem.peerTlsKey, ca: pem.peerTlsCa };
  checkUsable(tls, 'peerTlsCert');
  return tls;
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
    entryBytesMax: config.entryBytesMax,
  });
  replicator.onLeaderChange((change) => {
    const body = { leader: change.leader, term: change.term, address: change.addresses?.nats ?? null, addresses: change.addresses ?? {} };
    bus.publish(leaderSubject(config), Buffer.from(JSON.stringify(body)));
  });
  logger.info({ nodeId: config.nodeId, raftPort, peers: config.peers }, 'raft transport listening');
  return { replicator, transport, raftPort };
}
