/**
 * Option groups that several commands share, defined once: the generation settings (audit,
 * evaluate), the run folder's restart and bootstrap (audit, evaluate, compare), onnxruntime's device
 * and threads, and the queue. A command passes what differs (its defaults, its wording).
 */
import type { Argv } from 'yargs';
import { SCHEDULER_IDS } from '../generate/schedulers/index.js';

type Described = { describe?: string; default?: unknown };

/** --steps --scheduler --guidance --height --width --negative-prompt. */
export function generationOptions<T>(
  yargs: Argv<T>,
  overrides: { steps?: Described; scheduler?: Described; guidance?: Described } = {},
): Argv<T> {
  return yargs
    .option('steps', { type: 'number', describe: 'Denoising steps', ...overrides.steps })
    .option('scheduler', { type: 'string', describe: `One of ${SCHEDULER_IDS.join(', ')}`, ...overrides.scheduler })
    .option('guidance', { type: 'number', describe: 'Classifier-free guidance scale', ...overrides.guidance })
    .option('height', { type: 'number', describe: "Image height (default: the model's size)" })
    .option('width', { type: 'number', describe: "Image width (default: the model's size)" })
    .option('negative-prompt', { type: 'string', describe: 'Negative prompt' })
    .group(
      ['steps', 'scheduler', 'guidance', 'height', 'width', 'negative-prompt'],
      'Generation:',
    ) as unknown as Argv<T>;
}

/** --device --threads (onnxruntime). */
export function runtimeOptions<T>(yargs: Argv<T>): Argv<T> {
  return yargs
    .option('device', { type: 'string', default: 'cpu', describe: 'cpu or cuda' })
    .option('threads', { type: 'number', describe: 'onnxruntime intra-op threads' })
    .group(['device', 'threads'], 'Runtime:') as unknown as Argv<T>;
}

/** --restart (a run folder made with other settings) and the bootstrap's --bootstrap --bootstrap-seed. */
export function runFolderOptions<T>(yargs: Argv<T>, bootstrapFor: string): Argv<T> {
  return yargs
    .option('restart', {
      type: 'boolean',
      default: false,
      describe: 'Discard the results of a run folder made with other settings',
    })
    .option('bootstrap', { type: 'number', default: 2000, describe: `Bootstrap resamples (${bootstrapFor})` })
    .option('bootstrap-seed', { type: 'number', default: 1, describe: 'Seed of the bootstrap' })
    .group(['restart', 'bootstrap', 'bootstrap-seed'], 'Run folder and statistics:') as unknown as Argv<T>;
}

/** --queue URL: images rendered and classified by `time-debias worker` processes. */
export function queueOption<T>(yargs: Argv<T>): Argv<T> {
  return yargs
    .option('queue', {
      type: 'string',
      describe:
        'redis://[user:pass@]HOST:PORT[/DB] (or rediss:// for TLS): render and classify on `time-debias worker`s (default: in process)',
    })
    .group(['queue'], 'Scale-out:') as unknown as Argv<T>;
}
