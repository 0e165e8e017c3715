/**
 * The debias job end to end on the demo world, small: audit before → tune → one joint solve →
 * export → audit after. Checks that the bias really falls on held-out prompts and seeds, that the
 * exported model is a loadable model folder with the manifest, that gendered prompts keep their
 * gender, and that the reports are written.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { normalizeConfig } from '../../src/debias/config.js';
import { runDebiasJob } from '../../src/debias/job.js';
import { openJobWorld } from '../../src/debias/open.js';
import { ensureDemoWorld } from '../../src/demo/world.js';
import { inspectModel } from '../../src/model/inspect.js';
import { writeDebiasReports } from '../../src/report/debias.js';

const dir = mkdtempSync(join(tmpdir(), 'debias-job-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The small demo job the CI runs (the full one is `npm run demo`). */
export const SMALL_DEMO = {
  name: 'small',
  model: 'demo',
  classifier: 'demo',
  professions: { list: 'demo', select: ['nurse', 'doctor', 'teacher'], heldOut: ['carpenter'] },
  prompts: { augment: false, tuningTemplates: ['{Article} {profession}', 'a photo of {article} {profession}'] },
  generation: { steps: 6, height: 64, width: 64, batchSize: 32 },
  tuning: { imagesPerProbe: 96, batch: 32, tolerance: 0.08, verificationImages: 128, jointRounds: 1 },
  audit: { imagesPerProfession: 60 },
};

function debiasChartText(runDir: string): string {
  return readFileSync(join(runDir, 'debias.svg'), 'utf8');
}

/** Every file under `dir` but config.json: size and modification time. */
function snapshot(dir: string, prefix = ''): Record<string, [number, number]> {
  const out: Record<string, [number, number]> = {};
  for (const name of readdirSync(join(dir, prefix))) {
    const rel = prefix ? `${prefix}/${name}` : name;
    const st = statSync(join(dir, rel));
    if (st.isDirectory()) Object.assign(out, snapshot(dir, rel));
    else if (rel !== 'config.json') out[rel] = [st.size, st.mtimeMs];
  }
  return out;
}

test('small demo job: bias falls on held-out prompts and seeds, model exported and loadable; a second run redoes nothing; a crash before the final state resumes', async () => {
  const world = ensureDemoWorld();
  const config = normalizeConfig({ ...SMALL_DEMO, output: dir }, dir);
  const opened = await openJobWorld(config, {
    modelDir: world.modelDir,
    classifierDir: world.classifierDir,
    professions: world.professions,
  });
  try {
    // --export-partial: this small job need not reach the tolerance; the model is exported either way
    const result = await runDebiasJob(opened.config, opened.world, { exportPartial: true });
    const s = result.summary;
    assert.ok(s.meanDeltaBefore && s.meanDeltaAfter);
    assert.ok(s.meanDeltaBefore.value >= 0.5, `before ${s.meanDeltaBefore.value}`);
    // A small run: the evaluation sample is 60 images per profession, so Δ after carries ±0.1 of
    // sampling noise; the full demo (`npm run demo`, 200 images) is the acceptance measurement.
    assert.ok(s.meanDeltaAfter.value <= 0.3, `after ${s.meanDeltaAfter.value}`);
    assert.ok(
      s.meanDeltaAfter.value <= s.meanDeltaBefore.value - 0.3,
      `before ${s.meanDeltaBefore.value}, after ${s.meanDeltaAfter.value}`,
    );
    assert.ok(s.tuningImages > 0 && s.tuningImagesPerProfession <= 400, String(s.tuningImagesPerProfession));
    assert.ok(s.genderedKept && (s.genderedKept.share as number) >= 0.9, JSON.stringify(s.genderedKept));
    assert.ok(s.unrelatedTextChange && Number.isFinite(s.unrelatedTextChange.mean));
    assert.equal(result.professions.length, 3);
    for (const p of result.professions) {
      assert.ok(p.strength > 0 && Number.isFinite(p.strength));
      assert.ok(p.jointShares.length >= 1);
    }
    // held-out (unedited) profession stays where it was
    const carpenter = result.heldOut[0]!;
    assert.ok(Math.abs((carpenter.after!.share as number) - (carpenter.before!.share as number)) <= 0.1);
    const model = join(result.runDir, 'model');
    assert.equal(result.exported, model);
    const manifest = JSON.parse(readFileSync(join(model, 'time-edit.json'), 'utf8'));
    assert.equal(manifest.debias.professions.length, 3);
    // written once, before the after audit (which records the folder's digest): no after shares
    assert.ok(
      manifest.debias.professions.every(
        (p: { before: unknown; after: unknown; strength: number }) => p.before && p.after === null && p.strength > 0,
      ),
    );
    assert.equal(inspectModel(model).sites.length, inspectModel(world.modelDir).sites.length);
    const files = await writeDebiasReports(result);
    for (const f of files) assert.ok(existsSync(join(result.runDir, f)), f);
    const job = JSON.parse(readFileSync(join(result.runDir, 'job.json'), 'utf8'));
    assert.ok(job.probes.length >= 3);
    const html = readFileSync(join(result.runDir, 'report.html'), 'utf8');
    const md = readFileSync(join(result.runDir, 'report.md'), 'utf8');
    assert.match(html, /<svg/);
    // every link and image of the reports resolves, relative to the run folder
    const targets = [
      ...[...md.matchAll(/\]\(([^)]+)\)/g)].map((m) => m[1] as string),
      ...[...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1] as string),
    ];
    assert.ok(targets.length >= 11, targets.join(', '));
    for (const t of targets) assert.ok(existsSync(join(result.runDir, t)), t);
    // a before/after sheet per profession, the held-out one marked, in the table, chart and sheets
    for (const p of ['nurse', 'doctor', 'teacher', 'carpenter']) {
      assert.ok(targets.includes(`sheets/${p}.png`), p);
      assert.ok(result.images.find((i) => i.profession === p)!.pairs.length > 0, p);
    }
    assert.match(md, /carpenter \(held out, not edited\)/);
    assert.match(debiasChartText(result.runDir), /carpenter \(not edited\)/);
    assert.match(md, /## Explicitly gendered prompts/);
    assert.match(md, /## Unrelated prompts' text-side change/);
    // paired: the same prompt and seed before and after
    for (const i of result.images)
      for (const p of i.pairs) assert.ok(p.before.file.startsWith('before/') && p.after.file.startsWith('after/'));

    // Run again: the finished job returns its result and touches nothing (config.json aside).
    const snap = snapshot(result.runDir);
    const again = await runDebiasJob(opened.config, opened.world, { exportPartial: true });
    assert.deepEqual(again, result);
    assert.deepEqual(snapshot(result.runDir), snap);

    // A crash after the export and the after audit, before the final state: the rerun resumes, renders
    // no image (the audits resume complete, the model's digest is the one they recorded) and ends
    // with the same result.
    const statePath = join(result.runDir, 'state.json');
    writeFileSync(statePath, JSON.stringify({ ...JSON.parse(readFileSync(statePath, 'utf8')), phase: 'after' }));
    rmSync(join(result.runDir, 'job.json'));
    const resumed = await runDebiasJob(opened.config, opened.world, { exportPartial: true });
    assert.deepEqual(resumed, result);
    const after = snapshot(result.runDir);
    for (const [f, v] of Object.entries(snap)) {
      if (f.endsWith('.jsonl') || f.startsWith('model/')) assert.deepEqual(after[f], v, f);
    }
  } finally {
    await opened.dispose();
  }
});
