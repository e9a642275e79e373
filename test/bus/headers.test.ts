// The NATS/1.0 header block codec: round trips, status lines, and refusing values that would
// corrupt the block.

import { MsgHeaders } from '../../src/bus';
import { statusBlock } from '../../src/bus/headers';
import { isLoomError } from '../../src/util';

describe('MsgHeaders', () => {
  it('round-trips repeated keys in order', () => {
    const h = new MsgHeaders().set('Loom-Rev', '3').append('Loom-Tag', 'a').append('Loom-Tag', 'b');
    expect(h.encode().toString()).toBe('NATS/1.0\r\nLoom-Rev: 3\r\nLoom-Tag: a\r\nLoom-Tag: b\r\n\r\n');
    const back = MsgHeaders.decode(h.encode());
    expect(back.get('Loom-Rev')).toBe('3');
    expect(back.values('Loom-Tag')).toEqual(['a', 'b']);
    expect(back.status).toBe(0);
  });

  it('encodes and decodes status lines, with and without description', () => {
    expect(statusBlock(503).toString()).toBe('NATS/1.0 503\r\n\r\n');
    const d = MsgHeaders.decode(Buffer.from('NATS/1.0 408 Request Timeout\r\nX: 1\r\n\r\n'));
    expect(d.status).toBe(408);
    expect(d.description).toBe('Request Timeout');
    expect(d.get('X')).toBe('1');
  });

  it('tells the encoded length without encoding, for status lines, repeated keys and UTF-8 values', () => {
    const blocks = [new MsgHeaders(), statusOnly(503, ''), statusOnly(408, 'Request Timeout'), new MsgHeaders().set('Loom-Rev', '3').append('Loom-Tag', 'a').append('Loom-Tag', 'b'), MsgHeaders.fromRecord({ 'Loom-Subject': '$KV.b.é日本' })];
    for (const h of blocks) expect(h.encodedBytes()).toBe(h.encode().length);
  });

  it('finds a key by exact case first, then any case', () => {
    const h = MsgHeaders.fromRecord({ 'Loom-Op': 'PUT' });
    expect(h.get('loom-op')).toBe('PUT');
    expect(h.has('LOOM-OP')).toBe(true);
  });

  it('refuses keys and values that would break the block', () => {
    const bad = [
      () => new MsgHeaders().set('a b', 'v'),
      () => new MsgHeaders().set('a:b', 'v'),
      () => new MsgHeaders().set('', 'v'),
      () => new MsgHeaders().set('k', 'v\r\nInjected: 1'),
    ];
    for (const f of bad) {
      try {
        f();
        throw new Error('accepted');
      } catch (err) {
        expect(isLoomError(err, 'INVALID_ARGUMENT')).toBe(true);
      }
    }
  });

  it('refuses a block that does not start with NATS/1.0', () => {
    expect(() => MsgHeaders.decode(Buffer.from('HTTP/1.1 200\r\n\r\n'))).toThrow(/NATS\/1.0/);
  });
});

function statusOnly(status: number, description: string): MsgHeaders {
  const h = new MsgHeaders();
  h.status = status;
  h.description = description;
  return h;
}
