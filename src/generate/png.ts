/**
 * PNG output with the generation parameters inside (PNG spec, W3C 2003/2022: §11.3.3.2 tEXt,
 * §11.3.3.4 iTXt; chunk = length, type, data, CRC-32 of type + data).
 *
 * Every image carries two text chunks:
 *   "parameters"  the human line format most Stable Diffusion tools read (prompt, then
 *                 "Negative prompt: …", then "Steps: 25, Sampler: pndm, CFG scale: 7.5, Seed: 3, …");
 *                 tEXt when the text is Latin-1, iTXt (UTF-8) otherwise;
 *   "time-debias" the image's full ImageRecord as JSON (ASCII, non-ASCII escaped), for tools.
 * Pixels are encoded and decoded by fast-png (8-bit RGB); this module is the project's only fast-png import.
 */
import { decode, encode } from 'fast-png';
import { GenerationError } from '../util/errors.js';
import type { ImageRecord } from './pipeline.js';

export interface RgbImage {
  width: number;
  height: number;
  /** 8-bit RGB, row-major HWC. */
  rgb: Uint8Array;
}

function isLatin1(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0xff) return false;
  return true;
}

/** Encode RGB pixels as PNG with text chunks (keyword → text). */
export function encodePng(image: RgbImage, text: Record<string, string> = {}): Uint8Array {
  if (image.rgb.length !== image.width * image.height * 3) {
    throw new GenerationError(
      `png: ${image.rgb.length} bytes for ${image.width} × ${image.height} RGB (needs ${image.width * image.height * 3})`,
    );
  }
  const latin1: Record<string, string> = {};
  const utf8: [string, string][] = [];
  for (const [k, v] of Object.entries(text)) {
    if (!/^[\u0020-\u007e\u00a1-\u00ff]{1,79}$/.test(k) || k.startsWith(' ') || k.endsWith(' ')) {
      throw new GenerationError(`png: text keyword ${JSON.stringify(k)} is not 1–79 Latin-1 characters`);
    }
    if (isLatin1(v)) latin1[k] = v;
    else utf8.push([k, v]);
  }
  let png = encode({ width: image.width, height: image.height, data: image.rgb, channels: 3, depth: 8, text: latin1 });
  for (const [k, v] of utf8) png = insertAfterIhdr(png, 'iTXt', itxtData(k, v));
  return png;
}

/** An 8-bit RGB image as PNG without text chunks (audit images, contact sheets). */
export function encodeRgbPng(width: number, height: number, data: Uint8Array | Uint8ClampedArray): Uint8Array {
  const rgb = data instanceof Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return encodePng({ width, height, rgb });
}

/** The pixels of an 8-bit RGB PNG, or null when the PNG is another kind (grey, alpha, 16-bit, palette). */
export function decodeRgbPng(png: Uint8Array): RgbImage | null {
  const d = decode(png);
  if (d.channels !== 3 || d.depth !== 8 || d.palette) return null;
  return { width: d.width, height: d.height, rgb: new Uint8Array(d.data.buffer, d.data.byteOffset, d.data.byteLength) };
}

/** The text chunks of a PNG (tEXt via fast-png, iTXt read here). */
export function readPngText(png: Uint8Array): Record<string, string> {
  const out: Record<string, string> = { ...decode(png).text };
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  let p = 8;
  while (p + 8 <= png.length) {
    const length = view.getUint32(p);
    const type = String.fromCharCode(...png.subarray(p + 4, p + 8));
    if (type === 'iTXt') {
      const data = png.subarray(p + 8, p + 8 + length);
      const z = data.indexOf(0);
      const keyword = new TextDecoder('latin1').decode(data.subarray(0, z));
      // keyword \0 compression-flag compression-method language \0 translated-keyword \0 text
      let q = z + 3;
      q = data.indexOf(0, q) + 1;
      q = data.indexOf(0, q) + 1;
      if (data[z + 1] === 0) out[keyword] = new TextDecoder('utf-8').decode(data.subarray(q));
    }
    p += 12 + length;
  }
  return out;
}

/** The "parameters" text of an image record. */
export function parametersText(record: ImageRecord): string {
  const fields: [string, string | number][] = [
    ['Steps', record.steps],
    ['Sampler', record.scheduler],
    ['CFG scale', record.guidance],
    ['Seed', record.seed ?? 'given latents'],
    ['Size', `${record.width}x${record.height}`],
    ['Model', record.model.name],
    ['Model format', record.model.format],
    ['Precision', record.model.precision],
  ];
  if (record.eta !== 0) fields.push(['Eta', record.eta]);
  if (record.edit) fields.push(['Edit', `${record.edit.kind} sha256:${record.edit.sha256.slice(0, 16)}`]);
  fields.push(['Noise', 'Philox4x32-10 Box-Muller']);
  const lines = [record.prompt];
  if (record.negativePrompt) lines.push(`Negative prompt: ${record.negativePrompt}`);
  lines.push(fields.map(([k, v]) => `${k}: ${v}`).join(', '));
  return lines.join('\n');
}

/** JSON with every non-ASCII character escaped, so it fits a Latin-1 tEXt chunk unchanged. */
export function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(
    /[\u0080-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** The PNG of a generated image with its parameters embedded. */
export function imagePng(image: RgbImage & { record: ImageRecord }): Uint8Array {
  return encodePng(image, { parameters: parametersText(image.record), 'time-debias': asciiJson(image.record) });
}

function itxtData(keyword: string, text: string): Uint8Array {
  const k = new Uint8Array([...keyword].map((c) => c.charCodeAt(0)));
  const t = new TextEncoder().encode(text);
  // keyword, 0, compression flag 0, method 0, empty language tag, 0, empty translated keyword, 0, text
  const out = new Uint8Array(k.length + 5 + t.length);
  out.set(k, 0);
  out.set([0, 0, 0, 0, 0], k.length);
  out.set(t, k.length + 5);
  return out;
}

function insertAfterIhdr(png: Uint8Array, type: string, data: Uint8Array): Uint8Array {
  const ihdrEnd = 8 + 12 + 13; // signature + IHDR chunk (13 data bytes)
  const chunk = new Uint8Array(12 + data.length);
  const view = new DataView(chunk.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) chunk[4 + i] = type.charCodeAt(i);
  chunk.set(data, 8);
  view.setUint32(8 + data.length, crc32(chunk.subarray(4, 8 + data.length)));
  const out = new Uint8Array(png.length + chunk.length);
  out.set(png.subarray(0, ihdrEnd), 0);
  out.set(chunk, ihdrEnd);
  out.set(png.subarray(ihdrEnd), ihdrEnd + chunk.length);
  return out;
}

let CRC_TABLE: Uint32Array | null = null;

/** CRC-32 (ISO 3309 / ITU-T V.42, polynomial 0xEDB88320 reflected), as the PNG spec's Annex D. */
export function crc32(bytes: Uint8Array): number {
  if (!CRC_TABLE) {
    CRC_TABLE = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      CRC_TABLE[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (const b of bytes) c = (CRC_TABLE[(c ^ b) & 0xff] as number) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
