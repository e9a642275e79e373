// A follower gathers a snapshot through the driver's assembly (a file, on a node): every assembly
// Raft opens is finished or discarded, whatever the leader does mid-transfer.

import { MemoryLog } from '../../../src/eventlog';
import { RawNode, emptyMessage, memorySnapshotAssembly, type Message, type SnapshotAssembly } from '../../../src/eventlog/raft';

const meta = { index: 10, term: 1, conf: { voters: [1, 2, 3], learners: [] } };
const data = Buffer.from('0123456789abcdef');
const chunk = (offset: number, end: number): Message => ({
  ...emptyMessage('snap', 1, 2, 1),
  snapshot: { meta, offset, totalBytes: data.length, data: data.subarray(offset, end) },
});

/** Follower 2 of three, counting the assemblies it has open. */
function follower(open: Set<number>): RawNode {
  let made = 0;
  const assembleSnapshot = (): SnapshotAssembly => {
    const id = ++made;
    open.add(id);
    const inner = memorySnapshotAssembly();
    return {
      append: (c) => inner.append(c),
      finish: () => (open.delete(id), inner.finish()),
      discard: () => (open.delete(id), inner.discard()),
    };
  };
  return new RawNode({ id: 2, voters: [1, 2, 3], assembleSnapshot }, new MemoryLog());
}

it('drops a half-received snapshot when a new leader takes over and sends entries instead', () => {
  const open = new Set<number>();
  const raw = follower(open);
  raw.step(chunk(0, 8));
  expect(open.size).toBe(1);
  raw.step({ ...emptyMessage('app', 3, 2, 2), index: 0, logTerm: 0, commit: 0, entries: [{ index: 1, term: 2, type: 0, data: Buffer.alloc(0) } as never] });
  expect(raw.raft.log.lastIndex()).toBe(1);
  expect(open.size).toBe(0);
});

it('opens no assembly for a chunk of a snapshot it already installed, and tells the leader its commit', () => {
  const open = new Set<number>();
  const raw = follower(open);
  raw.step(chunk(0, 8));
  raw.step(chunk(8, 16));
  expect(raw.raft.log.committed).toBe(10);
  expect(open.size).toBe(0);
  raw.ready();
  raw.advance();
  // A duplicate of chunk 0 (the leader resends its current chunk on every heartbeat response).
  raw.step(chunk(0, 8));
  expect(open.size).toBe(0);
  const rd = raw.ready();
  const replies = [...rd.messages, ...rd.messagesAfterPersist];
  expect(replies).toContainEqual(expect.objectContaining({ type: 'appResp', to: 1, index: 10 }));
});
