/**
 * `time-edit.json`, the one manifest of an edited model folder, whoever made it (`time-debias edit`,
 * the debias job, and what comes next: `apply`, `evaluate`). One typed shape (`EditManifest`), one
 * JSON schema (ajv, draft-07), validated before it is written (edit/commit.ts) and after it is read
 * (`readEditManifest`). README "time-edit.json" documents every field.
 *
 *   kind, version          'time-edit', 1
 *   method                 TIME, the objective, the solver (woodbury | cholesky), the apply form, rank
 *   lambda                 TIME's λ; null when every pair carries its own λ_p (the debias job)
 *   augment, projections, layers, pairsFile
 *   pairs                  source, destination, weight (λ/λ_p, null without a global λ), λ_p, rows, prompts
 *   preserve               prompts, μ (or one μ_q per prompt), rows; null without preservation
 *   rows, d, sites, warnings
 *   debias                 optional: the debias job's section (strategy, attribute, target, professions)
 *   tool, date, sourceModel (folder, format, precision, d, sha256 of the edited source files),
 *   editedSites            per site: initializer, shape [out, d], dtype, ‖W′ − W‖_F / ‖W‖_F
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import type { SourceFileRecord } from '../model/file-hash.js';
import type { SdModelFormat, SdPrecision } from '../model/folder.js';
import type { SiteProjection } from '../model/sites.js';
import { ModelFormatError, OutputError } from '../util/errors.js';

export const EDIT_MANIFEST_FILE = 'time-edit.json';
export const EDIT_MANIFEST_VERSION = 1;

export const TIME_METHOD = Object.freeze({
  name: 'TIME',
  reference: 'Orgad, Kawar, Belinkov, arXiv 2303.08084',
  objective: 'Σ_p (1/λ_p) Σ_{i∈p} ‖W′c_i − W c*_i‖² + μ Σ_q ‖W′c_q − W c_q‖² + ‖W′ − W‖²_F;  W′ = W·M',
});

export interface ManifestPair {
  source: string;
  destination: string;
  /** λ / λ_p; null when the edit has no global λ (every pair tuned on its own). */
  weight: number | null;
  /** λ_p: the pair's rows have weight 1/λ_p. */
  lambda: number;
  /** Rows of this pair (77, or 4 × 77 with augmentations). */
  rows: number;
  /** Source prompts of its rows: the pair's source, then the augmentations. */
  prompts: string[];
}

export interface ManifestPreserve {
  prompts: string[];
  /** μ of every preserved prompt, unless `weights` gives one per prompt. */
  weight: number;
  /** μ_q per prompt (same order as `prompts`) when they differ; null otherwise. */
  weights: number[] | null;
  rows: number;
}

/** The share of the target class in an audit, with its 95 % interval and Δ. */
export interface ManifestShare {
  share: number | null;
  lower: number;
  upper: number;
  delta: number | null;
  n: number;
}

/** The debias job's section (src/debias): how the pairs' strengths were found. */
export interface DebiasManifestSection {
  strategy: 'ed50' | 'uce';
  attribute: Record<string, unknown>;
  target: { class: string; share: number };
  augment: boolean;
  preserve: { prompts: string[]; weight: number; unrelatedWeight: number };
  professions: {
    profession: string;
    source: string;
    destination: string;
    destinationClass: string;
    /** s_p = 1/λ_p */
    strength: number;
    lambda: number;
    uceWeight?: number;
    rows: number;
    before: ManifestShare | null;
    after: ManifestShare | null;
  }[];
}

/** What was edited: the part of the manifest the edit core writes (the export adds the rest). */
export interface EditRecord {
  kind: 'time-edit';
  version: typeof EDIT_MANIFEST_VERSION;
  method: typeof TIME_METHOD & {
    solver: 'woodbury' | 'cholesky';
    applyForm: 'dense' | 'lowRank';
    /** Rank of the update when the solve was Woodbury. */
    rank: number | null;
  };
  lambda: number | null;
  augment: boolean;
  projections: SiteProjection[];
  layers: string[] | null;
  pairsFile: string | null;
  pairs: ManifestPair[];
  preserve: ManifestPreserve | null;
  rows: { total: number; pairs: number; preserve: number; perPrompt: number };
  d: number;
  sites: string[];
  warnings: string[];
  debias?: DebiasManifestSection;
}

/** The whole time-edit.json. */
export interface EditManifest extends EditRecord {
  tool: { name: 'time-debias'; version: string };
  /** Manifests made before exports became reproducible carry the export date; new ones do not. */
  date?: string;
  sourceModel: {
    dir: string;
    format: SdModelFormat;
    precision: SdPrecision;
    d: number;
    files: SourceFileRecord[];
  };
  editedSites: {
    name: string;
    projection: SiteProjection;
    initializer: string;
    shape: [number, number];
    dtype: string;
    relativeChange: number;
  }[];
}

const positive = { type: 'number', exclusiveMinimum: 0 };
const count = { type: 'integer', minimum: 0 };
const prompt = { type: 'string', minLength: 1 };
const strings = { type: 'array', items: { type: 'string' } };
const share = {
  type: ['object', 'null'],
  additionalProperties: false,
  required: ['share', 'lower', 'upper', 'delta', 'n'],
  properties: {
    share: { type: ['number', 'null'], minimum: 0, maximum: 1 },
    lower: { type: 'number', minimum: 0, maximum: 1 },
    upper: { type: 'number', minimum: 0, maximum: 1 },
    delta: { type: ['number', 'null'], minimum: 0, maximum: 1 },
    n: count,
  },
};

export const EDIT_MANIFEST_SCHEMA = {
  $id: 'https://time-debias.dev/schemas/time-edit.json',
  title: 'time-debias edited model manifest (time-edit.json)',
  type: 'object',
  additionalProperties: false,
  required: [
    'kind',
    'version',
    'method',
    'lambda',
    'augment',
    'projections',
    'layers',
    'pairsFile',
    'pairs',
    'preserve',
    'rows',
    'd',
    'sites',
    'warnings',
    'tool',
    'sourceModel',
    'editedSites',
  ],
  properties: {
    kind: { const: 'time-edit' },
    version: { const: EDIT_MANIFEST_VERSION },
    method: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'reference', 'objective', 'solver', 'applyForm', 'rank'],
      properties: {
        name: { const: 'TIME' },
        reference: { type: 'string' },
        objective: { type: 'string' },
        solver: { enum: ['woodbury', 'cholesky'] },
        applyForm: { enum: ['dense', 'lowRank'] },
        rank: { type: ['integer', 'null'], minimum: 1 },
      },
    },
    lambda: { type: ['number', 'null'], exclusiveMinimum: 0 },
    augment: { type: 'boolean' },
    projections: { type: 'array', minItems: 1, uniqueItems: true, items: { enum: ['to_k', 'to_v'] } },
    layers: { type: ['array', 'null'], minItems: 1, items: prompt },
    pairsFile: { type: ['string', 'null'] },
    pairs: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['source', 'destination', 'weight', 'lambda', 'rows', 'prompts'],
        properties: {
          source: prompt,
          destination: prompt,
          weight: { type: ['number', 'null'], exclusiveMinimum: 0 },
          lambda: positive,
          rows: { type: 'integer', minimum: 1 },
          prompts: { type: 'array', minItems: 1, items: prompt },
        },
      },
    },
    preserve: {
      type: ['object', 'null'],
      additionalProperties: false,
      required: ['prompts', 'weight', 'weights', 'rows'],
      properties: {
        prompts: { type: 'array', minItems: 1, items: prompt },
        weight: positive,
        weights: { type: ['array', 'null'], items: { type: 'number', minimum: 0 } },
        rows: count,
      },
    },
    rows: {
      type: 'object',
      additionalProperties: false,
      required: ['total', 'pairs', 'preserve', 'perPrompt'],
      properties: { total: count, pairs: count, preserve: count, perPrompt: { type: 'integer', minimum: 1 } },
    },
    d: { type: 'integer', minimum: 1 },
    sites: { type: 'array', minItems: 1, items: prompt },
    warnings: strings,
    debias: {
      type: 'object',
      additionalProperties: false,
      required: ['strategy', 'attribute', 'target', 'augment', 'preserve', 'professions'],
      properties: {
        strategy: { enum: ['ed50', 'uce'] },
        attribute: { type: 'object' },
        target: {
          type: 'object',
          required: ['class', 'share'],
          properties: { class: { type: 'string' }, share: { type: 'number', minimum: 0, maximum: 1 } },
        },
        augment: { type: 'boolean' },
        preserve: {
          type: 'object',
          required: ['prompts', 'weight', 'unrelatedWeight'],
          properties: { prompts: strings, weight: { type: 'number' }, unrelatedWeight: { type: 'number' } },
        },
        professions: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['profession', 'source', 'destination', 'destinationClass', 'strength', 'lambda', 'rows'],
            properties: {
              profession: prompt,
              source: prompt,
              destination: prompt,
              destinationClass: { type: 'string' },
              strength: positive,
              lambda: positive,
              uceWeight: { type: 'number' },
              rows: { type: 'integer', minimum: 1 },
              before: share,
              after: share,
            },
          },
        },
      },
    },
    tool: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'version'],
      properties: { name: { const: 'time-debias' }, version: { type: 'string' } },
    },
    date: { type: 'string', minLength: 1 },
    sourceModel: {
      type: 'object',
      additionalProperties: false,
      required: ['dir', 'format', 'precision', 'd', 'files'],
      properties: {
        dir: { type: 'string' },
        format: { enum: ['diffusers-onnx', 'optimum-onnx'] },
        precision: { enum: ['float32', 'float16', 'mixed'] },
        d: { type: 'integer', minimum: 1 },
        files: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['path', 'bytes', 'sha256'],
            properties: {
              path: { type: 'string' },
              bytes: count,
              sha256: { type: 'string', pattern: '^[0-9a-f]{64}$' },
            },
          },
        },
      },
    },
    editedSites: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'projection', 'initializer', 'shape', 'dtype', 'relativeChange'],
        properties: {
          name: prompt,
          projection: { enum: ['to_k', 'to_v'] },
          initializer: { type: 'string' },
          shape: { type: 'array', minItems: 2, maxItems: 2, items: { type: 'integer', minimum: 1 } },
          dtype: { type: 'string' },
          relativeChange: { type: 'number', minimum: 0 },
        },
      },
    },
  },
} as const;

let compiled: ReturnType<Ajv['compile']> | null = null;

/**
 * The problems of `doc` as a time-edit.json (schema, then cross-field rules), [] when it is one.
 * Cross-field: the sites and editedSites name the same sites; rows add up; every pair's `prompts`
 * has 4 entries with `augment`, 1 without.
 */
export function editManifestProblems(doc: unknown): string[] {
  if (!compiled)
    compiled = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true }).compile(EDIT_MANIFEST_SCHEMA);
  if (!compiled(doc)) return (compiled.errors ?? []).slice(0, 10).map(describe);
  const m = doc as EditManifest;
  const problems: string[] = [];
  const edited = m.editedSites.map((s) => s.name);
  if (JSON.stringify(edited) !== JSON.stringify(m.sites)) {
    problems.push(`sites (${m.sites.length}) and editedSites (${edited.length}) do not name the same sites in order`);
  }
  const pairRows = m.pairs.reduce((a, p) => a + p.rows, 0);
  if (m.rows.pairs !== pairRows) problems.push(`rows.pairs is ${m.rows.pairs}, the pairs' rows add up to ${pairRows}`);
  if (m.rows.total !== m.rows.pairs + m.rows.preserve) {
    problems.push(`rows.total ${m.rows.total} ≠ rows.pairs ${m.rows.pairs} + rows.preserve ${m.rows.preserve}`);
  }
  m.pairs.forEach((p, i) => {
    const expected = m.augment ? 4 : 1;
    if (p.prompts.length !== expected) {
      problems.push(`pairs[${i}].prompts has ${p.prompts.length} prompts; augment ${m.augment} means ${expected}`);
    }
  });
  if (m.preserve?.weights && m.preserve.weights.length !== m.preserve.prompts.length) {
    problems.push(`preserve.weights has ${m.preserve.weights.length} entries for ${m.preserve.prompts.length} prompts`);
  }
  return problems;
}

/** Throw an OutputError unless `doc` is a valid time-edit.json (used before writing one). */
export function assertEditManifest(doc: unknown): asserts doc is EditManifest {
  const problems = editManifestProblems(doc);
  if (problems.length > 0) {
    throw new OutputError(`time-edit.json does not match its schema:\n  - ${problems.join('\n  - ')}`, {
      field: 'manifest',
    });
  }
}

/** Read and validate `<modelDir>/time-edit.json` (ModelFormatError when absent or invalid). */
export function readEditManifest(modelDir: string): EditManifest {
  const path = join(modelDir, EDIT_MANIFEST_FILE);
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'));
  } catch (cause) {
    throw new ModelFormatError(`${path} cannot be read as JSON: ${(cause as Error).message}`, { cause });
  }
  const problems = editManifestProblems(doc);
  if (problems.length > 0) {
    throw new ModelFormatError(`${path} is not a valid time-edit.json:\n  - ${problems.join('\n  - ')}`);
  }
  return doc as EditManifest;
}

function describe(e: ErrorObject): string {
  const at = e.instancePath ? e.instancePath.slice(1).replace(/\//g, '.') : '(top level)';
  const extra =
    e.keyword === 'additionalProperties'
      ? ` (${(e.params as { additionalProperty: string }).additionalProperty})`
      : e.keyword === 'enum'
        ? ` (${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')})`
        : '';
  return `${at} ${e.message}${extra}`;
}
