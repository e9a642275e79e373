// The byte-fed parser of what a NATS client sends (CONNECT, PUB, HPUB, SUB, UNSUB, PING, PONG, +OK,
// -ERR). No socket: feed it any split of the stream, it calls the handler once per complete op.

import { LoomError } from '../util';

/** The `-ERR` texts nats-server sends; clients match on them, so they are part of the protocol. */
export const PROTOCOL_ERRORS = {
  unknownOperation: 'Unknown Protocol Operation',
  controlLineExceeded: 'Maximum Control Line Exceeded',
  payloadViolation: 'Maximum Payload Violation',
  authorizationViolation: 'Authorization Violation',
  authenticationTimeout: 'Authentication Timeout',
  invalidSubject: 'Invalid Subject',
  invalidPublishSubject: 'Invalid Publish Subject',
  subscriptionsExceeded: 'maximum subscriptions exceeded',
  connectionsExceeded: 'maximum connections exceeded',
  slowConsumer: 'Slow Consumer',
  staleConnection: 'Stale Connection',
  badClientProtocol: 'invalid client protocol',
  noRespondersRequiresHeaders: 'no responders requires headers support',
} as const;

export interface ClientOpHandler {
  connect(json: string): void;
  /**
   * A message: its bytes are `source[start, end)`, the first `headerBytes` of them the header block
   * (-1 for PUB, which has none). Offsets, not slices, so that a message nobody wants costs no
   * allocation; `source` may be the fed chunk itself: copy what you keep past the call.
   */
  pub(subject: string, reply: string | undefined, source: Buffer, start: number, headerBytes: number, end: number): void;
  sub(subject: string, queue: string | undefined, sid: string): void;
  unsub(sid: string, max: number | undefined): void;
  ping(): void;
  pong(): void;
  ok(): void;
  err(message: string): void;
}

export interface ParserLimits {
  maxControlLineBytes: number;
  maxPayloadBytes: number;
}

/** Thrown by `parse` for a stream the server must answer with `-ERR` and close. */
export function protocolViolation(natsError: string, detail: string): LoomError {
  return new LoomError('INVALID_ARGUMENT', `NATS protocol violation: ${detail}`, { natsError });
}

const enum State {
  OpStart,
  OpName,
  Arg,
  SkipLine,
  Payload,
  PayloadEndCr,
  PayloadEndLf,
}

const enum Op {
  Connect,
  Pub,
  Hpub,
  Sub,
  Unsub,
  Ping,
  Pong,
  Ok,
  Err,
}

const OPS: ReadonlyMap<string, Op> = new Map([
  ['CONNECT', Op.Connect],
  ['PUB', Op.Pub],
  ['HPUB', Op.Hpub],
  ['SUB', Op.Sub],
  ['UNSUB', Op.Unsub],
  ['PING', Op.Ping],
  ['PONG', Op.Pong],
  ['+OK', Op.Ok],
  ['-ERR', Op.Err],
]);

// Every prefix of an op name: a byte that leaves this set fails at once, as in nats-server.
const OP_PREFIXES: ReadonlySet<string> = new Set(
  [...OPS.keys()].flatMap((name) => Array.from({ length: name.length }, (_, i) => name.slice(0, i + 1))),
);

const OP_NAME_BYTES_MAX = 7;
const ARGS_MAX = 4; // HPUB <subject> <reply> <header size> <total size>
const SPACE = 32;
const TAB = 9;
const CR = 13;
const LF = 10;

export class ClientParser {
  private state = State.OpStart;
  private op = Op.Ping;
  private opName = '';
  private argPieces: Buffer[] = [];
  private argPendingBytes = 0;
  private readonly argBounds = new Int32Array(ARGS_MAX * 2 + 2);
  // Message being received across chunks.
  private subject = '';
  private reply: string | undefined;
  private headerBytes = 0;
  private bodyBytes = 0;
  /** Allocated only when a body spans chunks; a body inside one chunk is handed out as a view. */
  private body: Buffer | undefined;
  private bodyFilled = 0;
  private halted = false;
  private readonly lastSubjectBytes = Buffer.alloc(256);
  private lastSubjectLength = -1;
  private lastSubject = '';

  constructor(
    private readonly handler: ClientOpHandler,
    private readonly limits: ParserLimits,
  ) {}

  /** Stops parsing: the rest of the current chunk and every later one are ignored. */
  halt(): void {
    this.halted = true;
  }

  /** Feeds bytes; throws a protocol violation (LoomError with details.natsError) on bad input. */
  parse(chunk: Buffer): void {
    const n = chunk.length;
    let i = 0;
    while (i < n && !this.halted) {
      switch (this.state) {
        case State.OpStart: {
          // Fast path for the hot op: "PUB " whole in this chunk skips the per-byte op-name walk.
          if (
            i + 3 < n &&
            (chunk[i] | 0x20) === 0x70 &&
            (chunk[i + 1] | 0x20) === 0x75 &&
            (chunk[i + 2] | 0x20) === 0x62 &&
            (chunk[i + 3] === SPACE || chunk[i + 3] === TAB)
          ) {
            this.op = Op.Pub;
            this.state = State.Arg;
            i += 4;
            break;
          }
          this.opName = '';
          this.state = State.OpName;
          break;
        }
        case State.OpName:
          i = this.readOpName(chunk, i);
          break;
        case State.Arg:
          i = this.readArg(chunk, i);
          break;
        case State.SkipLine: {
          const lf = chunk.indexOf(LF, i);
          if (lf < 0) {
            i = n;
          } else {
            i = lf + 1;
            this.state = State.OpStart;
            this.dispatchBare();
          }
          break;
        }
        case State.Payload: {
          if (this.body === undefined && n - i >= this.bodyBytes + 2) {
            // Whole body and its CRLF in this chunk: hand out a view, no copy.
            const end = i + this.bodyBytes;
            if (chunk[end] !== CR || chunk[end + 1] !== LF) {
              throw protocolViolation(PROTOCOL_ERRORS.unknownOperation, 'message payload not followed by CRLF');
            }
            const bodyStart = i;
            i = end + 2;
            this.state = State.OpStart;
            this.dispatchMessage(chunk, bodyStart, end);
            break;
          }
          this.body ??= this.bodyBytes === 0 ? EMPTY : Buffer.allocUnsafe(this.bodyBytes);
          const take = Math.min(this.bodyBytes - this.bodyFilled, n - i);
          chunk.copy(this.body, this.bodyFilled, i, i + take);
          this.bodyFilled += take;
          i += take;
          if (this.bodyFilled === this.bodyBytes) this.state = State.PayloadEndCr;
          break;
        }
        case State.PayloadEndCr:
          if (chunk[i] !== CR) throw protocolViolation(PROTOCOL_ERRORS.unknownOperation, 'message payload not followed by CR');
          i++;
          this.state = State.PayloadEndLf;
          break;
        case State.PayloadEndLf: {
          if (chunk[i] !== LF) throw protocolViolation(PROTOCOL_ERRORS.unknownOperation, 'message payload not followed by LF');
          i++;
          this.state = State.OpStart;
          const body = this.body ?? EMPTY;
          this.body = undefined;
          this.bodyFilled = 0;
          this.dispatchMessage(body, 0, body.length);
          break;
        }
      }
    }
  }

  private readOpName(chunk: Buffer, i: number): number {
    const b = chunk[i];
    if (b === SPACE || b === TAB || b === CR || b === LF) {
      const op = OPS.get(this.opName);
      if (op === undefined) throw protocolViolation(PROTOCOL_ERRORS.unknownOperation, `unknown op '${this.opName}'`);
      this.op = op;
      if (op === Op.Ping || op === Op.Pong || op === Op.Ok) {
        if (b === LF) {
          this.state = State.OpStart;
          this.dispatchBare();
        } else {
          this.state = State.SkipLine;
        }
      } else {
        if (b === CR || b === LF) throw protocolViolation(PROTOCOL_ERRORS.unknownOperation, `${this.opName} without arguments`);
        this.state = State.Arg;
      }
      return i + 1;
    }
    // ASCII letters are case-insensitive on the wire; anything else is kept as is.
    const upper = b >= 0x61 && b <= 0x7a ? b - 0x20 : b;
    const name = this.opName + String.fromCharCode(upper);
    if (name.length > OP_NAME_BYTES_MAX || !OP_PREFIXES.has(name)) {
      throw protocolViolation(PROTOCOL_ERRORS.unknownOperation, `unknown op starting '${name}'`);
    }
    this.opName = name;
    return i + 1;
  }

  private readArg(chunk: Buffer, i: number): number {
    const n = chunk.length;
    const lf = chunk.indexOf(LF, i);
    if (lf < 0) {
      this.argPendingBytes += n - i;
      if (this.argPendingBytes > this.limits.maxControlLineBytes) {
        throw protocolViolation(PROTOCOL_ERRORS.controlLineExceeded, 'control line too long');
      }
      // Copied: the chunk's memory may be reused by the caller once parse returns.
      this.argPieces.push(Buffer.from(chunk.subarray(i, n)));
      return n;
    }
    let line = chunk;
    let start = i;
    let end = lf;
    if (this.argPieces.length > 0) {
      this.argPieces.push(chunk.subarray(i, lf));
      line = Buffer.concat(this.argPieces);
      this.argPieces = [];
      this.argPendingBytes = 0;
      start = 0;
      end = line.length;
    }
    if (end - start > this.limits.maxControlLineBytes) {
      throw protocolViolation(PROTOCOL_ERRORS.controlLineExceeded, 'control line too long');
    }
    if (end > start && line[end - 1] === CR) end--;
    this.state = State.OpStart;
    this.dispatchArgs(line, start, end);
    return lf + 1;
  }

  private dispatchBare(): void {
    if (this.op === Op.Ping) this.handler.ping();
    else if (this.op === Op.Pong) this.handler.pong();
    else this.handler.ok();
  }

  private dispatchArgs(line: Buffer, start: number, end: number): void {
    switch (this.op) {
      case Op.Connect: {
        const json = line.toString('utf8', start, end).trim();
        if (json.length === 0) throw protocolViolation(PROTOCOL_ERRORS.unknownOperation, 'CONNECT without arguments');
        this.handler.connect(json);
        return;
      }
      case Op.Err:
        this.handler.err(line.toString('utf8', start, end).trim());
        return;
      case Op.Pub:
      case Op.Hpub:
        this.startMessage(line, start, end);
        return;
      case Op.Sub: {
        const count = this.splitArgs(line, start, end);
        if (count !== 2 && count !== 3) throw protocolViolation(PROTOCOL_ERRORS.unknownOperation, 'SUB needs subject [queue] sid');
        const b = this.argBounds;
        this.handler.sub(
          line.toString('utf8', b[0], b[1]),
          count === 3 ? line.toString('utf8', b[2], b[3]) : undefined,
          line.toString('utf8', b[count * 2 - 2], b[count * 2 - 1]),
        );
        return;
      }
      case Op.Unsub: {
        const count = this.splitArgs(line, start, end);
        if (count !== 1 && count !== 2) throw protocolViolation(PROTOCOL_ERRORS.unknownOperation, 'UNSUB needs sid [max]');
        const b = this.argBounds;
        let max: number | undefined;
        if (count === 2) {
          max = parseSize(line, b[2], b[3]);
          if (max < 0) throw protocolViolation(PROTOCOL_ERRORS.unknownOperation, 'UNSUB max is not a number');
        }
        this.handler.unsub(line.toString('utf8', b[0], b[1]), max);
        return;
      }
      default:
        throw protocolViolation(PROTOCOL_ERRORS.unknownOperation, 'unexpected op with arguments');
    }
  }

  private startMessage(line: Buffer, start: number, end: number): void {
    const count = this.splitArgs(line, start, end);
    const withHeaders = this.op === Op.Hpub;
    const sizes = withHeaders ? 2 : 1;
    if (count !== sizes + 1 && count !== sizes + 2) {
      throw protocolViolation(PROTOCOL_ERRORS.unknownOperation, withHeaders ? 'HPUB needs subject [reply] hsize size' : 'PUB needs subject [reply] size');
    }
    const b = this.argBounds;
    const total = parseSize(line, b[count * 2 - 2], b[count * 2 - 1]);
    const headerBytes = withHeaders ? parseSize(line, b[count * 2 - 4], b[count * 2 - 3]) : 0;
    if (total < 0 || headerBytes < 0) throw protocolViolation(PROTOCOL_ERRORS.unknownOperation, 'message size is not a number');
    if (total > this.limits.maxPayloadBytes) {
      throw protocolViolation(PROTOCOL_ERRORS.payloadViolation, `message of ${total} bytes over ${this.limits.maxPayloadBytes}`);
    }
    if (headerBytes > total) throw protocolViolation(PROTOCOL_ERRORS.unknownOperation, 'header size larger than message size');
    this.subject = this.subjectText(line, b[0], b[1]);
    this.reply = count === sizes + 2 ? line.toString('utf8', b[2], b[3]) : undefined;
    this.headerBytes = headerBytes;
    this.bodyBytes = total;
    this.body = undefined;
    this.bodyFilled = 0;
    this.state = State.Payload;
    // An empty body still needs its CRLF; the Payload state's fast path handles that too.
  }

  private dispatchMessage(source: Buffer, start: number, end: number): void {
    this.handler.pub(this.subject, this.reply, source, start, this.op === Op.Hpub ? this.headerBytes : -1, end);
  }

  // Publishers mostly repeat a few subjects: reusing the last string saves a decode per message.
  private subjectText(line: Buffer, start: number, end: number): string {
    const length = end - start;
    const last = this.lastSubjectBytes;
    if (length === this.lastSubjectLength && length <= last.length) {
      let same = true;
      for (let k = 0; k < length; k++) {
        if (line[start + k] !== last[k]) {
          same = false;
          break;
        }
      }
      if (same) return this.lastSubject;
    }
    const text = line.toString('utf8', start, end);
    if (length <= last.length) {
      line.copy(last, 0, start, end);
      this.lastSubjectLength = length;
      this.lastSubject = text;
    }
    return text;
  }

  /** Splits on runs of spaces and tabs into argBounds; returns the count, or ARGS_MAX + 1 if more. */
  private splitArgs(line: Buffer, start: number, end: number): number {
    const bounds = this.argBounds;
    let count = 0;
    let i = start;
    while (i < end) {
      while (i < end && (line[i] === SPACE || line[i] === TAB)) i++;
      if (i >= end) break;
      if (count === ARGS_MAX) return ARGS_MAX + 1;
      const start = i;
      while (i < end && line[i] !== SPACE && line[i] !== TAB) i++;
      bounds[count * 2] = start;
      bounds[count * 2 + 1] = i;
      count++;
    }
    return count;
  }
}

const EMPTY = Buffer.alloc(0);

// Digits only; -1 otherwise. Long numbers stay exact enough to be compared with the payload limit.
function parseSize(line: Buffer, start: number, end: number): number {
  if (end <= start || end - start > 15) return -1;
  let value = 0;
  for (let i = start; i < end; i++) {
    const d = line[i] - 48;
    if (d < 0 || d > 9) return -1;
    value = value * 10 + d;
  }
  return value;
}
