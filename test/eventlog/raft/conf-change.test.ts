// The bytes of a `conf.change` entry: the optional context (the added node's raft address in loom)
// survives the round trip, old entries without one still decode, and a bad context is refused.

import { applyConfChange, decodeConfChange, encodeConfChange } from '../../../src/eventlog/raft';

describe('conf change encoding', () => {
  it('carries the context of an added node through encode and decode', () => {
    const change = decodeConfChange(encodeConfChange({ type: 'addLearner', nodeId: 4, context: '10.0.0.4:7000' }));
    expect(change).toEqual({ type: 'addLearner', nodeId: 4, context: '10.0.0.4:7000' });
  });

  it('decodes an entry written before contexts existed', () => {
    expect(decodeConfChange(Buffer.from('{"type":"removeNode","nodeId":2}'))).toEqual({ type: 'removeNode', nodeId: 2 });
  });

  it('refuses a context that is not a short string', () => {
    expect(() => decodeConfChange(Buffer.from(JSON.stringify({ type: 'addVoter', nodeId: 4, context: 7 })))).toThrow(/context/);
    expect(() => decodeConfChange(Buffer.from(JSON.stringify({ type: 'addVoter', nodeId: 4, context: 'x'.repeat(2000) })))).toThrow(/context/);
  });

  it('ends in the same membership whatever the genesis says about nodes the changes name (why --join works)', () => {
    const changes = [
      { type: 'addLearner', nodeId: 4 },
      { type: 'addVoter', nodeId: 4 },
      { type: 'removeNode', nodeId: 3 },
    ] as const;
    const replay = (voters: number[]) => changes.reduce((conf, c) => applyConfChange(conf, c), { voters, learners: [] as number[] });
    // True genesis {1,2,3}; a node joining later is told the current members {1,2,4}.
    expect(replay([1, 2, 4])).toEqual(replay([1, 2, 3]));
  });
});
