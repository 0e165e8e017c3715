/**
 * Library parameter names (`TimeDebiasError.field`, src/util/errors.ts) → the names the user typed:
 * a command-line flag (`steps` → `--steps`) or, in a config-driven run, the config path
 * (`steps` → `config.generation.steps`). The library never names a flag or a config path itself.
 */
import { TimeDebiasError } from '../util/errors.js';

/** Library parameters whose flag is not their kebab-cased name. */
const FLAGS: Readonly<Record<string, string>> = Object.freeze({
  modelDir: '--model',
  modelPath: '--model',
  outDir: '--out',
  outPath: '--out',
  editFile: '--edit',
  seedStart: '--seed',
  lambdas: '--lambda',
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
  name: 'config.name',
  modelDir: 'config.model',
  model: 'config.model',
  classifierDir: 'config.classifier',
  classifier: 'config.classifier',
  preprocess: 'config.classifier.preprocess',
  professions: 'config.professions.list',
  select: 'config.professions.select',
  heldOut: 'config.professions.heldOut',
  targetClass: 'config.target.class',
  targetShare: 'config.target.share',
  tolerance: 'config.tuning.tolerance',
  // the audits of a debias job: their templates are the held-out evaluation templates, their images
  // per prompt and first seed come from the audit and seed settings
  templates: 'config.prompts.evaluationTemplates',
  images: 'config.audit.imagesPerProfession',
  imagesPerProfession: 'config.audit.imagesPerProfession',
  imagesPerProbe: 'config.tuning.imagesPerProbe',
  verificationImages: 'config.tuning.verificationImages',
  seedStart: 'config.seeds',
  outDir: 'config.output',
  // an audit's run folder inside the job's run folder
  out: 'config.output',
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
  queue: 'config.queue',
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
  return knownConfigPath(field) ?? field;
}

function knownConfigPath(field: string): string | undefined {
  for (const at of [field.length, ...[...field.matchAll(/[.[]/g)].map((m) => m.index as number).reverse()]) {
    const known = CONFIG_PATHS[field.slice(0, at)];
    if (known) return `${known}${field.slice(at)}`;
  }
  return undefined;
}

/**
 * The user's name of a library field in a config-driven run (`debias --config`): its config path,
 * or, for a parameter the config does not set (`restart`, `dryRun`, `exportPartial`, `config`
 * itself: command-line flags in every run), its flag. A field that is a config path already (the
 * job config's own checks) stays as it is.
 */
export function configRunNameOf(field: string): string {
  if (field.startsWith('config.')) return field;
  return knownConfigPath(field) ?? flagOf(field);
}

/**
 * Relabel an error that names a library field with the user's name for it, and the parameters its
 * detail mentions, unless a command has already relabelled it (its message is no longer the library's
 * own). An error about no single field has only its mentions renamed. Returns the error.
 */
export function relabelForUser(error: unknown, nameOf: (field: string) => string): unknown {
  if (!(error instanceof TimeDebiasError)) return error;
  if (error.field && error.message === `${error.field}: ${error.detail}`) error.relabel(nameOf(error.field), nameOf);
  else if (!error.field && error.mentions.length > 0 && error.message === error.detail)
    error.relabel(undefined, nameOf);
  return error;
}

/**
 * A line for the user (a log line, a rendered note) with the library parameters it mentions as
 * `name` (in backticks, see TimeDebiasErrorOptions.mentions) named as the user knows them.
 */
export function relabelText(text: string, mentions: readonly string[], nameOf: (field: string) => string): string {
  let out = text;
  for (const m of mentions) out = out.replaceAll(`\`${m}\``, nameOf(m));
  return out;
}
