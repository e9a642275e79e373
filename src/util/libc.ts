// The C library calls loom makes that Node has no binding for: madvise (give back map pages) and
// malloc_trim (give back freed heap). Reached through koffi, an FFI with prebuilt binaries.

type Madvise = (address: bigint, length: number, advice: number) => number;
type MallocTrim = (pad: number) => number;

export interface Libc {
  madvise: Madvise;
  mallocTrim: MallocTrim;
}

/** The C library's calls, or why this process cannot make them. */
export type LibcAvailability = { available: true; libc: Libc } | { available: false; reason: string };

/** The part of koffi's API used here, typed locally: koffi is an optional dependency. */
interface Koffi {
  load(path: string): { func(signature: string): unknown };
}

let loaded: LibcAvailability | undefined;

/**
 * Loads glibc's calls once. Elsewhere (not Linux, or another C library such as musl) the node
 * works the same, but keeps the pages and heap these calls would have given back.
 */
export function loadLibc(): LibcAvailability {
  if (loaded !== undefined) return loaded;
  if (process.platform !== 'linux') {
    loaded = { available: false, reason: `loom calls glibc directly only on Linux, not ${process.platform}` };
    return loaded;
  }
  try {
    // Optional (package.json): a platform it cannot install on still runs loom, without these calls.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const koffi = require('koffi') as Koffi;
    const lib = koffi.load('libc.so.6');
    loaded = {
      available: true,
      libc: {
        madvise: lib.func('int madvise(uintptr_t addr, size_t length, int advice)') as Madvise,
        mallocTrim: lib.func('int malloc_trim(size_t pad)') as MallocTrim,
      },
    };
  } catch (error) {
    loaded = { available: false, reason: `koffi or glibc's libc.so.6 could not be loaded: ${(error as Error).message}` };
  }
  return loaded;
}
