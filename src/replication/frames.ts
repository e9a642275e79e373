// The peer wire format, without I/O: length-prefixed msgpack frames, a byte-fed parser that
// survives any split of its input, and validation of every frame before Raft may see it.

import { Packr } from 'msgpackr';
import type { LogEntry } from '../eventlog';
import type { Message, MessageType, SnapshotChunk } from '../eventlog/raft';
import { LoomError } from '../util';
import { frameMessagesMax, stringBytesMax } from './limits';

/** The addresses clients use to reach a node, exchanged in the handshake for NOT_LEADER hints. */
export interface NodeAddresses {
  nats?: string;
  grpc?: string;
  http?: string;
  /** host:port of the node's raft listener, so a member that does not know it can dial it back. */
  raft?: string;
}

/**
 * Frames in order on every connection: each side sends `challenge` first, answers the other's
 * challenge with `hello`, and only after both hellos are verified sends `messages` or `info`.
 */
export type Frame =
  | { t: 'challenge'; nonce: Uint8Array }
  | { t: 'hello'; id: number; mac: Uint8Array; info: NodeAddresses }
  | { t: 'info'; info: NodeAddresses }
  | { t: 'messages'; m: Message[] };

const packr = new Packr({ useRecords: false, moreTypes: false });
const lengthBytes = 4;

export function encodeFrame(frame: Frame): Buffer {
  const body = packr.pack(frame.t === 'messages' ? { t: 'messages', m: frame.m.map(plainMessage) } : frame);
  const out = Buffer.allocUnsafe(lengthBytes + body.length);
  out.writeUInt32BE(body.length, 0);
  body.copy(out, lengthBytes);
  return out;
}

/** msgpack has no `undefined`: send only the fields a message has. */
function plainMessage(m: Message): Record<string, unknown> {
  const out: Record<string, unknown> = {
    type: m.type, from: m.from, to: m.to, term: m.term, logTerm: m.logTerm, index: m.index,
    entries: m.entries.map((e) => ({ index: e.index, term: e.term, type: e.type, data: e.data, ts: e.ts })),
    commit: m.commit, reject: m.reject, rejectHint: m.rejectHint, context: m.context,
  };
  if (m.snapshot) out.snapshot = m.snapshot;
  return out;
}

/**
 * Byte-fed frame parser. `push` returns the complete frames so far; it throws INVALID_ARGUMENT on
 * anything that is not a well-formed frame, after which the connection must be closed.
 */
export class FrameParser {
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  /** Body length of the frame being received, once its header is in. */
  private expected: number | undefined;

  constructor(private frameBytesMax: number) {}

  /** Raises the frame size limit once the peer is authenticated. */
  setFrameBytesMax(bytes: number): void {
    this.frameBytesMax = bytes;
  }

  push(chunk: Buffer): unknown[] {
    this.buffered.push(chunk);
    this.bufferedBytes += chunk.length;
    const frames: unknown[] = [];
    for (;;) {
      if (this.expected === undefined) {
        if (this.bufferedBytes < lengthBytes) break;
        const length = this.flatten().readUInt32BE(0);
        if (length === 0 || length > this.frameBytesMax) {
          throw new LoomError('INVALID_ARGUMENT', `frame of ${length} bytes (limit ${this.frameBytesMax})`);
        }
        this.expected = length;
      }
      // Concatenate only once the whole frame is in, so a large frame in many chunks is copied once.
      const frameBytes = lengthBytes + this.expected;
      if (this.bufferedBytes < frameBytes) break;
      const all = this.flatten();
      const body = all.subarray(lengthBytes, frameBytes);
      const rest = all.subarray(frameBytes);
      this.buffered = rest.length > 0 ? [rest] : [];
      this.bufferedBytes -= frameBytes;
      this.expected = undefined;
      let value: unknown;
      try {
        value = packr.unpack(body);
      } catch (err) {
        throw new LoomError('INVALID_ARGUMENT', `frame does not decode as msgpack: ${(err as Error).message}`);
      }
      frames.push(value);
    }
    return frames;
  }

  private flatten(): Buffer {
    if (this.buffered.length > 1) this.buffered = [Buffer.concat(this.buffered)];
    return this.buffered[0];
  }
}

function bad(what: string): never {
  throw new LoomError('INVALID_ARGUMENT', `invalid peer frame: ${what}`);
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array);
}

function count(x: unknown, field: string): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) bad(`${field} is not a non-negative integer`);
  return x;
}

function text(x: unknown, field: string): string {
  if (typeof x !== 'string' || x.length > stringBytesMax) bad(`${field} is not a string of at most ${stringBytesMax} characters`);
  return x;
}

function bytes(x: unknown, field: string): Uint8Array {
  if (!(x instanceof Uint8Array)) bad(`${field} is not binary`);
  return x;
}

function addresses(x: unknown): NodeAddresses {
  if (!isRecord(x)) bad('info is not a map');
  const out: NodeAddresses = {};
  for (const door of ['nats', 'grpc', 'http', 'raft'] as const) {
    if (x[door] !== undefined && x[door] !== null) out[door] = text(x[door], `info.${door}`);
  }
  return out;
}

/** Checks a decoded frame's shape; messages are checked separately (they need the peer's id). */
export function validateFrame(x: unknown): Frame {
  if (!isRecord(x)) bad('not a map');
  switch (x.t) {
    case 'challenge': {
      const nonce = bytes(x.nonce, 'nonce');
      if (nonce.length < 16 || nonce.length > 64) bad('nonce length');
      return { t: 'challenge', nonce };
    }
    case 'hello': {
      const id = count(x.id, 'id');
      if (id < 1) bad('id must be positive');
      return { t: 'hello', id, mac: bytes(x.mac, 'mac'), info: addresses(x.info) };
    }
    case 'info':
      return { t: 'info', info: addresses(x.info) };
    case 'messages': {
      if (!Array.isArray(x.m) || x.m.length > frameMessagesMax) bad(`messages is not a list of at most ${frameMessagesMax}`);
      return { t: 'messages', m: x.m as Message[] };
    }
    default:
      return bad(`unknown frame type ${JSON.stringify(typeof x.t === 'string' ? x.t.slice(0, 32) : typeof x.t)}`);
  }
}

const messageTypes = new Set<MessageType>([
  'app', 'appResp', 'heartbeat', 'heartbeatResp', 'preVote', 'preVoteResp', 'vote', 'voteResp',
  'snap', 'snapResp', 'timeoutNow', 'readIndex', 'readIndexResp', 'transferLeader',
]);

function entry(x: unknown, i: number): LogEntry {
  if (!isRecord(x)) bad(`entry ${i} is not a map`);
  const index = count(x.index, 'entry.index');
  if (index < 1) bad('entry.index must be positive');
  const ts = x.ts;
  if (typeof ts !== 'number' || !Number.isFinite(ts)) bad('entry.ts is not a number');
  return { index, term: count(x.term, 'entry.term'), type: text(x.type, 'entry.type'), data: bytes(x.data, 'entry.data'), ts };
}

function snapshotChunk(x: unknown): SnapshotChunk {
  if (!isRecord(x) || !isRecord(x.meta) || !isRecord(x.meta.conf)) bad('snapshot is not a map');
  const conf = x.meta.conf;
  const ids = (v: unknown, field: string): number[] => {
    if (!Array.isArray(v) || v.length > 64) bad(`${field} is not a short list`);
    return v.map((id) => count(id, field));
  };
  return {
    meta: { index: count(x.meta.index, 'snapshot.index'), term: count(x.meta.term, 'snapshot.term'), conf: { voters: ids(conf.voters, 'voters'), learners: ids(conf.learners, 'learners') } },
    offset: count(x.offset, 'snapshot.offset'),
    totalBytes: count(x.totalBytes, 'snapshot.totalBytes'),
    data: bytes(x.data, 'snapshot.data'),
  };
}

/**
 * Checks one Raft message from an authenticated peer: every field has its type, and it claims to
 * come from that peer and to go to this node. Raft asserts its own invariants; it must never see
 * a malformed value, so this is the last gate.
 */
export function validateMessage(x: unknown, from: number, to: number): Message {
  if (!isRecord(x)) bad('message is not a map');
  if (typeof x.type !== 'string' || !messageTypes.has(x.type as MessageType)) bad('unknown message type');
  if (x.from !== from) bad(`message claims to come from ${String(x.from)}, the connection is node ${from}`);
  if (x.to !== to) bad(`message addressed to ${String(x.to)}, this is node ${to}`);
  if (!Array.isArray(x.entries)) bad('entries is not a list');
  if (typeof x.reject !== 'boolean') bad('reject is not a boolean');
  const message: Message = {
    type: x.type as MessageType,
    from,
    to,
    term: count(x.term, 'term'),
    logTerm: count(x.logTerm, 'logTerm'),
    index: count(x.index, 'index'),
    entries: x.entries.map(entry),
    commit: count(x.commit, 'commit'),
    reject: x.reject,
    rejectHint: count(x.rejectHint, 'rejectHint'),
    context: text(x.context, 'context'),
  };
  for (let i = 1; i < message.entries.length; i++) {
    if (message.entries[i].index !== message.entries[i - 1].index + 1) bad('entries are not dense');
  }
  if (x.snapshot !== undefined && x.snapshot !== null) message.snapshot = snapshotChunk(x.snapshot);
  return message;
}
