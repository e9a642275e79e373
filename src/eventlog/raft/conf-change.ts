// Membership changes: their byte encoding inside a `conf.change` entry, and how one change turns
// one ConfState into the next. One change at a time (docs/raft.md explains why not joint consensus).

import { LoomError } from '../../util';
import { confChangeContextBytesMax } from './limits';
import type { ConfChange, ConfState } from './types';

const changeTypes = new Set(['addVoter', 'addLearner', 'removeNode']);

export function encodeConfChange(change: ConfChange): Uint8Array {
  const body: ConfChange = { type: change.type, nodeId: change.nodeId };
  if (change.context !== undefined) body.context = change.context;
  return Buffer.from(JSON.stringify(body));
}

export function decodeConfChange(data: Uint8Array): ConfChange {
  const parsed: unknown = JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8'));
  checkConfChange(parsed as ConfChange);
  return parsed as ConfChange;
}

export function checkConfChange(change: ConfChange): void {
  if (typeof change !== 'object' || change === null || !changeTypes.has(change.type)) {
    throw new LoomError('INVALID_ARGUMENT', 'conf change type must be addVoter, addLearner or removeNode', { field: 'type' });
  }
  if (!Number.isSafeInteger(change.nodeId) || change.nodeId <= 0) {
    throw new LoomError('INVALID_ARGUMENT', 'conf change nodeId must be a positive integer', { field: 'nodeId' });
  }
  if (change.context !== undefined && (typeof change.context !== 'string' || change.context.length > confChangeContextBytesMax)) {
    throw new LoomError('INVALID_ARGUMENT', `conf change context must be a string of at most ${confChangeContextBytesMax} characters`, { field: 'context' });
  }
}

/** The membership after `change`. Adding a voter that is a learner promotes it; a voter cannot be demoted to learner directly. */
export function applyConfChange(conf: ConfState, change: ConfChange): ConfState {
  const voters = conf.voters.filter((id) => id !== change.nodeId);
  const learners = conf.learners.filter((id) => id !== change.nodeId);
  if (change.type === 'addVoter') voters.push(change.nodeId);
  if (change.type === 'addLearner') {
    // Demoting a voter in one step could drop the quorum below what the change rule protects.
    if (conf.voters.includes(change.nodeId)) voters.push(change.nodeId);
    else learners.push(change.nodeId);
  }
  voters.sort((a, b) => a - b);
  learners.sort((a, b) => a - b);
  return { voters, learners };
}

export function copyConf(conf: ConfState): ConfState {
  return { voters: [...conf.voters], learners: [...conf.learners] };
}
