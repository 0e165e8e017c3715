/**
 * A model folder's geometry, read once (geometry.ts decides; this reads the folder's files): the VAE
 * scale factor f, the native image size and the VAE's latent scaling factor (0.18215 for SD unless
 * its config.json says otherwise). Used by the pipeline when it opens a model and by a coordinator
 * that renders through workers and so opens no UNet.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { sha256Files } from '../model/file-hash.js';
import type { SdModel } from '../model/folder.js';
import { type Device, Session } from '../runtime/ort.js';
import { show } from '../util/errors.js';
import { decideNativeSize, type NativeSize, probeVaeScale, type VaeScale, vaeScaleFromConfig } from './geometry.js';
import { checkVae, decodedSize, VAE_SCALING_FACTOR } from './unet.js';

export interface ModelGeometry {
  vaeScale: VaeScale;
  nativeSize: NativeSize;
  /** The VAE's latent scaling factor: latents are divided by it before decoding. */
  vaeScalingFactor: number;
}

export interface ModelGeometryOptions {
  /** An open VAE decoder session of this model, for the one probe decode when its config is silent. */
  vae?: Session;
  /** For a session opened here (only when `vae` is not given and the config is silent). */
  device?: Device;
  threads?: number;
}

export async function readModelGeometry(model: SdModel, options: ModelGeometryOptions = {}): Promise<ModelGeometry> {
  const vaeRel = relative(model.dir, model.files.vaeDecoder).split('\\').join('/');
  const vaeConfig = readJsonIfExists(`${model.components.vae_decoder ?? dirname(model.files.vaeDecoder)}/config.json`);
  const vaeScale =
    vaeScaleFromConfig(vaeConfig, `${dirname(vaeRel)}/config.json`) ?? (await measureVaeScale(model, vaeRel, options));
  const scheduler = readJsonIfExists(`${model.components.scheduler}/scheduler_config.json`);
  const nativeSize = decideNativeSize({
    unetConfig: readJsonIfExists(`${model.components.unet}/config.json`),
    modelIndex: readJsonIfExists(join(model.dir, 'model_index.json')),
    unetSampleShape: model.unetIo.inputs.find((i) => i.name === 'sample')?.shape,
    vaeScale,
    textWidth: model.d,
    predictionType: typeof scheduler?.prediction_type === 'string' ? scheduler.prediction_type : undefined,
  });
  const vaeScalingFactor =
    typeof vaeConfig?.scaling_factor === 'number' ? vaeConfig.scaling_factor : VAE_SCALING_FACTOR;
  return { vaeScale, nativeSize, vaeScalingFactor };
}

/** f by one small decode (geometry.ts probeVaeScale), through the given session or one opened for it. */
async function measureVaeScale(model: SdModel, vaeRel: string, options: ModelGeometryOptions): Promise<VaeScale> {
  const digest = ((await sha256Files(model.dir, [vaeRel])).get(vaeRel) as { sha256: string }).sha256;
  const where = `vae_decoder ${show(model.files.vaeDecoder)}`;
  if (options.vae) return probeVaeScale(digest, where, (h, w) => decodedSize(options.vae as Session, h, w));
  const vae = await Session.create(model.files.vaeDecoder, {
    device: options.device,
    threads: options.threads,
    label: `vae_decoder ${model.files.vaeDecoder}`,
  });
  try {
    checkVae(vae, model.files.vaeDecoder);
    return await probeVaeScale(digest, where, (h, w) => decodedSize(vae, h, w));
  } finally {
    await vae.dispose();
  }
}

/**
 * The UNet's sample_size as the folder's `unet/config.json` declares it (the larger side of a pair),
 * or null — read without opening any graph, for the bounds checked before a model is loaded
 * (bounds.ts: an SD 2.x-768 model, sample_size 96, takes sides up to 3072).
 */
export function declaredSampleSize(modelDir: string): number | null {
  const v = readJsonIfExists(join(modelDir, 'unet', 'config.json'))?.sample_size;
  if (typeof v === 'number' && Number.isInteger(v) && v > 0) return v;
  if (Array.isArray(v) && v.length === 2 && v.every((x) => Number.isInteger(x) && x > 0)) return Math.max(...v);
  return null;
}

function readJsonIfExists(path: string): Record<string, unknown> | null {
  if (!existsSync(path)) return null;
  try {
    const v = JSON.parse(readFileSync(path, 'utf8'));
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
