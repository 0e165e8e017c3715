/**
 * The demo world and a small audit on it, shared by the queue tests: 3 professions × 2 templates ×
 * 4 seeds = 24 images in chunks of 2 (12 tasks), 8 PNDM steps at 64 × 64.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditJobOptions } from '../../src/audit/job.js';
import { type DemoWorld, ensureDemoWorld } from '../../src/demo/world.js';

export interface QueueWorld {
  root: string;
  world: DemoWorld;
  /** The folder workers get as --models (holds the model and the classifier). */
  models: string;
  cleanup(): void;
}

export function makeQueueWorld(): QueueWorld {
  const root = mkdtempSync(join(tmpdir(), 'td-queue-'));
  const world = ensureDemoWorld({ cacheDir: join(root, 'cache') });
  return { root, world, models: world.root, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

export function auditOptions(w: QueueWorld, out: string, extra: Partial<AuditJobOptions> = {}): AuditJobOptions {
  return {
    model: w.world.modelDir,
    classifier: w.world.classifierDir,
    professions: 'winobias35',
    select: ['nurse', 'physician', 'carpenter'],
    templates: ['{Article} {profession}', 'a photo of {article} {profession}'],
    images: 4,
    generation: { steps: 8, guidance: 7.5, scheduler: 'pndm', height: 64, width: 64 },
    batchSize: 2,
    sheetImages: 3,
    threads: 1,
    bootstrap: { samples: 200, seed: 3 },
    out: join(w.root, out),
    ...extra,
  };
}

/** audit.json and every kept PNG of a run folder, as bytes (for byte-for-byte comparisons). */
export function runBytes(dir: string): { audit: string; images: Record<string, string> } {
  const images: Record<string, string> = {};
  const walk = (d: string, rel: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name), `${rel}${e.name}/`);
      else images[`${rel}${e.name}`] = readFileSync(join(d, e.name)).toString('base64');
    }
  };
  walk(join(dir, 'images'), 'images/');
  return { audit: readFileSync(join(dir, 'audit.json'), 'utf8'), images };
}
