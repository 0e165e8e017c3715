import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { lockExportTarget, lockRunFolder, processStart, RUN_LOCK } from '../../src/model/run-lock.js';
import { OutputError } from '../../src/util/errors.js';

const tmp = mkdtempSync(join(tmpdir(), 'td-lock-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const LOCK_MODULE = fileURLToPath(new URL('../../src/model/run-lock.ts', import.meta.url));

/** A second process that takes the lock of `dir` and holds it until killed. */
async function holder(dir: string) {
  const script = `
    import { lockRunFolder } from ${JSON.stringify(LOCK_MODULE)};
    lockRunFolder('--out', ${JSON.stringify(dir)});
    process.stdout.write('locked\\n');
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((res) => child.stdout.once('data', () => res()));
  return child;
}

test('a second process on a locked run folder is refused at once, naming the holder; a SIGKILLed holder is stale', async () => {
  const dir = join(tmp, 'run');
  const child = await holder(dir);
  try {
    const t0 = performance.now();
    assert.throws(
      () => lockRunFolder('out', dir),
      (e: unknown) =>
        e instanceof OutputError &&
        e.message.includes(`in use by process ${child.pid} on this host`) &&
        e.field === 'out' &&
        e.message.startsWith('out: '),
    );
    assert.ok(performance.now() - t0 < 1000, 'refused at once');
  } finally {
    child.kill('SIGKILL');
    await new Promise((res) => child.once('exit', res));
  }
  // the holder died without releasing: its lock is stale and is taken over
  assert.ok(existsSync(join(dir, RUN_LOCK)));
  const lock = lockRunFolder('--out', dir);
  assert.equal(JSON.parse(readFileSync(lock.path, 'utf8')).pid, process.pid);
  lock.release();
  assert.ok(!existsSync(join(dir, RUN_LOCK)));
});

test('a held lock is refused in the same process; released locks can be taken again', () => {
  const dir = join(tmp, 'run2');
  const a = lockRunFolder('--out', dir);
  assert.throws(() => lockRunFolder('--out', dir), /already in use by this process/);
  a.release();
  lockRunFolder('--out', dir).release();
});

test('a lock from another host is never guessed stale; the message says which file to remove', () => {
  const dir = join(tmp, 'run3');
  lockRunFolder('--out', dir).release();
  const other = { pid: 1, host: `${hostname()}-elsewhere`, started: '2026-01-01T00:00:00Z', command: 'audit' };
  writeFileSync(join(dir, RUN_LOCK), JSON.stringify(other));
  assert.throws(
    () => lockRunFolder('--out', dir),
    (e: unknown) =>
      e instanceof OutputError && e.message.includes('elsewhere') && e.message.includes(join(dir, RUN_LOCK)),
  );
});

test('concurrent exports to one target: the second is refused', () => {
  const out = join(tmp, 'exports', 'model');
  const a = lockExportTarget('--out', out);
  assert.ok(existsSync(join(tmp, 'exports', '.model.lock')));
  assert.throws(() => lockExportTarget('--out', out), /in use by this process|already in use/);
  a.release();
  assert.ok(!existsSync(join(tmp, 'exports', '.model.lock')));
});

test('a live pid that is not the holder (pid reused, or a lock from before a reboot) is stale', (t) => {
  const start = processStart(process.ppid);
  const boot = existsSync('/proc/sys/kernel/random/boot_id')
    ? readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    : undefined;
  if (!start || !boot) {
    t.skip('no /proc here: the holder is judged by its pid alone');
    return;
  }
  const dir = join(tmp, 'run-reused');
  lockRunFolder('--out', dir).release();
  const base = { pid: process.ppid, host: hostname(), started: '2026-01-01T00:00:00Z', command: 'audit' };
  // the holder really is the live process (same boot, same start time): refused
  writeFileSync(join(dir, RUN_LOCK), JSON.stringify({ ...base, boot, procStart: start }));
  assert.throws(() => lockRunFolder('--out', dir), /in use by process/);
  // the same pid started at another time: another process has it now — the lock is taken over
  for (const stale of [
    { ...base, boot, procStart: String(Number(start) + 1) },
    { ...base, boot: '00000000-0000-0000-0000-000000000000', procStart: start },
  ]) {
    writeFileSync(join(dir, RUN_LOCK), JSON.stringify(stale));
    const lock = lockRunFolder('--out', dir);
    assert.equal(JSON.parse(readFileSync(lock.path, 'utf8')).pid, process.pid);
    lock.release();
  }
  // an older lock without these facts keeps the pid rule: a live pid holds it
  writeFileSync(join(dir, RUN_LOCK), JSON.stringify(base));
  assert.throws(() => lockRunFolder('--out', dir), /in use by process/);
});
