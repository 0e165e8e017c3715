/**
 * Faults on the demo world with a real Redis, each ending in the in-process run's exact bytes (or a
 * clear, bounded-time error):
 *   - a worker SIGKILLed in the middle of a task: another worker redoes it; nothing counted twice
 *   - a worker sent SIGTERM: it finishes the task in flight and exits 0; nothing rendered twice
 *   - the coordinator SIGKILLed and restarted: it resumes; nothing lost, nothing finished redone
 *   - Redis SIGKILLed and restarted without persistence: the coordinator re-enqueues what Redis lost
 *   - no worker has the model / no worker at all: a QueueError within seconds, not a hang
 *   - password and TLS (rediss://) URLs; a wrong password is a clear error
 * Workers and coordinators that get killed are child processes running the CLI.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { runAuditJob } from '../../src/audit/job.js';
import { type RenderWorker, startWorker } from '../../src/queue/worker.js';
import { QueueError } from '../../src/util/errors.js';
import { redisMissing, startRedis, type TestRedis } from './redis.js';
import { auditOptions, makeQueueWorld, type QueueWorld, runBytes } from './world.js';

const missing = redisMissing();
const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'time-debias.js');

interface Child {
  proc: ChildProcess;
  log: string[];
  /** Resolves when a log line matches. */
  waitFor(re: RegExp, ms?: number): Promise<string>;
  exited: Promise<number | null>;
}

function cli(args: string[], env: NodeJS.ProcessEnv = {}): Child {
  const proc = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log: string[] = [];
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  let buf = '';
  const onData = (d: Buffer) => {
    buf += d.toString();
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      log.push(line);
      for (const w of [...waiters]) if (w.re.test(line)) w.resolve(line);
      nl = buf.indexOf('\n');
    }
  };
  proc.stdout?.on('data', onData);
  proc.stderr?.on('data', onData);
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  return {
    proc,
    log,
    exited,
    waitFor(re, ms = 60_000) {
      const hit = log.find((l) => re.test(l));
      if (hit) return Promise.resolve(hit);
      return new Promise((res, rej) => {
        const t = setTimeout(
          () => rej(new Error(`no log line matching ${re} within ${ms} ms:\n${log.join('\n')}`)),
          ms,
        );
        waiters.push({
          re,
          resolve: (l) => {
            clearTimeout(t);
            res(l);
          },
        });
      });
    },
  };
}

async function kill(c: Child, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (c.proc.exitCode === null && c.proc.signalCode === null) {
    c.proc.kill(signal);
    await c.exited;
  }
}

function workerCli(redis: TestRedis, models: string, name: string, extra: string[] = []): Child {
  return cli(['worker', '--queue', redis.url, '--models', models, '--threads', '1', '--name', name, ...extra]);
}

/** The audit of world.ts's auditOptions, as a command line. */
function auditArgs(w: QueueWorld, out: string, queue: string): string[] {
  const o = auditOptions(w, out);
  return [
    'audit',
    '--model',
    o.model as string,
    '--classifier',
    o.classifier,
    '--professions',
    o.professions as string,
    '--select',
    ...(o.select as string[]),
    '--templates',
    ...(o.templates as string[]),
    '--images',
    String(o.images),
    '--steps',
    '8',
    '--height',
    '64',
    '--width',
    '64',
    '--batch-size',
    '2',
    '--sheet-images',
    '3',
    '--threads',
    '1',
    '--bootstrap',
    '200',
    '--bootstrap-seed',
    '3',
    '--out',
    o.out,
    '--queue',
    queue,
  ];
}

/** Classified records per image key in a run folder's store (each must be exactly 1). */
function classifiedCounts(dir: string): number[] {
  const counts = new Map<string, number>();
  for (const line of readFileSync(join(dir, 'records.jsonl'), 'utf8').split('\n')) {
    if (!line) continue;
    const r = JSON.parse(line) as { kind: string; key: string };
    if (r.kind === 'classified') counts.set(r.key, (counts.get(r.key) ?? 0) + 1);
  }
  return [...counts.values()];
}

describe('queue faults', { skip: missing ?? false }, () => {
  let w: QueueWorld;
  let reference: ReturnType<typeof runBytes>;
  const children: Child[] = [];
  before(async () => {
    w = makeQueueWorld();
    await runAuditJob(auditOptions(w, 'in-process'));
    reference = runBytes(join(w.root, 'in-process'));
  });
  after(async () => {
    for (const c of children) await kill(c);
    w?.cleanup();
  });

  test('a worker SIGKILLed mid-task: another worker redoes the task, results identical, nothing counted twice', async () => {
    const redis = await startRedis();
    let b: RenderWorker | undefined;
    try {
      const a = workerCli(redis, w.models, 'A', ['--lock-duration', '2']);
      children.push(a);
      await a.waitFor(/connected to/);
      const job = runAuditJob(
        auditOptions(w, 'kill-worker', { queue: redis.url, queueOptions: { checkIntervalMs: 200 } }),
      );
      await a.waitFor(/worker A: task .* images in/); // one task done, the next one in flight
      await kill(a);
      b = await startWorker({ url: redis.url, models: [w.models], threads: 1, name: 'B', lockDurationMs: 2000 });
      await job;
      const got = runBytes(join(w.root, 'kill-worker'));
      assert.equal(got.audit, reference.audit);
      assert.deepEqual(got.images, reference.images);
      assert.deepEqual(classifiedCounts(join(w.root, 'kill-worker')), new Array(24).fill(1));
      // B redid the task A was in (and more: its own short locks may lapse under load; at least once)
      assert.ok(b.stats.tasks >= 1, `worker B did ${b.stats.tasks} tasks; A's log:\n${a.log.join('\n')}`);
    } finally {
      await b?.close();
      await redis.stop();
    }
  });

  test('a worker sent SIGTERM mid-job finishes its task in flight and exits 0; nothing is rendered twice', async () => {
    const redis = await startRedis();
    let b: RenderWorker | undefined;
    try {
      const a = workerCli(redis, w.models, 'T');
      children.push(a);
      await a.waitFor(/connected to/);
      const job = runAuditJob(auditOptions(w, 'sigterm', { queue: redis.url, queueOptions: { checkIntervalMs: 200 } }));
      await a.waitFor(/worker T: task .* images in/); // one task done, the next one taken
      a.proc.kill('SIGTERM');
      assert.equal(await a.exited, 0, a.log.join('\n'));
      const at = a.log.findIndex((l) => /SIGTERM: finishing the tasks in flight/.test(l));
      assert.ok(at >= 0, a.log.join('\n'));
      const doneByA = a.log.filter((l) => /worker T: task .* images in/.test(l)).length;
      // concurrency 1: at most the one task in flight is finished after the signal
      assert.ok(a.log.slice(at).filter((l) => /worker T: task .* images in/.test(l)).length <= 1);
      b = await startWorker({ url: redis.url, models: [w.models], threads: 1, name: 'B' });
      await job;
      const got = runBytes(join(w.root, 'sigterm'));
      assert.equal(got.audit, reference.audit);
      assert.deepEqual(got.images, reference.images);
      assert.deepEqual(classifiedCounts(join(w.root, 'sigterm')), new Array(24).fill(1));
      // A finished what it had taken (nothing abandoned to a lock expiry): 12 tasks rendered for 12
      assert.equal(doneByA + b.stats.tasks, 12, `A did ${doneByA}, B did ${b.stats.tasks}`);
    } finally {
      await b?.close();
      await redis.stop();
    }
  });

  test('the coordinator SIGKILLed and restarted: resumes, nothing lost, nothing finished redone', async () => {
    const redis = await startRedis();
    const worker = await startWorker({ url: redis.url, models: [w.models], threads: 1, name: 'W' });
    try {
      const out = join(w.root, 'kill-coordinator');
      const first = cli(auditArgs(w, 'kill-coordinator', redis.url));
      children.push(first);
      // SIGKILL once a few results are in the store
      for (;;) {
        await new Promise((r) => setTimeout(r, 100));
        if (existsSync(join(out, 'records.jsonl')) && classifiedCounts(out).length >= 6) break;
        if (first.proc.exitCode !== null) break;
      }
      await kill(first);
      const recorded = classifiedCounts(out).length;
      assert.ok(recorded < 24, `the coordinator was killed before the end (${recorded} recorded)`);
      const second = cli(auditArgs(w, 'kill-coordinator', redis.url));
      children.push(second);
      assert.equal(await second.exited, 0, second.log.join('\n'));
      const got = runBytes(out);
      assert.equal(got.audit, reference.audit);
      assert.deepEqual(got.images, reference.images);
      assert.deepEqual(classifiedCounts(out), new Array(24).fill(1));
      assert.equal(worker.stats.tasks, 12, 'every task rendered exactly once over both coordinators');
    } finally {
      await worker.close();
      await redis.stop();
    }
  });

  test('Redis SIGKILLed and restarted without persistence mid-job: the coordinator re-enqueues what was lost', async () => {
    const redis = await startRedis({ persistent: false });
    const worker = await startWorker({ url: redis.url, models: [w.models], threads: 1, name: 'W' });
    try {
      const out = join(w.root, 'kill-redis');
      let restarted = false;
      let requeuedSeen = false;
      const job = runAuditJob(
        auditOptions(w, 'kill-redis', {
          queue: redis.url,
          queueOptions: { checkIntervalMs: 200, log: (l) => (requeuedSeen ||= /enqueued again/.test(l)) },
          onProgress: (p) => {
            if (!restarted && p.done >= 6) {
              restarted = true;
              void redis.restart(true);
            }
          },
        }),
      );
      await job;
      assert.ok(restarted);
      assert.ok(requeuedSeen, 'lost tasks were enqueued again');
      const got = runBytes(out);
      assert.equal(got.audit, reference.audit);
      assert.deepEqual(got.images, reference.images);
      assert.deepEqual(classifiedCounts(out), new Array(24).fill(1));
    } finally {
      await worker.close();
      await redis.stop();
    }
  });

  test('no worker has the model: QueueError within seconds, naming the digest; no worker at all: QueueError too', async () => {
    const redis = await startRedis();
    // a root with the classifier only; the model folder exists on this machine but outside the root
    const root = join(w.root, 'classifier-only');
    mkdirSync(root);
    cpSync(w.world.classifierDir, join(root, 'clip'), { recursive: true });
    const worker = await startWorker({ url: redis.url, models: [root], threads: 1, name: 'lacking' });
    try {
      const t0 = Date.now();
      await assert.rejects(
        runAuditJob(auditOptions(w, 'no-model', { queue: redis.url, queueOptions: { checkIntervalMs: 200 } })),
        (e: Error) => e instanceof QueueError && /no worker has model sha256 [0-9a-f]{12}/.test(e.message),
      );
      assert.ok(Date.now() - t0 < 20_000, `took ${Date.now() - t0} ms`);
      assert.equal(worker.stats.tasks, 0, 'the worker never opened the model at the hinted path');
    } finally {
      await worker.close();
    }
    try {
      const t0 = Date.now();
      await assert.rejects(
        runAuditJob(
          auditOptions(w, 'no-worker', {
            queue: redis.url,
            select: ['carpenter'],
            images: 1,
            queueOptions: { checkIntervalMs: 200, noWorkerTimeoutMs: 1500 },
          }),
        ),
        (e: Error) => e instanceof QueueError && /no worker has been connected for 2 s/.test(e.message),
      );
      assert.ok(Date.now() - t0 < 15_000);
      // with a worker that has the model beside one that lacks it, the same command finishes: the
      // failed tasks are retried, and the lacking worker hands back whatever it takes
      const good = await startWorker({ url: redis.url, models: [w.models], threads: 1, name: 'has-it' });
      const lacking = await startWorker({ url: redis.url, models: [root], threads: 1, name: 'lacking-2' });
      try {
        await runAuditJob(auditOptions(w, 'no-model', { queue: redis.url, queueOptions: { checkIntervalMs: 200 } }));
        assert.equal(runBytes(join(w.root, 'no-model')).audit, reference.audit);
        assert.equal(lacking.stats.tasks, 0);
        assert.ok(good.stats.tasks >= 12, 'at least once');
      } finally {
        await good.close();
        await lacking.close();
      }
    } finally {
      await redis.stop();
    }
  });

  test('password URL works, a wrong password is a clear error; rediss:// (TLS) works', async () => {
    const redis = await startRedis({ password: 'p@ss:word' });
    const worker = await startWorker({ url: redis.url, models: [w.models], threads: 1, name: 'auth' });
    try {
      await runAuditJob(auditOptions(w, 'password', { queue: redis.url, select: ['nurse'], images: 2 }));
      assert.equal(worker.stats.images, 4);
      const wrong = redis.url.replace('p%40ss%3Aword', 'nope');
      await assert.rejects(
        runAuditJob(
          auditOptions(w, 'wrong-password', {
            queue: wrong,
            select: ['nurse'],
            images: 2,
            queueOptions: { redisTimeoutMs: 3000 },
          }),
        ),
        (e: Error) => e instanceof QueueError && !e.message.includes('nope'),
      );
    } finally {
      await worker.close();
      await redis.stop();
    }
    const tls = await startRedis({ tls: true });
    process.env.TIME_DEBIAS_REDIS_CA = tls.ca;
    const tlsWorker = await startWorker({ url: tls.url, models: [w.models], threads: 1, name: 'tls' });
    try {
      assert.match(tls.url, /^rediss:/);
      await runAuditJob(auditOptions(w, 'tls', { queue: tls.url, select: ['nurse'], images: 2 }));
      assert.equal(tlsWorker.stats.images, 4);
    } finally {
      await tlsWorker.close();
      delete process.env.TIME_DEBIAS_REDIS_CA;
      await tls.stop();
    }
  });
});
