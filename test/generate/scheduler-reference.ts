/**
 * A deterministic scheduler run used as a regression reference: SD 1.x config, 12 steps, a fixed
 * smooth "model" ε(x, t) = tanh(x_in / 2) + 0.05 cos(i + t/250) on the scaled input, initial latents
 * from the project's generator. `node --import tsx test/generate/scheduler-reference.ts --write`
 * regenerates fixtures/scheduler-reference.json (review the diff before committing it).
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { batchNoiseSource, GaussianStream, noise } from '../../src/generate/rng.js';
import { createScheduler, SCHEDULER_IDS, type SchedulerConfigJson } from '../../src/generate/schedulers/index.js';

/** Stable Diffusion 1.x's scheduler/scheduler_config.json. */
export const SD1_CONFIG: SchedulerConfigJson = Object.freeze({
  _class_name: 'PNDMScheduler',
  _diffusers_version: '0.7.0.dev0',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  clip_sample: false,
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
});

export const REFERENCE_STEPS = 12;

export function runReference(
  id: string,
  steps = REFERENCE_STEPS,
): { timesteps: number[]; initNoiseSigma: number; final: number[] } {
  const s = createScheduler(id, SD1_CONFIG);
  s.setTimesteps(steps);
  const shape = [1, 4, 2, 2];
  const per = 16;
  const x = new Float32Array(2 * per);
  x.set(noise(7, shape), 0);
  x.set(noise(8, shape), per);
  for (let i = 0; i < x.length; i++) x[i] = (x[i] as number) * s.initNoiseSigma;
  const streams = [new GaussianStream(7, 1), new GaussianStream(8, 1)];
  let sample: Float32Array = x;
  for (const t of s.timesteps) {
    const input = s.scaleModelInput(sample, t);
    const eps = Float32Array.from(input, (v, i) => Math.tanh(v / 2) + 0.05 * Math.cos(i + t / 250));
    sample = s.step(eps, t, sample, { noise: batchNoiseSource(streams) }).prevSample;
  }
  return { timesteps: [...s.timesteps], initNoiseSigma: s.initNoiseSigma, final: Array.from(sample) };
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv.includes('--write')) {
  const results: Record<string, unknown> = {};
  for (const id of SCHEDULER_IDS) results[id] = runReference(id);
  const doc = {
    about: 'Deterministic scheduler runs (test/generate/scheduler-reference.ts): SD 1.x config, 12 steps, fixed model.',
    steps: REFERENCE_STEPS,
    results,
  };
  writeFileSync(new URL('./fixtures/scheduler-reference.json', import.meta.url), `${JSON.stringify(doc, null, 1)}\n`);
}
