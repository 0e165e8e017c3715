/**
 * The edit file `edit.safetensors` (issue 12 item 1): a whole TIME edit as one d×d matrix.
 *
 * Every edit this tool makes — one pair, or the joint solve with per-pair strengths and
 * preservation rows — changes each edited site as W′ = W·M with the same M (solve.ts eq. 2, 5):
 *
 *     M = (I + Σ_i w_i c*_i c_iᵀ)(I + Σ_i w_i c_i c_iᵀ)⁻¹        (w_i = 1/λ_p for pair rows, μ_q for preserved ones)
 *
 * M depends only on the text encoder's rows and the strengths, not on W. So the file holds
 *
 *   tensor  "M"           [d, d] F32, row-major: W′ = W·M for W [out, d] (torch layout)
 *   metadata "format"     "pt" (what diffusers/safetensors readers expect)
 *   metadata "time_edit"  one JSON string (safetensors metadata is string → string), schema below:
 *     kind, formatVersion, form ("matrix": W′ = W·M at every listed site; a later version may store
 *     per-site ΔW for settings that break this form, and says so here), d, textEncoder and unet
 *     (fingerprint.ts: the text encoder it was computed with, the UNet it was computed and tuned on),
 *     sites, projections, layers, edit (the same record as time-edit.json, manifest.ts: method,
 *     solver, λ, pairs with their λ_p and rows, preservation, and for debias the measured shares),
 *     tool, date.
 *
 * Loading checks the safetensors rules (formats/safetensors.ts), then: exactly one tensor "M", F32,
 * shape [d, d] with the metadata's d, every value finite, and the metadata against the schema (ajv).
 */
import { Ajv, type ErrorObject } from 'ajv';
import {
  encodeSafetensors,
  readSafetensorsHeader,
  readTensorData,
  toFloat32,
  writeSafetensors,
} from '../formats/safetensors.js';
import { toolVersion } from '../model/export.js';
import {
  fingerprintOnnx,
  sampleStoredWeight,
  type TextEncoderFingerprint,
  type UnetFingerprint,
} from '../model/fingerprint.js';
import type { SdModel } from '../model/folder.js';
import type { EditSite, SiteProjection } from '../model/sites.js';
import { EditError, show } from '../util/errors.js';
import { EDIT_MANIFEST_SCHEMA, type EditRecord } from './manifest.js';

export const EDIT_FILE = 'edit.safetensors';
export const EDIT_FILE_FORMAT_VERSION = 1;
export const EDIT_METADATA_KEY = 'time_edit';

export interface EditFileMetadata {
  kind: 'time-debias-edit';
  formatVersion: number;
  /** 'matrix': W′ = W·M at every listed site. */
  form: 'matrix';
  d: number;
  textEncoder: TextEncoderFingerprint;
  /** The UNet the edit was computed (and, for debias, tuned) on. */
  unet: UnetFingerprint | null;
  /** The sites M applies to (diffusers module paths), after `projections` / `layers` selection. */
  sites: string[];
  projections: SiteProjection[];
  layers: string[] | null;
  /** What was edited, as time-edit.json records it (pairs, strengths, preservation, debias shares). */
  edit: EditRecord;
  tool: { name: string; version: string };
  /** Files made before exports became reproducible carry the export date; new ones do not. */
  date?: string;
}

export interface EditFile {
  path: string;
  M: Float32Array;
  d: number;
  meta: EditFileMetadata;
}

const num = { type: 'number' } as const;
const str = { type: 'string' } as const;
const strings = { type: 'array', items: str } as const;

/** time-edit.json's schema without the export's own facts: the schema of an EditRecord. */
function recordSchema(): Record<string, unknown> {
  const exportOnly = ['tool', 'date', 'sourceModel', 'editedSites'];
  const full = structuredClone(EDIT_MANIFEST_SCHEMA) as unknown as {
    required: string[];
    properties: Record<string, unknown>;
    [k: string]: unknown;
  };
  const { $id: _id, title: _title, ...rest } = full;
  return {
    ...rest,
    required: full.required.filter((k) => !exportOnly.includes(k)),
    properties: Object.fromEntries(Object.entries(full.properties).filter(([k]) => !exportOnly.includes(k))),
  };
}

export const EDIT_METADATA_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: [
    'kind',
    'formatVersion',
    'form',
    'd',
    'textEncoder',
    'unet',
    'sites',
    'projections',
    'layers',
    'edit',
    'tool',
  ],
  properties: {
    kind: { const: 'time-debias-edit' },
    formatVersion: { type: 'integer', minimum: 1 },
    form: { enum: ['matrix'] },
    d: { type: 'integer', minimum: 1 },
    textEncoder: {
      type: 'object',
      additionalProperties: false,
      required: ['vocabSize', 'd', 'ids', 'dims', 'values', 'vocabSha256'],
      properties: {
        vocabSize: { type: 'integer', minimum: 1 },
        d: { type: 'integer', minimum: 1 },
        ids: { type: 'array', items: { type: 'integer', minimum: 0 }, minItems: 1 },
        dims: { type: 'array', items: { type: 'integer', minimum: 0 }, minItems: 1 },
        values: { type: 'array', items: num, minItems: 1 },
        vocabSha256: { anyOf: [{ type: 'string', pattern: '^[0-9a-f]{64}$' }, { type: 'null' }] },
      },
    },
    unet: {
      anyOf: [
        {
          type: 'object',
          additionalProperties: false,
          required: ['sites'],
          properties: { sites: { type: 'object', additionalProperties: { type: 'array', items: num } } },
        },
        { type: 'null' },
      ],
    },
    sites: { ...strings, minItems: 1 },
    projections: { type: 'array', items: { enum: ['to_k', 'to_v'] }, minItems: 1, uniqueItems: true },
    layers: { anyOf: [{ ...strings, minItems: 1 }, { type: 'null' }] },
    edit: recordSchema(),
    tool: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'version'],
      properties: { name: str, version: str },
    },
    date: str,
  },
} as const;

let validate: ReturnType<Ajv['compile']> | null = null;

/** Check edit metadata against the schema; EditError listing every violation. */
export function checkEditMetadata(meta: unknown, where: string, field?: string): asserts meta is EditFileMetadata {
  validate ??= new Ajv({ allErrors: true, strict: true, allowUnionTypes: true }).compile(EDIT_METADATA_SCHEMA);
  if (!validate(meta)) {
    const errors = (validate.errors ?? []).slice(0, 6).map((e: ErrorObject) => `${e.instancePath || '/'} ${e.message}`);
    throw new EditError(`${where}: the edit metadata does not match its schema: ${errors.join('; ')}`, { field });
  }
}

/** The bytes of an edit file (for writing it inside an export's temporary folder). */
export function encodeEditFile(M: Float32Array, meta: EditFileMetadata): Uint8Array {
  checkEditMetadata(meta, 'edit file');
  checkMatrix(M, meta.d, 'edit file');
  return encodeSafetensors(
    [{ name: 'M', dtype: 'F32', shape: [meta.d, meta.d], data: new Uint8Array(M.buffer, M.byteOffset, M.byteLength) }],
    { format: 'pt', [EDIT_METADATA_KEY]: JSON.stringify(meta) },
  );
}

/** Write `edit.safetensors` atomically (temporary file + rename). M must be d×d and finite. */
export function writeEditFile(path: string, M: Float32Array, meta: EditFileMetadata): void {
  checkEditMetadata(meta, show(path));
  checkMatrix(M, meta.d, show(path));
  writeSafetensors(
    path,
    [{ name: 'M', dtype: 'F32', shape: [meta.d, meta.d], data: new Uint8Array(M.buffer, M.byteOffset, M.byteLength) }],
    { format: 'pt', [EDIT_METADATA_KEY]: JSON.stringify(meta) },
  );
}

/** Read and check an edit file (see the module comment for the rules); errors name `field`. */
export function readEditFile(path: string, field = 'editFile'): EditFile {
  const header = readSafetensorsHeader(path);
  const where = show(path);
  const raw = header.metadata?.[EDIT_METADATA_KEY];
  if (raw === undefined) {
    throw new EditError(`${where}: no ${show(EDIT_METADATA_KEY)} metadata; not an edit file written by time-debias`, {
      field,
    });
  }
  let meta: unknown;
  try {
    meta = JSON.parse(raw);
  } catch (error) {
    throw new EditError(`${where}: the ${EDIT_METADATA_KEY} metadata is not valid JSON (${(error as Error).message})`, {
      cause: error,
      field,
    });
  }
  if (meta !== null && typeof meta === 'object' && (meta as { form?: unknown }).form !== 'matrix') {
    throw new EditError(
      `${where}: form ${show((meta as { form?: unknown }).form)} is not one this version applies; it applies form "matrix" (W′ = W·M)`,
      { field },
    );
  }
  checkEditMetadata(meta, where, field);
  const names = header.tensors.map((t) => t.name);
  if (names.length !== 1 || names[0] !== 'M') {
    throw new EditError(
      `${where}: holds tensors ${names.map((n) => show(n)).join(', ') || 'none'}; an edit file holds exactly one, "M"`,
      { field },
    );
  }
  const t = header.byName.get('M');
  if (!t) throw new EditError(`${where}: no tensor "M"`, { field });
  if (t.dtype !== 'F32') throw new EditError(`${where}: M is ${t.dtype}; it must be F32`, { field });
  if (t.shape.length !== 2 || t.shape[0] !== meta.d || t.shape[1] !== meta.d) {
    throw new EditError(
      `${where}: M has shape [${t.shape.join(', ')}]; the metadata's d = ${meta.d} needs [${meta.d}, ${meta.d}]`,
      { field },
    );
  }
  if (meta.textEncoder.d !== meta.d || meta.edit.d !== meta.d) {
    throw new EditError(
      `${where}: the text-encoder fingerprint has d = ${meta.textEncoder.d}, the record d = ${meta.edit.d}, the file d = ${meta.d}; they must agree`,
      { field },
    );
  }
  const M = toFloat32(readTensorData(header, 'M'), 'F32', 'M');
  checkMatrix(M, meta.d, where, field);
  return { path, M, d: meta.d, meta };
}

function checkMatrix(M: Float32Array, d: number, where: string, field?: string): void {
  if (M.length !== d * d) throw new EditError(`${where}: M has ${M.length} values; d × d = ${d * d}`, { field });
  for (let i = 0; i < M.length; i++) {
    if (!Number.isFinite(M[i] as number)) {
      throw new EditError(
        `${where}: M[${Math.floor(i / d)}, ${i % d}] = ${M[i]}; every value of M must be finite (NaN or Infinity would break every weight it touches)`,
        { field },
      );
    }
  }
}

/** The metadata of an edit computed now by this tool (kind, version, form, tool and date filled in). */
export function editMetadata(facts: {
  textEncoder: TextEncoderFingerprint;
  unet: UnetFingerprint | null;
  edit: EditRecord;
}): EditFileMetadata {
  return {
    kind: 'time-debias-edit',
    formatVersion: EDIT_FILE_FORMAT_VERSION,
    form: 'matrix',
    d: facts.edit.d,
    textEncoder: facts.textEncoder,
    unet: facts.unet,
    sites: [...facts.edit.sites],
    projections: [...facts.edit.projections],
    layers: facts.edit.layers ? [...facts.edit.layers] : null,
    edit: facts.edit,
    tool: { name: 'time-debias', version: toolVersion() },
  };
}

/**
 * The edit file of an ONNX model's edit: its text encoder's fingerprint, the UNet's (from the site
 * weights as stored), M and the record.
 */
export function onnxEditFile(
  model: SdModel,
  stored: readonly { site: EditSite; W: Float32Array; transposed: boolean }[],
  M: Float32Array,
  edit: EditRecord,
): Uint8Array {
  const meta = editMetadata({
    textEncoder: fingerprintOnnx(model.files.textEncoder, model.components.tokenizer),
    unet: {
      sites: Object.fromEntries(
        stored.map(({ site, W, transposed }) => [site.name, sampleStoredWeight(W, site.out, site.d, transposed)]),
      ),
    },
    edit,
  });
  return encodeEditFile(M, meta);
}
