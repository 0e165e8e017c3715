/**
 * The coordinator's side of the queue: enqueue render-and-classify tasks (task.ts) as BullMQ jobs
 * and hand each result to the caller exactly once.
 *
 *   run(tasks, onResult):
 *     job id = taskId(task)            a duplicate (same task twice, or a coordinator restarted
 *                                      after a crash) is the same job; add() of an existing id is a no-op
 *     addBulk(all tasks)               failed jobs left by an earlier run are retried once
 *     'completed' event → onResult     then the job is removed (its result is in the caller's store)
 *     every checkIntervalMs, reconcile against Redis (the ground truth, events can be lost):
 *       completed  → onResult (if the event was missed)
 *       failed     → QueueError with the worker's reason (malformed task, no worker has the model, …)
 *       unknown    → the job was lost (Redis restarted without persistence): add it again
 *       no worker connected for noWorkerTimeoutMs, or Redis unreachable for redisTimeoutMs → QueueError
 *     (the first connection has its own, shorter connectTimeoutMs: a wrong address fails in seconds,
 *     naming the connection error; a Redis that goes away mid-run gets the longer redisTimeoutMs)
 *
 * Guarantee: every task's result reaches onResult exactly once per run (at-least-once rendering,
 * exactly-once recording); a result recorded by the caller before a crash is not asked for again,
 * because the caller does not enqueue it.
 */
import { createHash } from 'node:crypto';
import { type Job, Queue, QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { QueueError, show } from '../util/errors.js';
import { parseQueueUrl, QUEUE_NAME, type QueueAddress } from './connection.js';
import { type RenderTask, type TaskResult, taskId } from './task.js';

export interface RenderQueueOptions {
  /** Fail when no worker has been connected for this long (ms, default 60 000). */
  noWorkerTimeoutMs?: number;
  /** Fail when Redis has not answered for this long once connected (ms, default 60 000). */
  redisTimeoutMs?: number;
  /** Fail when the first connection has not succeeded within this long (ms, default 10 000; never longer than redisTimeoutMs). */
  connectTimeoutMs?: number;
  /** How often the coordinator reconciles with Redis (ms, default 2000). */
  checkIntervalMs?: number;
  /** Attempts per task (a worker crash or error); default 3. */
  attempts?: number;
  log?: (line: string) => void;
}

export interface QueueTick {
  done: number;
  total: number;
  /** Workers connected at the last check. */
  workers: number;
  /** Names of the workers whose results arrived. */
  seen: string[];
  /** Jobs enqueued again because Redis had lost them. */
  requeued: number;
}

/** Redis key prefix of stored text transforms (worker.ts reads them). */
export const TRANSFORM_PREFIX = 'time-debias:transform:';
/** Completed and failed jobs are kept a day at most (a finished result is removed as soon as it is recorded). */
const KEEP = { age: 24 * 3600 };

/**
 * How a worker is started, for the error that asks for one: a command line of the `worker` command
 * (its own flags, the same whichever way this run was called), not a parameter of this run.
 */
const WORKER_COMMAND = 'time-debias worker --queue URL --models DIR';

export class RenderQueue {
  private constructor(
    readonly address: QueueAddress,
    private readonly queue: Queue,
    private readonly options: Required<Omit<RenderQueueOptions, 'log'>> & Pick<RenderQueueOptions, 'log'>,
  ) {}

  /** Connect and check that Redis answers (QueueError within redisTimeoutMs otherwise). */
  static async connect(url: string, options: RenderQueueOptions = {}): Promise<RenderQueue> {
    const address = parseQueueUrl(url);
    const o = {
      noWorkerTimeoutMs: options.noWorkerTimeoutMs ?? 60_000,
      redisTimeoutMs: options.redisTimeoutMs ?? 60_000,
      connectTimeoutMs: Math.min(options.connectTimeoutMs ?? 10_000, options.redisTimeoutMs ?? 60_000),
      checkIntervalMs: options.checkIntervalMs ?? 2000,
      attempts: options.attempts ?? 3,
      log: options.log,
    };
    const queue = new Queue(QUEUE_NAME, { connection: address.options });
    let lastError: string | undefined;
    queue.on('error', (e) => {
      // reconnects are ioredis's; deadlines below decide when to give up
      lastError = e.message;
    });
    const q = new RenderQueue(address, queue, o);
    try {
      await q.deadline(queue.waitUntilReady(), 'connect', o.connectTimeoutMs, () => lastError);
    } catch (error) {
      await queue.close().catch(() => {});
      if (error instanceof QueueError) throw error;
      throw new QueueError(`${address.redacted}: cannot connect to Redis: ${(error as Error).message}`, {
        cause: error,
        field: 'queue',
      });
    }
    return q;
  }

  get redacted(): string {
    return this.address.redacted;
  }

  /** Store a text transform M (d × d float32) once; tasks name it by the returned digest. */
  async putTransform(m: Float32Array, d: number): Promise<{ digest: string; d: number }> {
    if (m.length !== d * d) throw new QueueError(`text transform: ${m.length} values is not d × d for d = ${d}`);
    const bytes = Buffer.from(m.buffer, m.byteOffset, m.byteLength);
    const digest = createHash('sha256').update(bytes).digest('hex');
    const client = new Redis(this.address.options);
    client.on('error', () => {});
    try {
      await this.deadline(
        client.set(`${TRANSFORM_PREFIX}${digest}`, bytes, 'EX', 7 * 24 * 3600),
        'store the text transform',
      );
    } finally {
      client.disconnect();
    }
    return { digest, d };
  }

  /** Workers connected now. */
  async workerCount(): Promise<number> {
    return this.deadline(this.queue.getWorkersCount(), 'count workers');
  }

  /**
   * Enqueue `tasks` and call `onResult(index, result)` once per task as results arrive (in
   * completion order; awaited one at a time). Resolves when every task has its result.
   */
  async run(
    tasks: readonly RenderTask[],
    onResult: (index: number, result: TaskResult) => void | Promise<void>,
    onTick?: (tick: QueueTick) => void,
  ): Promise<void> {
    if (tasks.length === 0) return;
    const byId = new Map<string, number[]>();
    tasks.forEach((t, i) => {
      const id = taskId(t);
      byId.set(id, [...(byId.get(id) ?? []), i]);
    });
    const pending = new Set(byId.keys());
    const seen = new Set<string>();
    const total = tasks.length;
    let done = 0;
    let workers = 0;
    let requeued = 0;
    let fatal: Error | null = null;
    let chain = Promise.resolve();
    let finish: () => void = () => {};
    let fail: (e: Error) => void = () => {};
    const finished = new Promise<void>((res, rej) => {
      finish = res;
      fail = rej;
    });
    // awaited below; a failure found before that must not be an unhandled rejection
    finished.catch(() => {});
    const stop = (e: Error) => {
      if (!fatal) {
        fatal = e;
        fail(e);
      }
    };
    const tick = () => onTick?.({ done, total, workers, seen: [...seen].sort(), requeued });

    const accept = (id: string, value: unknown) => {
      if (!pending.has(id) || fatal) return;
      pending.delete(id);
      chain = chain.then(async () => {
        if (fatal) return;
        try {
          const result = checkResult(value, tasks[(byId.get(id) as number[])[0] as number] as RenderTask, id);
          seen.add(result.worker);
          for (const i of byId.get(id) as number[]) {
            await onResult(i, result);
            done++;
          }
          tick();
          await this.queue.remove(id).catch(() => 0);
          if (pending.size === 0) finish();
        } catch (error) {
          stop(error as Error);
        }
      });
    };

    const events = new QueueEvents(QUEUE_NAME, { connection: this.address.options, autorun: false });
    events.on('error', () => {});
    events.on('completed', ({ jobId, returnvalue }) => accept(jobId, returnvalue));
    events.on('failed', ({ jobId }) => {
      if (pending.has(jobId)) void this.reconcileOne(jobId, accept, stop);
    });
    void events.run().catch(() => {});
    let timer: NodeJS.Timeout | undefined;
    try {
      await this.deadline(events.waitUntilReady(), 'subscribe to queue events');
      const jobs = [...byId.entries()].map(([id, idx]) => ({
        name: 'render',
        data: tasks[idx[0] as number] as RenderTask,
        opts: this.jobOptions(id),
      }));
      for (let i = 0; i < jobs.length; i += 500)
        await this.deadline(this.queue.addBulk(jobs.slice(i, i + 500)), 'enqueue');
      // Jobs left failed by an earlier run (add() does not replace them): try them again once.
      for (const id of [...pending]) {
        if (fatal) break;
        const state = await this.deadline(this.queue.getJobState(id), 'read job state');
        if (state === 'failed') {
          const job = await this.queue.getJob(id);
          await job?.retry('failed');
        } else if (state === 'completed') await this.reconcileOne(id, accept, stop);
      }
      workers = await this.workerCount();
      tick();
      let lastWorker = Date.now();
      let checking = false;
      timer = setInterval(() => {
        if (checking || fatal) return;
        checking = true;
        void (async () => {
          try {
            workers = await this.workerCount();
            if (workers > 0) lastWorker = Date.now();
            else if (Date.now() - lastWorker > this.options.noWorkerTimeoutMs) {
              throw new QueueError(
                `${this.redacted}: no worker has been connected for ${Math.round(this.options.noWorkerTimeoutMs / 1000)} s ` +
                  `(${done}/${total} tasks done); start one: ${WORKER_COMMAND}`,
                { field: 'queue' },
              );
            }
            for (const id of [...pending]) {
              if (fatal) break;
              const r = await this.reconcileOne(id, accept, stop);
              if (r === 'requeued' && pending.has(id)) {
                const task = tasks[(byId.get(id) as number[])[0] as number] as RenderTask;
                await this.deadline(this.queue.add('render', task, this.jobOptions(id)), 'enqueue again');
                requeued++;
                this.options.log?.(`queue: task ${id.slice(0, 13)} was lost by Redis; enqueued again`);
              }
            }
            tick();
          } catch (error) {
            stop(error as Error);
          } finally {
            checking = false;
          }
        })();
      }, this.options.checkIntervalMs);
      if (pending.size === 0) finish();
      await finished;
      await chain;
      if (fatal) throw fatal;
    } finally {
      if (timer) clearInterval(timer);
      await events.close().catch(() => {});
    }
  }

  private jobOptions(id: string) {
    return {
      jobId: id,
      attempts: this.options.attempts,
      backoff: { type: 'fixed' as const, delay: 1000 },
      removeOnComplete: KEEP,
      removeOnFail: KEEP,
    };
  }

  /** Bring one pending job in line with Redis's state. */
  private async reconcileOne(
    id: string,
    accept: (id: string, value: unknown) => void,
    stop: (e: Error) => void,
  ): Promise<'requeued' | 'ok'> {
    const state = await this.deadline(this.queue.getJobState(id), 'read job state');
    if (state === 'completed') {
      const job = (await this.deadline(this.queue.getJob(id), 'read job')) as Job | undefined;
      if (job) accept(id, job.returnvalue);
    } else if (state === 'failed') {
      const job = (await this.deadline(this.queue.getJob(id), 'read job')) as Job | undefined;
      const task = job?.data as RenderTask | undefined;
      stop(
        new QueueError(
          `task ${id.slice(0, 13)} (${show(task?.prompt ?? '?')}, seeds ${show(task?.seeds ?? [])}) failed on the workers: ${job?.failedReason ?? 'no reason recorded'}`,
        ),
      );
    } else if (state === 'unknown') {
      return 'requeued';
    }
    return 'ok';
  }

  /**
   * Await `p`, or fail with a QueueError after `ms` (default redisTimeoutMs: Redis down or
   * unreachable), naming the last connection error when there is one.
   */
  private async deadline<T>(
    p: Promise<T>,
    what: string,
    ms = this.options.redisTimeoutMs,
    lastError?: () => string | undefined,
  ): Promise<T> {
    let t: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      t = setTimeout(() => {
        const cause = lastError?.();
        reject(
          new QueueError(
            `${this.redacted}: Redis did not answer within ${Math.round(ms / 1000)} s (${what}${cause ? `: ${cause}` : ''}); is redis-server running and reachable?`,
            { field: 'queue' },
          ),
        );
      }, ms);
    });
    try {
      return await Promise.race([p, timeout]);
    } finally {
      clearTimeout(t);
    }
  }

  async close(): Promise<void> {
    await this.queue.close().catch(() => {});
  }
}

/** A worker's answer, checked against its task (a wrong count or seed is an error, not a silent mix-up). */
function checkResult(value: unknown, task: RenderTask, id: string): TaskResult {
  const r = (typeof value === 'string' ? JSON.parse(value) : value) as TaskResult | null;
  const ok =
    r !== null &&
    typeof r === 'object' &&
    Array.isArray(r.images) &&
    r.images.length === task.seeds.length &&
    r.images.every((img, i) => img.seed === task.seeds[i] && typeof img.label === 'string');
  if (!ok)
    throw new QueueError(
      `task ${id.slice(0, 13)}: the worker's result does not match the task (seeds ${show(task.seeds)})`,
    );
  return r as TaskResult;
}
