/**
 * DDIM (Song, Meng, Ermon 2021, "Denoising Diffusion Implicit Models", arXiv 2010.02502), as
 * diffusers' DDIMScheduler.
 *
 * Notation (see common.ts): t the current timestep, t' = t − ⌊T/n⌋ the previous one,
 * ᾱ_t, ᾱ_t' (ᾱ_t' = final_alpha_cumprod when t' < 0: 1 with set_alpha_to_one, else ᾱ_0).
 *
 *   (12)  x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ) / √ᾱ_t
 *   (16)  σ_t(η) = η √((1 − ᾱ_t') / (1 − ᾱ_t)) √(1 − ᾱ_t / ᾱ_t')
 *   (12)  x_t' = √ᾱ_t' x̂_0 + √(1 − ᾱ_t' − σ_t²) ε_θ + σ_t z,   z ~ N(0, I)
 *
 * η = 0 is the deterministic DDIM sampler; η = 1 is DDPM's ancestral sampler on the sub-sequence.
 */
import { GenerationError, show } from '../../util/errors.js';
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
  predictX0AndEps,
  requireTimesteps,
  requireValue,
  resolveConfig,
  type Scheduler,
  type SchedulerConfigJson,
  type SchedulerStepResult,
  type StepOptions,
} from './common.js';

export interface DdimConfig extends NoiseScheduleConfig {
  clip_sample: boolean;
  clip_sample_range: number;
  set_alpha_to_one: boolean;
  thresholding: boolean;
  rescale_betas_zero_snr: boolean;
}

/** diffusers' DDIMScheduler defaults. */
export const DDIM_DEFAULTS: Readonly<DdimConfig> = Object.freeze({
  ...NOISE_SCHEDULE_DEFAULTS,
  timestep_spacing: 'leading',
  clip_sample: true,
  clip_sample_range: 1.0,
  set_alpha_to_one: true,
  thresholding: false,
  rescale_betas_zero_snr: false,
});

const RULES: ConfigRules<DdimConfig> = {
  ...NOISE_SCHEDULE_RULES,
  clip_sample: { kind: 'boolean' },
  clip_sample_range: { kind: 'number', min: 0 },
  set_alpha_to_one: { kind: 'boolean' },
  thresholding: { kind: 'boolean' },
  rescale_betas_zero_snr: { kind: 'boolean' },
};

export interface DdimOptions {
  /** η of eq. 16: 0 (default) is deterministic; > 0 needs StepOptions.noise. */
  eta?: number;
}

export class DdimScheduler implements Scheduler {
  readonly id = 'ddim' as const;
  readonly className = 'DDIMScheduler';
  readonly config: Readonly<DdimConfig>;
  readonly alphasCumprod: Float64Array;
  readonly finalAlphaCumprod: number;
  readonly initNoiseSigma = 1;
  readonly eta: number;
  timesteps: number[] = [];
  numInferenceSteps: number | null = null;

  constructor(config: Partial<DdimConfig> = {}, options: DdimOptions = {}) {
    this.config = Object.freeze(resolveConfig(this.className, DDIM_DEFAULTS, RULES, config as SchedulerConfigJson));
    requireValue(this.className, this.config, 'thresholding', false);
    requireValue(this.className, this.config, 'rescale_betas_zero_snr', false);
    const eta = options.eta ?? 0;
    if (!Number.isFinite(eta) || eta < 0)
      throw new GenerationError(`${show(eta)} is not a number >= 0`, { field: 'eta' });
    this.eta = eta;
    this.alphasCumprod = alphasCumprodFrom(betasFor(this.config));
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : (this.alphasCumprod[0] as number);
  }

  static fromConfig(json: SchedulerConfigJson, options?: DdimOptions): DdimScheduler {
    return new DdimScheduler(json as Partial<DdimConfig>, options);
  }

  get stochastic(): boolean {
    return this.eta > 0;
  }

  toConfig(): SchedulerConfigJson {
    return configJson(this.className, this.config);
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    checkSteps(this.className, numInferenceSteps, c.num_train_timesteps);
    this.numInferenceSteps = numInferenceSteps;
    this.timesteps = discreteTimesteps(c.timestep_spacing, c.num_train_timesteps, numInferenceSteps, c.steps_offset);
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    options: StepOptions = {},
  ): SchedulerStepResult {
    requireTimesteps(this.className, this.numInferenceSteps);
    checkSameLength(this.className, modelOutput, sample);
    const c = this.config;
    // 1. t' = t − ⌊T/n⌋
    const prevTimestep = timestep - Math.floor(c.num_train_timesteps / this.numInferenceSteps);
    // 2. ᾱ_t, ᾱ_t'
    const alphaProd = this.alphasCumprod[timestep] as number;
    const alphaProdPrev = prevTimestep >= 0 ? (this.alphasCumprod[prevTimestep] as number) : this.finalAlphaCumprod;
    // 3. x̂_0 and ε̂ (eq. 12)
    const { x0, eps } = predictX0AndEps(c.prediction_type, modelOutput, sample, alphaProd);
    // 4. optional clipping of x̂_0; ε̂ recomputed from the clipped x̂_0 is diffusers' use_clipped_model_output, off
    if (c.clip_sample) {
      const r = c.clip_sample_range;
      for (let i = 0; i < x0.length; i++) x0[i] = Math.min(r, Math.max(-r, x0[i] as number));
    }
    // 5. σ_t(η) (eq. 16)
    const variance = ((1 - alphaProdPrev) / (1 - alphaProd)) * (1 - alphaProd / alphaProdPrev);
    const stdDev = this.eta * Math.sqrt(variance);
    // 6. x_t' = √ᾱ_t' x̂_0 + √(1 − ᾱ_t' − σ²) ε̂ (+ σ z)
    const a = Math.sqrt(alphaProdPrev);
    const d = Math.sqrt(1 - alphaProdPrev - stdDev * stdDev);
    const prev = new Float32Array(sample.length);
    for (let i = 0; i < prev.length; i++) prev[i] = a * (x0[i] as number) + d * (eps[i] as number);
    if (this.eta > 0) {
      if (!options.noise) throw new GenerationError(`${this.className}: eta ${this.eta} > 0 needs a noise source`);
      const z = options.noise(prev.length);
      for (let i = 0; i < prev.length; i++) prev[i] = (prev[i] as number) + stdDev * (z[i] as number);
    }
    return { prevSample: prev, predOriginalSample: x0 };
  }
}
