// Gives back to the kernel the pages of LMDB's memory maps that reads (and large writes) brought into
// this process, so that streaming object chunks into or out of the log or the views does not grow its RSS.
//
// LMDB reads through a shared, read-only map of its file. Every page a read touches stays counted in
// the process's resident memory until the kernel wants it back: downloading a 1 GiB object grew a
// node's VmRSS by 1 GiB, though none of it was the node's own memory. madvise(MADV_DONTNEED) on a
// shared file mapping only drops this process's mappings of those pages: the pages stay in the page
// cache (and dirty ones are still written back), so a later read faults them in again without disk
// I/O. LMDB opens its map without MDB_WRITEMAP here, so nothing is ever written through it.

import fs from 'node:fs';
import { loadLibc } from './libc';

/** Mapped bytes read or written between two releases: about the most a stream of them keeps resident. */
export const mappedBytesPerRelease = 8 * 1024 * 1024;

const madviseDontNeed = 4; // MADV_DONTNEED, the same on every Linux architecture

/** Files whose maps are released, by real path, with how many opens of each are live. */
const watched = new Map<string, number>();
let mappedSinceRelease = 0;

interface Mapping {
  start: bigint;
  end: bigint;
}

/**
 * Starts releasing the pages of `file` (an LMDB data.mdb this process maps) as reads go on; the
 * returned function stops it. A file opened twice is released until both have stopped.
 */
export function watchMappedFile(file: string): () => void {
  const real = fs.realpathSync(file);
  watched.set(real, (watched.get(real) ?? 0) + 1);
  let stopped = false;
  return () => {
    if (stopped) return;
    stopped = true;
    const opens = (watched.get(real) ?? 1) - 1;
    if (opens === 0) watched.delete(real);
    else watched.set(real, opens);
  };
}

/**
 * Counts `bytes` of a watched file read through its map, or written (LMDB's writes leave the pages
 * resident in the map too); every mappedBytesPerRelease, releases the maps.
 */
export function noteMappedBytes(bytes: number): void {
  mappedSinceRelease += bytes;
  if (mappedSinceRelease >= mappedBytesPerRelease) releaseMappedPages();
}

/**
 * Drops this process's resident pages of every watched file's shared mappings, as found in
 * /proc/self/maps; returns how many mappings it advised. A private mapping is never touched: there
 * MADV_DONTNEED would throw away changes.
 *
 * Safe only while no map of a watched file is unmapped between reading /proc/self/maps and the
 * madvise (memory mapped into the freed range would be zeroed). lmdb-js keeps its old maps when
 * it grows one, and unmaps only when the environment closes, on the thread that closes it: this
 * one, which is not inside this function then.
 */
export function releaseMappedPages(): number {
  mappedSinceRelease = 0;
  const loaded = loadLibc();
  if (!loaded.available || watched.size === 0) return 0;
  const mappings = sharedMappingsOf(watched);
  if (mappings === undefined) return 0;
  let advised = 0;
  for (const mapping of mappings) {
    // Nothing is lost if one fails: its pages only stay resident until the next release.
    if (loaded.libc.madvise(mapping.start, Number(mapping.end - mapping.start), madviseDontNeed) === 0) advised++;
  }
  return advised;
}

/**
 * The shared mappings of `files`, or undefined if /proc/self/maps cannot be read now (no file
 * descriptor left, /proc not mounted). Reads run this, so it must not fail them: the pages then
 * stay resident until a later release can read it.
 */
function sharedMappingsOf(files: Map<string, number>): Mapping[] | undefined {
  let maps: string;
  try {
    maps = fs.readFileSync('/proc/self/maps', 'utf8');
  } catch {
    return undefined;
  }
  const found: Mapping[] = [];
  for (const line of maps.split('\n')) {
    // start-end perms offset dev inode path; a file deleted while mapped ends in " (deleted)".
    const fields = /^([0-9a-f]+)-([0-9a-f]+) [r-][w-][x-]s \S+ \S+ \d+\s+(.+?)(?: \(deleted\))?$/.exec(line);
    if (fields === null || !files.has(fields[3])) continue;
    found.push({ start: BigInt(`0x${fields[1]}`), end: BigInt(`0x${fields[2]}`) });
  }
  return found;
}
