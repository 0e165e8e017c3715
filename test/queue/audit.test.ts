/**
 * An audit through the BullMQ/Redis queue gives the same run folder as in process: byte-identical
 * audit.json (shares, images, settings, fingerprint) and kept PNGs, with 1, 2 and 3 workers.
 * Real redis-server (test/queue/redis.ts); workers in this process (startWorker), each with its own
 * connections and sessions.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { runAuditJob } from '../../src/audit/job.js';
import { type RenderWorker, startWorker } from '../../src/queue/worker.js';
import { redisMissing, startRedis, type TestRedis } from './redis.js';
import { auditOptions, makeQueueWorld, type QueueWorld, runBytes } from './world.js';

const missing = redisMissing();

describe('audit through the queue', { skip: missing ?? false }, () => {
  let redis: TestRedis;
  let w: QueueWorld;
  let reference: ReturnType<typeof runBytes>;
  before(async () => {
    redis = await startRedis();
    w = makeQueueWorld();
    await runAuditJob(auditOptions(w, 'in-process'));
    reference = runBytes(`${w.root}/in-process`);
  });
  after(async () => {
    await redis?.stop();
    w?.cleanup();
  });

  for (const n of [1, 2, 3]) {
    test(`${n} worker(s): audit.json and kept PNGs byte-identical to the in-process run`, async () => {
      const workers: RenderWorker[] = [];
      try {
        for (let i = 0; i < n; i++)
          workers.push(await startWorker({ url: redis.url, models: [w.models], threads: 1, name: `w${i + 1}` }));
        const seen = new Set<string>();
        const out = `queue-${n}`;
        const result = await runAuditJob(
          auditOptions(w, out, {
            queue: redis.url,
            queueOptions: { checkIntervalMs: 200 },
            onProgress: (p) => {
              for (const s of p.workers?.seen ?? []) seen.add(s);
            },
          }),
        );
        assert.equal(result.summary.images, 24);
        const got = runBytes(`${w.root}/${out}`);
        assert.equal(got.audit, reference.audit);
        assert.deepEqual(got.images, reference.images);
        assert.equal(Object.keys(got.images).length, 3 * 3, 'sheetImages 3: three images kept per profession');
        const tasks = workers.reduce((s, x) => s + x.stats.tasks, 0);
        assert.equal(tasks, 12, 'every task rendered once');
        assert.ok(seen.size >= 1 && seen.size <= n);
      } finally {
        for (const x of workers) await x.close();
      }
    });
  }

  test('a finished run through the queue resumes without enqueueing anything', async () => {
    const worker = await startWorker({ url: redis.url, models: [w.models], threads: 1, name: 'idle' });
    try {
      await runAuditJob(auditOptions(w, 'queue-1', { queue: redis.url }));
      assert.equal(worker.stats.tasks, 0);
      assert.equal(runBytes(`${w.root}/queue-1`).audit, reference.audit);
    } finally {
      await worker.close();
    }
  });
});
