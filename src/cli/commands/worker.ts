/**
 * `time-debias worker`: render and classify tasks from a BullMQ/Redis queue (src/queue/worker.ts)
 * until SIGINT/SIGTERM, which finish the tasks in flight and exit 0. One log line per task.
 *
 *   time-debias worker --queue redis://127.0.0.1:6379 --models ./models
 */
import type { Argv, CommandModule } from 'yargs';
import { startWorker } from '../../queue/worker.js';
import { validateDevice, validateThreads } from '../../runtime/ort.js';
import { show, UsageError } from '../../util/errors.js';

interface WorkerArgs {
  queue: string;
  models: string[];
  device: string;
  threads?: number;
  concurrency: number;
  name?: string;
  'lock-duration': number;
}

export const workerCommand: CommandModule<object, WorkerArgs> = {
  command: 'worker',
  describe: 'Render and classify images for audits and debias jobs from a Redis queue (BullMQ) until stopped',
  builder: (yargs: Argv) =>
    yargs
      .usage('$0 worker --queue URL --models DIR [DIR...] [options]')
      .option('queue', {
        type: 'string',
        demandOption: true,
        describe: 'redis://[user:pass@]HOST:PORT[/DB], or rediss:// for TLS',
      })
      .option('models', {
        type: 'string',
        array: true,
        demandOption: true,
        describe:
          'Folders holding the models and classifiers (found by content digest, two levels deep); nothing outside is read',
      })
      .option('device', {
        type: 'string',
        default: 'cpu',
        describe: 'cpu or cuda (CUDA needs the opt-in install, README "CUDA")',
      })
      .option('threads', { type: 'number', describe: 'onnxruntime intra-op threads' })
      .option('concurrency', { type: 'number', default: 1, describe: 'Tasks in flight at once' })
      .option('name', { type: 'string', describe: 'Name in logs and results (default HOST-PID)' })
      .option('lock-duration', {
        type: 'number',
        default: 30,
        describe: 'Seconds a task stays locked without renewal before another worker takes it over (a crashed worker)',
      })
      .example('$0 worker --queue redis://127.0.0.1:6379 --models ./models', '') as unknown as Argv<WorkerArgs>,
  handler: async (argv) => {
    const device = validateDevice(argv.device);
    validateThreads(argv.threads);
    if (!(argv['lock-duration'] >= 1))
      throw new UsageError(`--lock-duration: ${show(argv['lock-duration'])} must be ≥ 1 second`);
    const log = (line: string) => process.stderr.write(`${line}\n`);
    const worker = await startWorker({
      url: argv.queue,
      models: argv.models,
      device,
      threads: argv.threads,
      concurrency: argv.concurrency,
      name: argv.name,
      lockDurationMs: Math.round(argv['lock-duration'] * 1000),
      log,
    });
    await new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        log(`worker ${worker.name}: ${signal}: finishing the tasks in flight`);
        void worker.close().then(() => {
          log(`worker ${worker.name}: stopped after ${worker.stats.tasks} tasks, ${worker.stats.images} images`);
          resolve();
        });
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
  },
};
