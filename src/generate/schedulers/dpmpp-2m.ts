/**
 * DPM-Solver++ multistep (Lu, Zhou, Bao, Chen, Li, Zhu 2022, "DPM-Solver++: Fast Solver for Guided
 * Sampling of Diffusion Probabilistic Models", arXiv 2211.01095), data-prediction form, order 2 by
 * default ("DPM++ 2M"), as diffusers' DPMSolverMultistepScheduler with algorithm_type dpmsolver++.
 *
 * Notation: σ_i the k-diffusion noise level at step i (σ_n = 0 with final_sigmas_type "zero"),
 *   α_i = 1/√(σ_i² + 1),  s_i = σ_i α_i   (the VP-view mean and std of x at step i),
 *   λ_i = ln α_i − ln s_i                 (half log-SNR),
 *   h   = λ_{i+1} − λ_i,  h₀ = λ_i − λ_{i−1},  r₀ = h₀/h,
 *   x̂_0,i the data prediction at step i: (x_i − s_i ε_θ)/α_i for epsilon, α_i x_i − s_i v_θ for v.
 *
 *   first order (DDIM, eq. 5):       x_{i+1} = (s_{i+1}/s_i) x_i − α_{i+1} (e^{−h} − 1) x̂_0,i
 *   2M, midpoint (Alg. 2, eq. 9):    D₀ = x̂_0,i,  D₁ = (x̂_0,i − x̂_0,i−1)/r₀
 *                                    x_{i+1} = (s_{i+1}/s_i) x_i − α_{i+1}(e^{−h} − 1) D₀ − ½ α_{i+1}(e^{−h} − 1) D₁
 *   2M, heun:                        … + α_{i+1}((e^{−h} − 1)/h + 1) D₁ in place of the last term
 *   3M:                              D₁, D₂ from three stored predictions (eq. in Appendix, order 3)
 *
 * Lower orders where the history is short: the first step is first order, the second at most
 * second order; the final step is first order when lower_order_final (and fewer than 15 steps), when
 * euler_at_final, or always with final_sigmas_type "zero" (σ_n = 0 makes λ_n infinite); the
 * second-to-last is at most second order with lower_order_final and fewer than 15 steps.
 */
import { GenerationError, show } from '../../util/errors.js';
import {
  alphasCumprodFrom,
  arange,
  betasFor,
  type ConfigRules,
  checkSameLength,
  checkSteps,
  configJson,
  indexForTimestep,
  interpIndex,
  linspace,
  NOISE_SCHEDULE_DEFAULTS,
  NOISE_SCHEDULE_RULES,
  type NoiseScheduleConfig,
  requireTimesteps,
  requireValue,
  resolveConfig,
  roundHalfEven,
  type Scheduler,
  type SchedulerConfigJson,
  type SchedulerStepResult,
} from './common.js';

export interface DpmppConfig extends NoiseScheduleConfig {
  solver_order: number;
  algorithm_type: 'dpmsolver++' | 'dpmsolver' | 'sde-dpmsolver++' | 'sde-dpmsolver';
  solver_type: 'midpoint' | 'heun';
  lower_order_final: boolean;
  euler_at_final: boolean;
  use_karras_sigmas: boolean;
  final_sigmas_type: 'zero' | 'sigma_min';
  lambda_min_clipped: number;
  thresholding: boolean;
}

/** diffusers' DPMSolverMultistepScheduler defaults. */
export const DPMPP_DEFAULTS: Readonly<DpmppConfig> = Object.freeze({
  ...NOISE_SCHEDULE_DEFAULTS,
  timestep_spacing: 'linspace',
  solver_order: 2,
  algorithm_type: 'dpmsolver++',
  solver_type: 'midpoint',
  lower_order_final: true,
  euler_at_final: false,
  use_karras_sigmas: false,
  final_sigmas_type: 'zero',
  lambda_min_clipped: Number.NEGATIVE_INFINITY,
  thresholding: false,
});

const RULES: ConfigRules<DpmppConfig> = {
  ...NOISE_SCHEDULE_RULES,
  solver_order: { kind: 'number', integer: true, min: 1 },
  algorithm_type: { kind: 'enum', values: ['dpmsolver++', 'dpmsolver', 'sde-dpmsolver++', 'sde-dpmsolver'] },
  solver_type: { kind: 'enum', values: ['midpoint', 'heun'] },
  lower_order_final: { kind: 'boolean' },
  euler_at_final: { kind: 'boolean' },
  use_karras_sigmas: { kind: 'boolean' },
  final_sigmas_type: { kind: 'enum', values: ['zero', 'sigma_min'] },
  lambda_min_clipped: { kind: 'number', allowInfinity: true },
  thresholding: { kind: 'boolean' },
};

export class DpmppScheduler implements Scheduler {
  readonly id = 'dpmpp-2m' as const;
  readonly className = 'DPMSolverMultistepScheduler';
  readonly config: Readonly<DpmppConfig>;
  readonly alphasCumprod: Float64Array;
  /** λ(t) = ln √ᾱ_t − ln √(1 − ᾱ_t) at the training timesteps. */
  readonly lambdas: Float64Array;
  readonly initNoiseSigma = 1;
  readonly stochastic = false;
  timesteps: number[] = [];
  sigmas: Float64Array = new Float64Array(0);
  numInferenceSteps: number | null = null;
  private stepIndex: number | null = null;
  private modelOutputs: (Float32Array | null)[] = [];
  private lowerOrderNums = 0;

  constructor(config: Partial<DpmppConfig> = {}) {
    this.config = Object.freeze(resolveConfig(this.className, DPMPP_DEFAULTS, RULES, config as SchedulerConfigJson));
    requireValue(this.className, this.config, 'algorithm_type', 'dpmsolver++');
    requireValue(this.className, this.config, 'use_karras_sigmas', false);
    requireValue(this.className, this.config, 'thresholding', false);
    if (this.config.solver_order > 3) {
      throw new GenerationError(
        `${this.className} config solver_order: ${show(this.config.solver_order)} is not 1, 2 or 3`,
      );
    }
    this.alphasCumprod = alphasCumprodFrom(betasFor(this.config));
    this.lambdas = this.alphasCumprod.map((a) => Math.fround(Math.log(Math.sqrt(a)) - Math.log(Math.sqrt(1 - a))));
  }

  static fromConfig(json: SchedulerConfigJson): DpmppScheduler {
    return new DpmppScheduler(json as Partial<DpmppConfig>);
  }

  toConfig(): SchedulerConfigJson {
    return configJson(this.className, this.config);
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const T = c.num_train_timesteps;
    checkSteps(this.className, numInferenceSteps, T);
    // Clip the smallest λ (diffusers: searchsorted on λ flipped to ascending, left side).
    let clipped = 0;
    for (let j = this.lambdas.length - 1; j >= 0 && (this.lambdas[j] as number) < c.lambda_min_clipped; j--) clipped++;
    const last = T - clipped;
    let timesteps: number[];
    if (c.timestep_spacing === 'linspace') {
      timesteps = linspace(0, last - 1, numInferenceSteps + 1)
        .map(roundHalfEven)
        .reverse()
        .slice(0, -1);
    } else if (c.timestep_spacing === 'leading') {
      const ratio = Math.floor(last / (numInferenceSteps + 1));
      timesteps = Array.from({ length: numInferenceSteps + 1 }, (_, i) => i * ratio)
        .reverse()
        .slice(0, -1)
        .map((t) => t + c.steps_offset);
    } else {
      timesteps = arange(last, 0, -T / numInferenceSteps).map((t) => roundHalfEven(t) - 1);
    }
    const trainSigmas = this.alphasCumprod.map((a) => Math.fround(Math.sqrt(Math.fround(Math.fround(1 - a) / a))));
    const sigmas = new Float64Array(timesteps.length + 1);
    timesteps.forEach((t, i) => {
      sigmas[i] = Math.fround(interpIndex(t, trainSigmas));
    });
    sigmas[timesteps.length] = c.final_sigmas_type === 'zero' ? 0 : Math.fround(trainSigmas[0] as number);
    this.timesteps = timesteps;
    this.sigmas = sigmas;
    this.numInferenceSteps = timesteps.length;
    this.modelOutputs = Array.from({ length: c.solver_order }, () => null);
    this.lowerOrderNums = 0;
    this.stepIndex = null;
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  /** (α_i, s_i, λ_i) from σ_i. */
  private vp(i: number): { alpha: number; s: number; lambda: number } {
    const sigma = this.sigmas[i] as number;
    const alpha = 1 / Math.sqrt(sigma * sigma + 1);
    const s = sigma * alpha;
    return { alpha, s, lambda: Math.log(alpha) - Math.log(s) };
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array): SchedulerStepResult {
    requireTimesteps(this.className, this.numInferenceSteps);
    checkSameLength(this.className, modelOutput, sample);
    const c = this.config;
    if (this.stepIndex === null) this.stepIndex = indexForTimestep(this.timesteps, timestep, this.className);
    const i = this.stepIndex;
    const n = this.timesteps.length;
    const lowerOrderFinal =
      i === n - 1 && (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type === 'zero');
    const lowerOrderSecond = i === n - 2 && c.lower_order_final && n < 15;

    // x̂_0,i from the model output (convert_model_output for dpmsolver++)
    const cur = this.vp(i);
    const x0 = new Float32Array(sample.length);
    for (let k = 0; k < x0.length; k++) {
      const x = sample[k] as number;
      const m = modelOutput[k] as number;
      if (c.prediction_type === 'epsilon') x0[k] = (x - cur.s * m) / cur.alpha;
      else if (c.prediction_type === 'v_prediction') x0[k] = cur.alpha * x - cur.s * m;
      else x0[k] = m;
    }
    this.modelOutputs.shift();
    this.modelOutputs.push(x0);

    let prev: Float32Array;
    if (c.solver_order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal) prev = this.firstOrder(x0, sample, i);
    else if (c.solver_order === 2 || this.lowerOrderNums < 2 || lowerOrderSecond) prev = this.secondOrder(sample, i);
    else prev = this.thirdOrder(sample, i);
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums += 1;
    this.stepIndex = i + 1;
    return { prevSample: prev, predOriginalSample: x0 };
  }

  private firstOrder(x0: Float32Array, sample: Float32Array, i: number): Float32Array {
    const t = this.vp(i + 1);
    const s = this.vp(i);
    const h = t.lambda - s.lambda;
    const a = t.s / s.s;
    const b = t.alpha * (Math.exp(-h) - 1);
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) out[k] = a * (sample[k] as number) - b * (x0[k] as number);
    return out;
  }

  private secondOrder(sample: Float32Array, i: number): Float32Array {
    const t = this.vp(i + 1);
    const s0 = this.vp(i);
    const s1 = this.vp(i - 1);
    const m0 = this.modelOutputs[this.modelOutputs.length - 1] as Float32Array;
    const m1 = this.modelOutputs[this.modelOutputs.length - 2] as Float32Array;
    const h = t.lambda - s0.lambda;
    const h0 = s0.lambda - s1.lambda;
    const r0 = h0 / h;
    const a = t.s / s0.s;
    const e = Math.exp(-h) - 1;
    const b = t.alpha * e;
    const d1Coeff = this.config.solver_type === 'midpoint' ? -0.5 * t.alpha * e : t.alpha * (e / h + 1);
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      const D0 = m0[k] as number;
      const D1 = (1 / r0) * (D0 - (m1[k] as number));
      out[k] = a * (sample[k] as number) - b * D0 + d1Coeff * D1;
    }
    return out;
  }

  private thirdOrder(sample: Float32Array, i: number): Float32Array {
    const t = this.vp(i + 1);
    const s0 = this.vp(i);
    const s1 = this.vp(i - 1);
    const s2 = this.vp(i - 2);
    const L = this.modelOutputs.length;
    const m0 = this.modelOutputs[L - 1] as Float32Array;
    const m1 = this.modelOutputs[L - 2] as Float32Array;
    const m2 = this.modelOutputs[L - 3] as Float32Array;
    const h = t.lambda - s0.lambda;
    const h0 = s0.lambda - s1.lambda;
    const h1 = s1.lambda - s2.lambda;
    const r0 = h0 / h;
    const r1 = h1 / h;
    const e = Math.exp(-h) - 1;
    const a = t.s / s0.s;
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      const D0 = m0[k] as number;
      const D10 = (1 / r0) * (D0 - (m1[k] as number));
      const D11 = (1 / r1) * ((m1[k] as number) - (m2[k] as number));
      const D1 = D10 + (r0 / (r0 + r1)) * (D10 - D11);
      const D2 = (1 / (r0 + r1)) * (D10 - D11);
      out[k] =
        a * (sample[k] as number) -
        t.alpha * e * D0 +
        t.alpha * (e / h + 1) * D1 -
        t.alpha * ((e + h) / (h * h) - 0.5) * D2;
    }
    return out;
  }
}
