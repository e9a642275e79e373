// The V8 flags `loom serve` runs with (docs/decisions.md §12, §14, §17). bin/loom's shebang and `npm start`
// pass them as text; code that starts a node process (tests, benchmarks) takes them from here.
// They cannot be set from inside a running process: V8 aborts if the collector changes under it.

/**
 * - Garbage collection on the main thread only. Bulk traffic (blob uploads) frees buffers fast
 *   enough to keep concurrent marking busy, and its helper threads then burned more CPU than the
 *   whole upload path on a 2-core machine; the heap itself stays small, so the pauses stay short.
 * - The old generation may grow to three times what survived the last full collection before the
 *   next starts (V8 picks 1.1–4 times by itself). Buffers that die young are counted against that
 *   room until a young collection frees them, and V8 frees them only after 32 MiB of them; with
 *   less room than that, every few MiB uploaded started a full collection of the whole heap.
 * - Semi-spaces of at most 2 MiB (V8 grows them to 16). A young collection comes when the young
 *   generation is full or after 32 MiB of young buffers; the smaller one fills sooner, so the socket
 *   reads a transfer leaves dead are freed sooner: ~11 MiB less resident at start and ~20 MiB less
 *   at an upload's peak, at the same speed.
 */
export const loomNodeFlags: readonly string[] = ['--single-threaded-gc', '--heap-growing-percent=200', '--max-semi-space-size=2'];
