// Moves a watch's changes into a server-streaming call with flow control: it takes the next change
// only once the call has room, so a slow client holds back the watch (which then replays from the
// log when it catches up) instead of making the server buffer without bound.

import type { EventEmitter } from 'node:events';
import type { Watch } from '../../core';
import { encodeChange } from './codec';

/** The part of a grpc-js ServerWritableStream the pump uses (a Node Writable in object mode). */
export interface ChangeSink extends EventEmitter {
  /** False when the call's buffer is full: wait for 'drain' before the next write. */
  write(message: unknown): boolean;
}

/**
 * Resolves when the watch ends or the call ends (client cancel, deadline, server shutdown), and
 * closes the watch either way; rejects with the watch's error (e.g. NOT_FOUND for a compacted seq).
 */
export async function pumpWatch(watch: Watch, sink: ChangeSink): Promise<void> {
  let ended = false;
  const onEnd = (): void => {
    ended = true;
    watch.close();
  };
  sink.on('cancelled', onEnd);
  sink.on('close', onEnd);
  try {
    while (!ended) {
      const next = await watch.next();
      if (next.done || ended) return;
      if (!sink.write(encodeChange(next.value)) && !ended) await roomIn(sink);
    }
  } finally {
    sink.off('cancelled', onEnd);
    sink.off('close', onEnd);
    watch.close();
  }
}

/** Resolves on 'drain', or when the call ends (a destroyed stream never drains). */
function roomIn(sink: ChangeSink): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      sink.off('drain', done);
      sink.off('close', done);
      sink.off('cancelled', done);
      resolve();
    };
    sink.on('drain', done);
    sink.on('close', done);
    sink.on('cancelled', done);
  });
}
