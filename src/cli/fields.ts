/**
 * Library parameter names (`TimeDebiasError.field`, src/util/errors.ts) → the names the user typed:
 * a command-line flag (`steps` → `--steps`) or, in a config-driven run, the config path
 * (`steps` → `config.generation.steps`). The library never names a flag or a config path itself.
 */
import { TimeDebiasError } from '../util/errors.js';

/** Library parameters whose flag is not their kebab-cased name. */
const FLAGS: Readonly<Record<string, string>> = Object.freeze({
  modelDir: '--model',
  outDir: '--out',
  pairsFile: '--pairs',
  preserve: '--preserve',
  'preserve.prompts': '--preserve',
  'preserve.weight': '--preserve-weight',
  projections: '--no-keys',
  classifierDir: '--classifier',
  textTransform: '--edit',
});

/** Library parameters of a job config → their path in the config file (configs/schema.json). */
const CONFIG_PATHS: Readonly<Record<string, string>> = Object.freeze({
  modelDir: 'config.model',
  classifierDir: 'config.classifier',
  preprocess: 'config.classifier.preprocess',
  outDir: 'config.output',
  scheduler: 'config.generation.scheduler',
  steps: 'config.generation.steps',
  guidance: 'config.generation.guidance',
  height: 'config.generation.height',
  width: 'config.generation.width',
  negativePrompt: 'config.generation.negativePrompt',
  batchSize: 'config.generation.batchSize',
  projections: 'config.edit.projections',
  layers: 'config.edit.layers',
  preserve: 'config.preserve.prompts',
  'preserve.prompts': 'config.preserve.prompts',
  'preserve.weight': 'config.preserve.weight',
  augment: 'config.prompts.augment',
  threshold: 'config.attribute.threshold',
  attribute: 'config.attribute',
  device: 'config.device',
  threads: 'config.threads',
  concurrency: 'config.concurrency',
});

const kebab = (name: string) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/**
 * The flag of a library field: the table above, else `--` + the kebab-cased name. A field with a
 * list index or a sub-key keeps them after the flag: `seeds[3]` → `--seeds #4`, `pairs[0].source`
 * → `--pairs #1 source`.
 */
export function flagOf(field: string): string {
  if (!/^[A-Za-z][A-Za-z0-9]*(?:\[\d+\]|\.[A-Za-z][A-Za-z0-9]*)*$/.test(field)) return field;
  // The longest leading part of the field the table knows (`preserve.prompts` of `preserve.prompts[1]`).
  const cuts = [...field.matchAll(/[.[]/g)].map((m) => m.index as number);
  let head = field.replace(/[.[].*$/, '');
  let flag = `--${kebab(head)}`;
  for (const at of [field.length, ...cuts.reverse()]) {
    const known = FLAGS[field.slice(0, at)];
    if (known) {
      head = field.slice(0, at);
      flag = known;
      break;
    }
  }
  const suffix = [...field.slice(head.length).matchAll(/\[(\d+)\]|\.([A-Za-z0-9]+)/g)]
    .map((p) => (p[1] !== undefined ? `#${Number(p[1]) + 1}` : kebab(p[2] as string)))
    .join(' ');
  return suffix ? `${flag} ${suffix}` : flag;
}

/** The config path of a library field in a config-driven run; the field itself when it has none. */
export function configPathOf(field: string): string {
  for (const at of [field.length, ...[...field.matchAll(/[.[]/g)].map((m) => m.index as number).reverse()]) {
    const known = CONFIG_PATHS[field.slice(0, at)];
    if (known) return `${known}${field.slice(at)}`;
  }
  return field;
}

/**
 * Relabel an error that names a library field with the user's name for it, unless a command has
 * already relabelled it (its message no longer starts with the field). Returns the error.
 */
export function relabelForUser(error: unknown, nameOf: (field: string) => string): unknown {
  if (error instanceof TimeDebiasError && error.field && error.message === `${error.field}: ${error.detail}`) {
    error.relabel(nameOf(error.field), nameOf);
  }
  return error;
}
