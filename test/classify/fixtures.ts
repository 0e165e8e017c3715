/**
 * A tiny designed CLIP folder for the classifier tests, with its spec kept so the tests can compute
 * the expected embeddings directly (independently of transformers.js and onnxruntime).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildClipFolder, CLIP_MEAN, CLIP_STD, type ClipModelSpec } from '../../src/demo/clip-model.js';
import { type BpeVocab, buildWordVocab } from '../../src/text/bpe-files.js';

export const WORDS = [
  'a',
  'an',
  'photo',
  'of',
  'image',
  'woman',
  'man',
  'female',
  'male',
  'nurse',
  'doctor',
  'cat',
  'dog',
];
export const E = 5;
export const P = 4;
export const S = 32;
export const G = 2;

/** Deterministic small pseudo-random numbers in [-1, 1) (an LCG; fixed for reproducibility). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  };
}

export function tinySpec(overrides: Partial<ClipModelSpec> = {}): ClipModelSpec {
  const rnd = lcg(7);
  const vectors = new Map<string, number[]>();
  for (const w of WORDS)
    vectors.set(
      `${w}</w>`,
      Array.from({ length: E }, () => rnd()),
    );
  vectors.set(
    '<|startoftext|>',
    Array.from({ length: E }, () => 0.3 * rnd()),
  );
  vectors.set(
    '<|endoftext|>',
    Array.from({ length: E }, () => 0.3 * rnd()),
  );
  const textProjection = Array.from({ length: E }, () => Array.from({ length: P }, () => rnd()));
  const imageProjection = Array.from({ length: 3 * G * G }, () => Array.from({ length: P }, () => rnd()));
  const imageBias = Array.from({ length: P }, () => 0.2 * rnd());
  return {
    words: WORDS,
    textHidden: E,
    tokenVector: (t) => vectors.get(t),
    textProjection,
    imageSize: S,
    imageGrid: G,
    imageProjection,
    imageBias,
    logitScale: 20,
    ...overrides,
  };
}

export interface TinyClip {
  dir: string;
  spec: ClipModelSpec;
  bpe: BpeVocab;
  cleanup: () => void;
}

export function makeTinyClip(
  variant: ClipModelSpec['variant'] = 'joint',
  overrides: Partial<ClipModelSpec> = {},
): TinyClip {
  const root = mkdtempSync(join(tmpdir(), 'td-clip-'));
  const dir = join(root, 'clip');
  const spec = tinySpec({ variant, ...overrides });
  buildClipFolder(dir, spec);
  return { dir, spec, bpe: buildWordVocab(spec.words), cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

function norm(x: number[]): number[] {
  const n = Math.hypot(...x);
  return x.map((v) => v / n);
}

/** Eq. (1) of src/demo/clip-model.ts computed directly: t̂ for a prompt of vocabulary words. */
export function directText(spec: ClipModelSpec, prompt: string): number[] {
  const tokens = [
    '<|startoftext|>',
    ...prompt
      .toLowerCase()
      .split(/\s+/)
      .map((w) => `${w}</w>`),
    '<|endoftext|>',
  ];
  const u = new Array(spec.textHidden).fill(0);
  for (const t of tokens) {
    const v = spec.tokenVector(t, -1) ?? new Array(spec.textHidden).fill(0);
    v.forEach((x, k) => {
      u[k] += x / tokens.length;
    });
  }
  const proj = spec.textProjection as number[][];
  const p = (proj[0] as number[]).length;
  const t = Array.from({ length: p }, (_, j) => u.reduce((s, uk, k) => s + uk * (proj[k] as number[])[j]!, 0));
  return norm(t);
}

/** Eq. (2) computed directly for an S×S RGB image (no resize/crop needed): v̂. */
export function directImage(spec: ClipModelSpec, rgb: Uint8Array): number[] {
  const s = spec.imageSize as number;
  const g = spec.imageGrid as number;
  const cell = s / g;
  const f = new Array(3 * g * g).fill(0);
  for (let y = 0; y < s; y++)
    for (let x = 0; x < s; x++)
      for (let c = 0; c < 3; c++) {
        const value = (rgb[(y * s + x) * 3 + c]! / 255 - CLIP_MEAN[c]!) / CLIP_STD[c]!;
        f[c * g * g + Math.floor(y / cell) * g + Math.floor(x / cell)] += value / (cell * cell);
      }
  const W = spec.imageProjection as number[][];
  const p = (W[0] as number[]).length;
  const v = Array.from(
    { length: p },
    (_, j) => f.reduce((acc, fk, k) => acc + fk * (W[k] as number[])[j]!, 0) + (spec.imageBias?.[j] ?? 0),
  );
  return norm(v);
}

/** Deterministic S×S test images with different colour layouts. */
export function testImage(k: number, size = S): { width: number; height: number; data: Uint8Array } {
  const rnd = lcg(100 + k);
  const base = [rnd(), rnd(), rnd()].map((x) => 128 + 100 * x);
  const data = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++)
      for (let c = 0; c < 3; c++) {
        const wave = 40 * Math.sin((x * (c + 1) + y * (k + 1)) / 5);
        data[(y * size + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(base[c]! + wave)));
      }
  return { width: size, height: size, data };
}
