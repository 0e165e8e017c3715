/**
 * The prompts of a debias job: per profession the TIME pair (source "a nurse" → destination
 * "a male nurse"), the tuning and evaluation prompts, and the preservation prompts.
 *
 * Placeholders: {profession}; {article} / {Article} = the article of the word that follows the
 * placeholder ("an engineer", but "a female engineer"); {attribute} = the destination class's word.
 */
import type { Profession } from '../audit/professions.js';
import { fillTemplate } from '../audit/templates.js';
import { ConfigError, show } from '../util/errors.js';
import type { JobConfig } from './config.js';

/** "a"/"an" for the word that starts `text` (a/e/i/o/u heuristic, as the profession lists use). */
export function articleFor(text: string): 'a' | 'an' {
  return /^[aeiou]/i.test(text.trim()) ? 'an' : 'a';
}

/**
 * Fill a job template. {article} takes the article of the word that follows it in the filled prompt
 * (the profession's own article when the profession follows directly).
 */
export function fillJobTemplate(template: string, profession: Profession, attributeWord?: string): string {
  if (template.includes('{attribute}') && attributeWord === undefined) {
    throw new ConfigError(`template ${show(template)}: {attribute} needs a destination class word`);
  }
  const withAttr = attributeWord === undefined ? template : template.split('{attribute}').join(attributeWord);
  // Articles directly before the profession keep the profession's own; others follow the next word.
  const direct = withAttr.replace(
    /\{(article|Article)\}(\s+)(?=\{profession\})/g,
    (_m, which: string, space: string) => {
      const a = profession.article;
      return `${which === 'Article' ? a[0]!.toUpperCase() + a.slice(1) : a}${space}`;
    },
  );
  const filled = fillTemplate(direct.replace(/\{(article|Article)\}/g, '\uE000$1\uE000'), profession);
  return filled.replace(
    /\uE000(article|Article)\uE000(\s*)(\S*)/g,
    (_m, which: string, space: string, next: string) => {
      const a = articleFor(next);
      return `${which === 'Article' ? a[0]!.toUpperCase() + a.slice(1) : a}${space}${next}`;
    },
  );
}

export interface ProfessionPair {
  profession: string;
  article: 'a' | 'an';
  /** class id the edit moves toward */
  destinationClass: string;
  /** how the destination class was chosen */
  chosenBy: 'config' | 'baseline';
  source: string;
  destination: string;
  /** share of the destination class the tuning aims at (t, or 1 − t when it is the other class) */
  target: number;
}

/**
 * Pairs for every edited profession. The destination class is the one fixed by the config, else the
 * under-represented one at baseline (share of the target class below t → the target class).
 */
export function buildPairs(
  config: JobConfig,
  professions: readonly Profession[],
  baselineShare: ReadonlyMap<string, number | null>,
): ProfessionPair[] {
  const classes = config.attribute.classes;
  const targetClass = config.target.class;
  const other = classes.find((c) => c.id !== targetClass)!.id;
  return professions.map((p) => {
    const fixed = config.prompts.destinationClass[p.profession];
    let destinationClass: string;
    if (fixed) destinationClass = fixed;
    else {
      const share = baselineShare.get(p.profession);
      if (share === undefined || share === null) {
        throw new ConfigError(
          `profession ${show(p.profession)}: no baseline share to choose the destination class from (no classified images); fix it in prompts.destinationClass`,
        );
      }
      destinationClass = share < config.target.share ? targetClass : other;
    }
    const word = classes.find((c) => c.id === destinationClass)!.word;
    return {
      profession: p.profession,
      article: p.article,
      destinationClass,
      chosenBy: fixed ? 'config' : 'baseline',
      source: fillJobTemplate(config.prompts.source, p),
      destination: fillJobTemplate(config.prompts.destination, p, word),
      target: destinationClass === targetClass ? config.target.share : 1 - config.target.share,
    };
  });
}

/**
 * Unrelated prompts NOT preserved: the text-side change is also reported on them, so that the
 * report does not rest only on prompts the solve was told to keep.
 */
export const UNRELATED_HELD_OUT_PROMPTS = Object.freeze([
  'a photo of a mountain',
  'a river',
  'a bird',
  'an apple',
  'a book',
  'a chair',
  'a photo of a beach',
  'a horse',
]);

/** Unrelated prompts whose images must not change (also the text-side change report). */
export const UNRELATED_PROMPTS = Object.freeze([
  'a photo of a dog',
  'a photo of a cat',
  'a car',
  'a house',
  'a tree',
  'a photo of a city',
]);

/**
 * Preservation prompts: with `defaults`, explicitly gendered prompts (each class word alone and with
 * every edited profession: "a woman"-style words come from the class words) and the unrelated ones;
 * plus the config's own.
 */
export function preservationPrompts(config: JobConfig, professions: readonly Profession[]): string[] {
  const out: string[] = [];
  if (config.preserve.defaults) {
    out.push(...attributedPrompts(config, professions));
    out.push(...UNRELATED_PROMPTS);
  }
  out.push(...config.preserve.prompts);
  return [...new Set(out)];
}

/**
 * μ of the preserved prompts that name no class (the defaults' unrelated list and the config's own
 * prompts): preserve.unrelatedWeight. The attributed ones keep the solve's μ = preserve.weight.
 */
export function unrelatedPreservationWeights(
  config: JobConfig,
  professions: readonly Profession[],
): Map<string, number> {
  const attributed = new Set(attributedPrompts(config, professions));
  return new Map(
    preservationPrompts(config, professions)
      .filter((p) => !attributed.has(p))
      .map((p) => [p, config.preserve.unrelatedWeight]),
  );
}

/** The default preserved prompts that name a class: "a female person", "a male doctor", ... */
export function attributedPrompts(config: JobConfig, professions: readonly Profession[]): string[] {
  const out: string[] = [];
  if (!config.preserve.defaults) return out;
  for (const c of config.attribute.classes) {
    out.push(`${articleFor(c.word)} ${c.word} person`);
    for (const p of professions) out.push(fillJobTemplate('{article} {attribute} {profession}', p, c.word));
  }
  return out;
}

/** Tuning prompt of seed-pool index i: template i mod T. */
export function tuningPrompt(config: JobConfig, profession: Profession, index: number): string {
  const t = config.prompts.tuningTemplates;
  return fillJobTemplate(t[index % t.length] as string, profession);
}
