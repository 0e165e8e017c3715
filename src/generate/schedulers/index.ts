/**
 * The scheduler registry: CLI id → scheduler, configured from a model's scheduler_config.json
 * (whatever class wrote it, as diffusers' `Scheduler.from_config(pipe.scheduler.config)` does) plus
 * overrides.
 */
import { GenerationError, show } from '../../util/errors.js';
import { SCHEDULER_IDS, type Scheduler, type SchedulerConfigJson, type SchedulerId } from './common.js';
import { DdimScheduler } from './ddim.js';
import { DpmppScheduler } from './dpmpp-2m.js';
import { EulerScheduler } from './euler.js';
import { EulerAncestralScheduler } from './euler-ancestral.js';
import { LmsScheduler } from './lms.js';
import { PndmScheduler } from './pndm.js';

export * from './common.js';
export { DdimScheduler, DpmppScheduler, EulerAncestralScheduler, EulerScheduler, LmsScheduler, PndmScheduler };

export interface CreateSchedulerOptions {
  /** DDIM's η (0 = deterministic). Refused for the other schedulers. */
  eta?: number;
}

/** diffusers class name → CLI id, to name a model's own scheduler. */
export const CLASS_TO_ID: Readonly<Record<string, SchedulerId>> = Object.freeze({
  PNDMScheduler: 'pndm',
  DDIMScheduler: 'ddim',
  EulerDiscreteScheduler: 'euler',
  EulerAncestralDiscreteScheduler: 'euler-ancestral',
  LMSDiscreteScheduler: 'lms',
  DPMSolverMultistepScheduler: 'dpmpp-2m',
});

export function isSchedulerId(value: unknown): value is SchedulerId {
  return typeof value === 'string' && (SCHEDULER_IDS as readonly string[]).includes(value);
}

/**
 * A scheduler by CLI id from a diffusers config object (any class's; fields the chosen class does
 * not know are ignored) with `overrides` applied on top.
 */
export function createScheduler(
  id: string,
  config: SchedulerConfigJson = {},
  overrides: SchedulerConfigJson = {},
  options: CreateSchedulerOptions = {},
): Scheduler {
  if (!isSchedulerId(id)) {
    throw new GenerationError(
      `${show(id)} is not a known scheduler; valid schedulers are ${SCHEDULER_IDS.join(', ')}`,
      { field: 'scheduler' },
    );
  }
  if (options.eta !== undefined && options.eta !== 0 && id !== 'ddim') {
    throw new GenerationError(`${show(options.eta)} applies to the ddim scheduler only, not ${id}`, { field: 'eta' });
  }
  const merged = { ...config, ...overrides };
  switch (id) {
    case 'pndm':
      return PndmScheduler.fromConfig(merged);
    case 'ddim':
      return DdimScheduler.fromConfig(merged, { eta: options.eta });
    case 'euler':
      return EulerScheduler.fromConfig(merged);
    case 'euler-ancestral':
      return EulerAncestralScheduler.fromConfig(merged);
    case 'lms':
      return LmsScheduler.fromConfig(merged);
    case 'dpmpp-2m':
      return DpmppScheduler.fromConfig(merged);
  }
}

/**
 * The corrections diffusers' Stable Diffusion pipelines apply to an outdated scheduler config when
 * they load it (and which every scheduler made from `pipe.scheduler.config` then inherits):
 * steps_offset 1 instead of 0 or absent, clip_sample false instead of true. Returned with one
 * warning per correction; nothing is changed silently.
 */
export function stableDiffusionSchedulerConfig(config: SchedulerConfigJson): {
  config: SchedulerConfigJson;
  warnings: string[];
} {
  const out = { ...config };
  const warnings: string[] = [];
  if (out.steps_offset !== 1) {
    const was = out.steps_offset === undefined ? 'absent (0)' : show(out.steps_offset);
    warnings.push(`scheduler_config.json steps_offset is ${was}; using 1 as diffusers' Stable Diffusion pipeline does`);
    out.steps_offset = 1;
  }
  if (out.clip_sample === true) {
    warnings.push(
      "scheduler_config.json clip_sample is true; using false as diffusers' Stable Diffusion pipeline does",
    );
    out.clip_sample = false;
  }
  return { config: out, warnings };
}
