/**
 * PNDM with skip_prk_steps (Liu, Ren, Lin, Zhao 2022, "Pseudo Numerical Methods for Diffusion
 * Models on Manifolds", arXiv 2202.09778): the pseudo linear multi-step method (PLMS) that Stable
 * Diffusion 1.x ships as its default sampler, as diffusers' PNDMScheduler does it.
 *
 * Notation (see common.ts): δ = ⌊T/n⌋ the step, t the current timestep, t − δ the previous one,
 * e_k the k-th UNet output ε_θ kept in `ets` (newest last), ᾱ_{t−δ} = ᾱ_0 (or 1 with
 * set_alpha_to_one) when t − δ < 0.
 *
 * The transfer φ (PNDM eq. 9), x_{t−δ} from x_t and a noise estimate e:
 *
 *   x_{t−δ} = √(ᾱ_{t−δ}/ᾱ_t) x_t − (ᾱ_{t−δ} − ᾱ_t) e / (ᾱ_t √(1 − ᾱ_{t−δ}) + √(ᾱ_t (1 − ᾱ_t) ᾱ_{t−δ}))
 *
 * The noise estimate e' (PNDM eq. 12, the Adams–Bashforth coefficients; with skip_prk_steps the
 * first two evaluations replace the Runge–Kutta warm-up by a second-order Heun-like step):
 *
 *   step 0:   e' = e_0                              (x_t kept as x_cur)
 *   step 1:   e' = (e_0 + e_1)/2, applied again FROM x_cur at the same t
 *             (this is why the timestep list repeats: [981, 961, 961, 941, …] at 50 steps)
 *   then      e' = (3 e_{k} − e_{k−1})/2
 *             e' = (23 e_k − 16 e_{k−1} + 5 e_{k−2})/12
 *             e' = (55 e_k − 59 e_{k−1} + 37 e_{k−2} − 9 e_{k−3})/24
 *
 * With prediction_type v_prediction the combined estimate is converted to ε at the transfer's t:
 * ε = √ᾱ_t v + √(1 − ᾱ_t) x_t.
 */
import { GenerationError } from '../../util/errors.js';
import {
  alphasCumprodFrom,
  betasFor,
  type ConfigRules,
  checkSameLength,
  checkSteps,
  configJson,
  discreteTimesteps,
  NOISE_SCHEDULE_DEFAULTS,
  NOISE_SCHEDULE_RULES,
  type NoiseScheduleConfig,
  requireTimesteps,
  requireValue,
  resolveConfig,
  type Scheduler,
  type SchedulerConfigJson,
  type SchedulerStepResult,
} from './common.js';

export interface PndmConfig extends NoiseScheduleConfig {
  skip_prk_steps: boolean;
  set_alpha_to_one: boolean;
}

/** diffusers' PNDMScheduler defaults (Stable Diffusion's scheduler_config.json overrides most of them). */
export const PNDM_DEFAULTS: Readonly<PndmConfig> = Object.freeze({
  ...NOISE_SCHEDULE_DEFAULTS,
  timestep_spacing: 'leading',
  skip_prk_steps: false,
  set_alpha_to_one: false,
});

const RULES: ConfigRules<PndmConfig> = {
  ...NOISE_SCHEDULE_RULES,
  skip_prk_steps: { kind: 'boolean' },
  set_alpha_to_one: { kind: 'boolean' },
};

/** The multistep coefficients of e' by number of stored outputs (PNDM eq. 12 / Adams–Bashforth). */
export const PLMS_COEFFICIENTS: Readonly<Record<1 | 2 | 3 | 4, readonly number[]>> = Object.freeze({
  1: [1],
  2: [3 / 2, -1 / 2],
  3: [23 / 12, -16 / 12, 5 / 12],
  4: [55 / 24, -59 / 24, 37 / 24, -9 / 24],
});

export class PndmScheduler implements Scheduler {
  readonly id = 'pndm' as const;
  readonly className = 'PNDMScheduler';
  readonly config: Readonly<PndmConfig>;
  readonly alphasCumprod: Float64Array;
  readonly finalAlphaCumprod: number;
  readonly initNoiseSigma = 1;
  readonly stochastic = false;
  timesteps: number[] = [];
  numInferenceSteps: number | null = null;
  /** Noise estimates of the previous evaluations, newest last (at most 4). */
  private ets: Float32Array[] = [];
  private counter = 0;
  private curSample: Float32Array | null = null;

  constructor(config: Partial<PndmConfig> = {}) {
    this.config = Object.freeze(resolveConfig(this.className, PNDM_DEFAULTS, RULES, config as SchedulerConfigJson));
    // The Runge–Kutta warm-up (skip_prk_steps false) is the paper's F-PNDM; no Stable Diffusion
    // export uses it, and it is refused rather than run differently from diffusers.
    requireValue(this.className, this.config, 'skip_prk_steps', true);
    if (this.config.prediction_type === 'sample') {
      throw new GenerationError(
        `${this.className} config prediction_type: "sample" is not supported (epsilon or v_prediction)`,
      );
    }
    this.alphasCumprod = alphasCumprodFrom(betasFor(this.config));
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : (this.alphasCumprod[0] as number);
  }

  static fromConfig(json: SchedulerConfigJson): PndmScheduler {
    return new PndmScheduler(json as Partial<PndmConfig>);
  }

  toConfig(): SchedulerConfigJson {
    return configJson(this.className, this.config);
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    checkSteps(this.className, numInferenceSteps, c.num_train_timesteps);
    this.numInferenceSteps = numInferenceSteps;
    // _timesteps ascending, then the PLMS order: all but the last reversed, with the second
    // largest repeated (the step-1 correction runs at the same t).
    const ascending = discreteTimesteps(c.timestep_spacing, c.num_train_timesteps, numInferenceSteps, c.steps_offset)
      .slice()
      .reverse();
    const plms = [...ascending.slice(0, -1), ...ascending.slice(-2, -1), ...ascending.slice(-1)];
    this.timesteps = plms.reverse();
    this.ets = [];
    this.counter = 0;
    this.curSample = null;
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array): SchedulerStepResult {
    requireTimesteps(this.className, this.numInferenceSteps);
    checkSameLength(this.className, modelOutput, sample);
    const delta = Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
    let t = timestep;
    let prevT = timestep - delta;
    let estimate: Float32Array;
    let from = sample;
    if (this.counter === 1) {
      // The repeated timestep: redo the first transfer from x_cur with the averaged estimate.
      prevT = timestep;
      t = timestep + delta;
      estimate = combine([modelOutput, this.ets[this.ets.length - 1] as Float32Array], [0.5, 0.5]);
      from = this.curSample as Float32Array;
      this.curSample = null;
    } else {
      this.ets = this.ets.slice(-3);
      this.ets.push(modelOutput);
      if (this.ets.length === 1 && this.counter === 0) this.curSample = sample;
      const k = this.ets.length as 1 | 2 | 3 | 4;
      estimate = combine(this.ets.slice().reverse(), PLMS_COEFFICIENTS[k]);
    }
    // The multistep combination is taken on the raw outputs; a v estimate becomes ε at the
    // transfer's t and sample (ε = √ᾱ_t v + √(1 − ᾱ_t) x_t), as diffusers does.
    const alphaProd = this.alphasCumprod[t] as number;
    const a = Math.sqrt(alphaProd);
    const b = Math.sqrt(1 - alphaProd);
    if (this.config.prediction_type === 'v_prediction') {
      for (let i = 0; i < estimate.length; i++) estimate[i] = a * (estimate[i] as number) + b * (from[i] as number);
    }
    const prevSample = this.transfer(from, t, prevT, estimate);
    this.counter += 1;
    const predOriginalSample = new Float32Array(from.length);
    for (let i = 0; i < from.length; i++)
      predOriginalSample[i] = ((from[i] as number) - b * (estimate[i] as number)) / a;
    return { prevSample, predOriginalSample };
  }

  /** φ of PNDM eq. 9. */
  private transfer(sample: Float32Array, t: number, prevT: number, e: Float32Array): Float32Array {
    const alphaProd = this.alphasCumprod[t] as number;
    const alphaProdPrev = prevT >= 0 ? (this.alphasCumprod[prevT] as number) : this.finalAlphaCumprod;
    const betaProd = 1 - alphaProd;
    const betaProdPrev = 1 - alphaProdPrev;
    const sampleCoeff = Math.sqrt(alphaProdPrev / alphaProd);
    const denom = alphaProd * Math.sqrt(betaProdPrev) + Math.sqrt(alphaProd * betaProd * alphaProdPrev);
    const eCoeff = (alphaProdPrev - alphaProd) / denom;
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) out[i] = sampleCoeff * (sample[i] as number) - eCoeff * (e[i] as number);
    return out;
  }
}

function combine(vectors: readonly Float32Array[], coefficients: readonly number[]): Float32Array {
  const out = new Float32Array((vectors[0] as Float32Array).length);
  for (let k = 0; k < vectors.length; k++) {
    const v = vectors[k] as Float32Array;
    const c = coefficients[k] as number;
    for (let i = 0; i < out.length; i++) out[i] = (out[i] as number) + c * (v[i] as number);
  }
  return out;
}
