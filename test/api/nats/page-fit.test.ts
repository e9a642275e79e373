// Replies cut to fit one NATS reply: exact sizes, the cursor after the last item kept, and
// TOO_LARGE when not even one item fits or a reply cannot be cut.

import { checkReplyFits, encodeEventsToFit, encodePageToFit, encodeSqlResultToFit, encodeWholeToFit } from '../../../src/api/nats/page-fit';
import { LoomError } from '../../../src/util';

interface Item {
  name: string;
  pad: string;
}

const items = (count: number, padBytes: number): Item[] => Array.from({ length: count }, (_, i) => ({ name: `n${i}`, pad: 'p'.repeat(padBytes) }));
const decode = (bytes: Buffer): { items: Item[]; cursor?: string } => JSON.parse(bytes.toString('utf8')) as { items: Item[]; cursor?: string };
const cursorAfter = (name: string): string => Buffer.from(name).toString('base64url');
const events = (count: number, padBytes: number) =>
  Array.from({ length: count }, (_, i) => ({ seq: i + 1, stream: 's', version: i + 1, type: 't', data: { pad: 'é'.repeat(padBytes / 2) }, ts: 0 }));
const thrown = (fn: () => unknown): unknown => {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
};

describe('encodePageToFit', () => {
  it('sends a page that fits as it is, cursor and all', () => {
    const page = { items: items(3, 10), cursor: cursorAfter('n2') };
    expect(encodePageToFit(page, (i) => i.name, 1024, 'item').toString()).toBe(JSON.stringify(page));
  });

  it('keeps the longest first part that fits, with a cursor after its last item', () => {
    const page = { items: items(10, 100) };
    const bytes = encodePageToFit(page, (i) => i.name, 500, 'item');
    const cut = decode(bytes);
    expect(bytes.length).toBeLessThanOrEqual(500);
    expect(cut.items).toEqual(page.items.slice(0, cut.items.length));
    expect(cut.cursor).toBe(cursorAfter(cut.items[cut.items.length - 1].name));
    // One more item would not have fitted.
    const longer = { items: page.items.slice(0, cut.items.length + 1), cursor: cursorAfter(`n${cut.items.length}`) };
    expect(Buffer.byteLength(JSON.stringify(longer))).toBeGreaterThan(500);
  });

  it('uses every byte of the limit: a page cut to exactly the limit keeps its last item', () => {
    const page = { items: items(5, 50) };
    const two = Buffer.byteLength(JSON.stringify({ items: page.items.slice(0, 2), cursor: cursorAfter('n1') }));
    expect(decode(encodePageToFit(page, (i) => i.name, two, 'item')).items).toHaveLength(2);
    expect(decode(encodePageToFit(page, (i) => i.name, two - 1, 'item')).items).toHaveLength(1);
  });

  it('fails TOO_LARGE naming the limit when a single item cannot fit', () => {
    const page = { items: items(2, 1000) };
    let error: unknown;
    try {
      encodePageToFit(page, (i) => i.name, 500, 'object info');
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(LoomError);
    expect(error).toMatchObject({ code: 'TOO_LARGE', details: { limit: 'maxPayloadBytes', max: 500 } });
  });
});

describe('encodeEventsToFit', () => {
  it('sends a read that fits as it is', () => {
    const read = { events: events(3, 10) };
    expect(encodeEventsToFit(read, 1024).toString()).toBe(JSON.stringify(read));
  });

  it('keeps the longest first run of whole events that fits, using every byte of the limit', () => {
    const read = { events: events(5, 100) };
    const two = Buffer.byteLength(JSON.stringify({ events: read.events.slice(0, 2) }));
    expect(JSON.parse(encodeEventsToFit(read, two).toString())).toEqual({ events: read.events.slice(0, 2) });
    expect(JSON.parse(encodeEventsToFit(read, two - 1).toString())).toEqual({ events: read.events.slice(0, 1) });
  });

  it('fails TOO_LARGE naming the limit and the event when the first event cannot fit', () => {
    const error = thrown(() => encodeEventsToFit({ events: events(2, 1000) }, 500));
    expect(error).toBeInstanceOf(LoomError);
    expect(error).toMatchObject({ code: 'TOO_LARGE', details: { limit: 'maxPayloadBytes', max: 500 } });
    expect((error as Error).message).toMatch(/event version 1 of stream s .*HTTP or gRPC/);
  });
});

describe('encodeSqlResultToFit', () => {
  const result = { columns: ['a'], rows: [['x'.repeat(100)], ['y'.repeat(100)]], cursor: 'c' };

  it('sends a result that fits, to the byte, as it is', () => {
    const bytes = Buffer.byteLength(JSON.stringify(result));
    expect(encodeSqlResultToFit(result, bytes).toString()).toBe(JSON.stringify(result));
  });

  it('fails TOO_LARGE naming the limit rather than cutting rows', () => {
    const error = thrown(() => encodeSqlResultToFit(result, Buffer.byteLength(JSON.stringify(result)) - 1));
    expect(error).toMatchObject({ code: 'TOO_LARGE', details: { limit: 'maxPayloadBytes' } });
    expect((error as Error).message).toMatch(/LIMIT/);
  });
});

describe('encodeWholeToFit and checkReplyFits', () => {
  const status = { nodeId: 1, members: [{ id: 1, role: 'voter' }] };

  it('sends a reply that fits, to the byte, as it is', () => {
    const bytes = Buffer.byteLength(JSON.stringify(status));
    expect(encodeWholeToFit(status, bytes, 'the status', 'ask elsewhere').toString()).toBe(JSON.stringify(status));
    expect(() => checkReplyFits(bytes, bytes, 'the status', 'ask elsewhere')).not.toThrow();
  });

  it('fails TOO_LARGE naming the reply, its size, the limit and what to do instead', () => {
    const bytes = Buffer.byteLength(JSON.stringify(status));
    const error = thrown(() => encodeWholeToFit(status, bytes - 1, 'the status', 'ask elsewhere'));
    expect(error).toMatchObject({ code: 'TOO_LARGE', details: { limit: 'maxPayloadBytes', max: bytes - 1 } });
    expect((error as Error).message).toBe(`the status is ${bytes} bytes, larger than a NATS reply may be (maxPayloadBytes ${bytes - 1}); ask elsewhere`);
  });
});
