// SHA-256 of object chunks on a worker thread, so that uploads and downloads hash beside the main
// thread's socket, LMDB and HTTP work instead of on it. Bytes move to the worker and back by transfer.

import { Worker } from 'node:worker_threads';
import { LoomError, assert } from '../util';

/** Bytes of one slot (a buffer a borrowed chunk is copied into): the largest chunk (chunkBytesMax is 1 MiB − 4 KiB). */
export const hashSlotBytes = 1024 * 1024;
/**
 * Borrowed chunks (see `digest`) being hashed at once, over every upload of a node: bounds the slots'
 * memory (touched only as far as chunks fill them). Callers beyond it queue in order.
 */
export const hashSlotsMax = 8;

// Plain JavaScript, evaluated by the worker: no build step and no file path to resolve. Messages are
// handled in order, so the updates of one stream reach its hash in the order they were posted. The
// bytes travel as a transferred ArrayBuffer (no copy) and go back the same way.
const workerSource = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const streams = new Map();
parentPort.on('message', (m) => {
  if (m.op === 'digest') {
    const bytes = new Uint8Array(m.memory, m.offset, m.length);
    streams.get(m.stream)?.update(bytes);
    const digest = new Uint8Array(createHash('sha256').update(bytes).digest());
    parentPort.postMessage({ id: m.id, digest, memory: m.memory }, [m.memory]);
  } else if (m.op === 'open') {
    streams.set(m.stream, createHash('sha256'));
  } else if (m.op === 'finish') {
    const hash = streams.get(m.stream);
    streams.delete(m.stream);
    parentPort.postMessage(hash ? { id: m.id, digest: new Uint8Array(hash.digest()) } : { id: m.id, error: 'the stream was lost with a previous worker' });
  } else if (m.op === 'drop') {
    streams.delete(m.stream);
  }
});
`;

/**
 * Work for the worker, in call order: a chunk to hash (borrowed: copied into a slot; owned: its
 * memory moved to the worker and back), a stream to open, or a stream's final digest.
 */
type Job =
  | { op: 'digest'; bytes: Uint8Array; owned: boolean; stream: HashStream; resolve(reply: WorkerReply): void; reject(err: Error): void }
  | { op: 'open'; stream: HashStream }
  | { op: 'finish'; stream: HashStream; resolve(reply: WorkerReply): void; reject(err: Error): void };

interface Pending {
  resolve(reply: WorkerReply): void;
  reject(err: Error): void;
  /** Whether the memory coming back is a slot, to be reused. */
  slot: boolean;
}

/** An incremental hash on the worker, fed by `digest(bytes, stream)` in call order; 0 = none. */
export type HashStream = number;

export class ChunkHasher {
  private worker: Worker | undefined;
  /** Slots not lent to the worker; `slotsOut` are with it. */
  private readonly slots: ArrayBuffer[] = [];
  private slotsOut = 0;
  /** Jobs not yet posted, in call order: a stream's bytes and its finish reach the worker in order. */
  private readonly queue: Job[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private nextStream = 1;
  private closed = false;

  /**
   * The SHA-256 of `bytes`, computed on the worker; with `stream`, the bytes also extend that
   * stream's hash (in call order). The bytes are copied into a slot, so the caller may reuse them.
   */
  async digest(bytes: Uint8Array, stream: HashStream = 0): Promise<Buffer> {
    assert(bytes.byteLength <= hashSlotBytes, `a chunk of ${bytes.byteLength} bytes does not fit a hash slot`);
    return (await this.enqueue(bytes, false, stream)).digest;
  }

  /**
   * The SHA-256 of `bytes`, whose buffer must be the caller's alone (e.g. Buffer.allocUnsafeSlow,
   * never a pool slice): that memory moves to the worker and back, uncopied, and comes back as
   * `bytes` at the same place. Neither the buffer given nor any other view of it may be used again.
   */
  async digestOwned(bytes: Buffer): Promise<{ bytes: Buffer; digest: Buffer }> {
    assert(!(bytes.buffer instanceof SharedArrayBuffer), 'digestOwned takes memory it can move');
    const { byteOffset, byteLength } = bytes;
    const reply = await this.enqueue(bytes, true, 0);
    return { bytes: Buffer.from(reply.memory as ArrayBuffer, byteOffset, byteLength), digest: reply.digest };
  }

  openStream(): HashStream {
    const stream = this.nextStream++;
    this.queue.push({ op: 'open', stream });
    this.pump();
    return stream;
  }

  /** The stream's hash over every byte given to it; the stream must not be used again. */
  async finishStream(stream: HashStream): Promise<Buffer> {
    const reply = await new Promise<WorkerReply>((resolve, reject) => {
      this.queue.push({ op: 'finish', stream, resolve, reject });
      this.pump();
    });
    return reply.digest;
  }

  /** Forgets a stream that will not be finished (a failed upload). */
  dropStream(stream: HashStream): void {
    this.finishStream(stream).catch(() => undefined);
  }

  async close(): Promise<void> {
    this.closed = true;
    const worker = this.worker;
    this.worker = undefined;
    this.fail(new LoomError('UNAVAILABLE', 'the database is closing'));
    if (worker) await worker.terminate();
  }

  private enqueue(bytes: Uint8Array, owned: boolean, stream: HashStream): Promise<WorkerReply> {
    return new Promise((resolve, reject) => {
      this.queue.push({ op: 'digest', bytes, owned, stream, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.queue.length > 0) {
      const job = this.queue[0];
      const worker = this.start();
      if (!worker) {
        this.queue.shift();
        if (job.op !== 'open') job.reject(new LoomError('UNAVAILABLE', 'the database is closing'));
        continue;
      }
      if (job.op === 'open') {
        this.queue.shift();
        worker.postMessage({ op: 'open', stream: job.stream });
        continue;
      }
      const id = this.nextId++;
      if (job.op === 'finish') {
        this.queue.shift();
        this.expect(worker, id, { resolve: job.resolve, reject: job.reject, slot: false });
        worker.postMessage({ op: 'finish', id, stream: job.stream });
        continue;
      }
      let memory: ArrayBuffer;
      let offset = 0;
      if (job.owned) {
        memory = job.bytes.buffer as ArrayBuffer;
        offset = job.bytes.byteOffset;
      } else {
        if (this.slots.length === 0 && this.slotsOut >= hashSlotsMax) return;
        memory = this.slots.pop() ?? new ArrayBuffer(hashSlotBytes);
        this.slotsOut++;
        new Uint8Array(memory, 0, job.bytes.byteLength).set(job.bytes);
      }
      this.queue.shift();
      this.expect(worker, id, { resolve: job.resolve, reject: job.reject, slot: !job.owned });
      worker.postMessage({ op: 'digest', id, memory, offset, length: job.bytes.byteLength, stream: job.stream }, [memory]);
    }
  }

  private expect(worker: Worker, id: number, pending: Pending): void {
    this.pending.set(id, pending);
    // Only pending work keeps the process alive.
    if (this.pending.size === 1) worker.ref();
  }

  private start(): Worker | undefined {
    if (this.worker || this.closed) return this.worker;
    const worker = new Worker(workerSource, { eval: true });
    worker.unref();
    // A terminated worker's late replies belong to jobs already failed.
    worker.on('message', (m: WorkerReply) => {
      if (this.worker === worker) this.onReply(m);
    });
    worker.on('error', (err) => this.onExit(worker, err));
    worker.on('exit', (code) => this.onExit(worker, new Error(`the chunk hasher's worker exited with code ${code}`)));
    this.worker = worker;
    return worker;
  }

  private onReply(m: WorkerReply): void {
    const pending = this.pending.get(m.id);
    assert(pending !== undefined, `a hash reply for unknown job ${m.id}`);
    this.pending.delete(m.id);
    if (this.pending.size === 0) this.worker?.unref();
    if (pending.slot) {
      this.slotsOut--;
      this.slots.push(m.memory as ArrayBuffer);
    }
    if (m.error === undefined) pending.resolve({ ...m, digest: Buffer.from(m.digest.buffer, m.digest.byteOffset, m.digest.byteLength) });
    else pending.reject(new Error(m.error));
    this.pump();
  }

  private onExit(worker: Worker, err: Error): void {
    if (this.worker !== worker) return;
    // A worker that died takes its streams and lent slots with it: fail what was waiting; the next
    // call starts anew.
    this.worker = undefined;
    this.slotsOut = 0;
    this.fail(err);
  }

  private fail(err: Error): void {
    const pending = [...this.pending.values()];
    this.pending.clear();
    const queued = this.queue.splice(0);
    for (const p of pending) p.reject(err);
    for (const j of queued) if (j.op !== 'open') j.reject(err);
  }
}

interface WorkerReply {
  id: number;
  /** A Uint8Array as it arrives, a Buffer once onReply passes it on. */
  digest: Buffer;
  memory?: ArrayBuffer;
  error?: string;
}
