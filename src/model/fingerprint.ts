/**
 * Fingerprints that survive a change of format and dtype (issue 12 item 1): the same CLIP text
 * model as ONNX fp32, diffusers fp16 or inside a single-file checkpoint must match, another one must
 * not.
 *
 *   text encoder   the vocabulary size V and width d of the token-embedding table, 32 of its rows
 *                  (ids spread evenly over 0..V−1) at 8 columns (spread evenly over 0..d−1), and —
 *                  where the model carries a tokenizer — sha256 of its vocabulary ("token\tid\n" in
 *                  id order, the same whether read from vocab.json or tokenizer.json).
 *   UNet           4 values of every cross-attention weight W [out, d] (torch layout), at fixed
 *                  relative positions, per site name.
 *
 * Values are compared with |a − b| ≤ 1e-2·|a| + 1e-3·rms(a): bfloat16 rounding moves a value by at
 * most 2⁻⁹ ≈ 0.2 % and float16 by 2⁻¹¹, while two different trainings differ by the values' own size.
 * A vocabulary digest is compared only when both sides have one (single files carry no tokenizer).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensorsHeader, toFloat32 } from '../formats/safetensors.js';
import { readFileRange } from '../onnx/external.js';
import { indexGraph, traceBack } from '../onnx/graph.js';
import { bytesToFloat32, openOnnxModel, readTensorBytes } from '../onnx/model-file.js';
import { DATA_TYPE_BYTES } from '../onnx/proto.js';
import { ModelFormatError, show } from '../util/errors.js';

export const FINGERPRINT_IDS = 32;
export const FINGERPRINT_DIMS = 8;
const REL_TOL = 1e-2;
const RMS_TOL = 1e-3;

export interface TextEncoderFingerprint {
  vocabSize: number;
  d: number;
  ids: number[];
  dims: number[];
  /** ids.length × dims.length values, row-major. */
  values: number[];
  /** sha256 of the tokenizer's vocabulary, or null when the model has no tokenizer. */
  vocabSha256: string | null;
}

export interface UnetFingerprint {
  /** Site name → 4 sampled values of W [out, d]. */
  sites: Record<string, number[]>;
}

export interface FingerprintComparison {
  match: boolean;
  /** Why not, one line each (empty when they match). */
  differences: string[];
}

/** Reads row `id` of a [V, d] table as float32. */
type RowReader = (id: number) => Float32Array;

function sampledIndex(k: number, count: number, size: number): number {
  return count === 1 ? 0 : Math.round((k * (size - 1)) / (count - 1));
}

export function fingerprintFromRows(
  vocabSize: number,
  d: number,
  row: RowReader,
  vocabSha256: string | null,
): TextEncoderFingerprint {
  const ids = [
    ...new Set(
      Array.from({ length: Math.min(FINGERPRINT_IDS, vocabSize) }, (_, k) =>
        sampledIndex(k, Math.min(FINGERPRINT_IDS, vocabSize), vocabSize),
      ),
    ),
  ];
  const dims = [
    ...new Set(
      Array.from({ length: Math.min(FINGERPRINT_DIMS, d) }, (_, k) =>
        sampledIndex(k, Math.min(FINGERPRINT_DIMS, d), d),
      ),
    ),
  ];
  const values: number[] = [];
  for (const id of ids) {
    const r = row(id);
    for (const j of dims) values.push(r[j] as number);
  }
  return { vocabSize, d, ids, dims, values, vocabSha256 };
}

/** sha256 of a vocabulary {token: id}, as "token\tid\n" lines in id order. */
export function vocabDigest(vocab: Record<string, number>): string {
  const entries = Object.entries(vocab).sort((a, b) => a[1] - b[1]);
  const h = createHash('sha256');
  for (const [t, id] of entries) h.update(`${t}\t${id}\n`);
  return h.digest('hex');
}

/** The vocabulary digest of a tokenizer folder (vocab.json, else tokenizer.json's model.vocab), or null. */
export function tokenizerVocabDigest(dir: string | null): string | null {
  if (!dir) return null;
  const vocabJson = join(dir, 'vocab.json');
  const tokJson = join(dir, 'tokenizer.json');
  try {
    if (existsSync(vocabJson)) return vocabDigest(JSON.parse(readFileSync(vocabJson, 'utf8')));
    if (existsSync(tokJson)) {
      const vocab = (JSON.parse(readFileSync(tokJson, 'utf8')) as { model?: { vocab?: Record<string, number> } }).model
        ?.vocab;
      return vocab ? vocabDigest(vocab) : null;
    }
  } catch (error) {
    throw new ModelFormatError(
      `tokenizer ${show(dir)}: the vocabulary is not valid JSON (${(error as Error).message})`,
      {
        cause: error,
      },
    );
  }
  return null;
}

/** Fingerprint of a token-embedding table stored as a safetensors tensor (reads only the sampled rows). */
export function fingerprintSafetensors(file: string, key: string, tokenizerDir: string | null): TextEncoderFingerprint {
  const h = readSafetensorsHeader(file);
  const t = h.byName.get(key);
  if (t?.shape.length !== 2) {
    throw new ModelFormatError(`${show(file)}: no 2-D token-embedding table ${show(key)}`);
  }
  const [V, d] = t.shape as [number, number];
  const size = (t.end - t.begin) / (V * d);
  return fingerprintFromRows(
    V,
    d,
    (id) => toFloat32(readFileRange(file, h.dataStart + t.begin + id * d * size, d * size), t.dtype, key),
    tokenizerVocabDigest(tokenizerDir),
  );
}

/**
 * Fingerprint of an ONNX text encoder: its token-embedding table is the [V, d] initializer that a
 * Gather reads with indices coming from `input_ids` (through Casts/Reshapes).
 */
export function fingerprintOnnx(textEncoderPath: string, tokenizerDir: string | null): TextEncoderFingerprint {
  const file = openOnnxModel(textEncoderPath);
  const index = indexGraph(file.graph);
  const through = (n: { opType?: string | null }) =>
    ['Cast', 'Reshape', 'Identity', 'Unsqueeze', 'Squeeze', 'Flatten'].includes(n.opType ?? '');
  let table: string | undefined;
  for (const node of file.graph.node ?? []) {
    if (node.opType !== 'Gather') continue;
    const [data, indices] = node.input ?? [];
    if (!data || !indices || !index.initializers.has(data)) continue;
    const origin = traceBack(index, indices, through);
    if (index.inputs.has(origin) && origin === 'input_ids') {
      table = data;
      break;
    }
  }
  const init = table ? file.initializerByName.get(table) : undefined;
  if (init?.dims.length !== 2) {
    throw new ModelFormatError(
      `${show(textEncoderPath)}: no token-embedding table (a 2-D initializer gathered with input_ids) to fingerprint the text encoder`,
    );
  }
  const [V, d] = init.dims as [number, number];
  const size = DATA_TYPE_BYTES[init.dataType] as number;
  const s = init.storage;
  let whole: Float32Array | null = null;
  const row = (id: number): Float32Array => {
    if (s.kind === 'external') {
      return bytesToFloat32(readFileRange(s.path, s.offset + id * d * size, d * size), init.dataType, init.name);
    }
    whole ??= bytesToFloat32(readTensorBytes(file, init), init.dataType, init.name);
    return whole.subarray(id * d, (id + 1) * d);
  };
  return fingerprintFromRows(V, d, row, tokenizerVocabDigest(tokenizerDir));
}

/** Does `model` (the target) carry the text encoder `expected` (from the edit file) was computed with? */
export function compareTextEncoders(
  expected: TextEncoderFingerprint,
  model: TextEncoderFingerprint,
): FingerprintComparison {
  const differences: string[] = [];
  if (expected.d !== model.d) differences.push(`text width d: the edit has ${expected.d}, the model ${model.d}`);
  if (expected.vocabSize !== model.vocabSize) {
    differences.push(
      `vocabulary size: the edit's text encoder has ${expected.vocabSize} tokens, the model's ${model.vocabSize}`,
    );
  }
  if (expected.vocabSha256 && model.vocabSha256 && expected.vocabSha256 !== model.vocabSha256) {
    differences.push('tokenizer vocabulary: the sha256 digests differ');
  }
  if (differences.length === 0) {
    const bad = compareValues(expected.values, model.values);
    if (bad) differences.push(`token-embedding rows: ${bad}`);
  }
  return { match: differences.length === 0, differences };
}

/** 4 values of W [out, d] at fixed relative positions. */
export function sampleWeight(W: Float32Array, out: number, d: number): number[] {
  const at = (fr: number, fc: number) => W[Math.floor(fr * (out - 1)) * d + Math.floor(fc * (d - 1))] as number;
  return [at(0, 0), at(0.25, 0.75), at(0.5, 0.5), at(1, 1)];
}

/** sampleWeight of W given as stored: Wᵀ [d, out] when `transposed`, else W [out, d]. */
export function sampleStoredWeight(W: Float32Array, out: number, d: number, transposed: boolean): number[] {
  const at = (fr: number, fc: number) => {
    const r = Math.floor(fr * (out - 1));
    const c = Math.floor(fc * (d - 1));
    return W[transposed ? c * out + r : r * d + c] as number;
  };
  return [at(0, 0), at(0.25, 0.75), at(0.5, 0.5), at(1, 1)];
}

export function compareUnets(expected: UnetFingerprint, model: UnetFingerprint): FingerprintComparison {
  const differences: string[] = [];
  const names = Object.keys(expected.sites);
  const missing = names.filter((n) => !(n in model.sites));
  if (missing.length > 0) differences.push(`${missing.length} of the edit's sites are not in the model`);
  const a: number[] = [];
  const b: number[] = [];
  for (const n of names) {
    if (!(n in model.sites)) continue;
    a.push(...(expected.sites[n] as number[]));
    b.push(...(model.sites[n] as number[]));
  }
  const bad = compareValues(a, b);
  if (bad) differences.push(`cross-attention weights: ${bad}`);
  return { match: differences.length === 0, differences };
}

/** null when every |a − b| ≤ 1e-2·|a| + 1e-3·rms(a), else what differs. */
function compareValues(a: readonly number[], b: readonly number[]): string | null {
  if (a.length !== b.length) return `${a.length} sampled values against ${b.length}`;
  let ss = 0;
  for (const x of a) ss += x * x;
  const rms = Math.sqrt(ss / Math.max(1, a.length));
  let worst = -1;
  let worstExcess = 0;
  let count = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as number;
    const y = b[i] as number;
    const tol = REL_TOL * Math.abs(x) + RMS_TOL * rms;
    const diff = Math.abs(x - y);
    if (!(diff <= tol)) {
      count++;
      if (!(diff / tol <= worstExcess)) {
        worstExcess = diff / tol;
        worst = i;
      }
    }
  }
  if (count === 0) return null;
  return `${count} of ${a.length} sampled values differ beyond tolerance (e.g. #${worst}: ${a[worst]} vs ${b[worst]})`;
}
