/**
 * Linear multistep (Adams–Bashforth in σ, k-diffusion's `sample_lms`; Karras et al. 2022 §3), as
 * diffusers' LMSDiscreteScheduler with its default order 4. The UCE evaluation samples with it.
 *
 * Notation (see euler.ts): d_j = (x_j − x̂_0,j)/σ_j the ODE derivative at step j, m = min(i + 1, 4)
 * the order at step i. The step integrates the Lagrange polynomial through the last m derivatives:
 *
 *   ℓ_k(τ)   = Π_{j ≠ k, j < m} (τ − σ_{i−j}) / (σ_{i−k} − σ_{i−j})
 *   c_k      = ∫_{σ_i}^{σ_{i+1}} ℓ_k(τ) dτ                         (numerical integration)
 *   x_{i+1}  = x_i + Σ_{k<m} c_k d_{i−k}
 *
 * ℓ_k has degree m − 1 ≤ 3, so 4-point Gauss–Legendre quadrature (exact to degree 7) gives c_k up to
 * rounding; diffusers uses scipy's adaptive quad (epsrel 1e-4), exact for these polynomials too.
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

export interface LmsConfig extends NoiseScheduleConfig {
  use_karras_sigmas: boolean;
}

/** diffusers' LMSDiscreteScheduler defaults. */
export const LMS_DEFAULTS: Readonly<LmsConfig> = Object.freeze({
  ...NOISE_SCHEDULE_DEFAULTS,
  timestep_spacing: 'linspace',
  use_karras_sigmas: false,
});

const RULES: ConfigRules<LmsConfig> = { ...NOISE_SCHEDULE_RULES, use_karras_sigmas: { kind: 'boolean' } };

/** Nodes and weights of 4-point Gauss–Legendre quadrature on [−1, 1]. */
const GL_NODES = [-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526];
const GL_WEIGHTS = [0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538];

export class LmsScheduler extends SigmaScheduler<LmsConfig> implements Scheduler {
  readonly id = 'lms' as const;
  readonly stochastic = false;
  /** The maximum order m (diffusers' step(order=4)). */
  readonly order: number;
  private derivatives: Float32Array[] = [];

  constructor(config: Partial<LmsConfig> = {}, options: { order?: number } = {}) {
    super('LMSDiscreteScheduler', LMS_DEFAULTS, RULES, config);
    requireValue(this.className, this.config, 'use_karras_sigmas', false);
    this.order = options.order ?? 4;
  }

  static fromConfig(json: SchedulerConfigJson): LmsScheduler {
    return new LmsScheduler(json as Partial<LmsConfig>);
  }

  override setTimesteps(numInferenceSteps: number): void {
    super.setTimesteps(numInferenceSteps);
    this.derivatives = [];
  }

  /** c_k = ∫_{σ_i}^{σ_{i+1}} ℓ_k(τ) dτ for the order-m Lagrange basis at step i. */
  lmsCoefficient(order: number, i: number, k: number): number {
    const s = this.sigmas;
    const basis = (tau: number) => {
      let prod = 1;
      for (let j = 0; j < order; j++) {
        if (j === k) continue;
        prod *= (tau - (s[i - j] as number)) / ((s[i - k] as number) - (s[i - j] as number));
      }
      return prod;
    };
    const a = s[i] as number;
    const b = s[i + 1] as number;
    const half = (b - a) / 2;
    const mid = (a + b) / 2;
    let sum = 0;
    for (let q = 0; q < GL_NODES.length; q++)
      sum += (GL_WEIGHTS[q] as number) * basis(mid + half * (GL_NODES[q] as number));
    return sum * half;
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array): SchedulerStepResult {
    requireTimesteps(this.className, this.numInferenceSteps);
    checkSameLength(this.className, modelOutput, sample);
    const i = this.indexFor(timestep);
    const sigma = this.sigmas[i] as number;
    const x0 = sigmaPredictX0(this.config.prediction_type, modelOutput, sample, sigma);
    const d = new Float32Array(sample.length);
    for (let k = 0; k < d.length; k++) d[k] = ((sample[k] as number) - (x0[k] as number)) / sigma;
    this.derivatives.push(d);
    if (this.derivatives.length > this.order) this.derivatives.shift();
    const order = Math.min(i + 1, this.order);
    const prev = Float32Array.from(sample);
    for (let k = 0; k < order; k++) {
      const c = this.lmsCoefficient(order, i, k);
      const dk = this.derivatives[this.derivatives.length - 1 - k] as Float32Array;
      for (let q = 0; q < prev.length; q++) prev[q] = (prev[q] as number) + c * (dk[q] as number);
    }
    this.stepIndex = i + 1;
    return { prevSample: prev, predOriginalSample: x0 };
  }
}
