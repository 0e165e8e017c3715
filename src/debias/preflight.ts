/**
 * Every check of a debias job that needs no image, run before any audit (and by `--dry-run`, which
 * runs the same function): held-out names, at least one profession to edit, the edited sites, the
 * a/an tokens of the TIME alignment. What it returns is what the stages share: the attribute, the
 * professions edited and held out, the sites, the generation settings and the evaluation plan.
 */
import type { Profession } from '../audit/professions.js';
import { type SeedPlan, seedPlan } from '../audit/seeds.js';
import type { Attribute } from '../classify/labels.js';
import { alignmentTokens, selectSites } from '../edit/prepare.js';
import { checkWorkBounds } from '../generate/bounds.js';
import { declaredSampleSize } from '../generate/model-geometry.js';
import type { SdModel } from '../model/folder.js';
import { checkOutsideModel } from '../model/path-guard.js';
import { type EditSite, locateSites } from '../model/sites.js';
import type { ClipTokenizer } from '../text/tokenizer.js';
import { ConfigError, show } from '../util/errors.js';
import type { JobConfig } from './config.js';
import { runDirOf } from './run-folder.js';
import type { JobWorld } from './types.js';

export interface Preflight {
  attribute: Attribute;
  /** every profession audited (edited and held out), in the list's order */
  all: Profession[];
  edited: Profession[];
  held: Set<string>;
  /** the sites the edit writes (every to_k/to_v site in this version) */
  sites: EditSite[];
  /** TIME's alignment tokens */
  tokens: { a: number; an: number; eos: number };
  /** the generation settings of every image the job renders */
  generation: {
    steps: number;
    scheduler: JobConfig['generation']['scheduler'];
    guidance: number;
    height?: number;
    width?: number;
    negativePrompt: string;
    batchSize: number;
  };
  /** the before/after audits: held-out templates, distinct evaluation seeds per template */
  evaluation: { templates: string[]; perTemplate: number; seeds: SeedPlan & { perTemplate: 'distinct' } };
}

export function attributeOf(config: JobConfig): Attribute {
  return {
    name: config.attribute.name,
    classes: config.attribute.classes.map((c) => ({ name: c.id, prompts: [...c.labels] })),
  };
}

export function preflight(
  config: JobConfig,
  world: { model: SdModel; tokenizer: ClipTokenizer; professions: JobWorld['professions'] },
): Preflight {
  const all = world.professions.professions;
  const held = new Set(config.professions.heldOut);
  for (const h of held) {
    if (!all.some((p) => p.profession === h)) {
      throw new ConfigError(
        `config.professions.heldOut: ${show(h)} is not in the list ${show(world.professions.name)} (rule: known profession)`,
      );
    }
  }
  // The run folder (emptied by --restart, the exported model inside it) never touches the model.
  checkOutsideModel('outDir', runDirOf(config), world.model.dir, { replacing: true });
  // Every number that sizes memory or time, the same bounds as the CLI's.
  const perProfession = Math.max(
    config.audit.imagesPerProfession,
    config.tuning.imagesPerProbe,
    config.tuning.verificationImages,
  );
  checkWorkBounds(
    {
      height: config.generation.height,
      width: config.generation.width,
      batchSize: config.generation.batchSize,
      steps: config.generation.steps,
      images: perProfession * all.length,
    },
    {
      // the images of the largest audit or probe (its setting names them), times the professions
      fields: {
        images:
          perProfession === config.audit.imagesPerProfession
            ? 'imagesPerProfession'
            : perProfession === config.tuning.imagesPerProbe
              ? 'imagesPerProbe'
              : 'verificationImages',
      },
      sampleSize: declaredSampleSize(world.model.dir),
      error: (m, o) => new ConfigError(m, o),
    },
  );
  const edited = all.filter((p) => !held.has(p.profession));
  if (edited.length === 0) throw new ConfigError('config.professions: no profession left to edit (rule: at least one)');

  const located = locateSites(world.model);
  const sites = selectJobSites(located, config);
  if (sites.length !== located.length) {
    throw new ConfigError(
      `config.edit: tuning edits of a subset of sites (${sites.length} sites) need a UNet per probe; this version tunes edits of every to_k/to_v site only (use the default projections and layers)`,
    );
  }
  const tokens = alignTokensOf(world.tokenizer);

  const gen = config.generation;
  const templates = config.prompts.evaluationTemplates;
  const perTemplate = Math.max(1, Math.ceil(config.audit.imagesPerProfession / templates.length));
  return {
    attribute: attributeOf(config),
    all: [...all],
    edited,
    held,
    sites,
    tokens,
    generation: {
      steps: gen.steps,
      scheduler: gen.scheduler,
      guidance: gen.guidance,
      height: gen.height,
      width: gen.width,
      negativePrompt: gen.negativePrompt,
      batchSize: gen.batchSize,
    },
    // Distinct seeds per template: imagesPerProfession independent seeds per profession.
    evaluation: {
      templates,
      perTemplate,
      seeds: { ...seedPlan('evaluation', perTemplate, config.seeds.evaluation), perTemplate: 'distinct' },
    },
  };
}

/** TIME's alignment tokens, by the edit core's one rule (edit/prepare.ts: "an" read as "a"). */
function alignTokensOf(tokenizer: ClipTokenizer): { a: number; an: number; eos: number } {
  return alignmentTokens(tokenizer);
}

/** The edited sites, by the edit core's one rule for projections and layer prefixes (edit/prepare.ts). */
function selectJobSites(sites: EditSite[], config: JobConfig): EditSite[] {
  return selectSites(sites, config.edit.projections, config.edit.layers);
}
