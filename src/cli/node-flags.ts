// The V8 flags `loom serve` runs with (docs/decisions.md §12). bin/loom's shebang and `npm start`
// pass them as text; code that starts a node process (tests, benchmarks) takes them from here.
// They cannot be set from inside a running process: V8 aborts if the collector changes under it.

/**
 * Garbage collection on the main thread only. Bulk traffic (blob uploads) frees buffers fast
 * enough to keep concurrent marking busy, and its helper threads then burned more CPU than the
 * whole upload path on a 2-core machine; the heap itself stays small, so the pauses stay short.
 */
export const loomNodeFlags: readonly string[] = ['--single-threaded-gc'];
