/**
 * Contact sheets: images in a grid, each cell optionally labelled (a caption strip under the image,
 * drawn with a built-in 5 × 7 pixel font) and marked (a coloured frame, e.g. a classifier's verdict).
 * Reused by the audit for per-profession sheets. Pure: pixels in, pixels out (png.ts writes them).
 */
import { GenerationError, show } from '../util/errors.js';
import type { RgbImage } from './png.js';

export type Rgb = readonly [number, number, number];

export interface GridCell extends RgbImage {
  /** Caption under the image (upper-cased; characters outside the font are drawn as '?'). */
  label?: string;
  /** Frame colour around the image (e.g. [220, 40, 40] for a flagged cell). */
  mark?: Rgb;
}

export interface GridOptions {
  /** Cells per row (default ⌈√n⌉). */
  columns?: number;
  /** Pixels between and around cells (default 4). */
  padding?: number;
  background?: Rgb;
  /** Caption colour (default black). */
  ink?: Rgb;
  /** Width of a mark frame (default 3). */
  markWidth?: number;
  /** Font scale (default 1: 5 × 7 pixel glyphs). */
  fontScale?: number;
}

/** Lay out `cells` (all of the same size) in a grid. */
export function contactSheet(cells: readonly GridCell[], options: GridOptions = {}): RgbImage {
  if (cells.length === 0) throw new GenerationError('grid: no images to lay out');
  const { width: cw, height: ch } = cells[0] as GridCell;
  cells.forEach((c, i) => {
    if (c.width !== cw || c.height !== ch) {
      throw new GenerationError(`grid: image ${i} is ${c.width} × ${c.height}; all cells must be ${cw} × ${ch}`);
    }
  });
  const columns = options.columns ?? Math.ceil(Math.sqrt(cells.length));
  if (!Number.isInteger(columns) || columns < 1)
    throw new GenerationError(`grid columns: ${show(columns)} is not an integer >= 1`);
  const pad = options.padding ?? 4;
  const scale = options.fontScale ?? 1;
  const markWidth = options.markWidth ?? 3;
  const bg = options.background ?? [255, 255, 255];
  const ink = options.ink ?? [0, 0, 0];
  const hasLabels = cells.some((c) => c.label);
  const captionHeight = hasLabels ? (GLYPH_H + 4) * scale : 0;
  const rows = Math.ceil(cells.length / columns);
  const cellW = cw + 2 * markWidth;
  const cellH = ch + 2 * markWidth + captionHeight;
  const width = pad + columns * (cellW + pad);
  const height = pad + rows * (cellH + pad);
  const out = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) out.set(bg, 3 * i);
  const fill = (x0: number, y0: number, w: number, h: number, color: Rgb) => {
    for (let y = Math.max(0, y0); y < Math.min(height, y0 + h); y++) {
      for (let x = Math.max(0, x0); x < Math.min(width, x0 + w); x++) out.set(color, 3 * (y * width + x));
    }
  };
  cells.forEach((cell, i) => {
    const x0 = pad + (i % columns) * (cellW + pad);
    const y0 = pad + Math.floor(i / columns) * (cellH + pad);
    if (cell.mark) fill(x0, y0, cellW, ch + 2 * markWidth, cell.mark);
    for (let y = 0; y < ch; y++) {
      const src = y * cw * 3;
      out.set(cell.rgb.subarray(src, src + cw * 3), 3 * ((y0 + markWidth + y) * width + x0 + markWidth));
    }
    if (cell.label) {
      const maxChars = Math.max(0, Math.floor(cellW / ((GLYPH_W + 1) * scale)));
      drawText(
        cell.label.toUpperCase().slice(0, maxChars),
        x0,
        y0 + ch + 2 * markWidth + 2 * scale,
        scale,
        (x, y, w, h) => fill(x, y, w, h, ink),
      );
    }
  });
  return { width, height, rgb: out };
}

const GLYPH_W = 5;
const GLYPH_H = 7;

function drawText(
  text: string,
  x0: number,
  y0: number,
  scale: number,
  pixel: (x: number, y: number, w: number, h: number) => void,
): void {
  [...text].forEach((ch, k) => {
    const glyph = FONT[ch] ?? FONT['?'];
    (glyph as readonly number[]).forEach((row, y) => {
      for (let x = 0; x < GLYPH_W; x++) {
        if (row & (1 << (GLYPH_W - 1 - x))) {
          pixel(x0 + (k * (GLYPH_W + 1) + x) * scale, y0 + y * scale, scale, scale);
        }
      }
    });
  });
}

/** 5 × 7 glyphs: seven rows of five bits, most significant bit leftmost. */
const FONT: Readonly<Record<string, readonly number[]>> = Object.freeze({
  ' ': [0, 0, 0, 0, 0, 0, 0],
  A: [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
  B: [0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e],
  C: [0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e],
  D: [0x1e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1e],
  E: [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f],
  F: [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10],
  G: [0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f],
  H: [0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
  I: [0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e],
  J: [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c],
  K: [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
  L: [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f],
  M: [0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11],
  N: [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
  O: [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
  P: [0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10],
  Q: [0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d],
  R: [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11],
  S: [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e],
  T: [0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
  U: [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
  V: [0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04],
  W: [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a],
  X: [0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11],
  Y: [0x11, 0x11, 0x11, 0x0a, 0x04, 0x04, 0x04],
  Z: [0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f],
  '0': [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
  '1': [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
  '2': [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
  '3': [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
  '4': [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
  '5': [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
  '6': [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
  '7': [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
  '8': [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
  '9': [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
  '.': [0, 0, 0, 0, 0, 0x0c, 0x0c],
  ',': [0, 0, 0, 0, 0x0c, 0x04, 0x08],
  ':': [0, 0x0c, 0x0c, 0, 0x0c, 0x0c, 0],
  '-': [0, 0, 0, 0x1f, 0, 0, 0],
  '+': [0, 0x04, 0x04, 0x1f, 0x04, 0x04, 0],
  '=': [0, 0, 0x1f, 0, 0x1f, 0, 0],
  '/': [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
  '%': [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
  '(': [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
  ')': [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
  _: [0, 0, 0, 0, 0, 0, 0x1f],
  '#': [0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a],
  '?': [0x0e, 0x11, 0x01, 0x02, 0x04, 0, 0x04],
  '!': [0x04, 0x04, 0x04, 0x04, 0x04, 0, 0x04],
});
