/**
 * CLIP image preprocessing exactly as the references do it: transformers' (slow) CLIPImageProcessor,
 * whose resize is PIL's `Image.resize` — the pixels TIME, UCE and OpenAI CLIP classify. Selected by
 * `--preprocess pil` (`classifier.preprocess: "pil"`); the default, "transformers", is
 * transformers.js' own processor (sharp's resize, which does not antialias when shrinking).
 *
 * Steps (transformers/image_transforms.py), on 8-bit RGB, H × W × 3:
 *   1. resize       shortest side → size.shortest_edge, the other ⌊shortest_edge · long / short⌋
 *                   (get_resize_output_image_size, default_to_square=False); or exactly
 *                   size.height × size.width. The resampling is PIL's (libImaging/Resample.c):
 *                   separable, horizontal pass first, then vertical, each rounded to uint8.
 *   2. center crop  top = ⌊(h − crop_h)/2⌋, left = ⌊(w − crop_w)/2⌋; an image smaller than the crop
 *                   is zero-padded first, ⌈(crop − side)/2⌉ before it.
 *   3. rescale      x = float32(float64(u) · rescale_factor)
 *   4. normalize    (x − float32(mean_c)) / float32(std_c), in float32
 *   → pixel_values float32 [n, 3, crop_h, crop_w] (channels first).
 *
 * PIL's resampling, one axis (precompute_coeffs), for output sample i of an axis scaled from `in`
 * to `out` samples:
 *   scale = in / out,  σ = max(scale, 1)                 (σ > 1: the filter is stretched = antialias)
 *   support = a_f · σ                                     (a_f: the filter's support, 2 for bicubic)
 *   center = (i + ½) · scale
 *   x_min = max(0, trunc(center − support + ½)),  x_max = min(in, trunc(center + support + ½))
 *   w_j = f((j − center + ½) / σ) for j in [x_min, x_max),  normalised to Σ w_j = 1
 * and for 8-bit images the weights become fixed point with 22 fraction bits (normalize_coeffs_8bpc):
 *   k_j = trunc(w_j · 2²² ± ½)  (rounded half away from zero)
 *   y_i = clip8(2²¹ + Σ_j u_j · k_j) = clamp(⌊(2²¹ + Σ u_j k_j) / 2²²⌋, 0, 255)
 * Filters (PIL's Resampling ids, as preprocessor_config.json's `resample`): bicubic (3; a = −0.5,
 * support 2), bilinear (2; triangle, support 1), lanczos (1; sinc windowed, support 3), box (4;
 * support ½), hamming (5; support 1). Nearest (0) uses another code path in PIL and is refused.
 *
 * Proven against pixels PIL itself made: test/classify/fixtures/make_pil_fixtures.py.
 */
import { readFileSync } from 'node:fs';
import { ClassifierError, show, UsageError } from '../util/errors.js';

/** The classifier's image preprocessing: transformers.js' processor, or PIL-faithful (this module). */
export type PreprocessMode = 'transformers' | 'pil';
export const PREPROCESS_MODES: readonly PreprocessMode[] = Object.freeze(['transformers', 'pil']);

/** The `preprocess` option (`--preprocess`, config `classifier.preprocess`): one of PREPROCESS_MODES. */
export function validatePreprocess(value: unknown): PreprocessMode {
  if (!PREPROCESS_MODES.includes(value as PreprocessMode)) {
    throw new UsageError(`${show(value)} is not a preprocessing; valid: ${PREPROCESS_MODES.join(', ')}`, {
      field: 'preprocess',
    });
  }
  return value as PreprocessMode;
}

/** 8-bit RGB, height × width × 3, row-major (the shape of clip.ts' RgbImage). */
export interface Rgb8 {
  width: number;
  height: number;
  data: Uint8Array | Uint8ClampedArray;
}

interface Filter {
  name: string;
  support: number;
  f: (x: number) => number;
}

function sinc(x: number): number {
  if (x === 0) return 1;
  const px = x * Math.PI;
  return Math.sin(px) / px;
}

/** PIL's filters (Resample.c), keyed by PIL's Resampling ids. */
const FILTERS: ReadonlyMap<number, Filter> = new Map<number, Filter>([
  [
    4,
    {
      name: 'box',
      support: 0.5,
      f: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0),
    },
  ],
  [
    2,
    {
      name: 'bilinear',
      support: 1,
      f: (x) => {
        const a = Math.abs(x);
        return a < 1 ? 1 - a : 0;
      },
    },
  ],
  [
    5,
    {
      name: 'hamming',
      support: 1,
      f: (x) => {
        const a = Math.abs(x);
        if (a === 0) return 1;
        if (a >= 1) return 0;
        const px = a * Math.PI;
        return (Math.sin(px) / px) * (0.54 + 0.46 * Math.cos(px));
      },
    },
  ],
  [
    3,
    {
      name: 'bicubic',
      support: 2,
      f: (x) => {
        const A = -0.5;
        const a = Math.abs(x);
        if (a < 1) return ((A + 2) * a - (A + 3)) * a * a + 1;
        if (a < 2) return (((a - 5) * a + 8) * a - 4) * A;
        return 0;
      },
    },
  ],
  [
    1,
    {
      name: 'lanczos',
      support: 3,
      f: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0),
    },
  ],
]);

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);

/** One axis' fixed-point weights: for output i, taps [start_i, start_i + count_i) with k[i·ksize + j]. */
interface AxisCoefficients {
  ksize: number;
  start: Int32Array;
  count: Int32Array;
  k: Int32Array;
}

/** precompute_coeffs + normalize_coeffs_8bpc of Resample.c (box = [0, inSize]). */
function axisCoefficients(inSize: number, outSize: number, filter: Filter): AxisCoefficients {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const k = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  const ss = 1 / filterscale;
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    // C's (int) truncates toward zero
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let j = 0; j < xmax; j++) {
      const v = filter.f((j + xmin - center + 0.5) * ss);
      w[j] = v;
      ww += v;
    }
    for (let j = 0; j < xmax; j++) {
      const v = ww !== 0 ? (w[j] as number) / ww : (w[j] as number);
      k[i * ksize + j] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    start[i] = xmin;
    count[i] = xmax;
  }
  return { ksize, start, count, k };
}

/** clip8: ⌊v / 2²²⌋ clamped to [0, 255] (v already holds the rounding half 2²¹). */
function clip8(v: number): number {
  if (v >= ONE * 256) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / ONE);
}

/**
 * PIL's `Image.resize((width, height), resample)` of an 8-bit RGB image (reducing_gap None), to the
 * last bit. Returns a copy when the size is unchanged, as PIL does.
 */
export function pilResize(image: Rgb8, width: number, height: number, resample: number): Rgb8 {
  const filter = FILTERS.get(resample);
  if (!filter) {
    throw new ClassifierError(
      `resample: ${show(resample)} is not a PIL filter \`preprocess\` "pil" supports (${[...FILTERS].map(([id, f]) => `${id} ${f.name}`).join(', ')}; 0 nearest is not supported)`,
      { mentions: ['preprocess'] },
    );
  }
  for (const [name, v] of [
    ['width', width],
    ['height', height],
  ] as const) {
    if (!Number.isInteger(v) || v < 1) throw new ClassifierError(`resize ${name}: ${show(v)} must be an integer ≥ 1`);
  }
  const inW = image.width;
  const inH = image.height;
  let src = Uint8Array.from(image.data);
  let srcW = inW;
  const needH = width !== inW;
  const needV = height !== inH;
  if (!needH && !needV) return { width, height, data: src };
  const horiz = axisCoefficients(inW, width, filter);
  const vert = axisCoefficients(inH, height, filter);
  // Rows the vertical pass reads: the horizontal pass only resamples those.
  const yFirst = vert.start[0] as number;
  const yLast = (vert.start[height - 1] as number) + (vert.count[height - 1] as number);
  let rowOffset = 0;
  if (needH) {
    const rowsUsed = yLast - yFirst;
    const tmp = new Uint8Array(rowsUsed * width * 3);
    for (let y = 0; y < rowsUsed; y++) {
      const rowIn = (y + yFirst) * inW * 3;
      const rowOut = y * width * 3;
      for (let x = 0; x < width; x++) {
        const x0 = horiz.start[x] as number;
        const n = horiz.count[x] as number;
        const kb = x * horiz.ksize;
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        for (let j = 0; j < n; j++) {
          const kj = horiz.k[kb + j] as number;
          const o = rowIn + (x0 + j) * 3;
          s0 += (src[o] as number) * kj;
          s1 += (src[o + 1] as number) * kj;
          s2 += (src[o + 2] as number) * kj;
        }
        tmp[rowOut + x * 3] = clip8(s0);
        tmp[rowOut + x * 3 + 1] = clip8(s1);
        tmp[rowOut + x * 3 + 2] = clip8(s2);
      }
    }
    src = tmp;
    srcW = width;
    rowOffset = yFirst;
    if (!needV) return { width, height, data: src };
  }
  const out = new Uint8Array(height * srcW * 3);
  for (let y = 0; y < height; y++) {
    const y0 = (vert.start[y] as number) - rowOffset;
    const n = vert.count[y] as number;
    const kb = y * vert.ksize;
    for (let x = 0; x < srcW; x++) {
      let s0 = HALF;
      let s1 = HALF;
      let s2 = HALF;
      for (let j = 0; j < n; j++) {
        const kj = vert.k[kb + j] as number;
        const o = ((y0 + j) * srcW + x) * 3;
        s0 += (src[o] as number) * kj;
        s1 += (src[o + 1] as number) * kj;
        s2 += (src[o + 2] as number) * kj;
      }
      const o = (y * srcW + x) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return { width: srcW, height, data: out };
}

/** The image processor settings the "pil" preprocessing follows (a CLIPImageProcessor's preprocessor_config.json). */
export interface ClipImageProcessorConfig {
  doResize: boolean;
  size: { kind: 'shortest-edge'; shortestEdge: number } | { kind: 'fixed'; height: number; width: number };
  resample: number;
  doCenterCrop: boolean;
  crop: { height: number; width: number };
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  mean: [number, number, number];
  std: [number, number, number];
}

/** transformers' CLIPImageProcessor defaults (OpenAI CLIP's). */
const DEFAULTS = {
  shortestEdge: 224,
  crop: 224,
  resample: 3,
  rescaleFactor: 1 / 255,
  mean: [0.48145466, 0.4578275, 0.40821073] as [number, number, number],
  std: [0.26862954, 0.26130258, 0.27577711] as [number, number, number],
};

/** Parse a preprocessor_config.json object (transformers' keys and defaults; get_size_dict's int forms). */
export function parseImageProcessorConfig(json: unknown, where: string): ClipImageProcessorConfig {
  const bad = (key: string, value: unknown, rule: string) =>
    new ClassifierError(`${where}: ${key} ${show(value)} ${rule} (needed by \`preprocess\` "pil")`, {
      mentions: ['preprocess'],
    });
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw bad('(the file)', json, 'is not a JSON object');
  const c = json as Record<string, unknown>;
  const type = c.image_processor_type ?? c.feature_extractor_type;
  if (type !== undefined && !['CLIPImageProcessor', 'CLIPFeatureExtractor'].includes(type as string)) {
    throw bad(
      c.image_processor_type !== undefined ? 'image_processor_type' : 'feature_extractor_type',
      type,
      'is not CLIPImageProcessor / CLIPFeatureExtractor, the processor "pil" reproduces',
    );
  }
  const bool = (key: string, dflt: boolean): boolean => {
    const v = c[key];
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') throw bad(key, v, 'must be true or false');
    return v;
  };
  const positiveInt = (key: string, v: unknown): number => {
    if (!Number.isInteger(v) || (v as number) < 1) throw bad(key, v, 'must be an integer ≥ 1');
    return v as number;
  };
  let size: ClipImageProcessorConfig['size'];
  const s = c.size;
  if (s === undefined) size = { kind: 'shortest-edge', shortestEdge: DEFAULTS.shortestEdge };
  else if (typeof s === 'number') size = { kind: 'shortest-edge', shortestEdge: positiveInt('size', s) };
  else if (s && typeof s === 'object' && 'shortest_edge' in s)
    size = { kind: 'shortest-edge', shortestEdge: positiveInt('size.shortest_edge', s.shortest_edge) };
  else if (s && typeof s === 'object' && 'height' in s && 'width' in s)
    size = { kind: 'fixed', height: positiveInt('size.height', s.height), width: positiveInt('size.width', s.width) };
  else throw bad('size', s, 'must be {shortest_edge} or {height, width} (or an integer)');
  let crop: ClipImageProcessorConfig['crop'];
  const cs = c.crop_size;
  if (cs === undefined) crop = { height: DEFAULTS.crop, width: DEFAULTS.crop };
  else if (typeof cs === 'number') crop = { height: positiveInt('crop_size', cs), width: cs };
  else if (cs && typeof cs === 'object' && 'height' in cs && 'width' in cs)
    crop = { height: positiveInt('crop_size.height', cs.height), width: positiveInt('crop_size.width', cs.width) };
  else throw bad('crop_size', cs, 'must be {height, width} or an integer');
  const resample = c.resample ?? DEFAULTS.resample;
  if (typeof resample !== 'number' || !FILTERS.has(resample)) {
    throw bad(
      'resample',
      resample,
      `is not a supported PIL filter (${[...FILTERS].map(([id, f]) => `${id} ${f.name}`).join(', ')})`,
    );
  }
  const rescaleFactor = c.rescale_factor ?? DEFAULTS.rescaleFactor;
  if (typeof rescaleFactor !== 'number' || !(rescaleFactor > 0))
    throw bad('rescale_factor', rescaleFactor, 'must be a positive number');
  const triple = (key: string, dflt: [number, number, number], positive: boolean): [number, number, number] => {
    const v = c[key] ?? dflt;
    const ok = (x: unknown) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0);
    if (typeof v === 'number' && ok(v)) return [v, v, v];
    if (!Array.isArray(v) || v.length !== 3 || !v.every(ok))
      throw bad(key, v, `must be 3 ${positive ? 'positive ' : ''}numbers (one per RGB channel)`);
    return v as [number, number, number];
  };
  return {
    doResize: bool('do_resize', true),
    size,
    resample,
    doCenterCrop: bool('do_center_crop', true),
    crop,
    doRescale: bool('do_rescale', true),
    rescaleFactor,
    doNormalize: bool('do_normalize', true),
    mean: triple('image_mean', DEFAULTS.mean, false),
    std: triple('image_std', DEFAULTS.std, true),
  };
}

/** Read and parse a classifier folder's preprocessor_config.json. */
export function readImageProcessorConfig(path: string): ClipImageProcessorConfig {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (cause) {
    throw new ClassifierError(`${show(path)}: not readable JSON (${(cause as Error).message})`, { cause });
  }
  return parseImageProcessorConfig(json, path);
}

/** get_resize_output_image_size: the resized width × height. */
export function resizeOutputSize(
  width: number,
  height: number,
  size: ClipImageProcessorConfig['size'],
): { width: number; height: number } {
  if (size.kind === 'fixed') return { width: size.width, height: size.height };
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  // Python's int(size * long / short): the division in float64, truncated
  const newLong = Math.trunc((size.shortestEdge * long) / short);
  return width <= height
    ? { width: size.shortestEdge, height: newLong }
    : { width: newLong, height: size.shortestEdge };
}

/** transformers' center_crop on uint8 (with its zero padding when the image is smaller than the crop). */
export function centerCrop(image: Rgb8, cropHeight: number, cropWidth: number): Rgb8 {
  const { width: w, height: h } = image;
  let top = Math.floor((h - cropHeight) / 2);
  let left = Math.floor((w - cropWidth) / 2);
  let src: Rgb8 = image;
  if (!(top >= 0 && left >= 0 && top + cropHeight <= h && left + cropWidth <= w)) {
    const nh = Math.max(cropHeight, h);
    const nw = Math.max(cropWidth, w);
    const tp = Math.ceil((nh - h) / 2);
    const lp = Math.ceil((nw - w) / 2);
    const padded = new Uint8Array(nh * nw * 3);
    for (let y = 0; y < h; y++) padded.set(image.data.subarray(y * w * 3, (y + 1) * w * 3), ((y + tp) * nw + lp) * 3);
    src = { width: nw, height: nh, data: padded };
    top += tp;
    left += lp;
  }
  // numpy slicing [max(0, top) : min(n, top + crop)]
  const y0 = Math.max(0, top);
  const y1 = Math.min(src.height, top + cropHeight);
  const x0 = Math.max(0, left);
  const x1 = Math.min(src.width, left + cropWidth);
  const out = new Uint8Array((y1 - y0) * (x1 - x0) * 3);
  for (let y = y0; y < y1; y++)
    out.set(src.data.subarray((y * src.width + x0) * 3, (y * src.width + x1) * 3), (y - y0) * (x1 - x0) * 3);
  return { width: x1 - x0, height: y1 - y0, data: out };
}

/** pixel_values float32 [n, 3, H, W] for `images`, as transformers' CLIPImageProcessor with PIL computes them. */
export function pilPreprocess(
  images: readonly Rgb8[],
  config: ClipImageProcessorConfig,
): { dims: [number, number, number, number]; data: Float32Array } {
  const f32 = Math.fround;
  const mean = config.mean.map(f32);
  const std = config.std.map(f32);
  let dims: [number, number, number, number] | undefined;
  const parts: Float32Array[] = [];
  images.forEach((input, index) => {
    let img: Rgb8 = input;
    if (config.doResize) {
      const s = resizeOutputSize(img.width, img.height, config.size);
      img = pilResize(img, s.width, s.height, config.resample);
    }
    if (config.doCenterCrop) img = centerCrop(img, config.crop.height, config.crop.width);
    if (dims && (dims[2] !== img.height || dims[3] !== img.width)) {
      throw new ClassifierError(
        `images[${index}]: preprocesses to ${img.width}×${img.height}, the batch's first image to ${dims[3]}×${dims[2]}; without a center crop, images of one batch need one aspect ratio`,
      );
    }
    dims ??= [images.length, 3, img.height, img.width];
    const plane = img.width * img.height;
    const x = new Float32Array(3 * plane);
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < 3; c++) {
        let v = img.data[p * 3 + c] as number;
        if (config.doRescale) v = f32(v * config.rescaleFactor);
        if (config.doNormalize) v = f32(f32(v - (mean[c] as number)) / (std[c] as number));
        x[c * plane + p] = v;
      }
    }
    parts.push(x);
  });
  if (!dims) return { dims: [0, 3, 0, 0], data: new Float32Array(0) };
  const data = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    data.set(p, at);
    at += p.length;
  }
  return { dims, data };
}
