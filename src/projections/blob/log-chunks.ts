// Reads a chunk's bytes from the `blob.chunk` log entry that stored them: where the blob view
// finds every chunk until the log is compacted below that entry (see BlobStore). The entry's CRC is
// not checked: every reader checks the chunk against its sha256, which damage cannot pass.

import type { LogEntry, LogStore } from '../../eventlog';
import { LoomError, isLoomError } from '../../util';
import { decodeMutation } from '../entries';
import type { LogChunkReader } from './blob-view';

export function logChunkReader(log: LogStore): LogChunkReader {
  const read = <T>(index: number, take: (bytes: Uint8Array) => T): T | undefined => {
    if (index < log.firstIndex() || index > log.lastIndex()) return undefined;
    let result: T | undefined;
    const visit = (entry: LogEntry): void => {
      const mutation = decodeMutation(entry);
      if (mutation?.type !== 'blob.chunk') {
        throw new LoomError('CORRUPT', `log entry ${index} is ${entry.type}, not the blob.chunk the blob view names`, { index });
      }
      result = take(mutation.body.bytes);
    };
    try {
      if (log.visitEntryUnchecked) log.visitEntryUnchecked(index, visit);
      else if (log.visitEntries) log.visitEntries(index, index + 1, visit);
      else for (const entry of log.entries(index, index + 1)) visit(entry);
    } catch (err) {
      // Compacted between the bounds check and the read.
      if (isLoomError(err, 'NOT_FOUND')) return undefined;
      throw err;
    }
    return result;
  };
  return { read, firstIndex: () => log.firstIndex() };
}
