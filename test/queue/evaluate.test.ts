/**
 * `evaluate --queue`: TIMED's evaluation rendered and classified by workers gives the same run
 * folder as in process — byte-identical evaluate.json (every metric, interval, per-prompt count,
 * settings and fingerprint) and contact-sheet PNGs — with 1 worker (through the CLI) and 2 workers
 * (through the library); each row's edit travels as its M by digest. A finished run resumes
 * without a task, and a run folder started in process is finished on the workers; a bad URL, no worker and an unreachable Redis are clear errors, as for audit.
 * Real redis-server (test/queue/redis.ts); workers in this process (startWorker).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type EvaluateJobOptions, runEvaluateJob } from '../../src/evaluate/job.js';
import { type RenderWorker, startWorker } from '../../src/queue/worker.js';
import { QueueError, UsageError } from '../../src/util/errors.js';
import { freePort, redisMissing, startRedis, type TestRedis } from './redis.js';
import { makeQueueWorld, type QueueWorld } from './world.js';

const missing = redisMissing();
const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'time-debias.js');

/** Rows 0 and 1 of the demo TIMED file (two per-row edits), 3 images per prompt, one chunk (task) each. */
const ROWS = '0,1';
const IMAGES = 3;
const BATCH = 3;
/** 2 phases × 2 rows × 11 prompts. */
const TASKS = 2 * 2 * 11;

function options(w: QueueWorld, out: string, extra: Partial<EvaluateJobOptions> = {}): EvaluateJobOptions {
  return {
    dataset: 'demo',
    model: w.world.modelDir,
    classifier: w.world.classifierDir,
    out: join(w.root, out),
    rows: ROWS,
    images: IMAGES,
    mode: 'per-row',
    lambdas: [0.1],
    augment: false,
    generation: { steps: 8, guidance: 7.5, scheduler: 'pndm', height: 64, width: 64, batchSize: BATCH },
    threads: 1,
    sheetImages: 2,
    bootstrap: { samples: 200, seed: 3 },
    ...extra,
  };
}

/** evaluate.json and every PNG (kept images, contact sheets) of a run folder, as bytes. */
function runBytes(dir: string): { json: string; files: Record<string, string> } {
  const files: Record<string, string> = {};
  const walk = (d: string, rel: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name), `${rel}${e.name}/`);
      else files[`${rel}${e.name}`] = readFileSync(join(d, e.name)).toString('base64');
    }
  };
  for (const sub of ['images', 'sheets']) if (existsSync(join(dir, sub))) walk(join(dir, sub), `${sub}/`);
  return { json: readFileSync(join(dir, 'evaluate.json'), 'utf8'), files };
}

/** Run the CLI without blocking this process's event loop (its workers serve the CLI's tasks). */
function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d) => {
      stdout += d;
    });
    proc.stderr.on('data', (d) => {
      stderr += d;
    });
    proc.once('exit', (code) => res({ code, stdout, stderr }));
  });
}

describe('evaluate through the queue', { skip: missing ?? false }, () => {
  let redis: TestRedis;
  let w: QueueWorld;
  let reference: ReturnType<typeof runBytes>;
  before(async () => {
    redis = await startRedis();
    w = makeQueueWorld();
    await runEvaluateJob(options(w, 'in-process'));
    reference = runBytes(join(w.root, 'in-process'));
  });
  after(async () => {
    await redis?.stop();
    w?.cleanup();
  });

  test('1 worker, the CLI: evaluate.json and PNGs byte-identical to the in-process run', async () => {
    const worker = await startWorker({ url: redis.url, models: [w.models], threads: 1, name: 'w1' });
    try {
      const o = options(w, 'cli-1');
      const r = await cli([
        'evaluate',
        '--dataset',
        'demo',
        '--model',
        o.model,
        '--classifier',
        o.classifier,
        '--rows',
        ROWS,
        '--images',
        String(IMAGES),
        '--steps',
        '8',
        '--height',
        '64',
        '--width',
        '64',
        '--batch-size',
        String(BATCH),
        '--threads',
        '1',
        '--sheet-images',
        '2',
        '--bootstrap',
        '200',
        '--bootstrap-seed',
        '3',
        '--out',
        o.out,
        '--queue',
        redis.url,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /evaluate: \d+\/132 images \(after-lambda-0\.1\).*1 workers \(seen: w1\)/);
      assert.match(r.stdout, /efficacy/);
      const got = runBytes(o.out);
      assert.equal(got.json, reference.json);
      assert.deepEqual(got.files, reference.files);
      assert.equal(worker.stats.tasks, TASKS, 'every chunk rendered once');
      assert.equal(worker.stats.images, 2 * 2 * 11 * IMAGES);
    } finally {
      await worker.close();
    }
  });

  test('2 workers: byte-identical; a finished run resumes without a task', async () => {
    const workers: RenderWorker[] = [];
    try {
      for (const name of ['a', 'b'])
        workers.push(await startWorker({ url: redis.url, models: [w.models], threads: 1, name }));
      const seen = new Set<string>();
      const job = await runEvaluateJob(
        options(w, 'queue-2', {
          queue: redis.url,
          queueOptions: { checkIntervalMs: 200 },
          onProgress: (p) => {
            for (const s of p.workers?.seen ?? []) seen.add(s);
          },
        }),
      );
      assert.equal(job.result.rows.length, 2);
      const got = runBytes(join(w.root, 'queue-2'));
      assert.equal(got.json, reference.json);
      assert.deepEqual(got.files, reference.files);
      assert.equal(
        workers.reduce((s, x) => s + x.stats.tasks, 0),
        TASKS,
      );
      assert.ok(seen.size >= 1);
      const before = workers.map((x) => x.stats.tasks);
      await runEvaluateJob(options(w, 'queue-2', { queue: redis.url }));
      assert.deepEqual(
        workers.map((x) => x.stats.tasks),
        before,
        'nothing enqueued again',
      );
      assert.equal(runBytes(join(w.root, 'queue-2')).json, reference.json);
      // a run folder started in process (its first half of chunks recorded) is finished on the workers
      const mixed = join(w.root, 'mixed');
      cpSync(join(w.root, 'in-process'), mixed, { recursive: true });
      rmSync(join(mixed, 'evaluate.json'));
      const lines = readFileSync(join(mixed, 'records.jsonl'), 'utf8').trim().split('\n');
      assert.equal(lines.length, TASKS * IMAGES);
      writeFileSync(join(mixed, 'records.jsonl'), `${lines.slice(0, (TASKS / 2) * IMAGES).join('\n')}\n`);
      await runEvaluateJob(options(w, 'mixed', { queue: redis.url, queueOptions: { checkIntervalMs: 200 } }));
      assert.equal(
        workers.reduce((s, x) => s + x.stats.tasks, 0) - before.reduce((a, b) => a + b, 0),
        TASKS / 2,
        'only the chunks the store lacks',
      );
      assert.equal(runBytes(mixed).json, reference.json);
    } finally {
      for (const x of workers) await x.close();
    }
  });

  test('bad URL, no worker, Redis unreachable: clear errors (exit 2 / queue errors) within bounded time', async () => {
    await assert.rejects(
      runEvaluateJob(options(w, 'bad-url', { queue: 'http://127.0.0.1:6379' })),
      (e: Error) =>
        e instanceof UsageError &&
        e.field === 'queue' &&
        /^queue: "http:\/\/127\.0\.0\.1:6379" has scheme http:/.test(e.message),
    );
    assert.ok(!existsSync(join(w.root, 'bad-url')), 'nothing written before the URL is checked');
    const r = await cli([
      'evaluate',
      '--dataset',
      'demo',
      '--model',
      'demo',
      '--classifier',
      'demo',
      '--out',
      join(w.root, 'bad-url'),
      '--queue',
      'redis://nohost:notaport',
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--queue: "redis:\/\/nohost:notaport" is not a URL/);
    let t0 = Date.now();
    await assert.rejects(
      runEvaluateJob(
        options(w, 'no-worker', {
          rows: '0',
          images: 1,
          queue: redis.url,
          queueOptions: { checkIntervalMs: 200, noWorkerTimeoutMs: 1500 },
        }),
      ),
      (e: Error) => e instanceof QueueError && /no worker has been connected for 2 s/.test(e.message),
    );
    assert.ok(Date.now() - t0 < 15_000, `took ${Date.now() - t0} ms`);
    t0 = Date.now();
    const closed = `redis://127.0.0.1:${await freePort()}`;
    await assert.rejects(
      runEvaluateJob(options(w, 'no-redis', { queue: closed, queueOptions: { redisTimeoutMs: 1500 } })),
      (e: Error) => e instanceof QueueError && e.message.includes(closed),
    );
    assert.ok(Date.now() - t0 < 10_000, `took ${Date.now() - t0} ms`);
  });
});
