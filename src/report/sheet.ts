/**
 * Contact sheets: a PNG grid of one profession's images, each framed in its predicted class's
 * colour (unclear images in grey with a dashed frame), so a reader can check the classifier by eye.
 */
import type { RgbImage } from '../classify/clip.js';
import { encodeRgbPng } from '../generate/png.js';

/** Frame colours per class index (colour-blind-friendly: magenta, blue, green, orange, purple, teal). */
export const CLASS_COLORS = ['#c2185b', '#1e6fd9', '#2e9d4f', '#e07b00', '#7b3fb5', '#00897b'] as const;
export const UNCLEAR_COLOR = '#8a8a8a';

function rgbOf(hex: string): [number, number, number] {
  return [
    Number.parseInt(hex.slice(1, 3), 16),
    Number.parseInt(hex.slice(3, 5), 16),
    Number.parseInt(hex.slice(5, 7), 16),
  ];
}

export interface SheetCell {
  image: RgbImage;
  /** class index; -1 for unclear */
  classIndex: number;
}

/** Area-average resample to size × size (images are square or center-cropped first). */
export function thumbnail(img: RgbImage, size: number): Uint8Array {
  const side = Math.min(img.width, img.height);
  const ox = Math.floor((img.width - side) / 2);
  const oy = Math.floor((img.height - side) / 2);
  const out = new Uint8Array(size * size * 3);
  const scale = side / size;
  for (let y = 0; y < size; y++) {
    const sy0 = oy + Math.floor(y * scale);
    const sy1 = Math.max(sy0 + 1, oy + Math.floor((y + 1) * scale));
    for (let x = 0; x < size; x++) {
      const sx0 = ox + Math.floor(x * scale);
      const sx1 = Math.max(sx0 + 1, ox + Math.floor((x + 1) * scale));
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let yy = sy0; yy < sy1; yy++)
          for (let xx = sx0; xx < sx1; xx++) sum += img.data[(yy * img.width + xx) * 3 + c] as number;
        out[(y * size + x) * 3 + c] = Math.round(sum / ((sy1 - sy0) * (sx1 - sx0)));
      }
    }
  }
  return out;
}

/** Render the grid: `columns` per row, each cell a `thumb` px image in a 4 px frame, 4 px gaps. */
export function contactSheet(
  cells: readonly SheetCell[],
  options: { thumb?: number; columns?: number } = {},
): Uint8Array {
  const thumb = options.thumb ?? 96;
  const columns = Math.max(1, Math.min(options.columns ?? 8, cells.length));
  const rows = Math.max(1, Math.ceil(cells.length / columns));
  const frame = 4;
  const gap = 4;
  const cell = thumb + 2 * frame;
  const width = gap + columns * (cell + gap);
  const height = gap + rows * (cell + gap);
  const data = new Uint8Array(width * height * 3).fill(255);
  const put = (x: number, y: number, rgb: readonly number[]) => {
    const o = (y * width + x) * 3;
    data[o] = rgb[0] as number;
    data[o + 1] = rgb[1] as number;
    data[o + 2] = rgb[2] as number;
  };
  cells.forEach((c, i) => {
    const x0 = gap + (i % columns) * (cell + gap);
    const y0 = gap + Math.floor(i / columns) * (cell + gap);
    const color = rgbOf(
      c.classIndex < 0 ? UNCLEAR_COLOR : (CLASS_COLORS[c.classIndex % CLASS_COLORS.length] as string),
    );
    for (let y = 0; y < cell; y++)
      for (let x = 0; x < cell; x++) {
        const inFrame = x < frame || y < frame || x >= cell - frame || y >= cell - frame;
        if (!inFrame) continue;
        // unclear: dashed frame
        if (c.classIndex < 0 && Math.floor((x + y) / 6) % 2 === 1) continue;
        put(x0 + x, y0 + y, color);
      }
    const t = thumbnail(c.image, thumb);
    for (let y = 0; y < thumb; y++)
      for (let x = 0; x < thumb; x++) {
        const o = (y * thumb + x) * 3;
        put(x0 + frame + x, y0 + frame + y, [t[o] as number, t[o + 1] as number, t[o + 2] as number]);
      }
  });
  return encodeRgbPng(width, height, data);
}
