/**
 * The text encoder of a Stable Diffusion model (`text_encoder/model.onnx`) run through the runtime
 * seam: token ids in, `last_hidden_state` out (mission.md §1: the rows c_i of TIME are these hidden
 * states, all 77 positions; §3: input/output names and dtypes come from the session, never assumed).
 *
 * Notation (as in mission.md): n prompts, L = 77 positions, d = text width (768 SD 1.x, 1024 SD 2.x).
 *   input_ids          [n, L]     int32 (diffusers export) or int64 (Optimum export)
 *   last_hidden_state  [n, L, d]  float32 or float16 (fp16 exports); returned as float32
 *   pooler_output      [n, d]     optional; returned as float32 when the model has it
 */
import { existsSync } from 'node:fs';
import { type Device, Session, type Tensor, tensor } from '../runtime/ort.js';
import { ModelFormatError, show, UsageError } from '../util/errors.js';
import { fromHalf } from '../util/half.js';
import type { ClipTokenizer } from './tokenizer.js';

export interface TextEncoderOptions {
  device?: Device;
  /** Intra-op threads; 0 or undefined lets onnxruntime decide. */
  threads?: number;
  /** Most prompts per session run (default 16; 1 when the model's batch dimension is fixed to 1). */
  maxBatch?: number;
}

/** The hidden states of a batch of prompts, row-major [n, L, d] in float32. */
export interface TextEncoding {
  /** [n · L · d] */
  lastHiddenState: Float32Array;
  /** [n · d], when the model has `pooler_output`. */
  pooled?: Float32Array;
  n: number;
  /** L, the sequence length (77). */
  length: number;
  /** d, the text width. */
  d: number;
}

export type IdsDtype = 'int32' | 'int64';

export class ClipTextEncoder {
  private constructor(
    private readonly session: Session,
    /** The dtype the model takes `input_ids` in, read from the session. */
    readonly idsDtype: IdsDtype,
    /** The dtype of `last_hidden_state` as the model produces it (before conversion to float32). */
    readonly hiddenDtype: 'float32' | 'float16',
    /** d from the model's output shape, when it is static (null when symbolic). */
    readonly declaredWidth: number | null,
    /** L from the model's input shape, when it is static (null when symbolic). */
    readonly declaredLength: number | null,
    readonly hasPooled: boolean,
    private readonly extraOnes: { name: string; dtype: IdsDtype }[],
    private readonly maxBatch: number,
    readonly path: string,
  ) {}

  static async create(textEncoderModelPath: string, options: TextEncoderOptions = {}): Promise<ClipTextEncoder> {
    const maxBatch = options.maxBatch ?? 16;
    if (!Number.isInteger(maxBatch) || maxBatch < 1) {
      throw new UsageError(`maxBatch: ${show(maxBatch)} must be an integer ≥ 1`);
    }
    if (!existsSync(textEncoderModelPath)) {
      throw new ModelFormatError(`text encoder ${show(textEncoderModelPath)} does not exist`);
    }
    const session = await Session.create(textEncoderModelPath, {
      device: options.device,
      threads: options.threads,
      label: `text encoder ${textEncoderModelPath}`,
    });
    try {
      const where = show(textEncoderModelPath);
      const ids = session.input('input_ids');
      if (!ids) {
        throw new ModelFormatError(
          `text encoder ${where} has no input "input_ids" (its inputs: ${session.inputs.map((i) => i.name).join(', ')})`,
        );
      }
      if (ids.type !== 'int32' && ids.type !== 'int64') {
        throw new ModelFormatError(`text encoder ${where}: input_ids is ${ids.type}; expected int32 or int64`);
      }
      // A CLIP text model exported with an attention mask input (transformers.js layout) gets all ones:
      // Stable Diffusion pipelines do not mask the padding.
      const extraOnes: { name: string; dtype: IdsDtype }[] = [];
      for (const input of session.inputs) {
        if (input.name === 'input_ids') continue;
        if (input.name === 'attention_mask' && (input.type === 'int32' || input.type === 'int64')) {
          extraOnes.push({ name: input.name, dtype: input.type });
          continue;
        }
        throw new ModelFormatError(
          `text encoder ${where} takes an input ${show(input.name)} (${input.type}) that a Stable Diffusion text ` +
            'encoder does not have; expected input_ids (and optionally attention_mask)',
        );
      }
      const hidden = session.outputs.find((o) => o.name === 'last_hidden_state');
      if (!hidden) {
        throw new ModelFormatError(
          `text encoder ${where} has no output "last_hidden_state" (its outputs: ${session.outputs.map((o) => o.name).join(', ')})`,
        );
      }
      if (hidden.type !== 'float32' && hidden.type !== 'float16') {
        throw new ModelFormatError(
          `text encoder ${where}: last_hidden_state is ${hidden.type}; expected float32 or float16`,
        );
      }
      const pooled = session.outputs.find((o) => o.name === 'pooler_output');
      const fixedBatch = typeof ids.shape[0] === 'number' ? ids.shape[0] : null;
      const width = typeof hidden.shape[2] === 'number' ? hidden.shape[2] : null;
      const length = typeof ids.shape[1] === 'number' ? ids.shape[1] : null;
      return new ClipTextEncoder(
        session,
        ids.type,
        hidden.type,
        width,
        length,
        pooled !== undefined,
        extraOnes,
        fixedBatch === null ? maxBatch : Math.min(maxBatch, fixedBatch),
        textEncoderModelPath,
      );
    } catch (error) {
      await session.dispose();
      throw error;
    }
  }

  /**
   * Encode padded id sequences (all of the same length L, e.g. from `ClipTokenizer.encode`), in
   * batches of at most `maxBatch`. Returns float32 hidden states [n, L, d].
   */
  async encode(idsBatch: readonly (readonly number[])[]): Promise<TextEncoding> {
    if (!Array.isArray(idsBatch) || idsBatch.length === 0) {
      throw new UsageError(`idsBatch: ${show(idsBatch)} must be a non-empty array of id sequences`);
    }
    const length = idsBatch[0]?.length ?? 0;
    idsBatch.forEach((ids, i) => {
      if (ids.length !== length || length === 0) {
        throw new UsageError(
          `idsBatch[${i}]: has ${ids.length} ids; every sequence must have the same, non-zero length (${length})`,
        );
      }
      for (const id of ids) {
        if (!Number.isInteger(id) || id < 0 || id > 0x7fffffff) {
          throw new UsageError(`idsBatch[${i}]: id ${show(id)} is not a valid token id (an integer ≥ 0)`);
        }
      }
    });
    if (this.declaredLength !== null && this.declaredLength !== length) {
      throw new UsageError(
        `idsBatch: sequences of ${length} ids, but the text encoder ${show(this.path)} takes ${this.declaredLength}`,
      );
    }

    const n = idsBatch.length;
    let d = this.declaredWidth;
    let hiddenAll: Float32Array | null = null;
    let pooledAll: Float32Array | null = null;
    for (let start = 0; start < n; start += this.maxBatch) {
      const chunk = idsBatch.slice(start, start + this.maxBatch);
      const b = chunk.length;
      const flat = chunk.flat();
      const feeds: Record<string, Tensor> = { input_ids: idsTensor(this.idsDtype, flat, [b, length]) };
      for (const extra of this.extraOnes) {
        feeds[extra.name] = idsTensor(extra.dtype, new Array<number>(flat.length).fill(1), [b, length]);
      }
      const out = await this.session.run(
        feeds,
        this.hasPooled ? ['last_hidden_state', 'pooler_output'] : ['last_hidden_state'],
      );
      const hidden = out.last_hidden_state as Tensor;
      const dims = hidden.dims;
      if (dims.length !== 3 || dims[0] !== b || dims[1] !== length || (d !== null && dims[2] !== d)) {
        throw new ModelFormatError(
          `text encoder ${show(this.path)}: last_hidden_state has shape [${dims.join(', ')}]; expected [${b}, ${length}, ${d ?? 'd'}]`,
        );
      }
      d = dims[2] as number;
      hiddenAll ??= new Float32Array(n * length * d);
      hiddenAll.set(toFloat32(hidden), start * length * d);
      if (this.hasPooled) {
        const pooled = out.pooler_output as Tensor;
        if (pooled.dims.length !== 2 || pooled.dims[0] !== b || pooled.dims[1] !== d) {
          throw new ModelFormatError(
            `text encoder ${show(this.path)}: pooler_output has shape [${pooled.dims.join(', ')}]; expected [${b}, ${d}]`,
          );
        }
        pooledAll ??= new Float32Array(n * d);
        pooledAll.set(toFloat32(pooled), start * d);
      }
    }
    const result: TextEncoding = { lastHiddenState: hiddenAll as Float32Array, n, length, d: d as number };
    if (pooledAll) result.pooled = pooledAll;
    return result;
  }

  async dispose(): Promise<void> {
    await this.session.dispose();
  }
}

/** The brief's name for the text encoder; prefer `ClipTextEncoder` (it does not shadow the global `TextEncoder`). */
export { ClipTextEncoder as TextEncoder };

/** One prompt's encoding: its ids and its hidden states [L · d] (the rows c_i of TIME). */
export interface EncodedPrompt {
  prompt: string;
  ids: number[];
  tokens: string[];
  /** [L · d] float32, row-major (position, channel). */
  hidden: Float32Array;
  /** Tokens before padding, BOS and EOS included. */
  length: number;
  truncated: boolean;
  d: number;
}

/** Tokenise and encode prompts in one batched pass; one result per prompt, in order. */
export async function encodePrompts(
  tokenizer: ClipTokenizer,
  encoder: ClipTextEncoder,
  prompts: readonly string[],
): Promise<EncodedPrompt[]> {
  if (prompts.length === 0) return [];
  const tokenized = prompts.map((p) => tokenizer.encode(p));
  const { lastHiddenState, length, d } = await encoder.encode(tokenized.map((t) => t.ids));
  const rows = length * d;
  return tokenized.map((t, i) => ({
    prompt: prompts[i] as string,
    ids: t.ids,
    tokens: t.tokens,
    hidden: lastHiddenState.slice(i * rows, (i + 1) * rows),
    length: t.length,
    truncated: t.truncated,
    d,
  }));
}

function idsTensor(dtype: IdsDtype, ids: readonly number[], dims: number[]): Tensor {
  return dtype === 'int32'
    ? tensor('int32', Int32Array.from(ids), dims)
    : tensor(
        'int64',
        BigInt64Array.from(ids, (v) => BigInt(v)),
        dims,
      );
}

function toFloat32(t: Tensor): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') {
    // float16 data are IEEE half bit patterns in a Uint16Array on Node 20 (a Float16Array where the
    // platform has one).
    return t.data instanceof Uint16Array ? fromHalf(t.data) : Float32Array.from(t.data as ArrayLike<number>);
  }
  throw new ModelFormatError(`text encoder output is ${t.type}; expected float32 or float16`);
}
