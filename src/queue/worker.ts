/**
 * `time-debias worker`: takes render-and-classify tasks (task.ts) from the queue, runs the same
 * generate + classify code as an in-process audit, and returns per image the class probabilities,
 * the image digest and, where asked, the PNG.
 *
 *   at start      every --models root is listed: folders holding a Stable Diffusion model
 *                 (model_index.json) or a CLIP classifier (config.json + onnx/) up to two levels
 *                 down, by content digest (folderDigest, cached per folder state). Folders with a
 *                 symbolic link anywhere inside, or whose real path leaves the root, are skipped.
 *   per task      validate the payload (ajv, TASK_SCHEMA) → find model and classifier by digest
 *                 among the roots (never the task's path hints) → fetch the text transform by digest
 *                 (checked) → generate → classify → result. Pipelines and classifiers stay open
 *                 (warm) for the next task.
 *   a model this worker does not have: the worker records that it declined the task and hands it
 *                 back (delayed 1 s) so another worker may take it; when every connected worker has
 *                 declined it, the task fails with "no worker has model …" (the coordinator reports it).
 *   a malformed payload fails at once (no retry), with the schema's complaints.
 *   close()       stops taking tasks, finishes the ones in flight, releases every session.
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, relative, resolve, sep } from 'node:path';
import { DelayedError, type Job, Queue, UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { ClipClassifier } from '../classify/clip.js';
import { textSideEdit } from '../edit/text-transform.js';
import { StableDiffusionPipeline } from '../generate/pipeline.js';
import { encodeRgbPng } from '../generate/png.js';
import { folderDigest } from '../model/folder-digest.js';
import type { Device } from '../runtime/ort.js';
import { QueueError, show, UsageError } from '../util/errors.js';
import { parseQueueUrl, QUEUE_NAME } from './connection.js';
import { TRANSFORM_PREFIX } from './producer.js';
import { type ImageResult, type RenderTask, TASK_VERSION, type TaskResult, validateTask } from './task.js';

export interface WorkerOptions {
  /** redis://[user:pass@]HOST:PORT[/DB] or rediss://… */
  url: string;
  /** Folders the worker may read models and classifiers from (nothing outside them). */
  models: string[];
  device?: Device;
  threads?: number;
  /** Tasks in flight at once (default 1: onnxruntime already uses the cores). */
  concurrency?: number;
  name?: string;
  /** How long a task's lock lasts before another worker may take it over (ms, default 30 000). */
  lockDurationMs?: number;
  log?: (line: string) => void;
}

export interface LocalFolder {
  kind: 'model' | 'classifier';
  dir: string;
  digest: string;
}

export interface WorkerStats {
  tasks: number;
  images: number;
  declined: number;
  failed: number;
}

export interface RenderWorker {
  name: string;
  folders: LocalFolder[];
  stats: WorkerStats;
  /** Stop taking tasks, finish those in flight, release sessions. */
  close(): Promise<void>;
}

/** Lists the model and classifier folders under the roots, by digest. */
export class ModelIndex {
  private byDigest = new Map<string, LocalFolder>();
  private constructor(
    readonly roots: string[],
    private readonly log: (line: string) => void,
  ) {}

  static open(roots: string[], log: (line: string) => void = () => {}): ModelIndex {
    if (roots.length === 0)
      throw new UsageError('give at least one folder holding models and classifiers', { field: 'models' });
    const real = roots.map((r) => {
      if (!existsSync(r) || !statSync(r).isDirectory())
        throw new UsageError(`${show(r)} is not a folder`, { field: 'models' });
      return realpathSync(resolve(r));
    });
    const index = new ModelIndex(real, log);
    index.scan();
    return index;
  }

  get folders(): LocalFolder[] {
    return [...this.byDigest.values()].sort((a, b) => a.dir.localeCompare(b.dir));
  }

  /** (Re)list the roots; digests are recomputed only for folders whose files changed. */
  scan(): void {
    const found = new Map<string, LocalFolder>();
    for (const root of this.roots) {
      for (const dir of candidates(root, 2)) {
        const kind = folderKind(dir);
        if (!kind) continue;
        if (!this.inside(root, dir)) continue;
        const link = findLink(dir);
        if (link) {
          this.log(`skipping ${dir}: ${link} is a symbolic link (a worker reads nothing outside its model roots)`);
          continue;
        }
        const digest = folderDigest(dir);
        if (!found.has(digest)) found.set(digest, { kind, dir, digest });
      }
    }
    this.byDigest = found;
  }

  private inside(root: string, dir: string): boolean {
    const real = realpathSync(dir);
    const rel = relative(root, real);
    return rel === '' || (!rel.startsWith('..') && !rel.startsWith(sep) && rel !== '..');
  }

  /** The local folder of `digest` of this kind (rescanning once when unknown), or null. */
  find(digest: string, kind: LocalFolder['kind']): LocalFolder | null {
    let f = this.byDigest.get(digest);
    if (!f) {
      this.scan();
      f = this.byDigest.get(digest);
    }
    return f && f.kind === kind ? f : null;
  }
}

function candidates(root: string, depth: number): string[] {
  const out = [root];
  if (depth === 0) return out;
  for (const e of readdirSync(root, { withFileTypes: true })) {
    if (e.isDirectory() && !e.name.startsWith('.')) out.push(...candidates(join(root, e.name), depth - 1));
  }
  return out;
}

function folderKind(dir: string): LocalFolder['kind'] | null {
  if (existsSync(join(dir, 'model_index.json'))) return 'model';
  if (existsSync(join(dir, 'config.json')) && existsSync(join(dir, 'onnx'))) return 'classifier';
  return null;
}

/** The first symbolic link inside `dir` (relative path), or null. */
function findLink(dir: string, base = dir): string | null {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isSymbolicLink() || lstatSync(p).isSymbolicLink()) return relative(base, p);
    if (e.isDirectory()) {
      const l = findLink(p, base);
      if (l) return l;
    }
  }
  return null;
}

/** Start a worker; resolves once it is connected and taking tasks. */
export async function startWorker(options: WorkerOptions): Promise<RenderWorker> {
  const address = parseQueueUrl(options.url);
  const name = options.name ?? `${hostname()}-${process.pid}`;
  const log = options.log ?? (() => {});
  const concurrency = options.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1)
    throw new UsageError(`${show(options.concurrency)} must be an integer ≥ 1`, { field: 'concurrency' });
  const index = ModelIndex.open(options.models, log);
  for (const f of index.folders) log(`worker ${name}: ${f.kind} ${f.dir} sha256 ${f.digest.slice(0, 12)}`);
  const device = options.device ?? 'cpu';
  const pipelines = new Map<string, Promise<StableDiffusionPipeline>>();
  const classifiers = new Map<string, Promise<ClipClassifier>>();
  const transforms = new Map<string, Float32Array>();
  const stats: WorkerStats = { tasks: 0, images: 0, declined: 0, failed: 0 };
  const redis = new Redis(address.options);
  redis.on('error', () => {});
  const queue = new Queue(QUEUE_NAME, { connection: address.options });
  queue.on('error', () => {});

  const pipelineFor = (dir: string) => {
    let p = pipelines.get(dir);
    if (!p) {
      p = StableDiffusionPipeline.create(dir, { device, threads: options.threads });
      pipelines.set(dir, p);
      p.catch(() => pipelines.delete(dir));
    }
    return p;
  };
  const classifierFor = (dir: string, logitScale: number, preprocess: 'transformers' | 'pil') => {
    const key = `${dir}\0${logitScale}\0${preprocess}`;
    let c = classifiers.get(key);
    if (!c) {
      c = ClipClassifier.load(dir, { device, threads: options.threads, logitScale, preprocess });
      classifiers.set(key, c);
      c.catch(() => classifiers.delete(key));
    }
    return c;
  };
  const transformFor = async (t: NonNullable<RenderTask['transform']>): Promise<Float32Array> => {
    const cached = transforms.get(t.digest);
    if (cached) return cached;
    const bytes = await redis.getBuffer(`${TRANSFORM_PREFIX}${t.digest}`);
    if (!bytes)
      throw new QueueError(`text transform ${t.digest.slice(0, 12)} is not in Redis (expired or never stored)`);
    const digest = createHash('sha256').update(bytes).digest('hex');
    if (digest !== t.digest || bytes.length !== t.d * t.d * 4)
      throw new QueueError(
        `text transform ${t.digest.slice(0, 12)}: the stored bytes do not match the digest or d = ${t.d}`,
      );
    const m = new Float32Array(t.d * t.d);
    new Uint8Array(m.buffer).set(bytes);
    if (transforms.size >= 4) transforms.delete(transforms.keys().next().value as string);
    transforms.set(t.digest, m);
    return m;
  };

  /** Hand a task this worker cannot do back to the others; fail it when every worker has declined it. */
  const decline = async (job: Job, token: string | undefined, why: string): Promise<never> => {
    stats.declined++;
    // Who declined it lately: a worker that lacks the model declines again each time it takes the
    // task, so entries older than 15 s are workers that have gone.
    const key = `time-debias:declined:${job.id}`;
    const now = Date.now();
    await redis.zadd(key, now, name);
    await redis.zremrangebyscore(key, '-inf', now - 15_000);
    await redis.expire(key, 3600);
    const declined = await redis.zrange(key, 0, -1);
    const workers = await queue.getWorkersCount();
    if (declined.length >= workers) {
      await redis.del(key);
      throw new UnrecoverableError(`no worker has ${why} (declined by ${declined.sort().join(', ')})`);
    }
    log(`worker ${name}: task ${job.id?.slice(0, 13)} handed back: no ${why}`);
    await job.moveToDelayed(Date.now() + 1000, token);
    throw new DelayedError();
  };

  const process1 = async (job: Job, token?: string): Promise<TaskResult> => {
    const t0 = performance.now();
    let task: RenderTask;
    try {
      task = validateTask(job.data);
    } catch (error) {
      stats.failed++;
      log(`worker ${name}: task ${job.id?.slice(0, 13)} rejected: ${(error as Error).message}`);
      throw new UnrecoverableError((error as Error).message);
    }
    const model = index.find(task.model.digest, 'model');
    if (!model)
      return decline(
        job,
        token,
        `model sha256 ${task.model.digest.slice(0, 12)} (coordinator's ${task.model.hint}) under its model roots`,
      );
    const clip = index.find(task.classifier.digest, 'classifier');
    if (!clip)
      return decline(
        job,
        token,
        `classifier sha256 ${task.classifier.digest.slice(0, 12)} (coordinator's ${task.classifier.hint}) under its model roots`,
      );
    const [pipeline, classifier] = await Promise.all([
      pipelineFor(model.dir),
      classifierFor(clip.dir, task.classifier.logitScale, task.classifier.preprocess),
    ]);
    const textTransform = task.transform ? await transformFor(task.transform) : undefined;
    const g = task.generation;
    const made = await pipeline.generate({
      prompt: task.prompt,
      seeds: task.seeds,
      steps: g.steps,
      scheduler: g.scheduler,
      guidance: g.guidance,
      height: g.height,
      width: g.width,
      negativePrompt: g.negativePrompt,
      batchSize: task.seeds.length,
      textTransform: textTransform ? textSideEdit(textTransform) : undefined,
    });
    const rgb = made.images.map((img) => ({ width: img.width, height: img.height, data: img.rgb }));
    const classes = await classifier.classify(rgb, task.attribute, {
      profession: task.profession,
      threshold: task.threshold ?? undefined,
    });
    const images: ImageResult[] = rgb.map((img, i) => {
      const c = classes[i];
      if (!c) throw new QueueError(`classifier returned ${classes.length} results for ${rgb.length} images`);
      return {
        seed: task.seeds[i] as number,
        label: c.label,
        unclear: c.kind === 'unclear',
        probabilities: c.probabilities,
        digest: createHash('sha256').update(img.data).digest('hex'),
        png: task.images[i] ? Buffer.from(encodeRgbPng(img.width, img.height, img.data)).toString('base64') : null,
      };
    });
    const ms = performance.now() - t0;
    stats.tasks++;
    stats.images += images.length;
    log(
      `worker ${name}: task ${job.id?.slice(0, 13)} ${show(task.prompt)} ${images.length} images in ${(ms / 1000).toFixed(2)} s ` +
        `(${((1000 * images.length) / ms).toFixed(2)} images/s)`,
    );
    return { version: TASK_VERSION, worker: name, images, ms };
  };

  const lockDuration = options.lockDurationMs ?? 30_000;
  const worker = new Worker(QUEUE_NAME, process1, {
    connection: address.options,
    concurrency,
    name,
    lockDuration,
    stalledInterval: lockDuration,
    maxStalledCount: 5,
    autorun: false,
  });
  // ioredis retries every few hundred ms while Redis is away: say so once, then every 30 s
  const errorLine = repeatLimited(log, `worker ${name}`, 30_000);
  worker.on('error', (e) => errorLine(e.message));
  worker.on('failed', (job, e) => {
    if (e.name !== 'DelayedError') log(`worker ${name}: task ${job?.id?.slice(0, 13)} failed: ${e.message}`);
  });
  void worker.run().catch((e: Error) => log(`worker ${name}: ${e.message}`));
  await worker.waitUntilReady();
  log(`worker ${name}: connected to ${address.redacted}, ${index.folders.length} folders, concurrency ${concurrency}`);
  let closing: Promise<void> | null = null;
  return {
    name,
    get folders() {
      return index.folders;
    },
    stats,
    close() {
      closing ??= (async () => {
        await worker.close();
        for (const p of pipelines.values()) await (await p.catch(() => null))?.dispose();
        for (const c of classifiers.values()) await (await c.catch(() => null))?.dispose();
        await queue.close().catch(() => {});
        redis.disconnect();
      })();
      return closing;
    },
  };
}

/**
 * A logger for a condition that repeats (a connection error ioredis retries): the first line, a
 * changed message at once, the same message again at most every `everyMs` with how often it came.
 */
export function repeatLimited(log: (line: string) => void, prefix: string, everyMs: number): (message: string) => void {
  let last: string | undefined;
  let at = 0;
  let repeats = 0;
  return (message) => {
    const now = Date.now();
    if (message === last && now - at < everyMs) {
      repeats++;
      return;
    }
    const again =
      message === last && repeats > 0
        ? ` (${repeats} more in the last ${Math.round((now - at) / 1000)} s; still retrying)`
        : '';
    log(`${prefix}: ${message}${again}`);
    last = message;
    at = now;
    repeats = 0;
  };
}
