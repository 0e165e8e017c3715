/**
 * Positioned, buffered reads of protobuf wire data straight from a file descriptor: varints, field
 * spans and small byte ranges, so a model file is walked without being loaded (a field's payload
 * is skipped by its length unless it is asked for). Errors are RangeErrors; callers name the file.
 */
import { readSync } from 'node:fs';
import { type FieldSpan, WIRE } from './wire.js';

const BUFFER_BYTES = 64 * 1024;

export class FileCursor {
  private readonly buf = Buffer.alloc(BUFFER_BYTES);
  private bufStart = 0;
  private bufLen = 0;
  /** Absolute position of the next read. */
  pos = 0;
  constructor(
    private readonly fd: number,
    readonly size: number,
  ) {}

  private fill(at: number): void {
    this.bufStart = at;
    this.bufLen = readSync(this.fd, this.buf, 0, this.buf.length, at);
    if (this.bufLen <= 0) throw new RangeError(`unexpected end of file at byte ${at}`);
  }

  private byteAt(at: number): number {
    if (at >= this.size) throw new RangeError(`unexpected end of file at byte ${at}`);
    if (at < this.bufStart || at >= this.bufStart + this.bufLen) this.fill(at);
    return this.buf[at - this.bufStart] as number;
  }

  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      const b = this.byteAt(this.pos++);
      value += (b & 0x7f) * scale;
      if (b < 0x80) {
        if (!Number.isSafeInteger(value)) throw new RangeError(`varint at byte ${this.pos} is past 2^53`);
        return value;
      }
      scale *= 128;
    }
    throw new RangeError(`varint longer than 10 bytes at byte ${this.pos}`);
  }

  /** A copy of [start, end) of the file (meant for small ranges: message headers, nodes, names). */
  bytes(start: number, end: number): Uint8Array {
    if (start < 0 || end < start || end > this.size) {
      throw new RangeError(`byte range [${start}, ${end}) lies outside the file (${this.size} bytes)`);
    }
    const length = end - start;
    const out = Buffer.alloc(length);
    if (length === 0) return out;
    if (length <= this.buf.length) {
      if (start < this.bufStart || end > this.bufStart + this.bufLen) this.fill(start);
      if (end <= this.bufStart + this.bufLen) {
        this.buf.copy(out, 0, start - this.bufStart, end - this.bufStart);
        return out;
      }
    }
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, out, done, length - done, start + done);
      if (n <= 0) throw new RangeError(`unexpected end of file at byte ${start + done}`);
      done += n;
    }
    return out;
  }

  /** The next `length` bytes (a copy); advances. */
  read(length: number): Uint8Array {
    if (this.pos + length > this.size)
      throw new RangeError(`field of ${length} bytes at ${this.pos} runs past the end of the file`);
    const out = this.bytes(this.pos, this.pos + length);
    this.pos += length;
    return out;
  }

  skip(wireType: number, end: number): void {
    if (wireType === WIRE.VARINT) this.varint();
    else if (wireType === WIRE.FIXED64) this.pos += 8;
    else if (wireType === WIRE.FIXED32) this.pos += 4;
    else if (wireType === WIRE.BYTES) {
      const length = this.varint(); // read before adding: `pos += varint()` would add to the old pos
      this.pos += length;
    } else throw new RangeError(`unsupported wire type ${wireType} at byte ${this.pos}`);
    if (this.pos > end) throw new RangeError(`field runs past the end of its message at byte ${this.pos}`);
  }

  /**
   * The field starting at `pos` inside a message ending at `end`: its span (absolute offsets, the
   * payload skipped, never read); `pos` moves past it.
   */
  field(end: number): FieldSpan {
    const start = this.pos;
    const tag = this.varint();
    const field = Math.floor(tag / 8);
    const wireType = tag % 8;
    if (field === 0) throw new RangeError(`invalid field number 0 at byte ${start}`);
    let dataStart: number;
    if (wireType === WIRE.BYTES) {
      const length = this.varint();
      dataStart = this.pos;
      this.pos += length;
    } else if (wireType === WIRE.VARINT || wireType === WIRE.FIXED64 || wireType === WIRE.FIXED32) {
      dataStart = this.pos;
      this.skip(wireType, end);
    } else {
      throw new RangeError(`unsupported wire type ${wireType} (field ${field}) at byte ${start}`);
    }
    if (this.pos > end) throw new RangeError(`field ${field} at byte ${start} runs past the end of its message`);
    return { field, wireType, start, dataStart, end: this.pos };
  }
}
