/**
 * Stage 5, after: the debiased model — the exported folder, or the in-memory edit when nothing was
 * exported — audited on the held-out prompts and seeds, the explicitly gendered prompts audited on
 * it (do they keep their gender?), and the text-side change of unrelated prompts measured.
 */

import { isAbsolute } from 'node:path';
import { type Comparison, compareAudits } from '../../audit/compare.js';
import type { Profession } from '../../audit/professions.js';
import { type AuditImage, type AuditResult, runAudit } from '../../audit/run.js';
import { seedPlan } from '../../audit/seeds.js';
import type { GenerationSettings } from '../../audit/source.js';
import type { EditSolution } from '../../edit/solve.js';
import type { StableDiffusionPipeline } from '../../generate/pipeline.js';
import { type GemmEngine, matrix } from '../../linalg/gemm.js';
import { type EditSite, readSiteWeightStored } from '../../model/sites.js';
import type { JobConfig } from '../config.js';
import type { Preflight } from '../preflight.js';
import { UNRELATED_HELD_OUT_PROMPTS, UNRELATED_PROMPTS } from '../prompts.js';
import type { RunFolder } from '../run-folder.js';
import type { BeforeAfterImage, DebiasResult, JobWorld, TextChange } from '../types.js';
import { type AuditCommon, auditCommon } from './before.js';
import { auditSource, progressLogger } from './context.js';

export interface AfterResult {
  audit: AuditResult;
  comparison: Comparison;
  images: DebiasResult['images'];
  /** the after audit's folder, relative to the run folder */
  dir: string;
  genderedKept: DebiasResult['summary']['genderedKept'];
  unrelated: NonNullable<DebiasResult['summary']['unrelatedTextChange']>;
}

export async function runAfter(
  config: JobConfig,
  world: JobWorld,
  pre: Preflight,
  folder: RunFolder,
  before: AuditResult,
  edit: { exported: string | null; solution: EditSolution; gemm: GemmEngine },
  log: (line: string) => void,
): Promise<AfterResult> {
  const { exported, solution, gemm } = edit;
  const common = auditCommon(config, world, pre);
  const afterPipeline = exported ? await world.openPipeline(exported) : world.pipeline;
  const suffix = exported ? '' : '-unexported';
  const dir = `after${suffix}`;
  let audit: AuditResult;
  let genderedKept: DebiasResult['summary']['genderedKept'] = null;
  try {
    const settings = exported ? pre.generation : { ...pre.generation, textTransform: solution.M };
    log('after: auditing the debiased model on the held-out prompts and seeds');
    audit = await runAudit({
      ...common,
      out: folder.path(dir),
      source: await auditSource(world, afterPipeline, settings, config.device),
      onProgress: progressLogger(log, 'after'),
    });
    if (config.audit.gendered) {
      genderedKept = await genderedAudits(
        config,
        world,
        folder,
        suffix,
        afterPipeline,
        settings,
        common,
        pre.edited,
        log,
      );
    }
  } finally {
    if (afterPipeline !== world.pipeline) await afterPipeline.dispose();
  }
  const [preserved, heldOut] = await unrelatedChange(world, pre.sites, solution, gemm, [
    UNRELATED_PROMPTS,
    UNRELATED_HELD_OUT_PROMPTS,
  ]);
  return {
    audit,
    dir,
    comparison: compareAudits(before, audit, { bootstrap: { seed: 1 } }),
    images: beforeAfterImages(before, audit, pre, { before: 'before', after: dir }),
    genderedKept,
    unrelated: { ...(preserved as TextChange), heldOut: heldOut as TextChange },
  };
}

/**
 * Per profession, the images both audits kept (the first of the plan: the same held-out prompts and
 * seeds), paired by prompt and seed, up to `limit` pairs; files relative to the run folder.
 */
export function beforeAfterImages(
  before: AuditResult,
  after: AuditResult,
  pre: Pick<Preflight, 'all' | 'held'>,
  dirs: { before: string; after: string },
  limit = 8,
): DebiasResult['images'] {
  const key = (i: AuditImage) => `${i.profession}\u0000${i.prompt}\u0000${i.seed}`;
  const kept = (i: AuditImage) => i.file !== null && i.prompt !== null && i.seed !== null && !isAbsolute(i.file);
  const afterByKey = new Map(after.images.filter(kept).map((i) => [key(i), i]));
  const label = (i: AuditImage) => (i.kind === 'unclear' ? null : i.label);
  return pre.all.map((p) => {
    const pairs: BeforeAfterImage[] = [];
    for (const b of before.images) {
      if (pairs.length >= limit) break;
      if (b.profession !== p.profession || !kept(b)) continue;
      const a = afterByKey.get(key(b));
      if (!a) continue;
      pairs.push({
        prompt: b.prompt as string,
        seed: b.seed as number,
        before: { file: `${dirs.before}/${b.file}`, label: label(b) },
        after: { file: `${dirs.after}/${a.file}`, label: label(a) },
      });
    }
    return { profession: p.profession, edited: !pre.held.has(p.profession), pairs };
  });
}

async function genderedAudits(
  config: JobConfig,
  world: JobWorld,
  folder: RunFolder,
  suffix: string,
  pipeline: StableDiffusionPipeline,
  settings: GenerationSettings,
  common: AuditCommon,
  professions: readonly Profession[],
  log: (line: string) => void,
): Promise<NonNullable<DebiasResult['summary']['genderedKept']>> {
  const perClass: Record<string, { k: number; n: number }> = {};
  const perProfession: Record<string, Record<string, { k: number; n: number }>> = {};
  const count = Math.max(4, Math.ceil(config.audit.imagesPerProfession / 10));
  for (const c of config.attribute.classes) {
    log(`gendered: "{article} ${c.word} {profession}" on the debiased model`);
    const audit = await runAudit({
      ...common,
      professions: {
        kind: 'profession-list',
        name: `${common.professions.name} (edited)`,
        source: common.professions.source,
        professions: [...professions],
      },
      templates: [`{article} ${c.word} {profession}`.replace('{article}', articleOf(c.word))],
      seeds: seedPlan('evaluation', count, config.seeds.evaluation),
      targetClass: c.id,
      targetShare: config.target.class === c.id ? config.target.share : 1 - config.target.share,
      out: folder.path(`gendered-${c.id}${suffix}`),
      source: await auditSource(world, pipeline, settings, config.device),
    });
    const k = audit.professions.reduce((a, p) => a + (p.counts[c.id] ?? 0), 0);
    const n = audit.professions.reduce((a, p) => a + p.classified, 0);
    perClass[c.id] = { k, n };
    for (const p of audit.professions) {
      perProfession[p.profession] = {
        ...perProfession[p.profession],
        [c.id]: { k: p.counts[c.id] ?? 0, n: p.classified },
      };
    }
  }
  const k = Object.values(perClass).reduce((a, v) => a + v.k, 0);
  const n = Object.values(perClass).reduce((a, v) => a + v.n, 0);
  return { k, n, share: n ? k / n : null, perClass, perProfession };
}

function articleOf(word: string): string {
  return /^[aeiou]/i.test(word) ? 'an' : 'a';
}

/** ‖W'c − Wc‖/‖Wc‖ = ‖W(M − I)c‖/‖Wc‖ over the unrelated prompts' rows (all 77) and every edited site. */
async function unrelatedChange(
  world: Pick<JobWorld, 'model' | 'encode'>,
  sites: readonly EditSite[],
  solution: EditSolution,
  gemm: GemmEngine,
  lists: readonly (readonly string[])[],
): Promise<TextChange[]> {
  const { d } = solution;
  // Each site's weight is read once, as stored (Wᵀ [d, out] for the exporter's layout: X·Wᵀ needs no
  // transpose), for every prompt of every list.
  const weights = sites.map((site) => {
    const { W, transposed } = readSiteWeightStored(world.model, site);
    return { W: transposed ? matrix(W, d, W.length / d) : matrix(W, W.length / d, d), transB: !transposed };
  });
  const out: TextChange[] = [];
  for (const list of lists) {
    const prompts = [...list];
    const encoded = await world.encode(prompts);
    let total = 0;
    let max = 0;
    let count = 0;
    const perPrompt: number[] = [];
    for (const e of encoded) {
      let promptTotal = 0;
      const X = matrix(e.hidden, e.hidden.length / d, d);
      // rows of (Δc)ᵀ = cᵀΔᵀ
      const DX = await gemm.gemm(X, matrix(solution.delta, d, d), { transB: true });
      for (const { W, transB } of weights) {
        const wc = (await gemm.gemm(X, W, { transB })).data;
        const wd = (await gemm.gemm(DX, W, { transB })).data;
        let num = 0;
        let den = 0;
        for (let k = 0; k < wc.length; k++) {
          num += (wd[k] as number) ** 2;
          den += (wc[k] as number) ** 2;
        }
        const ratio = den > 0 ? Math.sqrt(num / den) : 0;
        total += ratio;
        promptTotal += ratio;
        max = Math.max(max, ratio);
        count++;
      }
      perPrompt.push(weights.length ? promptTotal / weights.length : 0);
    }
    out.push({ mean: count ? total / count : 0, max, prompts, perPrompt });
  }
  return out;
}
