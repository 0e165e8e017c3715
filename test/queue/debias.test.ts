/**
 * A small debias job on the demo world through the queue (2 workers) writes the same as in
 * process: byte-identical job.json probes and before audit.json, the same after shares, and the
 * same exported model, byte for byte (every file, time-edit.json and edit.safetensors included: an
 * export carries no clock, so the same edit exports the same bytes). Tuning probes travel as text
 * transforms M; the after audit names the exported folder by digest (the workers' --models include
 * the job's output folder).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { normalizeConfig } from '../../src/debias/config.js';
import { runDebiasJob } from '../../src/debias/job.js';
import { openJobWorld } from '../../src/debias/open.js';
import { folderDigest } from '../../src/model/folder-digest.js';
import { type RenderWorker, startWorker } from '../../src/queue/worker.js';
import { redisMissing, startRedis, type TestRedis } from './redis.js';
import { makeQueueWorld, type QueueWorld } from './world.js';

const missing = redisMissing();

const TINY = {
  name: 'tiny',
  model: 'demo',
  classifier: 'demo',
  professions: { list: 'demo', select: ['nurse', 'doctor'], heldOut: ['carpenter'] },
  prompts: { augment: false, tuningTemplates: ['{Article} {profession}', 'a photo of {article} {profession}'] },
  generation: { steps: 3, height: 64, width: 64, batchSize: 16 },
  tuning: { imagesPerProbe: 16, batch: 16, tolerance: 0.2, verificationImages: 16, jointRounds: 1 },
  audit: { imagesPerProfession: 8, gendered: true },
};

let redis: TestRedis;
let w: QueueWorld;
before(async () => {
  if (missing) return;
  redis = await startRedis();
  w = makeQueueWorld();
});
after(async () => {
  await redis?.stop();
  w?.cleanup();
});

/** sha256 of every file of a model folder, by relative path. */
function fileDigests(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string, rel: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name), `${rel}${e.name}/`);
      else
        out[`${rel}${e.name}`] = createHash('sha256')
          .update(readFileSync(join(d, e.name)))
          .digest('hex');
    }
  };
  walk(dir, '');
  return out;
}

async function run(output: string, queue?: string) {
  mkdirSync(output, { recursive: true });
  const config = normalizeConfig({ ...TINY, output, ...(queue ? { queue } : {}) }, output);
  const opened = await openJobWorld(config, {
    modelDir: w.world.modelDir,
    classifierDir: w.world.classifierDir,
    professions: w.world.professions,
  });
  try {
    return await runDebiasJob(opened.config, opened.world, { exportPartial: true });
  } finally {
    await opened.dispose();
  }
}

test('debias through the queue with 2 workers = in process (probes, audits, exported model)', {
  skip: missing ?? false,
}, async () => {
  const inProcess = await run(join(w.root, 'a'));
  const out = join(w.root, 'b');
  mkdirSync(out);
  const workers: RenderWorker[] = [];
  try {
    for (const name of ['w1', 'w2'])
      workers.push(await startWorker({ url: redis.url, models: [w.models, out], threads: 1, name }));
    const queued = await run(out, redis.url);
    const read = (dir: string, f: string) => readFileSync(join(dir, f), 'utf8');
    const ja = JSON.parse(read(inProcess.runDir, 'job.json'));
    const jb = JSON.parse(read(queued.runDir, 'job.json'));
    assert.equal(JSON.stringify(jb.probes), JSON.stringify(ja.probes));
    assert.ok(ja.probes.length >= 2);
    assert.equal(
      read(queued.runDir, 'before/audit.json'),
      read(inProcess.runDir, 'before/audit.json').replaceAll(join(w.root, 'a'), out),
    );
    assert.deepEqual(
      queued.professions.map((p) => [p.profession, p.strength, p.after]),
      inProcess.professions.map((p) => [p.profession, p.strength, p.after]),
    );
    assert.equal(queued.exported !== null, inProcess.exported !== null);
    if (inProcess.exported && queued.exported) {
      // the same files, byte for byte, and so the same model digest
      const files = fileDigests(queued.exported);
      assert.ok('time-edit.json' in files && 'edit.safetensors' in files);
      assert.deepEqual(files, fileDigests(inProcess.exported));
      assert.equal(folderDigest(queued.exported), folderDigest(inProcess.exported));
      assert.equal(read(queued.runDir, 'after/audit.json').length > 0, true);
    }
    assert.ok(workers.reduce((n, x) => n + x.stats.tasks, 0) > 0, 'the workers rendered the job');
  } finally {
    for (const x of workers) await x.close();
  }
});
