/**
 * Interference compensation for the joint commit (issue 6: "one joint closed-form commit").
 *
 * Each profession p is tuned ALONE: its strength s_p = 1/λ_p is the one at which its own edit brings
 * the share to the target. In the joint solve the professions' rows share directions (BOS and the
 * article rows, the gender component every pair pushes along, the preservation rows), so the same
 * strengths do not give the same per-profession effect: edits towards one class leak into the
 * others, and common rows pulled by many pairs damp each of them. Before any image is generated for
 * the joint edit, the strengths are corrected on the TEXT side, where the effect is cheap to compute.
 *
 * Progress of an edit on pair p (its rows i, sources c_i, destinations c*_i, solve.ts eq. 5 Δ = M − I):
 *
 *   π_p(M) = Σ_i ⟨Δ c_i, c*_i − c_i⟩ / Σ_i ‖c*_i − c_i‖²          (eq. I1)
 *
 * the fraction of the requested move c_i → c*_i that the edit makes, measured along the move (what
 * the UNet's K/V projections see: W'c = W·Mc). For one pair and one row, π = s a / (1 + s a) with
 * a = ‖c‖² (Sherman–Morrison), so logit π = ln s + ln a: a Newton step in ln s on logit π is exact
 * there, and a good step in general.
 *
 * Targets: π*_p = π_p(M_p(σ_p)), the progress of the profession's OWN edit at its equivalent single
 * strength σ_p (first the tuned s_p; joint re-tuning rounds move σ_p with the tuner's image slope).
 * Compensation finds joint strengths s with π_p(M_joint(s)) = π*_p for every p:
 *
 *   ln s_p ← ln s_p + γ (logit π*_p − logit π_p(M_joint(s)))           (eq. I2)
 *
 * from s = σ, γ = 1, halving γ whenever the worst residual grows; at most `maxIterations` joint solves
 * (d×d, milliseconds each). The result is then verified with images like any joint solve.
 */
import type { RowSet } from '../edit/rows.js';
import type { EditSolution } from '../edit/solve.js';
import { logit } from './dose-response.js';

export interface ProgressOptions {
  /**
   * Rows c°_i (rows.n × d, pair rows filled) of each pair's OTHER-class destination ("a male doctor"
   * for "a doctor" → "a female doctor"), aligned like the targets: the move is then measured along the
   * attribute direction u_i = c*_i − c°_i only (eq. I1'), not along everything that differs between
   * the prompts (an inserted word also shifts the position and summary components of the rows).
   */
  opposite?: Float32Array;
  /** Pairs to measure (default all). */
  pairs?: readonly number[];
}

/**
 * π_p of every pair of `rows` (pair index order; NaN for pairs not measured) under the edit:
 *
 *   eq. I1   u_i = c*_i − c_i:   π_p = Σ_i ⟨Δ c_i, u_i⟩ / Σ_i ‖u_i‖²
 *   eq. I1'  u_i = c*_i − c°_i:  π_p = Σ_i ⟨Δ c_i, u_i⟩ / Σ_i ⟨c*_i − c_i, u_i⟩
 *
 * (I1' is the fraction of the requested move along the attribute direction.)
 */
export function editProgress(
  rows: RowSet,
  solution: Pick<EditSolution, 'delta' | 'd'>,
  options: ProgressOptions = {},
): number[] {
  const { d } = rows;
  const { delta } = solution;
  const { opposite } = options;
  if (solution.d !== d) throw new RangeError(`edit progress: solution d = ${solution.d}, rows d = ${d}`);
  if (opposite && opposite.length !== rows.n * d) {
    throw new RangeError(`edit progress: opposite rows hold ${opposite.length} values, expected n × d = ${rows.n * d}`);
  }
  const wanted = options.pairs ? new Set(options.pairs) : null;
  const num = new Float64Array(rows.pairCount);
  const den = new Float64Array(rows.pairCount);
  const u = new Float64Array(d);
  const dc = new Float64Array(d);
  for (const g of rows.groups) {
    if (g.kind !== 'pair' || (wanted && !wanted.has(g.pair))) continue;
    for (let r = g.start; r < g.start + g.count; r++) {
      const off = r * d;
      let uu = 0;
      let requested = 0;
      for (let a = 0; a < d; a++) {
        const c = rows.sources[off + a] as number;
        const target = rows.targets[off + a] as number;
        const ua = opposite ? target - (opposite[off + a] as number) : target - c;
        u[a] = ua;
        uu += ua * ua;
        requested += (target - c) * ua;
      }
      if (uu === 0) continue; // rows before the inserted word: identical in both prompts
      // Δc (Δ row-major: (Δc)_a = Σ_b Δ[a, b] c_b)
      for (let a = 0; a < d; a++) {
        let sum = 0;
        const row = a * d;
        for (let b = 0; b < d; b++) sum += (delta[row + b] as number) * (rows.sources[off + b] as number);
        dc[a] = sum;
      }
      let dot = 0;
      for (let a = 0; a < d; a++) dot += (dc[a] as number) * (u[a] as number);
      num[g.pair] = (num[g.pair] as number) + dot;
      den[g.pair] = (den[g.pair] as number) + (opposite ? requested : uu);
    }
  }
  return Array.from(num, (x, p) =>
    wanted && !wanted.has(p) ? Number.NaN : (den[p] as number) !== 0 ? x / (den[p] as number) : 0,
  );
}

export interface CompensationResult {
  /** joint strengths s_p (pair order) */
  strengths: number[];
  /** π*_p: the targets */
  targets: number[];
  /** π_p under the joint solve with the uncompensated strengths σ, and with the result */
  before: number[];
  after: number[];
  /** max_p |logit π_p − logit π*_p| at the result */
  residual: number;
  iterations: number;
}

export interface CompensationOptions {
  /** σ_p: each pair's equivalent single-edit strength (pair order) */
  equivalent: readonly number[];
  /** π*_p (pair order): each pair's progress under its own edit at σ_p */
  targets: readonly number[];
  /** how progress is measured (eq. I1 or I1') */
  progress?: ProgressOptions;
  /** solve the joint edit at strengths s (pair order) */
  solveJoint: (strengths: readonly number[]) => Promise<Pick<EditSolution, 'delta' | 'd'>>;
  rows: RowSet;
  /** strength range (clamped) */
  range: readonly [number, number];
  /** stop when every |logit residual| is below this (default 0.01) */
  tolerance?: number;
  maxIterations?: number;
}

/** Keep probabilities inside (0, 1) for the logit. */
const EPS = 1e-6;
const clampP = (p: number) => Math.min(1 - EPS, Math.max(EPS, p));

/** Eq. I2: joint strengths whose per-pair text progress matches each pair's own edit. */
export async function compensateInterference(options: CompensationOptions): Promise<CompensationResult> {
  const { equivalent, targets, solveJoint, rows, range } = options;
  const tolerance = options.tolerance ?? 0.01;
  const maxIterations = options.maxIterations ?? 30;
  const [lo, hi] = range;
  const clampS = (s: number) => Math.min(hi, Math.max(lo, s));
  const residuals = (pi: number[]) => pi.map((p, i) => logit(clampP(targets[i] as number)) - logit(clampP(p)));
  const worst = (r: number[]) => Math.max(...r.map(Math.abs));

  const start = equivalent.map(clampS);
  const before = editProgress(rows, await solveJoint(start), options.progress);
  let best = { s: start, pi: before, r: residuals(before) };
  let gamma = 1;
  let iterations = 0;
  while (worst(best.r) > tolerance && iterations < maxIterations && gamma > 1 / 64) {
    iterations++;
    const trial = best.s.map((si, i) => clampS(si * Math.exp(gamma * (best.r[i] as number))));
    const pi = editProgress(rows, await solveJoint(trial), options.progress);
    const r = residuals(pi);
    if (worst(r) < worst(best.r)) best = { s: trial, pi, r };
    else gamma /= 2; // overshoot: the pairs pull on each other; smaller steps from the best point
  }
  return {
    strengths: best.s,
    targets: [...targets],
    before,
    after: best.pi,
    residual: worst(best.r),
    iterations,
  };
}

export interface StartOptions {
  /** the pair (index into `rows`' pairs) */
  pair: number;
  /** share of the pair's destination class at baseline (no edit) */
  baseline: number;
  /** the share the tuning aims at */
  target: number;
  /** expected share of an explicitly attributed prompt ("a female doctor"), the fully moved text */
  attributed: number;
  /** solve the pair's own edit at strength s */
  solveSingle: (s: number) => Promise<Pick<EditSolution, 'delta' | 'd'>>;
  rows: RowSet;
  opposite: Float32Array;
  range: readonly [number, number];
}

/**
 * A text-side first guess of the strength at which the share reaches the target (the tuning's first
 * probe; the image probes then do the real work). Model: the logit of the share moves linearly with
 * the attribute progress π' of eq. I1' from the baseline (π' = 0) to an explicitly attributed prompt
 * (π' = 1):
 *
 *   logit share(π') = (1 − π') logit b + π' logit a     ⇒   π'* = (logit t − logit b) / (logit a − logit b)   (eq. I3)
 *
 * then s with π'(s) = π'* by Newton steps in ln s on logit π' (slope 1 for one row, eq. I1 note;
 * secant slopes after the first step), at most 12 single solves. Also the model's slope of the
 * share's logit in ln s there, d logit share / d ln s = (logit a − logit b)·π'(1 − π')·d logit π'/d ln s,
 * which sizes the tuner's steps until its own fit takes over.
 */
export async function startingStrength(
  options: StartOptions,
): Promise<{ strength: number; progress: number; slope: number }> {
  const { pair, rows, opposite, range } = options;
  const clip = (p: number) => Math.min(0.995, Math.max(0.005, p));
  const lb = logit(clip(options.baseline));
  const la = logit(clip(options.attributed));
  const lt = logit(clip(options.target));
  const wanted = Math.min(0.95, Math.max(0.01, la !== lb ? (lt - lb) / (la - lb) : 0.5));
  const goal = logit(wanted);
  const [lo, hi] = range.map(Math.log) as [number, number];
  const at = async (x: number) =>
    logit(
      clampP(editProgress(rows, await options.solveSingle(Math.exp(x)), { opposite, pairs: [pair] })[pair] as number),
    );
  let x = Math.min(hi, Math.max(lo, 0));
  let g = (await at(x)) - goal;
  let slope = 1;
  for (let i = 0; i < 12 && Math.abs(g) > 0.02; i++) {
    const next = Math.min(hi, Math.max(lo, x - g / slope));
    if (next === x) break; // at the end of the range
    const gNext = (await at(next)) - goal;
    const secant = (gNext - g) / (next - x);
    slope = secant > 0.05 ? secant : slope; // keep a positive slope (π' grows with s)
    x = next;
    g = gNext;
  }
  // The model's slope of logit share in ln s there: (logit a − logit b) · dπ'/d ln s, with
  // dπ'/d ln s = π'(1 − π') · d logit π'/d ln s (the last secant slope).
  const slopeShare = Math.abs(la - lb) * wanted * (1 - wanted) * slope;
  return { strength: Math.exp(x), progress: wanted, slope: Math.min(5, Math.max(0.3, slopeShare)) };
}
