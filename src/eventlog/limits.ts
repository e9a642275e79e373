// Named limits of the log. Every entry, batch and read has a maximum (STYLE.md convention 4).

/**
 * Largest encoded entry the log accepts (type + data + meta), in bytes: a 1 MiB chunk or value plus
 * room for the rest of its entry.
 */
export const entryBytesMaxDefault = 1024 * 1024 + 4096;
/** Most entries one append call may carry. */
export const appendEntriesMax = 65_536;
/** Default byte budget of one `entries()` read. */
export const readBytesMaxDefault = 4 * 1024 * 1024;
/** Longest entry type name, in bytes. */
export const entryTypeBytesMax = 64;
/** Bytes an entry counts against entryBytesMax beyond its type, data and meta (index, term, ts, framing). */
export const entryOverheadBytes = 32;
