/**
 * A Stable Diffusion ONNX model folder as its users have it (mission.md §3):
 *
 *   diffusers-onnx  the diffusers ONNX export script: model_index.json `_class_name`
 *                   "OnnxStableDiffusionPipeline", unet/weights.pb, int32 `input_ids`
 *   optimum-onnx    Optimum's exporter: the source pipeline's model_index.json (e.g.
 *                   "StableDiffusionPipeline", or an "ORT…" class), unet/model.onnx_data,
 *                   per-model config.json, int64 `input_ids`
 *
 * `openSdModel` checks the folder, finds the components, reads the text encoder's and UNet's I/O
 * (the text encoder is not loaded: only its inputs/outputs are read at wire level), opens the UNet
 * (initializers located, external data validated) and derives the text width d and the precision.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type GraphIo, graphIo, type ModelIo, readModelIo } from '../onnx/io.js';
import { type OnnxModelFile, openOnnxModel } from '../onnx/model-file.js';
import { ModelFormatError, show } from '../util/errors.js';

export type SdModelFormat = 'diffusers-onnx' | 'optimum-onnx';
export type SdPrecision = 'float32' | 'float16' | 'mixed';

/** Folders of the pipeline's components (absolute paths); optional ones only when present. */
export interface SdComponents {
  text_encoder: string;
  unet: string;
  vae_decoder: string;
  tokenizer: string;
  scheduler: string;
  vae_encoder?: string;
  safety_checker?: string;
  feature_extractor?: string;
}

/** The ONNX files of the components (absolute paths). */
export interface SdModelFiles {
  textEncoder: string;
  unet: string;
  vaeDecoder: string;
  vaeEncoder?: string;
  safetyChecker?: string;
}

export interface SdModel {
  kind: 'sd-model';
  /** Absolute path of the folder. */
  dir: string;
  format: SdModelFormat;
  /** Why this format was chosen (the evidence, for messages and inspect). */
  formatEvidence: string;
  /** model_index.json `_class_name`. */
  pipelineClass: string | null;
  components: SdComponents;
  files: SdModelFiles;
  /** 'tokenizer.json' or 'vocab.json+merges.txt'. */
  tokenizerLayout: 'vocab.json+merges.txt' | 'tokenizer.json';
  /** Majority dtype of the UNet's floating parameters ('mixed' when none holds more than 90 %). */
  precision: SdPrecision;
  /** Floating UNet parameters by dtype. */
  unetParameterDtypes: Record<string, number>;
  /** Text width: last dim of the text encoder's last_hidden_state = of the UNet's encoder_hidden_states. */
  d: number;
  textEncoderIo: { inputs: GraphIo[]; outputs: GraphIo[] };
  unetIo: { inputs: GraphIo[]; outputs: GraphIo[] };
  /** `input_ids` element type of the text encoder. */
  idsType: string;
  /** External data files of the UNet (empty when inline). */
  unetExternalData: { location: string; path: string; size: number }[];
  /** The opened UNet (decoded graph, initializer locations). Not JSON: use inspectModel for a report. */
  unet: OnnxModelFile;
}

const REQUIRED_MODELS = [
  ['text_encoder', 'textEncoder'],
  ['unet', 'unet'],
  ['vae_decoder', 'vaeDecoder'],
] as const;

function requireFile(path: string, what: string): void {
  if (!existsSync(path)) throw new ModelFormatError(`${what}: ${show(path)} does not exist`);
  if (!statSync(path).isFile()) throw new ModelFormatError(`${what}: ${show(path)} is not a file`);
}

function isDir(path: string): boolean {
  return existsSync(path) && statSync(path).isDirectory();
}

/** Open the model folder `dir`. Throws ModelFormatError naming the missing or bad path. */
export function openSdModel(dir: string): SdModel {
  const root = resolve(dir);
  if (!existsSync(root)) throw new ModelFormatError(`model folder ${show(root)} does not exist`);
  if (!statSync(root).isDirectory()) throw new ModelFormatError(`model folder ${show(root)} is not a folder`);

  const indexPath = join(root, 'model_index.json');
  requireFile(indexPath, `model folder ${show(root)}: the pipeline index model_index.json`);
  let index: Record<string, unknown>;
  try {
    index = JSON.parse(readFileSync(indexPath, 'utf8')) as Record<string, unknown>;
    if (typeof index !== 'object' || index === null || Array.isArray(index)) throw new Error('not a JSON object');
  } catch (cause) {
    throw new ModelFormatError(`${show(indexPath)} is not valid JSON (${(cause as Error).message})`, { cause });
  }
  const pipelineClass = typeof index._class_name === 'string' ? index._class_name : null;

  const components: Partial<SdComponents> = {};
  const files: Partial<SdModelFiles> = {};
  for (const [folder, key] of REQUIRED_MODELS) {
    const path = join(root, folder, 'model.onnx');
    requireFile(path, `model folder ${show(root)}: the ${folder} component`);
    components[folder] = join(root, folder);
    files[key] = path;
  }
  const tokenizerDir = join(root, 'tokenizer');
  if (!isDir(tokenizerDir))
    throw new ModelFormatError(`model folder ${show(root)}: the tokenizer folder ${show(tokenizerDir)} does not exist`);
  let tokenizerLayout: SdModel['tokenizerLayout'];
  if (existsSync(join(tokenizerDir, 'vocab.json')) && existsSync(join(tokenizerDir, 'merges.txt')))
    tokenizerLayout = 'vocab.json+merges.txt';
  else if (existsSync(join(tokenizerDir, 'tokenizer.json'))) tokenizerLayout = 'tokenizer.json';
  else {
    throw new ModelFormatError(
      `model folder ${show(root)}: the tokenizer folder ${show(tokenizerDir)} has neither vocab.json + merges.txt nor tokenizer.json`,
    );
  }
  components.tokenizer = tokenizerDir;
  const schedulerConfig = join(root, 'scheduler', 'scheduler_config.json');
  requireFile(schedulerConfig, `model folder ${show(root)}: the scheduler config`);
  components.scheduler = join(root, 'scheduler');
  for (const [folder, key] of [
    ['vae_encoder', 'vaeEncoder'],
    ['safety_checker', 'safetyChecker'],
  ] as const) {
    const listed = Array.isArray(index[folder]) && (index[folder] as unknown[])[0] !== null;
    const path = join(root, folder, 'model.onnx');
    if (existsSync(path)) {
      components[folder] = join(root, folder);
      files[key] = path;
    } else if (listed && pipelineClass?.startsWith('Onnx')) {
      throw new ModelFormatError(
        `model folder ${show(root)}: model_index.json lists ${folder} but ${show(path)} does not exist`,
      );
    }
  }
  if (isDir(join(root, 'feature_extractor'))) components.feature_extractor = join(root, 'feature_extractor');

  // Text encoder: I/O only (never loaded here).
  const te: ModelIo = readModelIo(files.textEncoder as string);
  const ids = te.inputs.find((i) => i.name === 'input_ids');
  if (!ids) {
    throw new ModelFormatError(
      `${show(te.path)}: the text encoder has no input named "input_ids" (inputs: ${te.inputs.map((i) => i.name).join(', ')})`,
    );
  }
  const lhs = te.outputs.find((o) => o.name === 'last_hidden_state');
  if (!lhs) {
    throw new ModelFormatError(
      `${show(te.path)}: the text encoder has no output named "last_hidden_state" (outputs: ${te.outputs.map((o) => o.name).join(', ')})`,
    );
  }

  // UNet: opened (initializers located, external data checked before anything is read).
  const unet = openOnnxModel(files.unet as string);
  const unetIo = graphIo(unet.graph);
  const ehs = unetIo.inputs.find((i) => i.name === 'encoder_hidden_states');
  if (!ehs) {
    throw new ModelFormatError(
      `${show(unet.path)}: the UNet has no input named "encoder_hidden_states" (inputs: ${unetIo.inputs.map((i) => i.name).join(', ')})`,
    );
  }
  const dText = lastDim(lhs);
  const dUnet = lastDim(ehs);
  if (dText !== undefined && dUnet !== undefined && dText !== dUnet) {
    throw new ModelFormatError(
      `text width mismatch: the text encoder's last_hidden_state has width ${dText} (${show(te.path)}) but the UNet's encoder_hidden_states expects ${dUnet} (${show(unet.path)}); the two components do not belong together`,
    );
  }
  const d = dText ?? dUnet;
  if (d === undefined) {
    throw new ModelFormatError(
      `cannot tell the text width d: last_hidden_state ${show(JSON.stringify(lhs.shape))} and encoder_hidden_states ${show(JSON.stringify(ehs.shape))} have no fixed last dimension`,
    );
  }

  const unetParameterDtypes: Record<string, number> = {};
  for (const t of unet.initializers) {
    if (['float32', 'float16', 'bfloat16', 'float64'].includes(t.dtype)) {
      unetParameterDtypes[t.dtype] = (unetParameterDtypes[t.dtype] ?? 0) + t.elementCount;
    }
  }
  const total = Object.values(unetParameterDtypes).reduce((a, b) => a + b, 0);
  const [major, count] = Object.entries(unetParameterDtypes).sort((a, b) => b[1] - a[1])[0] ?? [ehs.dtype, 0];
  const precision: SdPrecision =
    total === 0
      ? ehs.dtype === 'float16'
        ? 'float16'
        : 'float32'
      : count / total >= 0.9 && (major === 'float32' || major === 'float16')
        ? major
        : 'mixed';

  const { format, evidence } = detectFormat(root, pipelineClass, unet, ids.dtype);
  return {
    kind: 'sd-model',
    dir: root,
    format,
    formatEvidence: evidence,
    pipelineClass,
    components: components as SdComponents,
    files: files as SdModelFiles,
    tokenizerLayout,
    precision,
    unetParameterDtypes,
    d,
    textEncoderIo: { inputs: te.inputs, outputs: te.outputs },
    unetIo,
    idsType: ids.dtype,
    unetExternalData: unet.externalFiles.map(({ location, path, size }) => ({ location, path, size })),
    unet,
  };
}

function lastDim(io: GraphIo): number | undefined {
  const last = io.shape[io.shape.length - 1];
  return typeof last === 'number' && last > 0 ? last : undefined;
}

function detectFormat(
  root: string,
  pipelineClass: string | null,
  unet: OnnxModelFile,
  idsType: string,
): { format: SdModelFormat; evidence: string } {
  if (pipelineClass?.startsWith('Onnx'))
    return { format: 'diffusers-onnx', evidence: `model_index.json _class_name ${pipelineClass}` };
  if (pipelineClass?.startsWith('ORT'))
    return { format: 'optimum-onnx', evidence: `model_index.json _class_name ${pipelineClass}` };
  if (existsSync(join(root, 'unet', 'config.json')))
    return { format: 'optimum-onnx', evidence: 'unet/config.json next to the ONNX file' };
  const locations = unet.externalFiles.map((f) => f.location);
  if (locations.includes('model.onnx_data'))
    return { format: 'optimum-onnx', evidence: 'unet/model.onnx_data external data' };
  if (locations.includes('weights.pb')) return { format: 'diffusers-onnx', evidence: 'unet/weights.pb external data' };
  if (existsSync(join(root, 'unet', 'config.json')))
    return { format: 'optimum-onnx', evidence: 'unet/config.json next to the ONNX file' };
  if (idsType === 'int64') return { format: 'optimum-onnx', evidence: 'int64 input_ids' };
  return { format: 'diffusers-onnx', evidence: `${idsType} input_ids` };
}
