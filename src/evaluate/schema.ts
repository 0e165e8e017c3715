/**
 * The JSON schema of `evaluate.json` (ajv, draft-07) and its validator: every evaluate.json the
 * project writes is validated before it is written, and on reading.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { OutputError } from '../util/errors.js';

const probability = { type: 'number', minimum: 0, maximum: 1 };
const nullableProbability = { type: ['number', 'null'], minimum: 0, maximum: 1 };
const count = { type: 'integer', minimum: 0 };
const metricValue = {
  type: 'object',
  additionalProperties: false,
  required: ['k', 'n', 'value', 'lower', 'upper'],
  properties: { k: count, n: count, value: nullableProbability, lower: probability, upper: probability },
};
const rowMetrics = {
  type: 'object',
  additionalProperties: false,
  required: ['efficacy', 'generality', 'specificity'],
  properties: { efficacy: metricValue, generality: metricValue, specificity: metricValue },
};
const aggregate = (min: number) => ({
  type: 'object',
  additionalProperties: false,
  required: ['value', 'lower', 'upper', 'rows'],
  properties: {
    value: { type: ['number', 'null'], minimum: min, maximum: 1 },
    lower: { type: ['number', 'null'], minimum: min, maximum: 1 },
    upper: { type: ['number', 'null'], minimum: min, maximum: 1 },
    rows: count,
  },
});
const aggregates = (min: number) => ({
  type: 'object',
  additionalProperties: false,
  required: ['efficacy', 'generality', 'specificity'],
  properties: { efficacy: aggregate(min), generality: aggregate(min), specificity: aggregate(min) },
});
const promptResult = {
  type: 'object',
  additionalProperties: false,
  required: ['role', 'position', 'prompt', 'edited', 'k', 'n'],
  properties: {
    role: { enum: ['source', 'positive', 'negative'] },
    position: { type: 'integer', minimum: 0, maximum: 5 },
    prompt: { type: 'string', minLength: 1 },
    edited: { type: 'string', minLength: 1 },
    k: count,
    n: count,
  },
};
const phaseRow = {
  type: 'object',
  additionalProperties: false,
  required: ['metrics', 'prompts'],
  properties: { metrics: rowMetrics, prompts: { type: 'array', minItems: 11, maxItems: 11, items: promptResult } },
};
const change = {
  type: 'object',
  required: ['kind', 'before', 'after', 'difference', 'lower', 'upper', 'z', 'pValue', 'significant'],
  properties: {
    kind: { const: 'share-change' },
    before: { type: 'object' },
    after: { type: 'object' },
    z: { type: 'number' },
    paired: { type: 'object' },
    difference: { type: 'number', minimum: -1, maximum: 1 },
    lower: { type: 'number', minimum: -1, maximum: 1 },
    upper: { type: 'number', minimum: -1, maximum: 1 },
    pValue: probability,
    significant: { type: 'boolean' },
  },
};

export const EVALUATE_SCHEMA = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'time-debias evaluate.json (TIMED efficacy / generality / specificity)',
  type: 'object',
  additionalProperties: false,
  required: [
    'kind',
    'version',
    'fingerprint',
    'settings',
    'dataset',
    'mode',
    'augment',
    'lambdas',
    'images',
    'seeds',
    'issues',
    'rows',
    'summary',
    'plot',
  ],
  properties: {
    kind: { const: 'timed-evaluation' },
    version: { const: 1 },
    fingerprint: { type: 'string', pattern: '^[0-9a-f]{64}$' },
    settings: { type: 'object' },
    dataset: {
      type: 'object',
      additionalProperties: false,
      required: ['file', 'digest', 'rowCount', 'selected'],
      properties: {
        file: { type: 'string' },
        digest: { type: 'string', pattern: '^[0-9a-f]{64}$' },
        rowCount: count,
        selected: { type: 'array', items: count },
      },
    },
    mode: { enum: ['per-row', 'joint'] },
    augment: { type: 'boolean' },
    lambdas: { type: 'array', minItems: 1, items: { type: 'number', exclusiveMinimum: 0 } },
    images: { type: 'integer', minimum: 1 },
    seeds: {
      type: 'object',
      additionalProperties: false,
      required: ['start', 'count', 'perRow'],
      properties: { start: count, count: { type: 'integer', minimum: 1 }, perRow: { type: 'integer', minimum: 11 } },
    },
    issues: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['index', 'line', 'kind', 'message'],
        properties: {
          index: count,
          line: { type: 'integer', minimum: 1 },
          kind: { enum: ['columns', 'empty-prompt', 'alignment', 'too-long'] },
          message: { type: 'string', minLength: 1 },
        },
      },
    },
    rows: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['index', 'line', 'old', 'new', 'before', 'after', 'sheets'],
        properties: {
          index: count,
          line: { type: 'integer', minimum: 1 },
          old: { type: 'string', minLength: 1 },
          new: { type: 'string', minLength: 1 },
          before: phaseRow,
          after: {
            type: 'array',
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['lambda', 'result', 'changes'],
              properties: {
                lambda: { type: 'number', exclusiveMinimum: 0 },
                result: phaseRow,
                changes: {
                  type: 'array',
                  minItems: 3,
                  maxItems: 3,
                  items: {
                    type: 'object',
                    additionalProperties: false,
                    required: ['metric', 'change'],
                    properties: { metric: { enum: ['efficacy', 'generality', 'specificity'] }, change },
                  },
                },
              },
            },
          },
          sheets: { type: 'array', items: { type: 'string' } },
        },
      },
    },
    summary: {
      type: 'object',
      additionalProperties: false,
      required: ['rows', 'before', 'after'],
      properties: {
        rows: count,
        before: aggregates(0),
        after: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['lambda', 'metrics', 'change'],
            properties: {
              lambda: { type: 'number', exclusiveMinimum: 0 },
              metrics: aggregates(0),
              change: aggregates(-1),
            },
          },
        },
      },
    },
    plot: { type: ['string', 'null'] },
  },
} as const;

let compiled: ValidateFunction | undefined;

function describe(e: ErrorObject): string {
  return `evaluate${e.instancePath.replace(/\//g, '.')}: ${e.message ?? e.keyword}`;
}

/** Validate an evaluate document; throws OutputError listing the violations. */
export function validateEvaluateJson(doc: unknown): void {
  if (!compiled) compiled = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true }).compile(EVALUATE_SCHEMA);
  if (!compiled(doc)) {
    const errors = (compiled.errors ?? []).slice(0, 10).map(describe);
    throw new OutputError(`evaluate.json does not match its schema:\n  - ${errors.join('\n  - ')}`);
  }
  const d = doc as { lambdas: number[]; rows: { after: { lambda: number }[] }[]; summary: { after: unknown[] } };
  if (d.summary.after.length !== d.lambdas.length)
    throw new OutputError(
      `evaluate.summary.after has ${d.summary.after.length} entries for ${d.lambdas.length} λ values`,
    );
  d.rows.forEach((r, i) => {
    if (r.after.length !== d.lambdas.length)
      throw new OutputError(`evaluate.rows[${i}].after has ${r.after.length} entries for ${d.lambdas.length} λ values`);
  });
}
