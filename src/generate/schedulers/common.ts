/**
 * What the diffusers-style schedulers share: the scheduler contract, the training noise schedule
 * (β_t, ᾱ_t), the NumPy-exact helpers the timestep recipes rely on, and config reading.
 *
 * Notation (DDPM, Ho et al. 2020; DDIM, Song et al. 2021; k-diffusion, Karras et al. 2022):
 *
 *   T          num_train_timesteps (1000 for Stable Diffusion)
 *   n          number of inference steps
 *   β_t        betas[t], the variance of the noise added by training step t
 *   α_t        1 − β_t
 *   ᾱ_t        alphasCumprod[t] = Π_{s ≤ t} α_s                       (DDPM eq. 4: q(x_t|x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I))
 *   σ_t        √((1 − ᾱ_t) / ᾱ_t), the noise level of the "variance exploding" view x_t/√ᾱ_t = x_0 + σ_t ε
 *   ε_θ        the UNet's noise prediction (prediction_type "epsilon")
 *   v_θ        the UNet's velocity prediction √ᾱ ε − √(1 − ᾱ) x_0 (prediction_type "v_prediction", SD 2.x 768)
 *   x̂_0        the predicted clean sample ("pred_original_sample")
 *
 * Numerics follow diffusers on CPU: betas are float32 (torch.linspace in float32), ᾱ is a float32
 * tensor whose running product torch accumulates in double; timesteps come from NumPy recipes
 * (np.linspace, np.arange, np.round = round half to even) reproduced exactly here.
 */
import { GenerationError, show } from '../../util/errors.js';

/** The CLI ids of the schedulers this project ships. */
export const SCHEDULER_IDS = Object.freeze(['pndm', 'ddim', 'euler', 'euler-ancestral', 'lms', 'dpmpp-2m'] as const);
export type SchedulerId = (typeof SCHEDULER_IDS)[number];

export type BetaSchedule = 'linear' | 'scaled_linear' | 'squaredcos_cap_v2';
export type TimestepSpacing = 'leading' | 'trailing' | 'linspace';
export type PredictionType = 'epsilon' | 'v_prediction' | 'sample';

/** Fields every scheduler reads from scheduler_config.json (diffusers' names, so files round-trip). */
export interface NoiseScheduleConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: BetaSchedule;
  trained_betas: number[] | null;
  prediction_type: PredictionType;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
}

/** A JSON object as diffusers writes it: `_class_name`, `_diffusers_version` and the config fields. */
export type SchedulerConfigJson = Record<string, unknown>;

export interface SchedulerStepResult {
  /** x_{t−1}: the sample to feed the next step (or the final latents). */
  prevSample: Float32Array;
  /** x̂_0 as predicted at this step (diffusers returns it from DDIM, Euler, LMS; computed here for all). */
  predOriginalSample: Float32Array;
}

/**
 * Gaussian noise for the stochastic schedulers (DDIM with η > 0, Euler ancestral). The pipeline
 * hands one that draws each image's share of `length` from that image's own seeded stream, so the
 * noise an image sees does not depend on the batch it runs in.
 */
export type NoiseSource = (length: number) => Float32Array;

export interface StepOptions {
  noise?: NoiseSource;
}

/** The diffusers scheduler contract (style.md): set_timesteps, timesteps, scale_model_input, init_noise_sigma, step. */
export interface Scheduler {
  readonly id: SchedulerId;
  /** diffusers' class name, written as `_class_name` by toConfig(). */
  readonly className: string;
  /** Timesteps of the denoising loop, in the order the loop visits them (set by setTimesteps). */
  readonly timesteps: readonly number[];
  /** The standard deviation of the initial latents: x_T = initNoiseSigma · N(0, I). */
  readonly initNoiseSigma: number;
  /** Whether step() consumes random noise (then StepOptions.noise is required). */
  readonly stochastic: boolean;
  readonly numInferenceSteps: number | null;
  setTimesteps(numInferenceSteps: number): void;
  /** The UNet input at timestep t (identity for the DDPM-view schedulers; x/√(σ²+1) for the σ-view ones). */
  scaleModelInput(sample: Float32Array, timestep: number): Float32Array;
  step(modelOutput: Float32Array, timestep: number, sample: Float32Array, options?: StepOptions): SchedulerStepResult;
  /** The configuration as a diffusers scheduler_config.json object (fromConfig(toConfig()) is the same scheduler). */
  toConfig(): SchedulerConfigJson;
}

// ---------------------------------------------------------------------------------------------
// The training noise schedule.

const f32 = Math.fround;

/**
 * β_t for t = 0 … T−1, float32 values as torch makes them:
 *   linear:            β = linspace(β_start, β_end, T)
 *   scaled_linear:     β = linspace(√β_start, √β_end, T)²            (the latent-diffusion schedule)
 *   squaredcos_cap_v2: β_t = min(1 − ᾱ(t+1/T)/ᾱ(t/T), 0.999), ᾱ(s) = cos²((s + 0.008)/1.008 · π/2)
 *                      (Nichol & Dhariwal 2021, eq. 17)
 */
export function betasFor(config: NoiseScheduleConfig): Float64Array {
  const T = config.num_train_timesteps;
  if (config.trained_betas) {
    if (config.trained_betas.length !== T) {
      throw new GenerationError(
        `scheduler config trained_betas: ${config.trained_betas.length} values but num_train_timesteps is ${T}; they must match`,
      );
    }
    return Float64Array.from(config.trained_betas, (b) => f32(b));
  }
  switch (config.beta_schedule) {
    case 'linear':
      return torchLinspaceF32(config.beta_start, config.beta_end, T);
    case 'scaled_linear': {
      const root = torchLinspaceF32(config.beta_start ** 0.5, config.beta_end ** 0.5, T);
      return root.map((r) => f32(r * r));
    }
    case 'squaredcos_cap_v2': {
      const alphaBar = (s: number) => Math.cos(((s + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
      const out = new Float64Array(T);
      for (let i = 0; i < T; i++) out[i] = f32(Math.min(1 - alphaBar((i + 1) / T) / alphaBar(i / T), 0.999));
      return out;
    }
  }
}

/** ᾱ_t = Π_{s ≤ t} (1 − β_s): α in float32, the running product in double, each ᾱ_t stored as float32. */
export function alphasCumprodFrom(betas: Float64Array): Float64Array {
  const out = new Float64Array(betas.length);
  let acc = 1;
  for (let t = 0; t < betas.length; t++) {
    acc *= f32(1 - (betas[t] as number));
    out[t] = f32(acc);
  }
  return out;
}

/** σ_t = √((1 − ᾱ_t)/ᾱ_t), each operation in float32 like the torch expression. */
export function sigmasFrom(alphasCumprod: Float64Array): Float64Array {
  return alphasCumprod.map((a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
}

/**
 * torch.linspace(start, end, steps, dtype=float32) on CPU: start and end cast to float32, step in
 * float32, the first half counted up from start and the second half down from end.
 */
function torchLinspaceF32(start: number, end: number, steps: number): Float64Array {
  const out = new Float64Array(steps);
  if (steps === 1) {
    out[0] = f32(start);
    return out;
  }
  const s = f32(start);
  const e = f32(end);
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    out[i] = i < halfway ? f32(s + f32(step * i)) : f32(e - f32(step * (steps - i - 1)));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// NumPy-exact helpers for the timestep recipes.

/** np.linspace(start, stop, num) in float64: start + i·((stop − start)/(num − 1)), the last value exactly stop. */
export function linspace(start: number, stop: number, num: number): number[] {
  if (num === 1) return [start];
  const step = (stop - start) / (num - 1);
  const out: number[] = [];
  for (let i = 0; i < num; i++) out.push(i * step + start);
  out[num - 1] = stop;
  return out;
}

/** np.arange(start, stop, step) for a float step: ⌈(stop − start)/step⌉ values start + i·step. */
export function arange(start: number, stop: number, step: number): number[] {
  const count = Math.max(0, Math.ceil((stop - start) / step));
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(start + i * step);
  return out;
}

/** np.round: round half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  if (Math.abs(x % 1) === 0.5) return 2 * Math.round(x / 2);
  return r;
}

/** np.interp(x, [0, 1, …, fp.length − 1], fp): piecewise-linear in the index, clamped at both ends. */
export function interpIndex(x: number, fp: Float64Array): number {
  const last = fp.length - 1;
  if (x <= 0) return fp[0] as number;
  if (x >= last) return fp[last] as number;
  const j = Math.floor(x);
  const lo = fp[j] as number;
  const hi = fp[j + 1] as number;
  const slope = hi - lo;
  return slope * (x - j) + lo;
}

/**
 * The inference timesteps of the discrete-time schedulers (DDIM, PNDM), descending, as integers
 * (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed", Table 2):
 *   leading:  [0, r, 2r, …, (n−1)r] + steps_offset with r = ⌊T/n⌋
 *   trailing: round(T, T − T/n, …) − 1
 *   linspace: round(linspace(0, T − 1, n))
 */
export function discreteTimesteps(spacing: TimestepSpacing, T: number, n: number, stepsOffset: number): number[] {
  let ascending: number[];
  if (spacing === 'linspace') {
    ascending = linspace(0, T - 1, n).map(roundHalfEven);
  } else if (spacing === 'leading') {
    const ratio = Math.floor(T / n);
    ascending = Array.from({ length: n }, (_, i) => i * ratio + stepsOffset);
  } else {
    ascending = arange(T, 0, -T / n)
      .map((t) => roundHalfEven(t) - 1)
      .reverse();
  }
  return ascending.reverse();
}

/**
 * The inference timesteps of the σ-view schedulers (Euler, Euler ancestral, LMS), descending,
 * float32 values (the linspace recipe gives fractional timesteps):
 *   linspace: linspace(0, T − 1, n);  leading: [0, r, …, (n−1)r] + steps_offset, r = ⌊T/n⌋;
 *   trailing: round(T, T − T/n, …) − 1.
 */
export function continuousTimesteps(spacing: TimestepSpacing, T: number, n: number, stepsOffset: number): number[] {
  if (spacing === 'linspace')
    return linspace(0, T - 1, n)
      .map(f32)
      .reverse();
  if (spacing === 'leading') {
    const ratio = Math.floor(T / n);
    return Array.from({ length: n }, (_, i) => f32(i * ratio + stepsOffset)).reverse();
  }
  return arange(T, 0, -T / n).map((t) => f32(roundHalfEven(t) - 1));
}

// ---------------------------------------------------------------------------------------------
// Config reading: diffusers' defaults per class, the file's values, the caller's overrides.

type FieldRule =
  | { kind: 'number'; integer?: boolean; min?: number; allowInfinity?: boolean }
  | { kind: 'boolean' }
  | { kind: 'enum'; values: readonly string[] }
  | { kind: 'betas' };

export type ConfigRules<C> = { readonly [K in keyof C]: FieldRule };

/**
 * The noise-schedule defaults every diffusers scheduler class shares (DDPM's linear β from 1e-4 to
 * 0.02 over 1000 steps, ε prediction, no offset); the classes differ in their timestep spacing.
 */
export const NOISE_SCHEDULE_DEFAULTS: Readonly<Omit<NoiseScheduleConfig, 'timestep_spacing'>> = Object.freeze({
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  trained_betas: null,
  prediction_type: 'epsilon',
  steps_offset: 0,
});

export const NOISE_SCHEDULE_RULES: ConfigRules<NoiseScheduleConfig> = {
  num_train_timesteps: { kind: 'number', integer: true, min: 1 },
  beta_start: { kind: 'number', min: 0 },
  beta_end: { kind: 'number', min: 0 },
  beta_schedule: { kind: 'enum', values: ['linear', 'scaled_linear', 'squaredcos_cap_v2'] },
  trained_betas: { kind: 'betas' },
  prediction_type: { kind: 'enum', values: ['epsilon', 'v_prediction', 'sample'] },
  timestep_spacing: { kind: 'enum', values: ['leading', 'trailing', 'linspace'] },
  steps_offset: { kind: 'number', integer: true, min: 0 },
};

/**
 * Resolve a scheduler's config like diffusers' `from_config`: start from the class defaults, take
 * every field the class knows from `input` (a null means "the default", as Optional fields do in
 * diffusers), ignore fields of other classes (`skip_prk_steps` means nothing to Euler), and reject
 * values outside a field's rule with a message naming the field, the value and the rule.
 */
export function resolveConfig<C extends object>(
  className: string,
  defaults: C,
  rules: ConfigRules<C>,
  input: SchedulerConfigJson = {},
): C {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new GenerationError(`${className} config: ${show(input)} is not a JSON object`);
  }
  const out = { ...defaults } as Record<string, unknown>;
  for (const key of Object.keys(rules) as (keyof C & string)[]) {
    const value = input[key];
    if (value === undefined || value === null) continue;
    out[key] = checkField(className, key, value, rules[key]);
  }
  return out as C;
}

function checkField(className: string, key: string, value: unknown, rule: FieldRule): unknown {
  const where = `${className} config ${key}`;
  switch (rule.kind) {
    case 'number': {
      const ok =
        typeof value === 'number' &&
        !Number.isNaN(value) &&
        (Number.isFinite(value) || rule.allowInfinity === true) &&
        (!rule.integer || Number.isInteger(value)) &&
        (rule.min === undefined || value >= rule.min);
      if (!ok) {
        const rules = [rule.integer ? 'an integer' : 'a number', rule.min !== undefined ? `>= ${rule.min}` : '']
          .filter(Boolean)
          .join(' ');
        throw new GenerationError(`${where}: ${show(value)} is not ${rules}`);
      }
      return value;
    }
    case 'boolean':
      if (typeof value !== 'boolean') throw new GenerationError(`${where}: ${show(value)} is not true or false`);
      return value;
    case 'enum':
      if (typeof value !== 'string' || !rule.values.includes(value)) {
        throw new GenerationError(`${where}: ${show(value)} is not one of ${rule.values.join(', ')}`);
      }
      return value;
    case 'betas':
      if (!Array.isArray(value) || !value.every((b) => typeof b === 'number' && b > 0 && b < 1)) {
        throw new GenerationError(`${where}: must be null or an array of numbers in (0, 1)`);
      }
      return [...value];
  }
}

/** Refuse a config value this implementation does not reproduce, rather than silently ignoring it. */
export function requireValue<C, K extends keyof C>(className: string, config: C, key: K, supported: C[K]): void {
  if (config[key] !== supported) {
    throw new GenerationError(
      `${className} config ${String(key)}: ${show(config[key])} is not supported by time-debias (only ${show(supported)})`,
    );
  }
}

export function configJson(className: string, config: object): SchedulerConfigJson {
  const out: SchedulerConfigJson = { _class_name: className };
  for (const [k, v] of Object.entries(config)) out[k] = Array.isArray(v) ? [...v] : v;
  return out;
}

/**
 * Parse a scheduler_config.json. Python's json module writes ±Infinity and NaN as bare tokens
 * (e.g. DPM-Solver's `lambda_min_clipped: -Infinity`), which JSON.parse rejects; they are read here.
 */
export function parseSchedulerConfigJson(text: string, source = 'scheduler_config.json'): SchedulerConfigJson {
  let out = '';
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (inString) {
      out += ch;
      if (ch === '\\') out += text[++i] ?? '';
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') {
      inString = true;
      out += ch;
      continue;
    }
    const rest = text.slice(i);
    const m = /^(-?Infinity|NaN)/.exec(rest);
    if (m) {
      out += `{"__special__":"${m[1]}"}`;
      i += (m[1] as string).length - 1;
      continue;
    }
    out += ch;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(out, (_k, v) =>
      v && typeof v === 'object' && !Array.isArray(v) && '__special__' in v && Object.keys(v).length === 1
        ? Number(v.__special__ === 'NaN' ? Number.NaN : v.__special__)
        : v,
    );
  } catch (cause) {
    throw new GenerationError(`${source}: not valid JSON (${(cause as Error).message})`, { cause });
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new GenerationError(`${source}: must hold a JSON object`);
  }
  return parsed as SchedulerConfigJson;
}

/** Write a config the way Python's json.dumps does (±Infinity as bare tokens), 2-space indented. */
export function formatSchedulerConfigJson(config: SchedulerConfigJson): string {
  const marker = '__time_debias_nonfinite__';
  const json = JSON.stringify(
    config,
    (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? `${marker}${v}` : v),
    2,
  );
  return `${json.replace(new RegExp(`"${marker}(-?Infinity|NaN)"`, 'g'), '$1')}\n`;
}

// ---------------------------------------------------------------------------------------------
// Small checks shared by the step functions.

export function checkSteps(className: string, numInferenceSteps: number, T: number): void {
  if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1) {
    throw new GenerationError(`${show(numInferenceSteps)} is not an integer >= 1`, { field: 'steps' });
  }
  if (numInferenceSteps > T) {
    throw new GenerationError(
      `${numInferenceSteps} is more than the ${T} training timesteps of ${className}; use at most ${T}`,
      { field: 'steps' },
    );
  }
}

export function checkSameLength(what: string, a: Float32Array, b: Float32Array): void {
  if (a.length !== b.length) {
    throw new GenerationError(`${what}: model output has ${a.length} values but the sample has ${b.length}`);
  }
}

export function requireTimesteps(className: string, n: number | null): asserts n is number {
  if (n === null) throw new GenerationError(`${className}: call setTimesteps(n) before step()`);
}

/** x̂_0 and ε̂ from the model output at ᾱ_t (DDIM eq. 12 and the v-parameterisation, Salimans & Ho 2022 §4). */
export function predictX0AndEps(
  prediction: PredictionType,
  modelOutput: Float32Array,
  sample: Float32Array,
  alphaProd: number,
): { x0: Float32Array; eps: Float32Array } {
  const a = Math.sqrt(alphaProd);
  const b = Math.sqrt(1 - alphaProd);
  const x0 = new Float32Array(sample.length);
  const eps = new Float32Array(sample.length);
  for (let i = 0; i < sample.length; i++) {
    const x = sample[i] as number;
    const m = modelOutput[i] as number;
    if (prediction === 'epsilon') {
      x0[i] = (x - b * m) / a;
      eps[i] = m;
    } else if (prediction === 'sample') {
      x0[i] = m;
      eps[i] = (x - a * m) / b;
    } else {
      x0[i] = a * x - b * m;
      eps[i] = a * m + b * x;
    }
  }
  return { x0, eps };
}

// ---------------------------------------------------------------------------------------------
// The σ view shared by Euler, Euler ancestral and LMS.

/**
 * σ at the inference timesteps followed by a final 0, float32 values:
 *   linear:     σ(t) = np.interp(t, [0 … T−1], σ_train)            (σ between integer timesteps)
 *   log_linear: σ_i = exp(linspace(ln σ_train[0], ln σ_train[T−1], n + 1))  (Euler only)
 */
export function inferenceSigmas(
  trainSigmas: Float64Array,
  timesteps: readonly number[],
  interpolation: 'linear' | 'log_linear' = 'linear',
): Float64Array {
  const n = timesteps.length;
  const out = new Float64Array(n + 1);
  if (interpolation === 'linear') {
    for (let i = 0; i < n; i++) out[i] = f32(interpIndex(timesteps[i] as number, trainSigmas));
  } else {
    // torch.linspace(log σ_last, log σ_first, n + 1).exp(), as diffusers writes it
    const lo = Math.log(trainSigmas[trainSigmas.length - 1] as number);
    const hi = Math.log(trainSigmas[0] as number);
    const logs = torchLinspaceF32(lo, hi, n + 1);
    for (let i = 0; i < n + 1; i++) out[i] = f32(Math.exp(logs[i] as number));
  }
  out[n] = 0;
  return out;
}

/**
 * init_noise_sigma of the σ-view schedulers, from the current σ list (diffusers' rule): σ_max for
 * linspace/trailing spacing, √(σ_max² + 1) for leading.
 */
export function sigmaInitNoise(sigmas: Float64Array, spacing: TimestepSpacing): number {
  let max = 0;
  for (const s of sigmas) if (s > max) max = s;
  return spacing === 'linspace' || spacing === 'trailing' ? max : Math.sqrt(max * max + 1);
}

/** diffusers' index_for_timestep: the position of t in the schedule (the second one if t repeats). */
export function indexForTimestep(timesteps: readonly number[], t: number, className: string): number {
  const hits: number[] = [];
  timesteps.forEach((s, i) => {
    if (s === t) hits.push(i);
  });
  if (hits.length === 0) {
    throw new GenerationError(`${className}: timestep ${show(t)} is not in the schedule (${timesteps.length} steps)`);
  }
  return hits.length > 1 ? (hits[1] as number) : (hits[0] as number);
}

/**
 * x̂_0 in the σ view (Karras et al. 2022, Table 1, with c_in = 1/√(σ² + 1)):
 *   epsilon:       x̂_0 = x − σ ε_θ
 *   v_prediction:  x̂_0 = −σ/√(σ² + 1) · v_θ + x/(σ² + 1)
 *   sample:        x̂_0 = model output
 */
export function sigmaPredictX0(
  prediction: PredictionType,
  modelOutput: Float32Array,
  sample: Float32Array,
  sigma: number,
): Float32Array {
  const x0 = new Float32Array(sample.length);
  if (prediction === 'epsilon') {
    for (let i = 0; i < x0.length; i++) x0[i] = (sample[i] as number) - sigma * (modelOutput[i] as number);
  } else if (prediction === 'v_prediction') {
    const cOut = -sigma / Math.sqrt(sigma * sigma + 1);
    const cSkip = 1 / (sigma * sigma + 1);
    for (let i = 0; i < x0.length; i++) x0[i] = cOut * (modelOutput[i] as number) + cSkip * (sample[i] as number);
  } else {
    x0.set(modelOutput);
  }
  return x0;
}

/** x / √(σ² + 1): the UNet sees unit-variance input in the σ view. */
export function scaleBySigma(sample: Float32Array, sigma: number): Float32Array {
  const c = 1 / Math.sqrt(sigma * sigma + 1);
  const out = new Float32Array(sample.length);
  for (let i = 0; i < out.length; i++) out[i] = (sample[i] as number) * c;
  return out;
}

/**
 * What the σ-view schedulers (Euler, Euler ancestral, LMS) share: the noise schedule resolved from
 * the config, σ_train, the inference σ's from the (possibly fractional) timesteps, the initial noise
 * scale, c_in = 1/√(σ² + 1), and the step index found from the first timestep the loop passes.
 * Each subclass adds its own `step`.
 */
export abstract class SigmaScheduler<C extends NoiseScheduleConfig> {
  readonly className: string;
  readonly config: Readonly<C>;
  readonly alphasCumprod: Float64Array;
  /** σ_train[t] for t = 0 … T−1 (ascending). */
  readonly trainSigmas: Float64Array;
  timesteps: number[] = [];
  /** σ_0 > σ_1 > … > σ_n = 0 after setTimesteps. */
  sigmas: Float64Array;
  numInferenceSteps: number | null = null;
  protected stepIndex: number | null = null;

  constructor(className: string, defaults: C, rules: ConfigRules<C>, config: Partial<C>) {
    this.className = className;
    this.config = Object.freeze(resolveConfig(className, defaults, rules, config as SchedulerConfigJson));
    this.alphasCumprod = alphasCumprodFrom(betasFor(this.config));
    this.trainSigmas = sigmasFrom(this.alphasCumprod);
    this.sigmas = Float64Array.from([...this.trainSigmas].reverse().concat([0]));
  }

  get initNoiseSigma(): number {
    return sigmaInitNoise(this.sigmas, this.config.timestep_spacing);
  }

  toConfig(): SchedulerConfigJson {
    return configJson(this.className, this.config);
  }

  /** How σ is interpolated between training timesteps (Euler's config may ask for log-linear). */
  protected get sigmaInterpolation(): 'linear' | 'log_linear' {
    return 'linear';
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    checkSteps(this.className, numInferenceSteps, c.num_train_timesteps);
    this.numInferenceSteps = numInferenceSteps;
    this.timesteps = continuousTimesteps(c.timestep_spacing, c.num_train_timesteps, numInferenceSteps, c.steps_offset);
    this.sigmas = inferenceSigmas(this.trainSigmas, this.timesteps, this.sigmaInterpolation);
    this.stepIndex = null;
  }

  protected indexFor(timestep: number): number {
    if (this.stepIndex === null) this.stepIndex = indexForTimestep(this.timesteps, timestep, this.className);
    return this.stepIndex;
  }

  scaleModelInput(sample: Float32Array, timestep: number): Float32Array {
    return scaleBySigma(sample, this.sigmas[this.indexFor(timestep)] as number);
  }
}
