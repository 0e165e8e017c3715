/**
 * The UNet's and the VAE decoder's I/O, as the exported sessions describe them (read from the
 * session, never assumed; mission.md §3):
 *
 *   UNet     sample [B, 4, h/8, w/8]  float32 | float16
 *            timestep                 float [B] (diffusers export), a float scalar (Optimum),
 *                                     int64 [B] (older Optimum), or [1]
 *            encoder_hidden_states    [B, 77, d]  float32 | float16
 *            → out_sample (or the first output)  ε, same shape as sample
 *   VAE      latent_sample [1, 4, h/8, w/8] → sample [1, 3, h, w] in [−1, 1]
 *
 * float16 tensors are Uint16Array bit patterns (util/half.ts); values cross this module as float32.
 */
import { type Session, type Tensor, tensor } from '../runtime/ort.js';
import { ModelFormatError, show } from '../util/errors.js';
import { fromHalf, toHalf } from '../util/half.js';

/** The VAE latent scale of Stable Diffusion 1.x/2.x (OnnxStableDiffusionPipeline divides by it). */
export const VAE_SCALING_FACTOR = 0.18215;
export const LATENT_CHANNELS = 4;

/** What the pipeline needs to know of a UNet session's inputs and output. */
export interface UnetInfo {
  sampleType: 'float32' | 'float16';
  hiddenType: 'float32' | 'float16';
  timestep: { type: string; rank: number; fixedOne: boolean };
  output: string;
}

/** Read the UNet session's I/O (ModelFormatError naming the file when it is not a SD UNet's). */
export function describeUnet(unet: Session, path: string): UnetInfo {
  const where = show(path);
  const need = (name: string) => {
    const io = unet.input(name);
    if (!io) {
      throw new ModelFormatError(
        `unet ${where} has no input ${show(name)} (its inputs: ${unet.inputs.map((i) => i.name).join(', ')})`,
      );
    }
    return io;
  };
  const sample = need('sample');
  const timestep = need('timestep');
  const hidden = need('encoder_hidden_states');
  for (const io of [sample, hidden]) {
    if (io.type !== 'float32' && io.type !== 'float16') {
      throw new ModelFormatError(`unet ${where}: input ${io.name} is ${io.type}; expected float32 or float16`);
    }
  }
  if (!['float32', 'float16', 'int64', 'int32'].includes(timestep.type)) {
    throw new ModelFormatError(`unet ${where}: input timestep is ${timestep.type}; expected float32, float16 or int64`);
  }
  if (timestep.shape.length > 1) {
    throw new ModelFormatError(
      `unet ${where}: input timestep has shape [${timestep.shape.join(', ')}]; expected [] or [batch]`,
    );
  }
  const output = unet.outputs.find((o) => o.name === 'out_sample') ?? unet.outputs[0];
  if (!output) throw new ModelFormatError(`unet ${where} has no outputs`);
  return {
    sampleType: sample.type as 'float32' | 'float16',
    hiddenType: hidden.type as 'float32' | 'float16',
    timestep: { type: timestep.type, rank: timestep.shape.length, fixedOne: timestep.shape[0] === 1 },
    output: output.name,
  };
}

/** The VAE decoder takes one float latent input and has an output. */
/** The image size the VAE decodes a zero latent [1, 4, h, w] to (for measuring its scale factor). */
export async function decodedSize(vae: Session, h: number, w: number): Promise<{ height: number; width: number }> {
  const input = vae.inputs[0] as { name: string; type: string };
  const latent = floatTensor(input.type as 'float32', new Float32Array(LATENT_CHANNELS * h * w), [
    1,
    LATENT_CHANNELS,
    h,
    w,
  ]);
  const out = await vae.run({ [input.name]: latent });
  const name = (vae.outputs[0] as { name: string }).name; // checkVae: at least one output
  const dims = (out[name] as Tensor).dims;
  if (dims.length !== 4) {
    throw new ModelFormatError(`vae_decoder: output has shape [${dims.join(', ')}]; expected [1, 3, height, width]`);
  }
  return { height: dims[2] as number, width: dims[3] as number };
}

export function checkVae(vae: Session, path: string): void {
  const input = vae.inputs[0];
  if (!input || vae.inputs.length !== 1 || (input.type !== 'float32' && input.type !== 'float16')) {
    throw new ModelFormatError(
      `vae_decoder ${show(path)}: expected one float input (latent_sample), found ${vae.inputs.map((i) => `${i.name} ${i.type}`).join(', ')}`,
    );
  }
  if (vae.outputs.length === 0) throw new ModelFormatError(`vae_decoder ${show(path)} has no outputs`);
}

/** A float32 or float16 tensor of float32 values. */
export function floatTensor(type: 'float32' | 'float16', data: Float32Array, dims: readonly number[]): Tensor {
  return type === 'float16' ? tensor('float16', toHalf(data), dims) : tensor('float32', data, dims);
}

/** The timestep as the UNet takes it: scalar or [B] (or [1]), float or int64 (truncated like numpy's astype). */
export function timestepTensor(spec: UnetInfo['timestep'], t: number, B: number): Tensor {
  const dims = spec.rank === 0 ? [] : [spec.fixedOne ? 1 : B];
  const count = spec.rank === 0 ? 1 : (dims[0] as number);
  switch (spec.type) {
    case 'int64':
      return tensor('int64', new BigInt64Array(count).fill(BigInt(Math.trunc(t))), dims);
    case 'int32':
      return tensor('int32', new Int32Array(count).fill(Math.trunc(t)), dims);
    case 'float16':
      return tensor('float16', toHalf(new Float32Array(count).fill(t)), dims);
    default:
      return tensor('float32', new Float32Array(count).fill(t), dims);
  }
}

export function tensorToFloat32(t: Tensor, what: string): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') {
    return t.data instanceof Uint16Array ? fromHalf(t.data) : Float32Array.from(t.data as ArrayLike<number>);
  }
  throw new ModelFormatError(`${what} is ${t.type}; expected float32 or float16`);
}

/** One UNet run: ε for `sample` [B, 4, h/8, w/8] at timestep t with `hidden` [B, L, d], as float32. */
export async function runUnet(
  unet: Session,
  info: UnetInfo,
  path: string,
  input: { sample: Float32Array; sampleDims: number[]; t: number; hidden: Float32Array; hiddenDims: number[] },
): Promise<Float32Array> {
  const { sample, sampleDims, t, hidden, hiddenDims } = input;
  const B = sampleDims[0] as number;
  const feeds: Record<string, Tensor> = {
    sample: floatTensor(info.sampleType, sample, sampleDims),
    timestep: timestepTensor(info.timestep, t, B),
    encoder_hidden_states: floatTensor(info.hiddenType, hidden, hiddenDims),
  };
  const out = await unet.run(feeds, [info.output]);
  const result = out[info.output] as Tensor;
  const values = tensorToFloat32(result, `unet ${info.output}`);
  if (values.length !== sample.length) {
    throw new ModelFormatError(
      `unet ${show(path)}: ${info.output} has shape [${result.dims.join(', ')}]; expected [${sampleDims.join(', ')}]`,
    );
  }
  return values;
}

/**
 * VAE decoder on one image's latents → RGB bytes (HWC): image = VAE(x / scaling), then
 * clip(image / 2 + 0.5, 0, 1) · 255, rounded half to even (as numpy's round).
 */
export async function decodeLatents(
  vae: Session,
  path: string,
  latents: Float32Array,
  scaling: number,
  height: number,
  width: number,
  /** the VAE's scale factor f: the latent is height/f × width/f */
  factor: number,
): Promise<Uint8Array> {
  const scaled = new Float32Array(latents.length);
  for (let i = 0; i < scaled.length; i++) scaled[i] = (latents[i] as number) / scaling;
  const input = vae.inputs[0] as { name: string; type: string };
  const dims = [1, LATENT_CHANNELS, height / factor, width / factor];
  const out = await vae.run({ [input.name]: floatTensor(input.type as 'float32', scaled, dims) });
  const name = vae.outputs[0]?.name as string;
  const image = out[name] as Tensor;
  const values = tensorToFloat32(image, `vae_decoder ${name}`);
  if (values.length !== 3 * height * width) {
    throw new ModelFormatError(
      `vae_decoder ${show(path)}: ${name} has shape [${image.dims.join(', ')}]; expected [1, 3, ${height}, ${width}]`,
    );
  }
  const plane = height * width;
  const rgb = new Uint8Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      const v = Math.min(1, Math.max(0, (values[c * plane + p] as number) / 2 + 0.5));
      rgb[3 * p + c] = roundHalfEven(v * 255);
    }
  }
  return rgb;
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : r;
}
