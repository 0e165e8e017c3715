/**
 * Attributes for zero-shot classification: a named set of k ≥ 2 classes, each with one or more label
 * prompts (an ensemble, averaged in embedding space). Prompts may contain `{profession}`, replaced by the
 * profession of the image being classified (e.g. "a female {profession}").
 *
 * Gender (female, male) is the built-in default, with the label styles the references use
 * (mission.md §2):
 *   'woman-man'    "a photo of a woman" / "a photo of a man"   (default; profession-independent)
 *   'female-male'  "a female {profession}" / "a male {profession}"
 *   'image-of'     "image of female" / "image of male"
 */
import { ClassifierError, show } from '../util/errors.js';

export interface AttributeClass {
  /** Class name as reported in results, e.g. "female". */
  name: string;
  /** One or more label prompts; several form an ensemble. May contain "{profession}". */
  prompts: string[];
}

export interface Attribute {
  /** e.g. "gender" */
  name: string;
  classes: AttributeClass[];
}

export const GENDER_LABEL_STYLES = Object.freeze({
  'woman-man': { female: ['a photo of a woman'], male: ['a photo of a man'] },
  'female-male': { female: ['a female {profession}'], male: ['a male {profession}'] },
  'image-of': { female: ['image of female'], male: ['image of male'] },
} as const);

export type GenderLabelStyle = keyof typeof GENDER_LABEL_STYLES;
export const DEFAULT_GENDER_STYLE: GenderLabelStyle = 'woman-man';
export const PROFESSION_PLACEHOLDER = '{profession}';

export function validateGenderStyle(value: unknown): GenderLabelStyle {
  if (typeof value === 'string' && Object.hasOwn(GENDER_LABEL_STYLES, value)) return value as GenderLabelStyle;
  throw new ClassifierError(
    `${show(value)} is not a gender label style; valid styles are ${Object.keys(GENDER_LABEL_STYLES).join(', ')}`,
    { field: 'labelStyle' },
  );
}

/** The gender attribute (classes female, male in that order) in one of the references' label styles. */
export function genderAttribute(style: GenderLabelStyle = DEFAULT_GENDER_STYLE): Attribute {
  const s = GENDER_LABEL_STYLES[validateGenderStyle(style)];
  return {
    name: 'gender',
    classes: [
      { name: 'female', prompts: [...s.female] },
      { name: 'male', prompts: [...s.male] },
    ],
  };
}

/** One class per label prompt, named by the prompt itself (the `classify --labels` form). */
export function attributeFromLabels(labels: readonly string[], name = 'labels'): Attribute {
  if (labels.length < 2) {
    throw new ClassifierError(`an attribute needs at least 2 classes (got ${labels.length})`, { field: 'labels' });
  }
  labels.forEach((l, i) => {
    if (typeof l !== 'string' || l.trim() === '') {
      throw new ClassifierError(`${show(l)} must be a non-empty string`, { field: `labels[${i}]` });
    }
  });
  return validateAttribute({ name, classes: labels.map((l) => ({ name: l, prompts: [l] })) });
}

/**
 * Check an attribute definition (e.g. from a config file): a name, k ≥ 2 classes with distinct
 * non-empty names, each with at least one non-empty prompt.
 */
export function validateAttribute(value: unknown, where = 'attribute'): Attribute {
  if (typeof value !== 'object' || value === null)
    throw new ClassifierError(`${show(value)} must be an object`, { field: where });
  const v = value as { name?: unknown; classes?: unknown };
  if (typeof v.name !== 'string' || v.name.trim() === '') {
    throw new ClassifierError(`${show(v.name)} must be a non-empty string`, { field: `${where}.name` });
  }
  if (!Array.isArray(v.classes) || v.classes.length < 2) {
    throw new ClassifierError(
      `an attribute needs at least 2 classes (got ${Array.isArray(v.classes) ? v.classes.length : show(v.classes)})`,
      { field: `${where}.classes` },
    );
  }
  const seen = new Set<string>();
  const classes = v.classes.map((c: unknown, i: number): AttributeClass => {
    const cc = c as { name?: unknown; prompts?: unknown };
    if (typeof cc?.name !== 'string' || cc.name.trim() === '') {
      throw new ClassifierError(`${show(cc?.name)} must be a non-empty string`, {
        field: `${where}.classes[${i}].name`,
      });
    }
    if (seen.has(cc.name))
      throw new ClassifierError(`${show(cc.name)} appears twice; class names must be distinct`, {
        field: `${where}.classes[${i}].name`,
      });
    seen.add(cc.name);
    if (!Array.isArray(cc.prompts) || cc.prompts.length === 0) {
      throw new ClassifierError(`class ${show(cc.name)} needs at least one label prompt`, {
        field: `${where}.classes[${i}].prompts`,
      });
    }
    const prompts = cc.prompts.map((p: unknown, k: number) => {
      if (typeof p !== 'string' || p.trim() === '') {
        throw new ClassifierError(`${show(p)} (class ${show(cc.name)}) must be a non-empty string`, {
          field: `${where}.classes[${i}].prompts[${k}]`,
        });
      }
      return p;
    });
    return { name: cc.name, prompts };
  });
  return { name: v.name, classes };
}

/** True when any prompt needs a profession. */
export function needsProfession(attribute: Attribute): boolean {
  return attribute.classes.some((c) => c.prompts.some((p) => p.includes(PROFESSION_PLACEHOLDER)));
}

/** The prompts of each class with `{profession}` replaced by `profession`. */
export function resolvePrompts(attribute: Attribute, profession?: string): string[][] {
  return attribute.classes.map((c) =>
    c.prompts.map((p) => {
      if (!p.includes(PROFESSION_PLACEHOLDER)) return p;
      if (profession === undefined || profession.trim() === '') {
        throw new ClassifierError(
          `label prompt ${show(p)} (class ${show(c.name)}) contains ${PROFESSION_PLACEHOLDER} but no profession was given`,
        );
      }
      return p.split(PROFESSION_PLACEHOLDER).join(profession);
    }),
  );
}
