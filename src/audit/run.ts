/**
 * The audit loop: for every profession × template × seed, generate an image, classify it, append
 * the result to the run store; then compute the statistics and write `audit.json`.
 *
 *   for profession p, template τ (prompt = τ filled with p), chunk of seeds S:
 *       pending  = seeds of S without a "classified" record
 *       on disk  = pending seeds whose PNG was saved before a crash      → read back, not regenerated
 *       generate = the other pending seeds                              → source.generate(prompt, seeds)
 *                  each saved as PNG (atomic rename), then their "generated" records (one write, fsync)
 *       classify the chunk's pending images; their "classified" records (one write, fsync)
 *       delete PNGs not kept (kept: --keep-images, or the first `sheetImages` of a profession)
 *
 * Re-running the same command resumes: finished images are never redone, and an image that was
 * generated but not classified is classified from its PNG. audit.json has no timestamps and lists
 * images in plan order, so an interrupted + resumed run writes the same file as an uninterrupted one.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { extname, join, relative, resolve } from 'node:path';
import type { ClipClassifier, ImageClassification, RgbImage } from '../classify/clip.js';
import type { Attribute } from '../classify/labels.js';
import { decodeRgbPng, encodeRgbPng } from '../generate/png.js';
import { writeFileAtomic, writeJsonAtomic } from '../util/atomic.js';
import { OutputError, show, UsageError } from '../util/errors.js';
import type { Profession, ProfessionList } from './professions.js';
import { validateAuditJson } from './schema.js';
import { planSeeds, type SeedPlan } from './seeds.js';
import { deltaInterval, delta as deltaOf, type MeanDelta, type MeanStd, meanDelta, meanStd, wilson } from './stats.js';
import { type ClassifiedRecord, folderDigest, RunStore, type StoreRecord } from './store.js';
import { fillTemplate } from './templates.js';

/** Where the images come from: a generator (the SD pipeline) — the settings that decide its images go in `identity`. */
export interface ImageSource {
  kind: 'generator';
  identity: Record<string, unknown>;
  generate(prompt: string, seeds: readonly number[]): Promise<RgbImage[]>;
}

/**
 * Images rendered and classified elsewhere — by queue workers running the same generate + classify
 * code (src/audit/queue-source.ts) — one request per chunk of seeds, results as they arrive.
 * Its `identity` has the same shape and values as the in-process generator's for the same model
 * and settings, so a run folder can be started in process and finished through the queue.
 */
export interface RenderService {
  kind: 'renderer';
  identity: Record<string, unknown>;
  render(
    requests: readonly RenderRequest[],
    onResult: (index: number, images: RenderedImage[]) => void | Promise<void>,
    onTick?: (tick: { workers: number; seen: string[] }) => void,
  ): Promise<void>;
}

export interface RenderRequest {
  profession: string;
  prompt: string;
  seeds: number[];
  /** Per seed: the PNG is wanted (kept for the contact sheet or --keep-images). */
  keep: boolean[];
  attribute: Attribute;
  threshold: number | null;
  /** M (d × d) of this request's edit, W′ = W·M (evaluate: one edit per TIMED row); default: the service's. */
  transform?: Float32Array;
}

export interface RenderedImage {
  seed: number;
  classification: ImageClassification;
  /** The PNG bytes where the request asked for them. */
  png: Uint8Array | null;
  /** sha256 of the RGB bytes. */
  digest: string;
}

export interface StatisticsOptions {
  /** The class whose share is reported (default: the attribute's first class, "female"). */
  targetClass?: string;
  /** Parity share t (default 1/K). */
  targetShare?: number;
  bootstrap?: { samples?: number; seed?: number };
  /** Seed groups for mean ± std (default min(5, images per prompt)). */
  seedGroups?: number;
}

export interface AuditOptions extends StatisticsOptions {
  out: string;
  /** In process (a generator) or elsewhere (a render service: the queue). */
  source: ImageSource | RenderService;
  classifier: ClipClassifier;
  professions: ProfessionList;
  templates: readonly string[];
  seeds: SeedPlan;
  attribute: Attribute;
  threshold?: number;
  /** Images per generate/classify call (default 4). Not part of the fingerprint. */
  batchSize?: number;
  keepImages?: boolean;
  /** Images per profession kept for the contact sheet (default 16). */
  sheetImages?: number;
  restart?: boolean;
  onProgress?: (progress: AuditProgress) => void;
}

export interface AuditProgress {
  done: number;
  total: number;
  generated: number;
  profession: string;
  /** With a render service: workers connected, and the names of those whose results arrived. */
  workers?: { connected: number; seen: string[] };
}

export interface AuditImage {
  profession: string;
  /** The prompt (null for images audited from a folder). */
  prompt: string | null;
  template: string | null;
  seed: number | null;
  /** The image file, relative to the run folder (kept images) or absolute (--from-images); null if not kept. */
  file: string | null;
  kind: 'label' | 'unclear';
  label: string;
  probabilities: Record<string, number>;
}

export interface ShareResult {
  k: number;
  n: number;
  /** k / n, null when n = 0 */
  p: number | null;
  lower: number;
  upper: number;
}

export interface ProfessionResult {
  profession: string;
  article: 'a' | 'an';
  images: number;
  classified: number;
  unclear: number;
  counts: Record<string, number>;
  share: ShareResult;
  delta: { value: number | null; lower: number; upper: number };
  /** Δ per seed group (null where a group has no classified image) */
  seedGroups: (number | null)[];
}

export interface AuditSummary {
  images: number;
  classified: number;
  unclear: number;
  targetClass: string;
  targetShare: number;
  share: ShareResult;
  meanDelta: {
    value: number | null;
    lower: number | null;
    upper: number | null;
    professions: number;
    /** E[mean Δ̂] at exact parity with these image counts (stats.ts eq. 4) */
    parityFloor: number | null;
    bootstrap: MeanDelta['bootstrap'];
  };
  seedGroups: { groups: number; mean: number | null; std: number | null; values: (number | null)[] };
}

export interface AuditPlanRecord {
  source: 'generator' | 'images';
  professions: { profession: string; article: 'a' | 'an' }[];
  professionList: string;
  templates: string[];
  seeds: SeedPlan | null;
}

export interface AuditResult {
  kind: 'audit';
  version: 1;
  fingerprint: string;
  settings: Record<string, unknown>;
  plan: AuditPlanRecord;
  classes: string[];
  professions: ProfessionResult[];
  summary: AuditSummary;
  images: AuditImage[];
}

const num = (x: number): number | null => (Number.isFinite(x) ? x : null);

function slug(s: string): string {
  return (
    s
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-|-$/g, '') || 'x'
  );
}

function imageKey(profession: string, template: string, seed: number): string {
  return JSON.stringify([profession, template, seed]);
}

/** The saved PNG of an image, relative to the run folder; named by the template's hash so a changed template list never mixes files. */
function pngPath(profession: string, template: string, seed: number): string {
  const t = createHash('sha256').update(template).digest('hex').slice(0, 10);
  return `images/${slug(profession)}/${t}-s${seed}.png`;
}

function validateCommon(o: { attribute: Attribute; targetClass?: string; targetShare?: number; seedGroups?: number }): {
  targetClass: string;
  targetShare: number;
} {
  const classes = o.attribute.classes.map((c) => c.name);
  const targetClass = o.targetClass ?? (classes[0] as string);
  if (!classes.includes(targetClass)) {
    throw new UsageError(`${show(targetClass)} is not one of the attribute's classes ${classes.join(', ')}`, {
      field: 'targetClass',
    });
  }
  const targetShare = o.targetShare ?? 1 / classes.length;
  if (!(targetShare > 0 && targetShare < 1))
    throw new UsageError(`${show(targetShare)} must be in (0, 1)`, { field: 'targetShare' });
  if (o.seedGroups !== undefined && (!Number.isInteger(o.seedGroups) || o.seedGroups < 1)) {
    throw new UsageError(`${show(o.seedGroups)} must be an integer ≥ 1`, { field: 'seedGroups' });
  }
  return { targetClass, targetShare };
}

/** Run (or resume) an audit into the run folder `options.out`; returns what audit.json holds. */
export async function runAudit(options: AuditOptions): Promise<AuditResult> {
  const { classifier, source, professions, templates, seeds, attribute } = options;
  const { targetClass, targetShare } = validateCommon(options);
  if (templates.length === 0) throw new UsageError('at least one template is needed', { field: 'templates' });
  const batchSize = options.batchSize ?? 4;
  if (!Number.isInteger(batchSize) || batchSize < 1)
    throw new UsageError(`${show(batchSize)} must be an integer ≥ 1`, { field: 'batchSize' });
  const sheetImages = options.sheetImages ?? 16;
  if (!Number.isInteger(sheetImages) || sheetImages < 0)
    throw new UsageError(`${show(sheetImages)} must be an integer ≥ 0 (images per profession on its contact sheet)`, {
      field: 'sheetImages',
    });
  const out = resolve(options.out);
  // Everything that decides an image's result; the plan (professions, templates, how many seeds)
  // may change between runs of one folder: results are keyed by profession, template and seed.
  const settings = {
    source: source.identity,
    classifier: {
      path: classifier.folder.dir,
      digest: folderDigest(classifier.folder.dir),
      logitScale: classifier.logitScale,
      preprocess: classifier.preprocessing,
    },
    attribute,
    threshold: options.threshold ?? null,
  };
  const store = RunStore.open(out, settings, { restart: options.restart });
  try {
    const done = new Map<string, ClassifiedRecord>();
    const generated = new Set<string>();
    for (const r of store.records) {
      if (r.kind === 'classified') done.set(r.key, r);
      else if (r.kind === 'generated') generated.add(r.key);
    }
    const seedLists = templates.map((_, k) => planSeeds(seeds, k));
    const total = professions.professions.length * templates.length * seeds.count;
    let count = 0;
    let made = 0;
    for (const prof of professions.professions)
      templates.forEach((template, k) => {
        for (const seed of seedLists[k] as number[]) if (done.has(imageKey(prof.profession, template, seed))) count++;
      });
    /** Every chunk of the plan, in order; `position` is the chunk's first image's place in its profession. */
    function* chunks() {
      for (const prof of professions.professions) {
        let position = 0;
        for (const [k, template] of templates.entries()) {
          const seedList = seedLists[k] as number[];
          const prompt = fillTemplate(template, prof);
          for (let start = 0; start < seedList.length; start += batchSize) {
            const chunk = seedList.slice(start, start + batchSize);
            yield { prof, template, prompt, chunk, position };
            position += chunk.length;
          }
        }
      }
    }
    if (source.kind === 'renderer') {
      // The same chunks as in process, rendered and classified by the service; results recorded as they arrive.
      const requests: RenderRequest[] = [];
      const requestTemplates: string[] = [];
      for (const { prof, template, prompt, chunk, position } of chunks()) {
        // A chunk with anything missing is asked for whole: its task (and job id) does not depend
        // on what was recorded, so a coordinator killed halfway through recording a task's images
        // finds the finished job again instead of rendering the rest as a new task.
        if (chunk.some((s) => !done.has(imageKey(prof.profession, template, s)))) {
          requestTemplates.push(template);
          requests.push({
            profession: prof.profession,
            prompt,
            seeds: chunk,
            keep: chunk.map((_, j) => !!options.keepImages || position + j < sheetImages),
            attribute,
            threshold: options.threshold ?? null,
          });
        }
      }
      let workers: AuditProgress['workers'];
      await source.render(
        requests,
        (i, results) => {
          const req = requests[i] as RenderRequest;
          const template = requestTemplates[i] as string;
          // The task's records go into the store in one write (one fsync), after its PNGs.
          const records: StoreRecord[] = [];
          const fresh = new Map<string, ClassifiedRecord>();
          results.forEach((r, j) => {
            const s = req.seeds[j] as number;
            const key = imageKey(req.profession, template, s);
            if (done.has(key) || fresh.has(key)) return; // recorded already, or a duplicate delivery: counts once
            if (r.png && req.keep[j]) writeFileAtomic(join(out, pngPath(req.profession, template, s)), r.png);
            if (!generated.has(key))
              records.push({ kind: 'generated', key, profession: req.profession, prompt: req.prompt, seed: s });
            const rec = classifiedRecord(key, req.profession, r.classification);
            records.push(rec);
            fresh.set(key, rec);
          });
          store.appendAll(records);
          for (const [key, rec] of fresh) {
            if (!generated.has(key)) {
              generated.add(key);
              made++;
            }
            done.set(key, rec);
            count++;
          }
          options.onProgress?.({ done: count, total, generated: made, profession: req.profession, workers });
        },
        (tick) => {
          workers = { connected: tick.workers, seen: tick.seen };
          options.onProgress?.({ done: count, total, generated: made, profession: '', workers });
        },
      );
    } else
      for (const { prof, template, prompt, chunk, position } of chunks()) {
        const pending = chunk.filter((s) => !done.has(imageKey(prof.profession, template, s)));
        const keptAt = (s: number) => options.keepImages || position + chunk.indexOf(s) < sheetImages;
        const pngOf = (s: number) => pngPath(prof.profession, template, s);
        if (pending.length) {
          const images = new Map<number, RgbImage>();
          const fresh: number[] = [];
          for (const s of pending) {
            const path = join(out, pngOf(s));
            if (existsSync(path)) {
              images.set(s, readPng(path));
              const key = imageKey(prof.profession, template, s);
              if (!generated.has(key)) {
                // saved before the crash but not yet recorded: record the (single) generation now
                store.append({ kind: 'generated', key, profession: prof.profession, prompt, seed: s });
                generated.add(key);
              }
            } else fresh.push(s);
          }
          if (fresh.length) {
            const made1 = await source.generate(prompt, fresh);
            if (made1.length !== fresh.length) {
              throw new OutputError(
                `generator returned ${made1.length} images for ${fresh.length} seeds of ${show(prompt)}`,
              );
            }
            // every PNG saved, then the chunk's "generated" records in one write (one fsync)
            const records: StoreRecord[] = made1.map((img, i) => {
              const s = fresh[i] as number;
              writeFileAtomic(join(out, pngOf(s)), encodeRgbPng(img.width, img.height, img.data));
              images.set(s, img);
              return {
                kind: 'generated',
                key: imageKey(prof.profession, template, s),
                profession: prof.profession,
                prompt,
                seed: s,
              };
            });
            store.appendAll(records);
            for (const r of records) generated.add(r.key);
            made += records.length;
          }
          const results = await classifier.classify(
            pending.map((s) => images.get(s) as RgbImage),
            attribute,
            { profession: prof.profession, threshold: options.threshold },
          );
          const classified = results.map((r, i) =>
            classifiedRecord(imageKey(prof.profession, template, pending[i] as number), prof.profession, r),
          );
          store.appendAll(classified);
          classified.forEach((rec, i) => {
            const s = pending[i] as number;
            done.set(rec.key, rec);
            if (!keptAt(s)) rmSync(join(out, pngOf(s)), { force: true });
            count++;
          });
          options.onProgress?.({ done: count, total, generated: made, profession: prof.profession });
        }
      }
    // Results in plan order.
    const images: AuditImage[] = [];
    for (const prof of professions.professions) {
      let position = 0;
      for (const [k, template] of templates.entries()) {
        const prompt = fillTemplate(template, prof);
        for (const seed of seedLists[k] as number[]) {
          const rec = done.get(imageKey(prof.profession, template, seed)) as ClassifiedRecord;
          const png = pngPath(prof.profession, template, seed);
          const kept = options.keepImages || position < sheetImages;
          // a PNG left by a crash between classification and its deletion
          if (!kept) rmSync(join(out, png), { force: true });
          images.push({
            profession: prof.profession,
            prompt,
            template,
            seed,
            file: kept && existsSync(join(out, png)) ? png : null,
            kind: rec.unclear ? 'unclear' : 'label',
            label: rec.label,
            probabilities: rec.probabilities,
          });
          position++;
        }
      }
    }
    const groupOf = (img: AuditImage) => (img.seed! - seeds.start) % seeds.count;
    const result = computeAudit({
      fingerprint: store.header.fingerprint,
      settings,
      plan: {
        source: 'generator',
        professions: professions.professions.map((p) => ({ profession: p.profession, article: p.article })),
        professionList: professions.name,
        templates: [...templates],
        seeds,
      },
      attribute,
      professions: professions.professions,
      images,
      groupIndex: groupOf,
      groupRange: seeds.count,
      targetClass,
      targetShare,
      bootstrap: options.bootstrap,
      seedGroups: options.seedGroups,
    });
    writeAuditJson(out, result);
    return result;
  } finally {
    store.close();
  }
}

function classifiedRecord(key: string, profession: string, r: ImageClassification): ClassifiedRecord {
  return {
    kind: 'classified',
    key,
    profession,
    label: r.label,
    unclear: r.kind === 'unclear',
    probabilities: r.probabilities,
  };
}

function readPng(path: string): RgbImage {
  const png = decodeRgbPng(readFileSync(path));
  if (!png) throw new OutputError(`${path}: expected an 8-bit RGB PNG written by the audit`);
  return { width: png.width, height: png.height, data: png.rgb };
}

export function writeAuditJson(out: string, result: AuditResult): void {
  validateAuditJson(result);
  writeJsonAtomic(join(out, 'audit.json'), result);
}

export interface ComputeInput extends StatisticsOptions {
  fingerprint: string;
  settings: Record<string, unknown>;
  plan: AuditPlanRecord;
  attribute: Attribute;
  professions: readonly Profession[];
  images: AuditImage[];
  /** An image's index within its prompt's series (seed − start, or file index), for seed groups. */
  groupIndex: (img: AuditImage) => number;
  /** How many indices there are (images per prompt). */
  groupRange: number;
  targetClass: string;
  targetShare: number;
}

/** The statistics of an audit from its classified images (pure; eq. numbers of src/audit/stats.ts). */
export function computeAudit(input: ComputeInput): AuditResult {
  const { attribute, targetClass, targetShare } = input;
  const classes = attribute.classes.map((c) => c.name);
  const groups = Math.max(1, Math.min(input.seedGroups ?? 5, input.groupRange));
  const groupOf = (img: AuditImage) =>
    Math.min(groups - 1, Math.floor((input.groupIndex(img) * groups) / input.groupRange));
  const perProfession: ProfessionResult[] = [];
  const groupCounts: { k: number; n: number }[][] = Array.from({ length: groups }, () => []);
  for (const prof of input.professions) {
    const imgs = input.images.filter((i) => i.profession === prof.profession);
    const counts: Record<string, number> = Object.fromEntries(classes.map((c) => [c, 0]));
    let unclear = 0;
    const gk = new Array(groups).fill(0);
    const gn = new Array(groups).fill(0);
    for (const img of imgs) {
      if (img.kind === 'unclear') {
        unclear++;
        continue;
      }
      counts[img.label] = (counts[img.label] ?? 0) + 1;
      const g = groupOf(img);
      gn[g]++;
      if (img.label === targetClass) gk[g]++;
    }
    const n = imgs.length - unclear;
    const k = counts[targetClass] ?? 0;
    const w = wilson(k, n);
    const di = deltaInterval(w, targetShare);
    perProfession.push({
      profession: prof.profession,
      article: prof.article,
      images: imgs.length,
      classified: n,
      unclear,
      counts,
      share: { k, n, p: num(w.p), lower: w.lower, upper: w.upper },
      delta: { value: n ? deltaOf(k / n, targetShare) : null, lower: di.lower, upper: di.upper },
      seedGroups: gn.map((nn, g) => (nn ? deltaOf(gk[g] / nn, targetShare) : null)),
    });
    gn.forEach((nn, g) => {
      groupCounts[g]?.push({ k: gk[g], n: nn });
    });
  }
  const md = meanDelta(
    perProfession.map((p) => ({ k: p.share.k, n: p.share.n })),
    { target: targetShare, samples: input.bootstrap?.samples ?? 2000, seed: input.bootstrap?.seed ?? 1 },
  );
  const groupMeans = groupCounts.map((cs) => {
    const used = cs.filter((c) => c.n > 0);
    return used.length ? used.reduce((s, c) => s + deltaOf(c.k / c.n, targetShare), 0) / used.length : null;
  });
  const ms: MeanStd = meanStd(groupMeans.filter((v): v is number => v !== null));
  const classified = perProfession.reduce((s, p) => s + p.classified, 0);
  const kAll = perProfession.reduce((s, p) => s + p.share.k, 0);
  const pooled = wilson(kAll, classified);
  return {
    kind: 'audit',
    version: 1,
    fingerprint: input.fingerprint,
    settings: input.settings,
    plan: input.plan,
    classes,
    professions: perProfession,
    summary: {
      images: input.images.length,
      classified,
      unclear: input.images.length - classified,
      targetClass,
      targetShare,
      share: { k: kAll, n: classified, p: num(pooled.p), lower: pooled.lower, upper: pooled.upper },
      meanDelta: {
        value: num(md.value),
        lower: num(md.lower),
        upper: num(md.upper),
        professions: md.professions,
        parityFloor: num(md.parityFloor),
        bootstrap: md.bootstrap,
      },
      seedGroups: { groups, mean: num(ms.mean), std: num(ms.std), values: groupMeans },
    },
    images: input.images,
  };
}

const IMAGE_EXTENSIONS = new Set(['.png', '.jpg', '.jpeg', '.webp']);

export interface FolderAuditOptions extends StatisticsOptions {
  out: string;
  /** DIR/<profession>/<image files> */
  dir: string;
  classifier: ClipClassifier;
  attribute: Attribute;
  threshold?: number;
  /** Articles and order of professions; folders not in the list are an error. Default: the folder names. */
  professions?: ProfessionList;
  batchSize?: number;
  restart?: boolean;
  onProgress?: (progress: AuditProgress) => void;
}

/**
 * An audit of a folder of images (the audit job's `fromImages`): audit images another generator made (one folder per profession), with
 * the same classifier, statistics, store and resume. Images are keyed by file name and content hash.
 */
export async function auditImageFolder(options: FolderAuditOptions): Promise<AuditResult> {
  const { classifier, attribute } = options;
  const { targetClass, targetShare } = validateCommon(options);
  const dir = resolve(options.dir);
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new UsageError(`${show(options.dir)} is not a folder`, { field: 'fromImages' });
  const folders = readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
  if (folders.length === 0)
    throw new UsageError(`${show(options.dir)} has no sub-folders (expected one folder of images per profession)`, {
      field: 'fromImages',
    });
  const byName = new Map(folders.map((f) => [f.toLowerCase().replace(/[_-]+/g, ' '), f]));
  let profs: { profession: Profession; folder: string }[];
  if (options.professions) {
    const missing = options.professions.professions.filter((p) => !byName.has(p.profession.toLowerCase()));
    if (missing.length) {
      throw new UsageError(
        `${show(options.dir)}: no folder for ${missing.map((m) => show(m.profession)).join(', ')} (folders: ${folders.join(', ')})`,
        { field: 'fromImages' },
      );
    }
    profs = options.professions.professions.map((p) => ({
      profession: p,
      folder: byName.get(p.profession.toLowerCase()) as string,
    }));
  } else {
    profs = folders.map((f) => {
      const name = f.replace(/[_-]+/g, ' ');
      return { profession: { profession: name, article: /^[aeiou]/i.test(name) ? 'an' : 'a' }, folder: f };
    });
  }
  const files = profs.map(({ folder }) =>
    readdirSync(join(dir, folder))
      .filter((f) => IMAGE_EXTENSIONS.has(extname(f).toLowerCase()))
      .sort(),
  );
  const empty = profs.filter((_, i) => files[i]?.length === 0).map((p) => p.folder);
  if (empty.length)
    throw new UsageError(`no images (.png/.jpg/.jpeg/.webp) in ${empty.map((e) => show(e)).join(', ')}`, {
      field: 'fromImages',
    });
  const batchSize = options.batchSize ?? 16;
  const settings = {
    source: { kind: 'images', dir },
    classifier: {
      path: classifier.folder.dir,
      digest: folderDigest(classifier.folder.dir),
      logitScale: classifier.logitScale,
      preprocess: classifier.preprocessing,
    },
    attribute,
    threshold: options.threshold ?? null,
  };
  const out = resolve(options.out);
  const store = RunStore.open(out, settings, { restart: options.restart });
  try {
    const done = new Map<string, ClassifiedRecord>();
    for (const r of store.records) if (r.kind === 'classified') done.set(r.key, r);
    const total = files.reduce((s, f) => s + (f?.length ?? 0), 0);
    const keys = profs.map(({ folder }, i) =>
      (files[i] as string[]).map((f) => {
        const path = join(dir, folder, f);
        return {
          path,
          key: `${folder}/${f}#${createHash('sha256').update(readFileSync(path)).digest('hex').slice(0, 16)}`,
        };
      }),
    );
    let count = keys.flat().filter((k) => done.has(k.key)).length;
    for (const [i, { profession }] of profs.entries()) {
      const list = keys[i] as { path: string; key: string }[];
      const pending = list.filter((k) => !done.has(k.key));
      for (let start = 0; start < pending.length; start += batchSize) {
        const chunk = pending.slice(start, start + batchSize);
        const results = await classifier.classify(
          chunk.map((c) => c.path),
          attribute,
          { profession: profession.profession, threshold: options.threshold },
        );
        results.forEach((r, j) => {
          const c = chunk[j] as { path: string; key: string };
          const rec = classifiedRecord(c.key, profession.profession, r);
          store.append(rec);
          done.set(c.key, rec);
          count++;
        });
        options.onProgress?.({ done: count, total, generated: 0, profession: profession.profession });
      }
    }
    const index = new Map<AuditImage, number>();
    const images: AuditImage[] = [];
    for (const [i, { profession }] of profs.entries()) {
      for (const [j, k] of (keys[i] as { path: string; key: string }[]).entries()) {
        const rec = done.get(k.key) as ClassifiedRecord;
        const img: AuditImage = {
          profession: profession.profession,
          prompt: null,
          template: null,
          seed: null,
          file: k.path,
          kind: rec.unclear ? 'unclear' : 'label',
          label: rec.label,
          probabilities: rec.probabilities,
        };
        index.set(img, j);
        images.push(img);
      }
    }
    const maxCount = Math.max(...files.map((f) => f?.length ?? 0));
    const result = computeAudit({
      fingerprint: store.header.fingerprint,
      settings,
      plan: {
        source: 'images',
        professions: profs.map(({ profession: p }) => ({ profession: p.profession, article: p.article })),
        professionList: options.professions?.name ?? relative(process.cwd(), dir),
        templates: [],
        seeds: null,
      },
      attribute,
      professions: profs.map((p) => p.profession),
      images,
      groupIndex: (img) => index.get(img) ?? 0,
      groupRange: maxCount,
      targetClass,
      targetShare,
      bootstrap: options.bootstrap,
      seedGroups: options.seedGroups,
    });
    writeAuditJson(out, result);
    return result;
  } finally {
    store.close();
  }
}

/** Read a run folder's audit.json (validated). */
export function readAudit(runDir: string): AuditResult {
  const path = join(resolve(runDir), 'audit.json');
  if (!existsSync(path))
    throw new UsageError(`${show(runDir)}: no audit.json (is it an audit run folder that finished?)`);
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'));
  } catch (cause) {
    throw new UsageError(`${show(path)} is not valid JSON: ${(cause as Error).message}`, { cause });
  }
  validateAuditJson(doc);
  return doc as AuditResult;
}
