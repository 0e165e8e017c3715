/**
 * A real redis-server for the queue tests and the queue benchmark: started as users start it, on a
 * free port, in a temporary folder, stopped afterwards (no fixed port, no shared state).
 *
 * When redis-server is not installed the tests skip with a message, except in CI (CI=true), where a
 * missing Redis is a failure (.ci/run installs it).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const REDIS_SERVER = process.env.REDIS_SERVER ?? 'redis-server';

/** null when redis-server runs here; else why not. */
export function redisMissing(): string | null {
  const r = spawnSync(REDIS_SERVER, ['--version'], { encoding: 'utf8' });
  if (r.status === 0) return null;
  const why = `${REDIS_SERVER} is not installed (apt-get install -y redis-server); the queue tests need a real Redis`;
  if (process.env.CI === 'true') throw new Error(`CI=true: ${why}`);
  return why;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface RedisOptions {
  password?: string;
  /** appendonly yes + appendfsync always (the persistence README recommends for long jobs). */
  persistent?: boolean;
}

export interface TestRedis {
  port: number;
  dir: string;
  url: string;
  /** Stop (SIGKILL when `hard`) and start again on the same port and folder. */
  restart(hard?: boolean): Promise<void>;
  stop(): Promise<void>;
}

export async function startRedis(options: RedisOptions = {}): Promise<TestRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'td-redis-'));
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    options.persistent ? 'yes' : 'no',
    ...(options.persistent ? ['--appendfsync', 'always'] : []),
    ...(options.password ? ['--requirepass', options.password] : []),
  ];
  let proc: ChildProcess | null = null;
  const launch = async () => {
    proc = spawn(REDIS_SERVER, args, { stdio: 'ignore' });
    await waitForPort(port, 10_000);
  };
  const halt = async (hard: boolean) => {
    const p = proc as ChildProcess | null;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill(hard ? 'SIGKILL' : 'SIGTERM');
    await exited;
  };
  await launch();
  const auth = options.password ? `:${encodeURIComponent(options.password)}@` : '';
  return {
    port,
    dir,
    url: `redis://${auth}127.0.0.1:${port}`,
    async restart(hard = true) {
      await halt(hard);
      await launch();
    },
    async stop() {
      await halt(false);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function waitForPort(port: number, ms: number): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ port, host: '127.0.0.1' });
      s.once('connect', () => {
        s.write('PING\r\n');
      });
      s.once('data', (d) => {
        s.destroy();
        // +PONG, or -NOAUTH when a password is set: either way the server is up
        resolve(/PONG|NOAUTH|AUTH/.test(d.toString()));
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() - t0 > ms) throw new Error(`redis-server did not start on port ${port} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
