// Damages bytes on disk the way a failing disk would, wherever loom keeps them: tests find a
// chunk's bytes by content, not by knowing which database holds them.

import { closeSync, openSync, readFileSync, readdirSync, writeSync } from 'node:fs';
import * as path from 'node:path';

/** The files under `dir` that hold `needle`, by path relative to `dir`, sorted. */
export function filesHolding(dir: string, needle: Buffer): string[] {
  return walk(dir)
    .filter((file) => readFileSync(file).includes(needle))
    .map((file) => path.relative(dir, file))
    .sort();
}

/**
 * Flips one byte `skew` bytes after every copy of `needle` in the files under `dir`, in place (a
 * running node may have the file mapped); returns the files changed.
 */
export function damageOnDisk(dir: string, needle: Buffer, skew = 16): string[] {
  const changed: string[] = [];
  for (const file of walk(dir)) {
    const bytes = readFileSync(file);
    let at = bytes.indexOf(needle);
    if (at < 0) continue;
    const fd = openSync(file, 'r+');
    try {
      while (at >= 0) {
        writeSync(fd, Buffer.from([bytes[at + skew] ^ 0xff]), 0, 1, at + skew);
        at = bytes.indexOf(needle, at + 1);
      }
    } finally {
      closeSync(fd);
    }
    changed.push(path.relative(dir, file));
  }
  return changed.sort();
}

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    return entry.isDirectory() ? walk(full) : entry.isFile() ? [full] : [];
  });
}
