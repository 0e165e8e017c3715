/**
 * The JSON schema of `audit.json` (ajv, draft-07) and its validator. Every audit.json the project
 * writes is validated before it is written, and every one it reads (compare, reports) after.
 */
import { Ajv, type ErrorObject } from 'ajv';
import { OutputError } from '../util/errors.js';

const nullableNumber = { type: ['number', 'null'] };
const probability = { type: 'number', minimum: 0, maximum: 1 };
const share = {
  type: 'object',
  additionalProperties: false,
  required: ['k', 'n', 'p', 'lower', 'upper'],
  properties: {
    k: { type: 'integer', minimum: 0 },
    n: { type: 'integer', minimum: 0 },
    p: { type: ['number', 'null'], minimum: 0, maximum: 1 },
    lower: probability,
    upper: probability,
  },
};

export const AUDIT_SCHEMA = {
  $id: 'https://time-debias.dev/schemas/audit.json',
  title: 'time-debias audit',
  type: 'object',
  additionalProperties: false,
  required: ['kind', 'version', 'fingerprint', 'settings', 'plan', 'classes', 'professions', 'summary', 'images'],
  properties: {
    kind: { const: 'audit' },
    version: { const: 1 },
    fingerprint: { type: 'string', pattern: '^[0-9a-f]{64}$' },
    settings: {
      type: 'object',
      required: ['source', 'classifier', 'attribute', 'threshold'],
      properties: {
        source: { type: 'object', required: ['kind'], properties: { kind: { type: 'string' } } },
        classifier: {
          type: 'object',
          required: ['path', 'digest', 'logitScale'],
          properties: {
            path: { type: 'string' },
            digest: { type: 'string' },
            logitScale: { type: 'number', exclusiveMinimum: 0 },
            /** how images became pixel_values (src/classify/preprocess-pil.ts); absent in audits made before it was recorded */
            preprocess: { enum: ['transformers', 'pil'] },
          },
        },
        attribute: {
          type: 'object',
          required: ['name', 'classes'],
          properties: {
            name: { type: 'string', minLength: 1 },
            classes: {
              type: 'array',
              minItems: 2,
              items: {
                type: 'object',
                required: ['name', 'prompts'],
                properties: {
                  name: { type: 'string', minLength: 1 },
                  prompts: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
                },
              },
            },
          },
        },
        threshold: { type: ['number', 'null'], exclusiveMinimum: 0, maximum: 1 },
      },
    },
    plan: {
      type: 'object',
      additionalProperties: false,
      required: ['source', 'professions', 'professionList', 'templates', 'seeds'],
      properties: {
        source: { enum: ['generator', 'images'] },
        professions: {
          type: 'array',
          minItems: 1,
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['profession', 'article'],
            properties: { profession: { type: 'string', minLength: 1 }, article: { enum: ['a', 'an'] } },
          },
        },
        professionList: { type: 'string' },
        templates: { type: 'array', items: { type: 'string', pattern: '\\{profession\\}' } },
        seeds: {
          oneOf: [
            { type: 'null' },
            {
              type: 'object',
              additionalProperties: false,
              required: ['kind', 'use', 'start', 'count'],
              properties: {
                kind: { const: 'seed-plan' },
                use: { enum: ['tuning', 'verification', 'evaluation'] },
                start: { type: 'integer', minimum: 0 },
                count: { type: 'integer', minimum: 1 },
                perTemplate: { enum: ['shared', 'distinct'] },
              },
            },
          ],
        },
      },
    },
    classes: { type: 'array', minItems: 2, items: { type: 'string', minLength: 1 } },
    professions: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: [
          'profession',
          'article',
          'images',
          'classified',
          'unclear',
          'counts',
          'share',
          'delta',
          'seedGroups',
        ],
        properties: {
          profession: { type: 'string', minLength: 1 },
          article: { enum: ['a', 'an'] },
          images: { type: 'integer', minimum: 0 },
          classified: { type: 'integer', minimum: 0 },
          unclear: { type: 'integer', minimum: 0 },
          counts: { type: 'object', additionalProperties: { type: 'integer', minimum: 0 } },
          share,
          delta: {
            type: 'object',
            additionalProperties: false,
            required: ['value', 'lower', 'upper'],
            properties: {
              value: { type: ['number', 'null'], minimum: 0, maximum: 1 },
              lower: probability,
              upper: probability,
            },
          },
          seedGroups: { type: 'array', items: nullableNumber },
        },
      },
    },
    summary: {
      type: 'object',
      additionalProperties: false,
      required: ['images', 'classified', 'unclear', 'targetClass', 'targetShare', 'share', 'meanDelta', 'seedGroups'],
      properties: {
        images: { type: 'integer', minimum: 0 },
        classified: { type: 'integer', minimum: 0 },
        unclear: { type: 'integer', minimum: 0 },
        targetClass: { type: 'string', minLength: 1 },
        targetShare: { type: 'number', exclusiveMinimum: 0, exclusiveMaximum: 1 },
        share,
        meanDelta: {
          type: 'object',
          additionalProperties: false,
          required: ['value', 'lower', 'upper', 'professions', 'bootstrap'],
          properties: {
            value: nullableNumber,
            lower: nullableNumber,
            upper: nullableNumber,
            professions: { type: 'integer', minimum: 0 },
            parityFloor: nullableNumber,
            bootstrap: {
              type: 'object',
              additionalProperties: false,
              required: ['samples', 'seed', 'level'],
              properties: {
                samples: { type: 'integer', minimum: 1 },
                seed: { type: 'integer' },
                level: { type: 'number' },
              },
            },
          },
        },
        seedGroups: {
          type: 'object',
          additionalProperties: false,
          required: ['groups', 'mean', 'std', 'values'],
          properties: {
            groups: { type: 'integer', minimum: 1 },
            mean: nullableNumber,
            std: nullableNumber,
            values: { type: 'array', items: nullableNumber },
          },
        },
      },
    },
    images: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['profession', 'prompt', 'template', 'seed', 'file', 'kind', 'label', 'probabilities'],
        properties: {
          profession: { type: 'string', minLength: 1 },
          prompt: { type: ['string', 'null'] },
          template: { type: ['string', 'null'] },
          seed: { type: ['integer', 'null'], minimum: 0 },
          file: { type: ['string', 'null'] },
          kind: { enum: ['label', 'unclear'] },
          label: { type: 'string', minLength: 1 },
          probabilities: { type: 'object', minProperties: 2, additionalProperties: probability },
        },
      },
    },
  },
} as const;

let compiled: ReturnType<Ajv['compile']> | null = null;

function describe(e: ErrorObject): string {
  return `audit${e.instancePath.replace(/\//g, '.')}: ${e.message ?? e.keyword}`;
}

/** Validate an audit document; throws OutputError listing every violation. */
export function validateAuditJson(doc: unknown): void {
  if (!compiled) compiled = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true }).compile(AUDIT_SCHEMA);
  if (!compiled(doc)) {
    const errors = (compiled.errors ?? []).slice(0, 10).map(describe);
    throw new OutputError(`audit.json does not match its schema:\n  - ${errors.join('\n  - ')}`);
  }
  // Cross-field rules a schema cannot state.
  const d = doc as { classes: string[]; images: { label: string; probabilities: Record<string, number> }[] };
  d.images.forEach((img, i) => {
    if (!d.classes.includes(img.label))
      throw new OutputError(`audit.images[${i}].label: "${img.label}" is not one of ${d.classes.join(', ')}`);
    const sum = Object.values(img.probabilities).reduce((a, b) => a + b, 0);
    if (Math.abs(sum - 1) > 1e-4) throw new OutputError(`audit.images[${i}].probabilities sum to ${sum}, not 1`);
  });
}
