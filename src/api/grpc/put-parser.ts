// Reads a Buckets.Put request stream as its bytes arrive, whatever their split: the gRPC framing
// (a 5-byte prefix per message) and the fields of each PutObjectChunk. The `data` field's bytes go on
// as slices of the DATA frames they came in, never gathered into a whole message; the other fields
// (the header, unknown fields) are collected for protobufjs to decode.

import { LoomError } from '../../util';

export type PutEvent =
  /** Bytes of a message's `data` field, in order: a slice of the input, not a copy. */
  | { kind: 'data'; bytes: Buffer }
  /**
   * The message's other fields, in wire form, gathered since its start or its data: sent when its
   * data field begins (`end` false) and when it ends (`end` true; empty if nothing came after the data).
   */
  | { kind: 'fields'; bytes: Buffer; end: boolean };

/** A message longer than the server takes: answered RESOURCE_EXHAUSTED, as grpc-js does. */
export class PutMessageTooLarge extends Error {
  constructor(
    readonly messageBytes: number,
    readonly messageBytesMax: number,
  ) {
    // grpc-js's wording for the same refusal.
    super(`Received message larger than max (${messageBytes} vs ${messageBytesMax})`);
  }
}

/** Tag of PutObjectChunk.data: field 2, length-delimited (proto/loom.proto). */
const dataTag = (2 << 3) | 2;
/** The largest field number protobuf allows. */
const fieldNumberMax = 2 ** 29 - 1;
const prefixBytes = 5;
/** A protobuf varint is at most 10 bytes. */
const varintBytesMax = 10;

const enum Reading {
  /** The 5-byte gRPC prefix of the next message. */
  Prefix,
  /** A field's tag (varint). */
  Tag,
  /** A collected field's value: a varint. */
  VarintValue,
  /** A collected field's value: `valueLeft` more bytes (fixed32, fixed64, or length-delimited bytes). */
  FixedValue,
  /** A collected length-delimited field's length (varint). */
  ValueLength,
  /** The data field's length (varint). */
  DataLength,
  /** The data field's bytes: `valueLeft` more. */
  Data,
}

/**
 * A byte-fed parser of PutObjectChunk messages. `feed` returns the events the bytes complete;
 * `end` checks the stream did not stop inside a message. Malformed bytes throw a LoomError
 * (INVALID_ARGUMENT, as grpc-js's path answers bad protobuf); an oversized message throws PutMessageTooLarge.
 *
 * One deviation from protobuf's merge rules, which a streaming reader cannot follow: a message with
 * two `data` fields (where the last would win) is refused, not merged. No encoder writes one. Field
 * number 0 and numbers over 2^29 - 1 are refused too (invalid protobuf, which protobufjs reads as
 * some other field).
 */
export class PutMessageParser {
  private reading = Reading.Prefix;
  private readonly prefix = Buffer.alloc(prefixBytes);
  private prefixFilled = 0;
  /** Bytes of the current message not yet read. */
  private messageLeft = 0;
  /** Bytes of the current varint, as read so far. */
  private varint: number[] = [];
  /** Bytes of the current collected value, or of the data, left to read. */
  private valueLeft = 0;
  /** The current message's non-data fields in wire form, not yet sent. */
  private fields: Buffer[] = [];
  private dataSeen = false;
  /** Groups (wire types 3 and 4) open around the current field: their fields are collected whole. */
  private groupDepth = 0;

  constructor(private readonly messageBytesMax: number) {}

  feed(chunk: Buffer): PutEvent[] {
    const events: PutEvent[] = [];
    let at = 0;
    while (at < chunk.length) {
      switch (this.reading) {
        case Reading.Prefix: {
          const n = Math.min(prefixBytes - this.prefixFilled, chunk.length - at);
          chunk.copy(this.prefix, this.prefixFilled, at, at + n);
          this.prefixFilled += n;
          at += n;
          if (this.prefixFilled < prefixBytes) break;
          this.prefixFilled = 0;
          // The compressed flag is not read: only identity-encoded calls reach the lean path, and
          // grpc-js ignores the flag under identity too.
          const size = this.prefix.readUInt32BE(1);
          if (size > this.messageBytesMax) throw new PutMessageTooLarge(size, this.messageBytesMax);
          this.messageLeft = size;
          this.dataSeen = false;
          this.groupDepth = 0;
          this.reading = Reading.Tag;
          if (size === 0) this.endMessage(events);
          break;
        }
        case Reading.Data: {
          const n = Math.min(this.valueLeft, chunk.length - at);
          events.push({ kind: 'data', bytes: chunk.subarray(at, at + n) });
          at += n;
          this.valueLeft -= n;
          this.messageLeft -= n;
          if (this.valueLeft === 0) this.endField(events);
          break;
        }
        case Reading.FixedValue: {
          const n = Math.min(this.valueLeft, chunk.length - at);
          this.fields.push(Buffer.from(chunk.subarray(at, at + n)));
          at += n;
          this.valueLeft -= n;
          this.messageLeft -= n;
          if (this.valueLeft === 0) this.endField(events);
          break;
        }
        default:
          at = this.readVarintByte(chunk, at, events);
      }
    }
    return events;
  }

  /** Checks the stream ended between messages. */
  end(): void {
    if (this.reading !== Reading.Prefix || this.prefixFilled > 0) throw malformed('the request stream ended inside a message');
  }

  /** One byte of a tag or length varint; returns the next position. */
  private readVarintByte(chunk: Buffer, at: number, events: PutEvent[]): number {
    if (this.messageLeft === 0) throw malformed('a field runs past the end of its message');
    const byte = chunk[at];
    this.varint.push(byte);
    this.messageLeft--;
    if (byte & 0x80) {
      if (this.varint.length === varintBytesMax) throw malformed('a varint is longer than 10 bytes');
      if (this.messageLeft === 0) throw malformed('a field runs past the end of its message');
      return at + 1;
    }
    const raw = this.varint;
    this.varint = [];
    let value = 0;
    for (let i = raw.length - 1; i >= 0; i--) value = value * 128 + (raw[i] & 0x7f);
    switch (this.reading) {
      case Reading.Tag:
        this.startField(value, raw, events);
        break;
      case Reading.VarintValue:
        this.fields.push(Buffer.from(raw));
        this.endField(events);
        break;
      case Reading.ValueLength:
        this.fields.push(Buffer.from(raw));
        this.startValue(value, Reading.FixedValue, events);
        break;
      case Reading.DataLength:
        this.startValue(value, Reading.Data, events);
        break;
    }
    return at + 1;
  }

  private startField(tag: number, raw: number[], events: PutEvent[]): void {
    const field = Math.floor(tag / 8);
    const wireType = tag % 8;
    // protobufjs reads a tag as 32 bits and would take an overlong one for another field (data among them).
    if (field === 0 || field > fieldNumberMax) throw malformed(`a field has number ${field}`);
    if (tag === dataTag && this.groupDepth === 0) {
      if (this.dataSeen) throw malformed('a Put message carries its data field once');
      this.dataSeen = true;
      events.push({ kind: 'fields', bytes: this.takeFields(), end: false });
      this.reading = Reading.DataLength;
      return;
    }
    if (field === 2 && this.groupDepth === 0) throw malformed(`field data has wire type ${wireType}, not length-delimited`);
    this.fields.push(Buffer.from(raw));
    switch (wireType) {
      case 0:
        this.reading = Reading.VarintValue;
        return;
      case 1:
        this.startValue(8, Reading.FixedValue, events);
        return;
      case 2:
        this.reading = Reading.ValueLength;
        return;
      case 5:
        this.startValue(4, Reading.FixedValue, events);
        return;
      case 3:
        // An (unknown) group: its fields, up to its end tag, are collected for protobufjs to skip.
        this.groupDepth++;
        this.endField(events);
        return;
      case 4:
        if (this.groupDepth === 0) throw malformed(`field ${field} ends a group that was not started`);
        this.groupDepth--;
        this.endField(events);
        return;
      default:
        throw malformed(`wire type ${wireType} (field ${field}) does not exist`);
    }
  }

  private startValue(bytes: number, reading: Reading.FixedValue | Reading.Data, events: PutEvent[]): void {
    if (bytes > this.messageLeft) throw malformed('a field runs past the end of its message');
    this.valueLeft = bytes;
    this.reading = reading;
    if (bytes === 0) this.endField(events);
  }

  private endField(events: PutEvent[]): void {
    this.reading = Reading.Tag;
    if (this.messageLeft > 0) return;
    if (this.groupDepth > 0) throw malformed('a group runs past the end of its message');
    this.endMessage(events);
  }

  private endMessage(events: PutEvent[]): void {
    events.push({ kind: 'fields', bytes: this.takeFields(), end: true });
    this.reading = Reading.Prefix;
  }

  private takeFields(): Buffer {
    const bytes = this.fields.length === 1 ? this.fields[0] : Buffer.concat(this.fields);
    this.fields = [];
    return bytes;
  }
}

function malformed(reason: string): LoomError {
  return new LoomError('INVALID_ARGUMENT', `the request is not a valid protobuf message: ${reason}`, { field: 'body' });
}
