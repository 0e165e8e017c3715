/**
 * The demo world: the designed tiny Stable Diffusion model folder and CLIP classifier folder that
 * `npm run demo`, the audit/debias tests and the README use (issue 4). Built deterministically by
 * the project's own code, cached under `.cache/demo/<hash>/` (git-ignored) where the hash covers the
 * generator's source files and options, so a change to the generator rebuilds it. Builds go to a
 * temporary sibling folder that is renamed into place, so a crash or a concurrent build never leaves
 * a half-written world behind.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { OutputError, show } from '../util/errors.js';
import { buildClipFolder, type ClipFolderInfo } from './clip-model.js';
import { DEMO_DESIGN, demoClipSpec, demoSdDesign } from './design.js';
import { type DemoProfession, PROFESSIONS } from './professions.js';
import { buildTinySdModel, SD1_SITE_LAYOUT, sha256Hex, TINY_SD_VERSION, type TinySdManifest } from './sd-model.js';
import { demoWorldWords } from './words.js';

/** The generation settings the demo world is designed and calibrated for. */
export const DEMO_GENERATION = Object.freeze({
  height: 64,
  width: 64,
  steps: 15,
  guidance: 7.5,
  scheduler: 'pndm' as const,
});

export interface DemoWorldOptions {
  /** Cache root (default: `<repo>/.cache/demo`, or $TIME_DEBIAS_CACHE/demo when set). */
  cacheDir?: string;
  /** Model flavour of the SD folder (default 'diffusers'). */
  flavor?: 'diffusers' | 'optimum';
  /** Precision of the SD folder (default 'float32'). */
  precision?: 'float32' | 'float16';
  /** Rebuild even when the cached world exists. */
  force?: boolean;
}

export interface DemoWorld {
  kind: 'demo-world';
  /** The world's folder: `<cache>/<hash>`. */
  root: string;
  /** The Stable Diffusion model folder (diffusers ONNX layout). */
  modelDir: string;
  /** The CLIP classifier folder (transformers.js layout). */
  classifierDir: string;
  /** sha256 over the generator sources and options (first 16 hex digits name the folder). */
  hash: string;
  /** True when this call built the world, false when it came from the cache. */
  built: boolean;
  design: string;
  model: TinySdManifest;
  classifier: Omit<ClipFolderInfo, 'dir'>;
  /** The demo professions with their designed offsets. */
  professions: DemoProfession[];
  /** Settings the design is calibrated for. */
  generation: typeof DEMO_GENERATION;
}

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = resolve(HERE, '..', '..');

/** Source files whose content determines the bytes of the world (relative to the repo root). */
export const GENERATOR_SOURCES = Object.freeze([
  'src/demo/world.ts',
  'src/demo/sd-model.ts',
  'src/demo/design.ts',
  'src/demo/words.ts',
  'src/demo/professions.ts',
  'src/demo/clip-model.ts',
  'src/text/bpe-files.ts',
  'src/onnx/build.ts',
  'src/onnx/proto.ts',
  'src/util/half.ts',
]);

function defaultCacheDir(): string {
  const env = process.env.TIME_DEBIAS_CACHE;
  return env ? resolve(env, 'demo') : join(REPO_ROOT, '.cache', 'demo');
}

/** The world's identity: sha256 of the generator sources, the builder version and the options. */
export function demoWorldHash(options: Pick<DemoWorldOptions, 'flavor' | 'precision'> = {}): string {
  const parts: string[] = [
    `tiny-sd v${TINY_SD_VERSION}`,
    JSON.stringify({ flavor: options.flavor ?? 'diffusers', precision: options.precision ?? 'float32' }),
  ];
  for (const rel of GENERATOR_SOURCES) {
    const path = join(REPO_ROOT, rel);
    parts.push(`${rel}\n${existsSync(path) ? readFileSync(path, 'utf8') : '(missing)'}`);
  }
  return sha256Hex(parts.join('\n\0\n'));
}

/** Write the demo world's two folders into `dir` (which must not exist yet or be empty). */
export function buildDemoWorld(
  dir: string,
  options: Pick<DemoWorldOptions, 'flavor' | 'precision'> = {},
): {
  model: TinySdManifest;
  classifier: ClipFolderInfo;
} {
  const words = demoWorldWords();
  const sites = SD1_SITE_LAYOUT.map((site, i) => ({ block: site.block, width: DEMO_DESIGN.siteWidths[i] as number }));
  const model = buildTinySdModel(join(dir, 'model'), {
    flavor: options.flavor ?? 'diffusers',
    precision: options.precision ?? 'float32',
    d: DEMO_DESIGN.d,
    sites,
    heads: DEMO_DESIGN.heads,
    latentSize: DEMO_GENERATION.height / 8,
    words,
    design: demoSdDesign(words, sites.length),
  });
  const classifier = buildClipFolder(join(dir, 'classifier'), demoClipSpec(words));
  return { model, classifier };
}

/**
 * The demo world, built on first use and cached. Returns the two folders and what they hold.
 * Deterministic: the same generator sources and options give byte-identical folders.
 */
export function ensureDemoWorld(options: DemoWorldOptions = {}): DemoWorld {
  const cache = options.cacheDir ? resolve(options.cacheDir) : defaultCacheDir();
  const hash = demoWorldHash(options);
  const root = join(cache, hash.slice(0, 16));
  const manifestPath = join(root, 'world.json');
  let built = false;
  if (options.force && existsSync(root)) rmSync(root, { recursive: true, force: true });
  if (!existsSync(manifestPath)) {
    try {
      mkdirSync(cache, { recursive: true });
    } catch (cause) {
      throw new OutputError(`demo world cache ${show(cache)} cannot be created: ${(cause as Error).message}`, {
        cause,
      });
    }
    const tmp = join(cache, `${hash.slice(0, 16)}.tmp-${process.pid}-${Date.now()}`);
    rmSync(tmp, { recursive: true, force: true });
    try {
      const { model, classifier } = buildDemoWorld(tmp, options);
      const { dir: _dir, ...classifierInfo } = classifier;
      const manifest = {
        kind: 'demo-world-manifest',
        hash,
        design: DEMO_DESIGN.name,
        model,
        classifier: classifierInfo,
      };
      writeFileSync(join(tmp, 'world.json'), `${JSON.stringify(manifest, null, 2)}\n`);
      if (existsSync(root)) rmSync(root, { recursive: true, force: true }); // a stale partial copy (no world.json)
      try {
        renameSync(tmp, root);
        built = true;
      } catch (cause) {
        // another process finished the same build first: theirs is identical, keep it
        if (!existsSync(manifestPath)) throw cause;
      }
    } catch (cause) {
      if (cause instanceof OutputError) throw cause;
      throw new OutputError(`demo world: could not build into ${show(root)}: ${(cause as Error).message}`, { cause });
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as {
    model: TinySdManifest;
    classifier: Omit<ClipFolderInfo, 'dir'>;
  };
  return {
    kind: 'demo-world',
    root,
    modelDir: join(root, 'model'),
    classifierDir: join(root, 'classifier'),
    hash,
    built,
    design: DEMO_DESIGN.name,
    model: manifest.model,
    classifier: manifest.classifier,
    professions: [...PROFESSIONS],
    generation: DEMO_GENERATION,
  };
}
