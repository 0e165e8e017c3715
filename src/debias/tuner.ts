/**
 * Per-profession strength search (the "ED50" of mission.md §2 generalised to a target share t), as a
 * pure, JSON-serializable state machine so that a job can save it after every probe and resume.
 *
 * One probe = one strength x = ln s, evaluated by SEQUENTIAL sampling on a fixed seed pool (the same
 * seeds, in the same order, at every probe: common random numbers). After each batch the Wilson
 * interval of the destination share is checked:
 *   - its `decisionConfidence` interval (stricter, default 0.99) excludes t → the probe is decided
 *     ("below"/"above"): stop early. Decisions made on few seeds steer the bracket, so they must rarely
 *     be wrong; near the crossing they are not made and the probe keeps sampling;
 *   - its `confidence` interval contains t and is within ±tolerance → the strength is accepted;
 *   - the probe's image budget is spent      → undecided; its point estimate still brackets.
 * Seeds flip at most once as the strength grows (each seed i has a threshold θ_i: destination class iff
 * x > θ_i, monotone in expectation and, for one seed, nearly always in fact). Every generated image
 * narrows its seed's bracket (θ_i < x or θ_i > x); at a later probe, outcomes the brackets already
 * imply are counted without generating the image again (`assumeMonotoneSeeds`, default on; off →
 * every image of every probe is generated).
 * Between probes the next x is the crossing of a logistic fit over ALL probes' samples (see
 * dose-response.ts), kept strictly inside the current bracket; bisection or a fixed step in ln s while
 * the fit is not informative. Tuning stops at acceptance or when the probe budget is spent.
 */
import { wilson } from '../audit/stats.js';
import { crossing, fitLogistic, type LogisticFit, normalQuantile, type Probe } from './dose-response.js';

export interface TunerSettings {
  /** target share of the destination class, 0 < t < 1 */
  target: number;
  /** accepted half-width around the target */
  tolerance: number;
  /** two-sided confidence of the acceptance interval, e.g. 0.8 */
  confidence: number;
  /** two-sided confidence for stopping a probe early as clearly below/above (default 0.99) */
  decisionConfidence?: number;
  /** images generated between two decisions */
  batch: number;
  /** most images in one probe */
  imagesPerProbe: number;
  /** most probes */
  maxProbes: number;
  /** first probe's ln s */
  x0: number;
  /** step in ln s while only one side of the crossing is known */
  step: number;
  /** slope of logit π in ln s assumed before a fit exists (default 1: one row, interference.ts eq. I1) */
  priorSlope?: number;
  /** search range in ln s */
  xMin: number;
  xMax: number;
  /** reuse outcomes implied by earlier probes of the same seed (default true) */
  assumeMonotoneSeeds?: boolean;
}

export interface ProbeRecord extends Probe {
  /** ln s of this probe and the strength s = eˣ */
  strength: number;
  outcome: 'below' | 'above' | 'accepted' | 'undecided';
  /** Wilson interval of the share at the end of the probe */
  interval: [number, number];
}

export interface TunerState {
  settings: TunerSettings;
  probes: ProbeRecord[];
  /** the probe being sampled, if any */
  current: { x: number; k: number; n: number } | null;
  status: 'running' | 'converged' | 'exhausted';
  /** accepted (or best) strength when not running */
  result: { x: number; strength: number; share: number; interval: [number, number] } | null;
  /** last logistic fit, for joint re-tuning */
  fit: LogisticFit | null;
  /** per seed-pool index: θ_i is known to lie in (above[i], below[i]) (null = unbounded) */
  seedBounds: { above: (number | null)[]; below: (number | null)[] };
  /** images actually generated */
  generated: number;
}

/** Wilson score interval for k successes in n trials at normal quantile z (audit/stats.ts eq. 1). */
export function wilsonInterval(k: number, n: number, z: number): [number, number] {
  const w = wilson(k, n, z);
  return [w.lower, w.upper];
}

export function createTuner(settings: TunerSettings): TunerState {
  if (!(settings.target > 0 && settings.target < 1))
    throw new RangeError(`target share ${settings.target} is not in (0, 1)`);
  return {
    settings,
    probes: [],
    current: null,
    status: 'running',
    result: null,
    fit: null,
    seedBounds: { above: [], below: [] },
    generated: 0,
  };
}

/**
 * The request the job must fulfil next: at strength eˣ, seed-pool indices [from, to) are evaluated;
 * the images of `generate` must be generated and classified, the others' outcomes are implied.
 */
export interface ProbeRequest {
  x: number;
  strength: number;
  from: number;
  to: number;
  /** seed-pool indices to generate, ascending */
  generate: number[];
  /** outcomes implied by earlier probes: hits among the indices not in `generate` */
  impliedHits: number;
}

export function nextRequest(state: TunerState): ProbeRequest | null {
  if (state.status !== 'running') return null;
  const s = state.settings;
  if (!state.current) state.current = { x: proposeX(state), k: 0, n: 0 };
  const { x, n } = state.current;
  const from = n;
  const to = Math.min(n + s.batch, s.imagesPerProbe);
  const generate: number[] = [];
  let impliedHits = 0;
  const reuse = s.assumeMonotoneSeeds ?? true;
  for (let i = from; i < to; i++) {
    const above = state.seedBounds.above[i] ?? null; // θ_i > above
    const below = state.seedBounds.below[i] ?? null; // θ_i < below
    if (reuse && below !== null && x >= below) impliedHits++;
    else if (reuse && above !== null && x <= above) continue;
    else generate.push(i);
  }
  return { x, strength: Math.exp(x), from, to, generate, impliedHits };
}

/** Record the outcomes (destination class or not) of the images of `request.generate`, in order. */
export function observe(state: TunerState, request: ProbeRequest, outcomes: readonly boolean[]): void {
  const s = state.settings;
  const cur = state.current;
  if (!cur || state.status !== 'running') throw new Error('observe() without a pending request');
  if (request.x !== cur.x || request.from !== cur.n)
    throw new Error('observe() with a request that is not the pending one');
  if (outcomes.length !== request.generate.length) {
    throw new Error(`observe(): ${outcomes.length} outcomes for ${request.generate.length} generated images`);
  }
  let hits = request.impliedHits;
  request.generate.forEach((i, j) => {
    const hit = outcomes[j] as boolean;
    if (hit) {
      hits++;
      const b = state.seedBounds.below[i] ?? null;
      state.seedBounds.below[i] = b === null ? cur.x : Math.min(b, cur.x);
    } else {
      const a = state.seedBounds.above[i] ?? null;
      state.seedBounds.above[i] = a === null ? cur.x : Math.max(a, cur.x);
    }
  });
  // JSON has no holes: keep the bound arrays dense.
  for (const arr of [state.seedBounds.above, state.seedBounds.below])
    for (let i = 0; i < arr.length; i++) arr[i] ??= null;
  state.generated += request.generate.length;
  cur.k += hits;
  cur.n += request.to - request.from;
  const z = normalQuantile(0.5 + s.confidence / 2);
  const interval = wilsonInterval(cur.k, cur.n, z);
  const strict = wilsonInterval(cur.k, cur.n, normalQuantile(0.5 + (s.decisionConfidence ?? 0.99) / 2));
  let outcome: ProbeRecord['outcome'] | null = null;
  if (strict[1] < s.target) outcome = 'below';
  else if (strict[0] > s.target) outcome = 'above';
  else if (interval[1] - s.target <= s.tolerance && s.target - interval[0] <= s.tolerance) outcome = 'accepted';
  else if (cur.n >= s.imagesPerProbe) outcome = 'undecided';
  if (!outcome) return;
  state.probes.push({ x: cur.x, k: cur.k, n: cur.n, strength: Math.exp(cur.x), outcome, interval });
  state.current = null;
  state.fit = fitLogistic(state.probes);
  if (outcome === 'accepted') {
    state.status = 'converged';
    state.result = { x: cur.x, strength: Math.exp(cur.x), share: cur.k / cur.n, interval };
  } else if (state.probes.length >= s.maxProbes) {
    state.status = 'exhausted';
    state.result = bestSoFar(state);
  }
}

function bracket(state: TunerState): { lo: number | null; hi: number | null } {
  let lo: number | null = null;
  let hi: number | null = null;
  for (const p of state.probes) {
    const below = p.outcome === 'below' || (p.outcome === 'undecided' && p.k / p.n < state.settings.target);
    if (below) lo = lo === null ? p.x : Math.max(lo, p.x);
    else hi = hi === null ? p.x : Math.min(hi, p.x);
  }
  return { lo, hi };
}

function proposeX(state: TunerState): number {
  const s = state.settings;
  if (state.probes.length === 0) return clamp(s.x0, s.xMin, s.xMax);
  const { lo, hi } = bracket(state);
  // With common random numbers a probe between two FULL probes (imagesPerProbe seeds each) that
  // straddle t generates only the seeds that flip between them; from a full probe on one side only,
  // every further probe regenerates about half the pool. So while the full probes all sit on one side
  // of t, aim half a tolerance past t (onto the other side) instead of at t itself.
  const full = state.probes.filter((p) => p.outcome === 'undecided' || p.n >= s.imagesPerProbe);
  const fullBelow = full.some((p) => p.k / p.n < s.target);
  const fullAbove = full.some((p) => p.k / p.n > s.target);
  const aim =
    fullAbove && !fullBelow
      ? s.target - s.tolerance / 2
      : fullBelow && !fullAbove
        ? s.target + s.tolerance / 2
        : s.target;
  const fitX = state.fit ? crossing(state.fit, aim).x : null;
  if (lo !== null && hi !== null && hi > lo) {
    const margin = 0.1 * (hi - lo);
    if (fitX !== null && Number.isFinite(fitX)) return clamp(fitX, lo + margin, hi - margin);
    return (lo + hi) / 2;
  }
  if (lo !== null && hi !== null) return (lo + hi) / 2; // non-monotone noise: split the difference
  if (lo !== null) {
    const x = fitX !== null && fitX > lo ? Math.min(fitX, lo + 2 * s.step) : lo + oneSidedStep(state, lo);
    return clamp(x, s.xMin, s.xMax);
  }
  const x =
    fitX !== null && fitX < (hi as number)
      ? Math.max(fitX, (hi as number) - 2 * s.step)
      : (hi as number) - oneSidedStep(state, hi as number);
  return clamp(x, s.xMin, s.xMax);
}

/** Smallest step in ln s while one side is known (with common random numbers, smaller moves flip few seeds). */
const MIN_STEP = 0.15;

/**
 * Size of the next step (> 0) in ln s from the probe at `x` while only one side of the crossing is
 * known: a Newton step on logit π with the prior slope, from that probe's estimate, between MIN_STEP
 * and `step` (a probe decided on few images far from t takes the full step).
 */
function oneSidedStep(state: TunerState, x: number): number {
  const s = state.settings;
  const probe = state.probes.find((p) => p.x === x);
  if (!probe) return s.step;
  const share = (probe.k + 0.5) / (probe.n + 1);
  const newton = Math.abs(Math.log(s.target / (1 - s.target)) - Math.log(share / (1 - share))) / (s.priorSlope ?? 1);
  return Math.min(s.step, Math.max(MIN_STEP, newton));
}

function bestSoFar(state: TunerState): TunerState['result'] {
  const t = state.settings.target;
  const fitX = state.fit ? crossing(state.fit, t).x : null;
  let best = state.probes[0] as ProbeRecord;
  for (const p of state.probes) if (Math.abs(p.k / p.n - t) < Math.abs(best.k / best.n - t)) best = p;
  const x = fitX !== null && Number.isFinite(fitX) ? clamp(fitX, state.settings.xMin, state.settings.xMax) : best.x;
  return { x, strength: Math.exp(x), share: best.k / best.n, interval: best.interval };
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}

/** Images this tuner has had generated (implied outcomes not counted). */
export function imagesUsed(state: TunerState): number {
  return state.generated;
}
