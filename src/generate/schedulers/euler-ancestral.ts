/**
 * Ancestral Euler sampling in the σ view (k-diffusion's `sample_euler_ancestral`; Karras et al.
 * 2022 with η = 1), as diffusers' EulerAncestralDiscreteScheduler.
 *
 * Notation (see euler.ts): σ_i → σ_{i+1} is split into a deterministic move down to σ_down and
 * fresh noise of standard deviation σ_up, with σ_down² + σ_up² = σ_{i+1}²:
 *
 *   σ_up     = √(σ_{i+1}² (σ_i² − σ_{i+1}²) / σ_i²)
 *   σ_down   = √(σ_{i+1}² − σ_up²)
 *   d_i      = (x_i − x̂_0) / σ_i
 *   x_{i+1}  = x_i + (σ_down − σ_i) d_i + σ_up z,     z ~ N(0, I) from each image's own stream
 */
import { GenerationError } from '../../util/errors.js';
import {
  type ConfigRules,
  checkSameLength,
  NOISE_SCHEDULE_DEFAULTS,
  NOISE_SCHEDULE_RULES,
  type NoiseScheduleConfig,
  requireTimesteps,
  type Scheduler,
  type SchedulerConfigJson,
  type SchedulerStepResult,
  SigmaScheduler,
  type StepOptions,
  sigmaPredictX0,
} from './common.js';

export type EulerAncestralConfig = NoiseScheduleConfig;

/** diffusers' EulerAncestralDiscreteScheduler defaults. */
export const EULER_ANCESTRAL_DEFAULTS: Readonly<EulerAncestralConfig> = Object.freeze({
  ...NOISE_SCHEDULE_DEFAULTS,
  timestep_spacing: 'linspace',
});

const RULES: ConfigRules<EulerAncestralConfig> = NOISE_SCHEDULE_RULES;

export class EulerAncestralScheduler extends SigmaScheduler<EulerAncestralConfig> implements Scheduler {
  readonly id = 'euler-ancestral' as const;
  readonly stochastic = true;

  constructor(config: Partial<EulerAncestralConfig> = {}) {
    super('EulerAncestralDiscreteScheduler', EULER_ANCESTRAL_DEFAULTS, RULES, config);
    if (this.config.prediction_type === 'sample') {
      throw new GenerationError(
        `${this.className} config prediction_type: "sample" is not supported (epsilon or v_prediction)`,
      );
    }
  }

  static fromConfig(json: SchedulerConfigJson): EulerAncestralScheduler {
    return new EulerAncestralScheduler(json as Partial<EulerAncestralConfig>);
  }

  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    options: StepOptions = {},
  ): SchedulerStepResult {
    requireTimesteps(this.className, this.numInferenceSteps);
    checkSameLength(this.className, modelOutput, sample);
    if (!options.noise) throw new GenerationError(`${this.className}: step() needs a noise source (it is stochastic)`);
    const i = this.indexFor(timestep);
    const sigmaFrom = this.sigmas[i] as number;
    const sigmaTo = this.sigmas[i + 1] as number;
    const x0 = sigmaPredictX0(this.config.prediction_type, modelOutput, sample, sigmaFrom);
    const sigmaUp = Math.sqrt(
      (sigmaTo * sigmaTo * (sigmaFrom * sigmaFrom - sigmaTo * sigmaTo)) / (sigmaFrom * sigmaFrom),
    );
    const sigmaDown = Math.sqrt(sigmaTo * sigmaTo - sigmaUp * sigmaUp);
    const dt = sigmaDown - sigmaFrom;
    const z = options.noise(sample.length);
    const prev = new Float32Array(sample.length);
    for (let k = 0; k < prev.length; k++) {
      const x = sample[k] as number;
      const derivative = (x - (x0[k] as number)) / sigmaFrom;
      prev[k] = x + derivative * dt + (z[k] as number) * sigmaUp;
    }
    this.stepIndex = i + 1;
    return { prevSample: prev, predOriginalSample: x0 };
  }
}
