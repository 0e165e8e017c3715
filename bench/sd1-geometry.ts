/**
 * SD 1.x geometry and reproducible random data shared by the benchmarks that work at real scale
 * (bench/edit.ts, bench/apply.ts). Tests keep their own hand-written lists on purpose: they check
 * the locator and key maps against an independent statement of the architecture.
 */
import { mulberry32 } from '../src/util/random.js';

/** Text width of SD 1.x (CLIP ViT-L/14). */
export const SD1_D = 768;
/** The 16 text cross-attention blocks of SD 1.x, in UNet order (diffusers module paths). */
export const SD1_ATTN2_BLOCKS: readonly string[] = [
  'down_blocks.0.attentions.0',
  'down_blocks.0.attentions.1',
  'down_blocks.1.attentions.0',
  'down_blocks.1.attentions.1',
  'down_blocks.2.attentions.0',
  'down_blocks.2.attentions.1',
  'mid_block.attentions.0',
  'up_blocks.1.attentions.0',
  'up_blocks.1.attentions.1',
  'up_blocks.1.attentions.2',
  'up_blocks.2.attentions.0',
  'up_blocks.2.attentions.1',
  'up_blocks.2.attentions.2',
  'up_blocks.3.attentions.0',
  'up_blocks.3.attentions.1',
  'up_blocks.3.attentions.2',
];
/** Output widths of those blocks' to_k/to_v. */
export const SD1_ATTN2_WIDTHS: readonly number[] = [
  320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320,
];

/** mulberry32 + Box–Muller: `length` normal draws with standard deviation `scale`, reproducible by seed. */
export function normals(seed: number, length: number, scale: number): Float32Array {
  const next = mulberry32(seed);
  const out = new Float32Array(length);
  for (let i = 0; i < length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - next())) * scale;
    const phi = 2 * Math.PI * next();
    out[i] = r * Math.cos(phi);
    if (i + 1 < length) out[i + 1] = r * Math.sin(phi);
  }
  return out;
}
