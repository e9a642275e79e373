// How a KV value's bytes are stored in SQL: JSON text when the bytes are a valid UTF-8 JSON text
// (so json_extract works on it), a BLOB otherwise. Pure, so every replica decides the same way.

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// The bytes a JSON text may start with (after JSON whitespace): object, array, string, number,
// true, false, null. Checking it first keeps binary values from paying for a UTF-8 decode.
const jsonStartBytes = new Set([...'{["-0123456789tfn'].map((c) => c.charCodeAt(0)));
const jsonWhitespaceBytes = new Set([0x20, 0x09, 0x0a, 0x0d]);

export function kvValueForSql(value: Uint8Array): string | Buffer {
  let i = 0;
  while (i < value.length && jsonWhitespaceBytes.has(value[i])) i++;
  if (i < value.length && jsonStartBytes.has(value[i])) {
    const text = decodeJson(value);
    if (text !== undefined) return text;
  }
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

/** The bytes as text when they are UTF-8 and parse as JSON; undefined otherwise. */
function decodeJson(value: Uint8Array): string | undefined {
  // Invalid UTF-8 or invalid JSON is not an error here: it only means the value is stored as a BLOB.
  try {
    const text = utf8.decode(value);
    JSON.parse(text);
    return text;
  } catch {
    return undefined;
  }
}
