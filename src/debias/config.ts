/**
 * Job configs: JSON validated with ajv against configs/schema.json (defaults filled in from the
 * schema, so the config "as run" is complete), then the rules a schema cannot state. Every error
 * names the config path, the value and the rule.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import type { PreprocessMode } from '../classify/preprocess-pil.js';
import { checkRunName } from '../model/path-guard.js';
import { ConfigError, show } from '../util/errors.js';

export const SCHEMA_PATH = fileURLToPath(new URL('../../configs/schema.json', import.meta.url));

export interface AttributeClass {
  id: string;
  word: string;
  labels: string[];
}

/** The config with every default filled in (the shape of configs/schema.json). */
export interface JobConfig {
  $schema?: string;
  name: string;
  model: string;
  /** The string form of configs/schema.json is normalized to { path, preprocess: 'transformers' }. */
  classifier: { path: string; preprocess: PreprocessMode };
  professions: { list: string; select?: string[]; heldOut: string[] };
  attribute: { name: string; classes: [AttributeClass, AttributeClass]; threshold?: number };
  target: { class: string; share: number };
  prompts: {
    source: string;
    destination: string;
    augment: boolean;
    destinationClass: Record<string, string>;
    tuningTemplates: string[];
    evaluationTemplates: string[];
  };
  edit: { projections: ('to_k' | 'to_v')[]; layers?: string[] };
  preserve: { defaults: boolean; prompts: string[]; weight: number; unrelatedWeight: number };
  tuning: {
    strategy: 'ed50' | 'uce';
    imagesPerProbe: number;
    batch: number;
    maxProbes: number;
    tolerance: number;
    confidence: number;
    decisionConfidence: number;
    initialStrength: number | 'auto';
    attributedShare: number;
    strengthRange: [number, number];
    compensate: boolean;
    jointRounds: number;
    verificationImages: number;
    uce: { imagesPerRound: number; maxRounds: number; step: number };
  };
  generation: {
    scheduler: 'pndm' | 'ddim' | 'euler' | 'euler-ancestral' | 'lms' | 'dpmpp-2m';
    steps: number;
    guidance: number;
    /** undefined: the model's native size (src/generate/geometry.ts) */
    height?: number;
    width?: number;
    negativePrompt: string;
    batchSize: number;
  };
  seeds: { tuning: number; verification: number; evaluation: number };
  audit: { imagesPerProfession: number; gendered: boolean };
  output: string;
  device: 'cpu' | 'cuda';
  threads: number;
  concurrency: number;
  /** redis://… of a render queue (time-debias worker); absent: in process. Not part of the fingerprint. */
  queue?: string;
}

let validator: ValidateFunction | null = null;

function validate(): ValidateFunction {
  if (!validator) {
    const schema = JSON.parse(readFileSync(SCHEMA_PATH, 'utf8'));
    const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true });
    validator = ajv.compile(schema);
  }
  return validator;
}

function describe(e: ErrorObject, config: unknown): string {
  const path = `config${e.instancePath.replace(/\//g, '.').replace(/\.(\d+)(?=\.|$)/g, '[$1]')}`;
  const value = e.instancePath
    .split('/')
    .slice(1)
    .reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), config);
  switch (e.keyword) {
    case 'additionalProperties':
      return `${path}: unknown key ${show((e.params as { additionalProperty: string }).additionalProperty)} (rule: additionalProperties — check the spelling against configs/schema.json)`;
    case 'required':
      return `${path}: missing required key ${show((e.params as { missingProperty: string }).missingProperty)} (rule: required)`;
    default:
      return `${path}: ${show(value)} ${e.message} (rule: ${e.keyword})`;
  }
}

/**
 * Validate a parsed config object and fill its defaults. `baseDir` resolves relative paths
 * (model, classifier, professions file, output); "demo" stays as it is.
 */
export function normalizeConfig(raw: unknown, baseDir: string): JobConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(`config: ${show(raw)} must be a JSON object (rule: type)`);
  }
  const config = structuredClone(raw) as JobConfig;
  const check = validate();
  if (!check(config)) {
    const messages = (check.errors ?? []).map((e) => describe(e, config));
    throw new ConfigError(`invalid config:\n  - ${[...new Set(messages)].join('\n  - ')}`);
  }
  const problems: string[] = [];
  try {
    checkRunName(config.name, 'config.name');
  } catch (error) {
    problems.push((error as Error).message);
  }
  const ids = config.attribute.classes.map((c) => c.id);
  if (ids[0] === ids[1])
    problems.push(`config.attribute.classes: both classes are ${show(ids[0])} (rule: distinct ids)`);
  if (!ids.includes(config.target.class)) {
    problems.push(
      `config.target.class: ${show(config.target.class)} is not one of the attribute's classes ${ids.join(', ')} (rule: known class)`,
    );
  }
  for (const [p, c] of Object.entries(config.prompts.destinationClass)) {
    if (!ids.includes(c))
      problems.push(
        `config.prompts.destinationClass.${p}: ${show(c)} is not one of ${ids.join(', ')} (rule: known class)`,
      );
  }
  const [lo, hi] = config.tuning.strengthRange;
  if (!(lo < hi)) problems.push(`config.tuning.strengthRange: [${lo}, ${hi}] must be increasing (rule: min < max)`);
  const s0 = config.tuning.initialStrength;
  if (s0 !== 'auto' && lo < hi && !(s0 >= lo && s0 <= hi)) {
    problems.push(`config.tuning.initialStrength: ${s0} is outside strengthRange [${lo}, ${hi}] (rule: within range)`);
  }
  if (config.tuning.batch > config.tuning.imagesPerProbe) {
    problems.push(
      `config.tuning.batch: ${config.tuning.batch} exceeds tuning.imagesPerProbe ${config.tuning.imagesPerProbe} (rule: batch <= imagesPerProbe)`,
    );
  }
  // Seed ranges must be disjoint: [start, start + size) per use.
  const ranges = seedRanges(config);
  for (let i = 0; i < ranges.length; i++) {
    for (let j = i + 1; j < ranges.length; j++) {
      const a = ranges[i] as SeedRange;
      const b = ranges[j] as SeedRange;
      if (a.start < b.end && b.start < a.end) {
        problems.push(
          `config.seeds: ${a.use} seeds [${a.start}, ${a.end}) overlap ${b.use} seeds [${b.start}, ${b.end}) (rule: tuning, verification and evaluation seeds are disjoint)`,
        );
      }
    }
  }
  const held = new Set(config.professions.heldOut);
  for (const p of config.professions.select ?? []) {
    if (held.has(p))
      problems.push(
        `config.professions.heldOut: ${show(p)} is also selected for editing (rule: held-out professions are not edited)`,
      );
  }
  if (problems.length) throw new ConfigError(`invalid config:\n  - ${problems.join('\n  - ')}`);
  const resolvePath = (p: string) => (p === 'demo' || isAbsolute(p) ? p : resolve(baseDir, p));
  config.model = resolvePath(config.model);
  const classifier = config.classifier as JobConfig['classifier'] | string;
  config.classifier =
    typeof classifier === 'string'
      ? { path: resolvePath(classifier), preprocess: 'transformers' }
      : { path: resolvePath(classifier.path), preprocess: classifier.preprocess ?? 'transformers' };
  config.output = resolvePath(config.output);
  if (/[\\/]|\.(csv|json)$/i.test(config.professions.list))
    config.professions.list = resolvePath(config.professions.list);
  return config;
}

export interface SeedRange {
  use: 'tuning' | 'verification' | 'evaluation';
  start: number;
  end: number;
}

/** The seed range each use can consume at most, from the budgets in the config. */
export function seedRanges(config: JobConfig): SeedRange[] {
  const t = config.tuning;
  const tuningSize = t.strategy === 'uce' ? t.uce.imagesPerRound : t.imagesPerProbe;
  return [
    { use: 'tuning', start: config.seeds.tuning, end: config.seeds.tuning + tuningSize },
    { use: 'verification', start: config.seeds.verification, end: config.seeds.verification + t.verificationImages },
    {
      use: 'evaluation',
      start: config.seeds.evaluation,
      end: config.seeds.evaluation + config.audit.imagesPerProfession,
    },
  ];
}

/** Read, parse and normalize a config file. */
export function loadConfig(path: string): JobConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    throw new ConfigError(`cannot read ${show(path)} (${(cause as NodeJS.ErrnoException).code ?? 'error'})`, {
      cause,
      field: 'config',
    });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new ConfigError(`${show(path)} is not valid JSON: ${(cause as Error).message}`, { cause, field: 'config' });
  }
  return normalizeConfig(raw, dirname(resolve(path)));
}
