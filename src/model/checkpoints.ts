/**
 * PyTorch-side Stable Diffusion checkpoints in safetensors (issue 12 item 2b, 2c):
 *
 *   diffusers folder    unet/diffusion_pytorch_model.safetensors, or a sharded set listed by
 *                       unet/diffusion_pytorch_model.safetensors.index.json ({"weight_map": {key: shard}});
 *                       keys are module paths: down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight
 *                       text encoder: text_encoder/model.safetensors, text_model.embeddings.token_embedding.weight
 *   single file         one *.safetensors with CompVis (LDM) keys, as AUTOMATIC1111 and ComfyUI load:
 *                       model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight …
 *                       text encoder: SD 1.x cond_stage_model.transformer.text_model.embeddings.token_embedding.weight,
 *                                     SD 2.x cond_stage_model.model.token_embedding.weight (OpenCLIP)
 *
 * The CompVis ↔ diffusers map of the cross-attention modules (the same for SD 1.x and SD 2.x;
 * diffusers' convert_original_stable_diffusion_to_diffusers.py):
 *
 *   input_blocks.{3i + j + 1}.1   ↔  down_blocks.{i}.attentions.{j}     i = 0..2, j = 0..1
 *   middle_block.1                ↔  mid_block.attentions.0
 *   output_blocks.{3i + j}.1      ↔  up_blocks.{i}.attentions.{j}       i = 1..3, j = 0..2
 *
 * followed by `.transformer_blocks.{t}.attn2.to_{k,v}.weight` in both. Sites are named by their
 * diffusers module path (as the ONNX sites are), so an edit's `layers` prefixes mean the same in
 * every format. Pickle checkpoints (.ckpt, .bin, .pt, .pth) are refused: loading one runs arbitrary
 * code, and this tool reads only safetensors.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { readSafetensorsHeader, type SafetensorsHeader } from '../formats/safetensors.js';
import { ModelFormatError, show } from '../util/errors.js';
import type { SiteProjection } from './sites.js';

export type ModelKind = 'onnx-folder' | 'diffusers-safetensors' | 'single-file';
export type KeyMap = 'diffusers' | 'compvis-sd1' | 'compvis-sd2';

export const DIFFUSERS_UNET_FILE = 'diffusion_pytorch_model.safetensors';
export const DIFFUSERS_UNET_INDEX = 'diffusion_pytorch_model.safetensors.index.json';
export const COMPVIS_UNET_PREFIX = 'model.diffusion_model.';
/** Token-embedding keys per layout (the text encoder's fingerprint reads rows of it). */
export const TOKEN_EMBEDDING_KEYS = Object.freeze({
  diffusers: 'text_model.embeddings.token_embedding.weight',
  'compvis-sd1': 'cond_stage_model.transformer.text_model.embeddings.token_embedding.weight',
  'compvis-sd2': 'cond_stage_model.model.token_embedding.weight',
});

const PICKLE_EXTENSIONS = new Set(['.ckpt', '.bin', '.pt', '.pth', '.pkl']);

export interface CheckpointSite {
  /** diffusers module path, e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k". */
  name: string;
  projection: SiteProjection;
  /** The tensor's key in its file. */
  key: string;
  /** Absolute path of the safetensors file holding it. */
  file: string;
  /** safetensors dtype: 'F32' | 'F16' | 'BF16'. */
  dtype: string;
  out: number;
  d: number;
}

export interface Checkpoint {
  kind: 'diffusers-safetensors' | 'single-file';
  /** The folder (diffusers) or the file (single-file), absolute. */
  path: string;
  keyMap: KeyMap;
  /** The safetensors files holding UNet weights (absolute), with their checked headers. */
  unetFiles: SafetensorsHeader[];
  /** The sharded index, when the UNet is sharded (absolute). */
  unetIndex: string | null;
  sites: CheckpointSite[];
  d: number;
  /** Where the token-embedding table is, or null (a UNet-only file). */
  tokenEmbedding: { file: string; key: string } | null;
  /** The tokenizer folder (diffusers), or null (single files carry none). */
  tokenizerDir: string | null;
}

/**
 * What `path` holds, by its layout; pickle files and folders are refused with what to do. Errors name
 * `field`, the parameter the path came from (`modelPath` by default).
 */
export function detectModelKind(path: string, field = 'modelPath'): ModelKind {
  const p = resolve(path);
  if (!existsSync(p)) throw new ModelFormatError(`${show(p)} does not exist`, { field });
  if (statSync(p).isFile()) {
    const ext = extname(p).toLowerCase();
    if (PICKLE_EXTENSIONS.has(ext)) throw pickleRefusal(p, field);
    if (ext !== '.safetensors') {
      throw new ModelFormatError(
        `${show(p)}: a single-file checkpoint must be a .safetensors file (CompVis keys); give an ONNX or diffusers model folder otherwise`,
        { field },
      );
    }
    return 'single-file';
  }
  if (existsSync(join(p, 'unet', 'model.onnx'))) return 'onnx-folder';
  if (existsSync(join(p, 'unet', DIFFUSERS_UNET_FILE)) || existsSync(join(p, 'unet', DIFFUSERS_UNET_INDEX))) {
    return 'diffusers-safetensors';
  }
  for (const name of ['diffusion_pytorch_model.bin', 'diffusion_pytorch_model.bin.index.json']) {
    if (existsSync(join(p, 'unet', name))) throw pickleRefusal(join(p, 'unet', name), field);
  }
  throw new ModelFormatError(
    `${show(p)} is neither an ONNX model folder (unet/model.onnx) nor a diffusers folder with unet/${DIFFUSERS_UNET_FILE} (or its .index.json)`,
    { field },
  );
}

function pickleRefusal(path: string, field: string): ModelFormatError {
  return new ModelFormatError(
    `${show(path)} is a pickle checkpoint; loading pickle runs arbitrary code, so this tool reads safetensors only. ` +
      'Convert it once where you trust it (e.g. with diffusers: `pipe.save_pretrained(dir, safe_serialization=True)`, ' +
      'or `safetensors.torch.save_file(state_dict, "model.safetensors")`), then give the .safetensors file or folder',
    { field },
  );
}

/** The diffusers module of a CompVis cross-attention block, or undefined when the key is not one. */
export function compvisToDiffusers(key: string): { name: string; projection: SiteProjection } | undefined {
  const m =
    /^model\.diffusion_model\.(?:input_blocks\.(\d+)\.1|(middle_block)\.1|output_blocks\.(\d+)\.1)\.transformer_blocks\.(\d+)\.attn2\.to_([kv])\.weight$/.exec(
      key,
    );
  if (!m) return undefined;
  let block: string;
  if (m[1] !== undefined) {
    const n = Number(m[1]);
    const i = Math.floor((n - 1) / 3);
    const j = (n - 1) % 3;
    if (n < 1 || j > 1) return undefined;
    block = `down_blocks.${i}.attentions.${j}`;
  } else if (m[2] !== undefined) {
    block = 'mid_block.attentions.0';
  } else {
    const n = Number(m[3]);
    block = `up_blocks.${Math.floor(n / 3)}.attentions.${n % 3}`;
  }
  return { name: `${block}.transformer_blocks.${m[4]}.attn2.to_${m[5]}`, projection: `to_${m[5]}` as SiteProjection };
}

/** The CompVis key of a diffusers cross-attention site name (inverse of compvisToDiffusers). */
export function diffusersToCompvis(name: string): string {
  const m =
    /^(?:down_blocks\.(\d+)\.attentions\.(\d+)|(mid_block)\.attentions\.0|up_blocks\.(\d+)\.attentions\.(\d+))\.transformer_blocks\.(\d+)\.attn2\.(to_[kv])$/.exec(
      name,
    );
  if (!m) throw new ModelFormatError(`site ${show(name)} is not a diffusers cross-attention module path`);
  let block: string;
  if (m[1] !== undefined) block = `input_blocks.${3 * Number(m[1]) + Number(m[2]) + 1}.1`;
  else if (m[3] !== undefined) block = 'middle_block.1';
  else block = `output_blocks.${3 * Number(m[4]) + Number(m[5])}.1`;
  return `${COMPVIS_UNET_PREFIX}${block}.transformer_blocks.${m[6]}.attn2.${m[7]}.weight`;
}

/** The diffusers site of a diffusers UNet key, or undefined. */
export function diffusersSiteOfKey(key: string): { name: string; projection: SiteProjection } | undefined {
  const m =
    /^((?:down_blocks\.\d+\.attentions\.\d+|mid_block\.attentions\.\d+|up_blocks\.\d+\.attentions\.\d+)\.transformer_blocks\.\d+\.attn2\.to_([kv]))\.weight$/.exec(
      key,
    );
  return m ? { name: m[1] as string, projection: `to_${m[2]}` as SiteProjection } : undefined;
}

/**
 * Open a diffusers safetensors folder or a single-file CompVis checkpoint; headers are checked, no
 * data read. Errors about the path name `field` (`modelPath` by default).
 */
export function openCheckpoint(path: string, field = 'modelPath'): Checkpoint {
  const p = resolve(path);
  const kind = detectModelKind(p, field);
  if (kind === 'onnx-folder') {
    throw new ModelFormatError(`${show(p)} is an ONNX model folder, not a safetensors checkpoint`, { field });
  }
  return kind === 'single-file' ? openSingleFile(p) : openDiffusersFolder(p);
}

function openSingleFile(path: string): Checkpoint {
  const header = readSafetensorsHeader(path);
  const sites: CheckpointSite[] = [];
  for (const t of header.tensors) {
    const site = compvisToDiffusers(t.name);
    if (site) sites.push(makeSite(site, t.name, path, t.dtype, t.shape));
  }
  if (sites.length === 0) {
    const unet = header.tensors.some((t) => t.name.startsWith(COMPVIS_UNET_PREFIX));
    throw new ModelFormatError(
      unet
        ? `${show(path)}: no cross-attention weights ${COMPVIS_UNET_PREFIX}{input_blocks.N.1, middle_block.1, output_blocks.N.1}.transformer_blocks.T.attn2.to_{k,v}.weight; is this an SDXL or other non-SD 1.x/2.x checkpoint?`
        : `${show(path)}: no key starts with ${show(COMPVIS_UNET_PREFIX)}; not a single-file Stable Diffusion checkpoint with CompVis keys (for a diffusers folder, give the folder)`,
    );
  }
  const keyMap: KeyMap = header.byName.has(TOKEN_EMBEDDING_KEYS['compvis-sd2'])
    ? 'compvis-sd2'
    : header.byName.has(TOKEN_EMBEDDING_KEYS['compvis-sd1'])
      ? 'compvis-sd1'
      : sites[0]?.d === 1024
        ? 'compvis-sd2'
        : 'compvis-sd1';
  const tokKey = TOKEN_EMBEDDING_KEYS[keyMap];
  return {
    kind: 'single-file',
    path,
    keyMap,
    unetFiles: [header],
    unetIndex: null,
    sites: sortSites(sites),
    d: commonD(sites, path),
    tokenEmbedding: header.byName.has(tokKey) ? { file: path, key: tokKey } : null,
    tokenizerDir: null,
  };
}

function openDiffusersFolder(dir: string): Checkpoint {
  const unetDir = join(dir, 'unet');
  const single = join(unetDir, DIFFUSERS_UNET_FILE);
  const indexPath = join(unetDir, DIFFUSERS_UNET_INDEX);
  let files: string[];
  let unetIndex: string | null = null;
  if (existsSync(single)) files = [single];
  else {
    unetIndex = indexPath;
    let index: unknown;
    try {
      index = JSON.parse(readFileSync(indexPath, 'utf8'));
    } catch (error) {
      throw new ModelFormatError(`${show(indexPath)} is not valid JSON (${(error as Error).message})`, {
        cause: error,
      });
    }
    const map = (index as { weight_map?: unknown } | null)?.weight_map;
    if (map === null || typeof map !== 'object' || Array.isArray(map)) {
      throw new ModelFormatError(`${show(indexPath)}: "weight_map" must be an object {tensor key: shard file}`);
    }
    const shards = new Set<string>();
    for (const [key, shard] of Object.entries(map as Record<string, unknown>)) {
      if (typeof shard !== 'string' || shard !== basename(shard) || !shard.endsWith('.safetensors')) {
        throw new ModelFormatError(
          `${show(indexPath)}: weight_map[${show(key)}] = ${show(shard)} must name a .safetensors file in the same folder`,
        );
      }
      shards.add(shard);
    }
    files = [...shards].sort().map((s) => join(unetDir, s));
    for (const f of files)
      if (!existsSync(f)) throw new ModelFormatError(`${show(indexPath)} lists ${show(f)}, which does not exist`);
  }
  const headers = files.map((f) => readSafetensorsHeader(f));
  const sites: CheckpointSite[] = [];
  for (const h of headers) {
    for (const t of h.tensors) {
      const site = diffusersSiteOfKey(t.name);
      if (site) sites.push(makeSite(site, t.name, h.path, t.dtype, t.shape));
    }
  }
  if (sites.length === 0) {
    throw new ModelFormatError(
      `${show(unetDir)}: no cross-attention weights {down_blocks.I.attentions.J, mid_block.attentions.0, up_blocks.I.attentions.J}.transformer_blocks.T.attn2.to_{k,v}.weight in ${files.map((f) => show(basename(f))).join(', ')}`,
    );
  }
  const teFile = join(dir, 'text_encoder', 'model.safetensors');
  let tokenEmbedding: Checkpoint['tokenEmbedding'] = null;
  if (existsSync(teFile)) {
    const h = readSafetensorsHeader(teFile);
    if (h.byName.has(TOKEN_EMBEDDING_KEYS.diffusers))
      tokenEmbedding = { file: teFile, key: TOKEN_EMBEDDING_KEYS.diffusers };
  }
  const tokDir = join(dir, 'tokenizer');
  return {
    kind: 'diffusers-safetensors',
    path: dir,
    keyMap: 'diffusers',
    unetFiles: headers,
    unetIndex,
    sites: sortSites(sites),
    d: commonD(sites, dir),
    tokenEmbedding,
    tokenizerDir: existsSync(tokDir) ? tokDir : null,
  };
}

function makeSite(
  site: { name: string; projection: SiteProjection },
  key: string,
  file: string,
  dtype: string,
  shape: number[],
): CheckpointSite {
  if (shape.length !== 2) {
    throw new ModelFormatError(
      `${show(file)}: ${show(key)} has shape [${shape.join(', ')}]; a projection weight is [out, d]`,
    );
  }
  if (!['F32', 'F16', 'BF16'].includes(dtype)) {
    throw new ModelFormatError(`${show(file)}: ${show(key)} is ${dtype}; this tool edits F32, F16 and BF16 weights`);
  }
  return { ...site, key, file, dtype, out: shape[0] as number, d: shape[1] as number };
}

function commonD(sites: readonly CheckpointSite[], where: string): number {
  const ds = [...new Set(sites.map((s) => s.d))];
  if (ds.length !== 1) {
    throw new ModelFormatError(
      `${show(where)}: the cross-attention weights disagree on the text width d (${ds.join(', ')}); every attn2.to_k/to_v is [out, d]`,
    );
  }
  return ds[0] as number;
}

/** diffusers order: down, mid, up; then module index; K before V. */
function sortSites(sites: CheckpointSite[]): CheckpointSite[] {
  const rank = (n: string) => {
    const m =
      /^(down_blocks|mid_block|up_blocks)(?:\.(\d+))?\.attentions\.(\d+)\.transformer_blocks\.(\d+)\.attn2\.to_([kv])$/.exec(
        n,
      );
    if (!m) return [9, 0, 0, 0, 0];
    return [
      m[1] === 'down_blocks' ? 0 : m[1] === 'mid_block' ? 1 : 2,
      Number(m[2] ?? 0),
      Number(m[3]),
      Number(m[4]),
      m[5] === 'k' ? 0 : 1,
    ];
  };
  return sites.sort((a, b) => {
    const ra = rank(a.name);
    const rb = rank(b.name);
    for (let i = 0; i < ra.length; i++) if (ra[i] !== rb[i]) return (ra[i] as number) - (rb[i] as number);
    return 0;
  });
}

/** Files of a diffusers folder, relative, recursively (for the clone). */
export function listFiles(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
    const r = rel ? join(rel, e.name) : e.name;
    if (e.isDirectory()) out.push(...listFiles(dir, r));
    else out.push(r);
  }
  return out.sort();
}
