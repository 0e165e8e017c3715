/**
 * Open what a debias job needs (model, pipeline, text encoding, classifier, professions) from a
 * normalized config, once; the caller disposes it. "demo" in the config names the embedded demo
 * world, whose folders the caller passes in `demo` (see src/demo/world.ts).
 */
import { existsSync } from 'node:fs';
import { loadProfessions, type Profession, type ProfessionList } from '../audit/professions.js';
import { ClipClassifier } from '../classify/clip.js';
import { StableDiffusionPipeline } from '../generate/pipeline.js';
import { RenderQueue } from '../queue/producer.js';
import { encodePrompts } from '../text/encoder.js';
import { ConfigError, show } from '../util/errors.js';
import type { JobConfig } from './config.js';
import type { JobWorld } from './types.js';

export interface DemoFolders {
  modelDir: string;
  classifierDir: string;
  /** The demo world's professions (the list named "demo"). */
  professions: readonly Profession[];
}

export interface OpenedWorld {
  world: JobWorld;
  /** The config with "demo" replaced by the demo world's folders. */
  config: JobConfig;
  dispose(): Promise<void>;
}

/** Replace "demo" by the demo world's folders and check that the folders exist. */
export function resolveConfigFolders(config: JobConfig, demo?: DemoFolders): JobConfig {
  const needsDemo = config.model === 'demo' || config.classifier.path === 'demo' || config.professions.list === 'demo';
  if (needsDemo && !demo) throw new ConfigError('config: "demo" is named but the demo world is not available');
  const out = structuredClone(config);
  if (out.model === 'demo') out.model = demo!.modelDir;
  if (out.classifier.path === 'demo') out.classifier.path = demo!.classifierDir;
  for (const [key, path] of [
    ['config.model', out.model],
    ['config.classifier', out.classifier.path],
  ] as const) {
    if (!existsSync(path)) throw new ConfigError(`${key}: ${show(path)} does not exist (rule: an existing folder)`);
  }
  return out;
}

/** The demo world's professions as a list (in the world's order; `select` keeps the named ones). */
export function demoList(demo: DemoFolders, select?: readonly string[]): ProfessionList {
  const all = demo.professions.map((p) => ({ profession: p.profession, article: p.article }));
  if (select) {
    const unknown = select.filter((s) => !all.some((p) => p.profession === s));
    if (unknown.length) {
      throw new ConfigError(
        `config.professions.select: ${unknown.map((u) => show(u)).join(', ')} not in the demo list (rule: known profession; the demo has ${all.map((p) => p.profession).join(', ')})`,
      );
    }
  }
  return {
    kind: 'profession-list',
    name: 'demo',
    source: 'builtin:demo-world',
    professions: select ? all.filter((p) => select.includes(p.profession)) : all,
  };
}

export async function openJobWorld(config: JobConfig, demo?: DemoFolders): Promise<OpenedWorld> {
  const resolved = resolveConfigFolders(config, demo);
  const select = resolved.professions.select
    ? [...resolved.professions.select, ...resolved.professions.heldOut]
    : undefined;
  const professions =
    resolved.professions.list === 'demo'
      ? demoList(demo!, select)
      : loadProfessions(resolved.professions.list, { select });
  if (professions.professions.length === 0) {
    throw new ConfigError(
      `config.professions.list: ${show(resolved.professions.list)} has no professions (rule: at least one)`,
    );
  }
  const options = { device: resolved.device, threads: resolved.threads || undefined };
  const pipeline = await StableDiffusionPipeline.create(resolved.model, options);
  let classifier: ClipClassifier;
  try {
    const f = pipeline.vaeScale.factor;
    for (const [key, v] of [
      ['height', resolved.generation.height],
      ['width', resolved.generation.width],
    ] as const) {
      if (v !== undefined && v % f !== 0) {
        throw new ConfigError(
          `config.generation.${key}: ${v} is not a multiple of ${f}, this model's VAE scale factor (rule: the VAE decodes ${f} × ${f} pixel blocks)`,
        );
      }
    }
    classifier = await ClipClassifier.load(resolved.classifier.path, {
      ...options,
      preprocess: resolved.classifier.preprocess,
    });
  } catch (error) {
    await pipeline.dispose();
    throw error;
  }
  let queue: RenderQueue | undefined;
  if (resolved.queue) {
    try {
      queue = await RenderQueue.connect(resolved.queue, { log: (l) => process.stderr.write(`${l}\n`) });
    } catch (error) {
      await pipeline.dispose();
      await classifier.dispose();
      throw error;
    }
  }
  const world: JobWorld = {
    model: pipeline.model,
    pipeline,
    tokenizer: pipeline.tokenizer,
    encode: async (prompts) => encodePrompts(pipeline.tokenizer, pipeline.textEncoder, prompts),
    classifier,
    professions,
    openPipeline: (dir) => StableDiffusionPipeline.create(dir, options),
    queue,
  };
  return {
    world,
    config: resolved,
    async dispose() {
      await pipeline.dispose();
      await classifier.dispose();
      await queue?.close();
    },
  };
}
