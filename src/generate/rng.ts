/**
 * The project's seeded Gaussian generator: portable, documented, and independent per image.
 *
 * Uniform bits come from Philox4x32-10, the counter-based generator of Salmon, Moraes, Dror, Shaw,
 * "Parallel Random Numbers: As Easy as 1, 2, 3" (SC'11), the one Random123, cuRAND and JAX use.
 * A counter-based generator is a keyed bijection of a 128-bit counter: block j of stream s under
 * key k is Philox(k, (j_lo, j_hi, s, 0)), so any block can be computed directly, streams never
 * overlap, and nothing depends on how many numbers were drawn elsewhere.
 *
 * Philox4x32-10 (Salmon et al. §4.2 / Random123's philox.h), on 32-bit words:
 *   round:   (L0, R0) = mulhilo(M0, c0),  (L1, R1) = mulhilo(M1, c2)
 *            c ← (hi(M1·c2) ⊕ c1 ⊕ k0,  lo(M1·c2),  hi(M0·c0) ⊕ c3 ⊕ k1,  lo(M0·c0))
 *   key:     k0 += W0, k1 += W1 after every round but the last
 *   M0 = 0xD2511F53, M1 = 0xCD9E8D57, W0 = 0x9E3779B9 (golden ratio), W1 = 0xBB67AE85 (√3 − 1)
 * Known-answer vectors (Random123 kat_vectors) are checked in test/generate/rng.test.ts.
 *
 * Gaussians by the Box–Muller transform (Box & Muller 1958): with u1, u2 uniform in (0, 1),
 *   z1 = √(−2 ln u1) cos(2π u2),   z2 = √(−2 ln u1) sin(2π u2)
 * with u = (w + ½)·2⁻³² for a 32-bit word w (never 0 or 1). Each 128-bit block gives four normals:
 * (w0, w1) → z1, z2 and (w2, w3) → z3, z4, rounded to float32.
 *
 * Use in generation: image k with seed s uses key (s mod 2³², ⌊s / 2³²⌋); stream 0 holds its initial
 * latents, stream 1 the noise its scheduler draws during denoising (Euler ancestral, DDIM η > 0).
 * An image's latents therefore depend only on its own seed, whatever the batch size or concurrency.
 * The integer part (Philox) is exact on every platform; the transcendental functions are V8's own
 * fdlibm ports, so the floats are the same on every Node build.
 */
import { GenerationError, show } from '../util/errors.js';

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

/** The high and low 32 bits of the 64-bit product of two 32-bit words. */
function mulhilo(a: number, b: number): [hi: number, lo: number] {
  const aHi = a >>> 16;
  const aLo = a & 0xffff;
  const bHi = b >>> 16;
  const bLo = b & 0xffff;
  const ll = aLo * bLo;
  const lh = aLo * bHi;
  const hl = aHi * bLo;
  const hh = aHi * bHi;
  const mid = Math.floor(ll / 0x10000) + (lh & 0xffff) + (hl & 0xffff);
  const hi = (hh + Math.floor(lh / 0x10000) + Math.floor(hl / 0x10000) + Math.floor(mid / 0x10000)) >>> 0;
  const lo = Math.imul(a, b) >>> 0;
  return [hi, lo];
}

/** Philox4x32 with `rounds` rounds (10 is the standard): counter (4 words) and key (2 words) → 4 words. */
export function philox4x32(
  counter: readonly number[],
  key: readonly number[],
  rounds = 10,
): [number, number, number, number] {
  let c0 = (counter[0] ?? 0) >>> 0;
  let c1 = (counter[1] ?? 0) >>> 0;
  let c2 = (counter[2] ?? 0) >>> 0;
  let c3 = (counter[3] ?? 0) >>> 0;
  let k0 = (key[0] ?? 0) >>> 0;
  let k1 = (key[1] ?? 0) >>> 0;
  for (let r = 0; r < rounds; r++) {
    if (r > 0) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    const [hi0, lo0] = mulhilo(M0, c0);
    const [hi1, lo1] = mulhilo(M1, c2);
    const n0 = (hi1 ^ c1 ^ k0) >>> 0;
    const n2 = (hi0 ^ c3 ^ k1) >>> 0;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return [c0, c1, c2, c3];
}

/** Streams of an image's key. */
export const STREAM = Object.freeze({ latents: 0, schedulerNoise: 1 });

/** Check a seed: an integer in [0, 2⁵³). */
export function validateSeed(seed: unknown, field = 'seeds'): number {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) {
    throw new GenerationError(`${show(seed)} is not a seed (an integer from 0 to ${Number.MAX_SAFE_INTEGER})`, {
      field,
    });
  }
  return seed;
}

const TWO_POW_32 = 0x100000000;
const INV_2_32 = 1 / TWO_POW_32;

/**
 * A stream of standard normals for one (seed, stream) pair, drawn in order. `next(n)` continues where
 * the last call stopped (mid-block leftovers are kept), so drawing 3 + 5 equals drawing 8.
 */
export class GaussianStream {
  private readonly key: [number, number];
  private block = 0;
  private readonly buffer: number[] = [];

  constructor(
    readonly seed: number,
    readonly stream = 0,
  ) {
    validateSeed(seed, 'seed');
    this.key = [(seed % TWO_POW_32) >>> 0, Math.floor(seed / TWO_POW_32) >>> 0];
  }

  next(count: number): Float32Array {
    const out = new Float32Array(count);
    let i = 0;
    while (i < count && this.buffer.length > 0) out[i++] = this.buffer.shift() as number;
    while (i < count) {
      const four = this.nextBlock();
      for (let q = 0; q < 4; q++) {
        if (i < count) out[i++] = four[q] as number;
        else this.buffer.push(four[q] as number);
      }
    }
    return out;
  }

  private nextBlock(): number[] {
    const j = this.block++;
    const w = philox4x32([(j % TWO_POW_32) >>> 0, Math.floor(j / TWO_POW_32) >>> 0, this.stream, 0], this.key);
    const z: number[] = [];
    for (let p = 0; p < 4; p += 2) {
      const u1 = ((w[p] as number) + 0.5) * INV_2_32;
      const u2 = ((w[p + 1] as number) + 0.5) * INV_2_32;
      const radius = Math.sqrt(-2 * Math.log(u1));
      const angle = 2 * Math.PI * u2;
      z.push(Math.fround(radius * Math.cos(angle)), Math.fround(radius * Math.sin(angle)));
    }
    return z;
  }
}

/** `count(shape)` standard normals of stream 0 of `seed`: the initial latents of one image, before × init σ. */
export function noise(seed: number, shape: readonly number[], stream: number = STREAM.latents): Float32Array {
  const count = shape.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(count) || count < 0 || shape.some((s) => !Number.isInteger(s) || s < 0)) {
    throw new GenerationError(`noise shape: [${shape.join(', ')}] is not a list of non-negative integers`);
  }
  return new GaussianStream(seed, stream).next(count);
}

/**
 * The per-image noise source of a batch: `length` values split evenly over the batch, image k's
 * share drawn from its own stream (so an image's noise does not depend on its batch neighbours).
 */
export function batchNoiseSource(streams: readonly GaussianStream[]): (length: number) => Float32Array {
  return (length: number) => {
    const b = streams.length;
    if (b === 0 || length % b !== 0) {
      throw new GenerationError(`noise request of ${length} values does not split over a batch of ${b} images`);
    }
    const per = length / b;
    const out = new Float32Array(length);
    streams.forEach((s, k) => {
      out.set(s.next(per), k * per);
    });
    return out;
  };
}

/**
 * Parse a seed list as the CLI takes it: comma-separated seeds and inclusive ranges, e.g. "0-7",
 * "3", "0-3,10,20-21". Order is kept; duplicates are refused (an image per seed).
 */
export function parseSeedList(text: string, field = 'seeds'): number[] {
  const out: number[] = [];
  for (const part of String(text).split(',')) {
    const p = part.trim();
    const m = /^(\d+)(?:\s*-\s*(\d+))?$/.exec(p);
    if (!m) throw new GenerationError(`${show(p)} is not a seed or a range like 0-7`, { field });
    const a = validateSeed(Number(m[1]), field);
    const b = m[2] === undefined ? a : validateSeed(Number(m[2]), field);
    if (b < a) throw new GenerationError(`range ${show(p)} runs backwards`, { field });
    if (b - a >= 100000) throw new GenerationError(`range ${show(p)} has more than 100000 seeds`, { field });
    for (let s = a; s <= b; s++) out.push(s);
  }
  const seen = new Set<number>();
  for (const s of out) {
    if (seen.has(s)) throw new GenerationError(`seed ${s} appears twice`, { field });
    seen.add(s);
  }
  return out;
}
