// The metadata and content-type rule every door shares (docs/buckets.md "Metadata and content type").

import { LoomError } from '../../src/util';
import { checkContentType, checkObjectMetadata, contentTypeBytesMax, metadataHeaderBytes, objectMetadataBytesMax } from '../../src/util/names';

function refusal(check: () => unknown): { code: string; field: unknown } | undefined {
  try {
    check();
    return undefined;
  } catch (err) {
    if (!(err instanceof LoomError)) throw err;
    return { code: err.code, field: err.details.field };
  }
}

describe('object metadata', () => {
  it('accepts keys of A-Z a-z 0-9 . - _ with text values (any script, tab inside, empty too)', () => {
    const metadata = { a: 'b', 'x-y_9': '!~ \tz', ['k'.repeat(128)]: '', n: '0', Author: 'Zoë ✓ 日本', 'a.b': 'hÃ©llo' };
    expect(checkObjectMetadata(metadata)).toBe(metadata);
  });

  it.each([
    [{ K: 'v', k: 'w' }, 'metadata.k'],
    [{ '': 'v' }, 'metadata.'],
    [{ 'a b': 'v' }, 'metadata.a b'],
    [{ 'a:b': 'v' }, 'metadata.a:b'],
    [{ ['k'.repeat(129)]: 'v' }, `metadata.${'k'.repeat(129)}`],
    [{ k: 'c1\u0085' }, 'metadata.k'],
    [{ k: 'lone \ud800' }, 'metadata.k'],
    [{ k: 'line1\nline2' }, 'metadata.k'],
    [{ k: 'a\rb' }, 'metadata.k'],
    [{ k: 'nul\u0000' }, 'metadata.k'],
    [{ k: 'del\u007f' }, 'metadata.k'],
    [{ k: ' lead' }, 'metadata.k'],
    [{ k: 'trail\t' }, 'metadata.k'],
    [{ k: 5 }, 'metadata.k'],
  ])('refuses %j, naming the key', (metadata, field) => {
    expect(refusal(() => checkObjectMetadata(metadata))).toEqual({ code: 'INVALID_ARGUMENT', field });
  });

  it('refuses what is not an object, and more than objectMetadataBytesMax as HTTP headers', () => {
    expect(refusal(() => checkObjectMetadata(['v']))).toEqual({ code: 'INVALID_ARGUMENT', field: 'metadata' });
    expect(refusal(() => checkObjectMetadata(null))).toEqual({ code: 'INVALID_ARGUMENT', field: 'metadata' });
    // `x-loom-meta-k: <value>\r\n` is 17 bytes besides the value, whose UTF-8 bytes count.
    const fits = { k: `${'é'.repeat((objectMetadataBytesMax - 17 - 1) / 2)}a` };
    expect(metadataHeaderBytes(fits)).toBe(objectMetadataBytesMax);
    expect(checkObjectMetadata(fits)).toBe(fits);
    expect(refusal(() => checkObjectMetadata({ k: `${fits.k}c` }))).toEqual({ code: 'TOO_LARGE', field: 'metadata' });
    // Many short entries count their header overhead, which JSON would not.
    const many = Object.fromEntries(Array.from({ length: 600 }, (_, i) => [`k${i}`, 'v']));
    expect(JSON.stringify(many).length).toBeLessThan(objectMetadataBytesMax);
    expect(refusal(() => checkObjectMetadata(many))).toEqual({ code: 'TOO_LARGE', field: 'metadata' });
  });
});

describe('an object content type', () => {
  it('accepts printable US-ASCII with parameters', () => {
    expect(checkContentType('text/plain; charset=utf-8; name="a b"')).toBe('text/plain; charset=utf-8; name="a b"');
  });

  it.each(['', 'text/plain\r\nX-Evil: 1', 'text/plain; name="é"', ' text/plain', 'text/plain ', 7])('refuses %j', (contentType) => {
    expect(refusal(() => checkContentType(contentType))).toEqual({ code: 'INVALID_ARGUMENT', field: 'contentType' });
  });

  it('refuses one longer than contentTypeBytesMax as TOO_LARGE', () => {
    expect(refusal(() => checkContentType('t'.repeat(contentTypeBytesMax + 1)))).toEqual({ code: 'TOO_LARGE', field: 'contentType' });
  });
});
