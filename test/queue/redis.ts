/**
 * A real redis-server for the queue tests and the queue benchmark: started as users start it, on a
 * free port, in a temporary folder, stopped afterwards (no fixed port, no shared state).
 *
 * When redis-server is not installed the tests skip with a message, except in CI (CI=true), where a
 * missing Redis is a failure (.ci/run installs it).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
  /** Serve TLS only (rediss://), with a throw-away CA made by openssl; `ca` is its PEM file. */
  tls?: boolean;
}

export interface TestRedis {
  port: number;
  /** The CA's PEM file (TLS only). */
  ca?: string;
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
  let ca: string | undefined;
  if (options.tls) {
    ca = makeCertificates(dir);
    args.splice(0, 2, '--port', '0', '--tls-port', String(port));
    args.push(
      '--tls-cert-file',
      join(dir, 'server.pem'),
      '--tls-key-file',
      join(dir, 'server.key'),
      '--tls-ca-cert-file',
      ca,
      '--tls-auth-clients',
      'no',
    );
  }
  let proc: ChildProcess | null = null;
  const launch = async () => {
    proc = spawn(REDIS_SERVER, args, { stdio: 'ignore' });
    await waitForPort(port, 10_000, !!options.tls);
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
    ca,
    url: `${options.tls ? 'rediss' : 'redis'}://${auth}127.0.0.1:${port}`,
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

/** A CA and a server certificate for 127.0.0.1 (openssl); returns the CA's PEM path. */
function makeCertificates(dir: string): string {
  const run = (args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
  };
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
  run([
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-days',
    '1',
    '-subj',
    '/CN=td-test-ca',
  ]);
  run([
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'server.key',
    '-out',
    'server.csr',
    '-subj',
    '/CN=127.0.0.1',
  ]);
  run([
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.pem',
    '-days',
    '1',
    '-extfile',
    'san.ext',
  ]);
  return join(dir, 'ca.pem');
}

async function waitForPort(port: number, ms: number, tls: boolean): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    if (tls) {
      // a TLS server answers no plain PING: a TCP connect is enough
      const up = await new Promise<boolean>((resolve) => {
        const s = createConnection({ port, host: '127.0.0.1' });
        s.once('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      });
      if (up) return;
      if (Date.now() - t0 > ms) throw new Error(`redis-server did not start on port ${port} within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
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
