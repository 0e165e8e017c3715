/**
 * Task payloads (schema, identity), queue URLs, the worker's folder index (nothing outside its
 * roots), and a malformed payload on a real Redis rejected by a worker with the schema's complaints.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Queue } from 'bullmq';
import { genderAttribute } from '../../src/classify/labels.js';
import { folderDigest } from '../../src/model/folder-digest.js';
import { parseQueueUrl, QUEUE_NAME } from '../../src/queue/connection.js';
import { RenderQueue } from '../../src/queue/producer.js';
import { type RenderTask, TASK_VERSION, taskId, validateTask } from '../../src/queue/task.js';
import { ModelIndex, repeatLimited, startWorker } from '../../src/queue/worker.js';
import { QueueError, UsageError } from '../../src/util/errors.js';
import { freePort, redisMissing, startRedis } from './redis.js';
import { makeQueueWorld, type QueueWorld } from './world.js';

const HEX = 'a'.repeat(64);
function task(extra: Partial<RenderTask> = {}): RenderTask {
  return {
    version: TASK_VERSION,
    model: { digest: HEX, hint: '/models/sd' },
    classifier: { digest: 'b'.repeat(64), hint: '/models/clip', logitScale: 100, preprocess: 'transformers' },
    transform: null,
    generation: { steps: 8, scheduler: 'pndm', guidance: 7.5, height: 64, width: 64, negativePrompt: '' },
    prompt: 'A nurse',
    seeds: [1, 2],
    profession: 'nurse',
    attribute: genderAttribute(),
    threshold: null,
    images: [true, false],
    ...extra,
  };
}

describe('task payloads', () => {
  test('a valid task passes; its id ignores path hints and changes with anything that decides the images', () => {
    assert.deepEqual(validateTask(JSON.parse(JSON.stringify(task()))), task());
    const id = taskId(task());
    assert.match(id, /^t[0-9a-f]{64}$/);
    assert.equal(taskId(task({ model: { digest: HEX, hint: '/elsewhere' } })), id);
    assert.notEqual(taskId(task({ seeds: [1, 3] })), id);
    assert.notEqual(taskId(task({ transform: { digest: HEX, d: 32 } })), id);
    assert.notEqual(
      taskId(task({ classifier: { digest: 'b'.repeat(64), hint: '', logitScale: 50, preprocess: 'transformers' } })),
      id,
    );
    assert.notEqual(taskId(task({ generation: { ...task().generation, steps: 9 } })), id);
  });

  test('malformed payloads are rejected with every problem named', () => {
    const bad = [
      [{ ...task(), extra: 1 }, /must NOT have additional properties/],
      [{ ...task(), model: { digest: '../../etc', hint: 'x' } }, /\/model\/digest must match pattern/],
      [{ ...task(), seeds: [] }, /\/seeds must NOT have fewer than 1 items/],
      [{ ...task(), seeds: [1.5, 2] }, /\/seeds\/0 must be integer/],
      [{ ...task(), generation: { ...task().generation, height: 63 } }, /\/generation\/height must be multiple of 8/],
      [{ ...task(), images: [true] }, /images has 1 flags for 2 seeds/],
      [{ ...task(), seeds: [1, 1] }, /repeat a seed/],
      ['not an object', /\(task\) must be object/],
      [{ version: 99 }, /\/version must be equal to constant/],
    ] as const;
    for (const [payload, re] of bad)
      assert.throws(
        () => validateTask(payload),
        (e: Error) => e instanceof QueueError && re.test(e.message),
      );
  });

  test('queue URLs: redis://, rediss://, user and password, database; the password never shown', () => {
    const a = parseQueueUrl('redis://user:s%40cret@example.org:6380/3');
    assert.deepEqual(
      {
        host: a.options.host,
        port: a.options.port,
        db: a.options.db,
        user: a.options.username,
        pass: a.options.password,
      },
      { host: 'example.org', port: 6380, db: 3, user: 'user', pass: 's@cret' },
    );
    assert.equal(a.redacted, 'redis://user:***@example.org:6380/3');
    assert.ok(parseQueueUrl('rediss://h:1').options.tls);
    assert.equal(parseQueueUrl('redis://h').options.port, 6379);
    assert.throws(
      () => parseQueueUrl('http://h:1'),
      (e: Error) => e instanceof UsageError && /redis:\/\/ or rediss:\/\//.test(e.message),
    );
    assert.throws(
      () => parseQueueUrl('redis://:pw@h:1/x'),
      (e: Error) => e instanceof UsageError && !e.message.includes('pw'),
    );
    assert.throws(() => parseQueueUrl('nonsense'), UsageError);
  });
});

describe('Redis unreachable', () => {
  test("the coordinator's first connection fails within its connect deadline, naming the connection error", async () => {
    const url = `redis://127.0.0.1:${await freePort()}`;
    const t0 = Date.now();
    await assert.rejects(
      RenderQueue.connect(url, { connectTimeoutMs: 1500 }),
      (e: Error) =>
        e instanceof QueueError &&
        e.field === 'queue' &&
        e.message.includes(url) &&
        /within 2 s \(connect: .*ECONNREFUSED/.test(e.message),
    );
    assert.ok(Date.now() - t0 < 6000, `took ${Date.now() - t0} ms (the 60 s mid-run deadline must not apply)`);
  });

  test('a repeating connection error is logged once, a new one at once, the same again only after the interval', async () => {
    const lines: string[] = [];
    const line = repeatLimited((l) => lines.push(l), 'worker w', 200);
    for (let i = 0; i < 20; i++) line('connect ECONNREFUSED 127.0.0.1:1');
    assert.deepEqual(lines, ['worker w: connect ECONNREFUSED 127.0.0.1:1']);
    line('getaddrinfo ENOTFOUND redis.example');
    assert.equal(lines.length, 2);
    line('getaddrinfo ENOTFOUND redis.example');
    await new Promise((r) => setTimeout(r, 250));
    line('getaddrinfo ENOTFOUND redis.example');
    assert.equal(lines.length, 3);
    assert.match(
      lines[2] as string,
      /^worker w: getaddrinfo ENOTFOUND redis\.example \(1 more in the last 0 s; still retrying\)$/,
    );
  });
});

describe('worker folders: only under the --models roots', () => {
  let w: QueueWorld;
  let outside: string;
  before(() => {
    w = makeQueueWorld();
    outside = mkdtempSync(join(tmpdir(), 'td-outside-'));
  });
  after(() => {
    w.cleanup();
    rmSync(outside, { recursive: true, force: true });
  });

  test('folders are found by digest; links out of a root are skipped; a task cannot name a path', () => {
    const root = join(outside, 'root');
    mkdirSync(root);
    cpSync(w.world.classifierDir, join(root, 'clip'), { recursive: true });
    // a link to the real model folder (outside the root) and a model folder with one linked file
    symlinkSync(w.world.modelDir, join(root, 'linked-model'));
    cpSync(w.world.modelDir, join(root, 'model-with-link'), { recursive: true });
    rmSync(join(root, 'model-with-link', 'model_index.json'));
    symlinkSync(join(w.world.modelDir, 'model_index.json'), join(root, 'model-with-link', 'model_index.json'));
    const lines: string[] = [];
    const index = ModelIndex.open([root], (l) => lines.push(l));
    assert.deepEqual(
      index.folders.map((f) => [f.kind, f.dir]),
      [['classifier', join(root, 'clip')]],
    );
    assert.ok(lines.some((l) => /model-with-link: model_index.json is a symbolic link/.test(l)));
    assert.equal(index.find(folderDigest(w.world.classifierDir), 'classifier')?.dir, join(root, 'clip'));
    assert.equal(index.find(folderDigest(w.world.modelDir), 'model'), null, 'the model outside the root is never used');
    assert.throws(() => ModelIndex.open([join(outside, 'missing')]), UsageError);
    assert.throws(() => ModelIndex.open([]), UsageError);
  });
});

describe('a malformed payload on the queue', { skip: redisMissing() ?? false }, () => {
  test('the worker rejects it (no retry) with the schema error; the job fails with that reason', async () => {
    const redis = await startRedis();
    const w = makeQueueWorld();
    const queue = new Queue(QUEUE_NAME, { connection: parseQueueUrl(redis.url).options });
    const worker = await startWorker({ url: redis.url, models: [w.models], threads: 1, name: 'strict' });
    try {
      const bad = { ...task(), model: { digest: 'x', hint: '/etc/passwd' }, extra: true };
      const job = await queue.add('render', bad, { jobId: 'tmalformed', attempts: 3 });
      for (let i = 0; i < 100 && (await queue.getJobState('tmalformed')) !== 'failed'; i++)
        await new Promise((r) => setTimeout(r, 50));
      const failed = await queue.getJob(job.id as string);
      assert.equal(await queue.getJobState('tmalformed'), 'failed');
      assert.match(failed?.failedReason ?? '', /malformed task payload .*\/model\/digest must match pattern/);
      assert.equal(failed?.attemptsMade, 1, 'not retried');
      assert.equal(worker.stats.failed, 1);
    } finally {
      await worker.close();
      await queue.close();
      await redis.stop();
      w.cleanup();
    }
  });
});
