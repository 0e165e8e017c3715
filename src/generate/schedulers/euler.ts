/**
 * Euler's method on the probability-flow ODE in the σ view (Karras, Aittala, Aila, Laine 2022,
 * "Elucidating the Design Space of Diffusion-Based Generative Models", arXiv 2206.00364, Algorithm 1
 * without churn), as diffusers' EulerDiscreteScheduler with its default step arguments (s_churn 0).
 *
 * Notation (see common.ts): σ_i the noise level of step i (σ_n = 0), x_i the sample at σ_i,
 * x̂_0 = D(x_i; σ_i) the denoised estimate.
 *
 *   σ_i      = σ_train interpolated at the (possibly fractional) timestep t_i   (common.ts)
 *   input    = x_i / √(σ_i² + 1)                                                 (c_in, Table 1)
 *   d_i      = (x_i − x̂_0) / σ_i                                                 (Alg. 1 line 7)
 *   x_{i+1}  = x_i + (σ_{i+1} − σ_i) d_i                                          (Alg. 1 line 8)
 *   x_0 ~ init_noise_sigma · N(0, I)
 */
import {
  type ConfigRules,
  checkSameLength,
  NOISE_SCHEDULE_DEFAULTS,
  NOISE_SCHEDULE_RULES,
  type NoiseScheduleConfig,
  requireTimesteps,
  requireValue,
  type Scheduler,
  type SchedulerConfigJson,
  type SchedulerStepResult,
  SigmaScheduler,
  sigmaPredictX0,
} from './common.js';

export interface EulerConfig extends NoiseScheduleConfig {
  interpolation_type: 'linear' | 'log_linear';
  use_karras_sigmas: boolean;
}

/** diffusers' EulerDiscreteScheduler defaults (note: linspace spacing, offset 0). */
export const EULER_DEFAULTS: Readonly<EulerConfig> = Object.freeze({
  ...NOISE_SCHEDULE_DEFAULTS,
  timestep_spacing: 'linspace',
  interpolation_type: 'linear',
  use_karras_sigmas: false,
});

const RULES: ConfigRules<EulerConfig> = {
  ...NOISE_SCHEDULE_RULES,
  interpolation_type: { kind: 'enum', values: ['linear', 'log_linear'] },
  use_karras_sigmas: { kind: 'boolean' },
};

export class EulerScheduler extends SigmaScheduler<EulerConfig> implements Scheduler {
  readonly id = 'euler' as const;
  readonly stochastic = false;

  constructor(config: Partial<EulerConfig> = {}) {
    super('EulerDiscreteScheduler', EULER_DEFAULTS, RULES, config);
    requireValue(this.className, this.config, 'use_karras_sigmas', false);
  }

  static fromConfig(json: SchedulerConfigJson): EulerScheduler {
    return new EulerScheduler(json as Partial<EulerConfig>);
  }

  protected override get sigmaInterpolation(): 'linear' | 'log_linear' {
    return this.config.interpolation_type;
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array): SchedulerStepResult {
    requireTimesteps(this.className, this.numInferenceSteps);
    checkSameLength(this.className, modelOutput, sample);
    const i = this.indexFor(timestep);
    const sigma = this.sigmas[i] as number;
    const sigmaNext = this.sigmas[i + 1] as number;
    const x0 = sigmaPredictX0(this.config.prediction_type, modelOutput, sample, sigma);
    const dt = sigmaNext - sigma;
    const prev = new Float32Array(sample.length);
    for (let k = 0; k < prev.length; k++) {
      const x = sample[k] as number;
      const derivative = (x - (x0[k] as number)) / sigma;
      prev[k] = x + derivative * dt;
    }
    this.stepIndex = i + 1;
    return { prevSample: prev, predOriginalSample: x0 };
  }
}
