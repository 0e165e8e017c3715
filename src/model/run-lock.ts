/**
 * One process per run folder, one per export target (issue 11). The lock is a file created with
 * O_EXCL holding the owner's pid, host, start time and command line:
 *
 *   - a second process finds the file and is refused at once, with a message naming the holder;
 *   - a lock left by a process that died (same host, pid no longer alive), or an empty lock file
 *     older than a few seconds (a crash between create and write), is stale: it is moved away and
 *     the lock is taken. On Linux the lock also records the kernel's boot id and the process's
 *     start time (/proc/<pid>/stat field 22), so a lock from before a reboot, or one whose pid now
 *     belongs to another process, is stale too;
 *   - a lock from another host is never guessed stale (its pid means nothing here): the message
 *     says which file to remove once that host's process is gone;
 *   - the lock is released by `release()`, on SIGINT/SIGTERM and at process exit.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { onInterrupt, writeAll } from '../util/atomic.js';
import { OutputError, show } from '../util/errors.js';
import { fsErrorToOutput } from '../util/fs-errors.js';

/** The lock file inside a run folder. */
export const RUN_LOCK = '.time-debias.lock';

export interface LockHolder {
  pid: number;
  host: string;
  started: string;
  command: string;
  /** Linux: /proc/sys/kernel/random/boot_id when the lock was taken. */
  boot?: string;
  /** Linux: the holder's start time in clock ticks since boot (/proc/<pid>/stat field 22). */
  procStart?: string;
}

/** This boot's id (Linux), or undefined. */
function bootId(): string | undefined {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** A process's start time in clock ticks since boot (Linux /proc/<pid>/stat field 22), or undefined. */
export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // field 2 (comm) is in parentheses and may hold spaces: count fields after its closing one
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

export interface RunLock {
  readonly path: string;
  release(): void;
}

/** An empty or unreadable lock file older than this is a crash between create and write. */
const EMPTY_LOCK_GRACE_MS = 5000;

const held = new Set<string>();

/** Lock the run folder `dir` (created if needed) for this process. OutputError naming the holder. */
export function lockRunFolder(what: string, dir: string): RunLock {
  const d = resolve(dir);
  try {
    mkdirSync(d, { recursive: true });
  } catch (error) {
    throw fsErrorToOutput(error, what, d);
  }
  return acquireLock(what, d, join(d, RUN_LOCK));
}

/** Lock an export target `outDir` (the lock file `.<name>.lock` sits next to it). */
export function lockExportTarget(what: string, outDir: string): RunLock {
  const o = resolve(outDir);
  try {
    mkdirSync(dirname(o), { recursive: true });
  } catch (error) {
    throw fsErrorToOutput(error, what, dirname(o));
  }
  return acquireLock(what, o, join(dirname(o), `.${basename(o)}.lock`));
}

function acquireLock(what: string, target: string, path: string): RunLock {
  if (held.has(path)) {
    throw new OutputError(`${show(target)} is already in use by this process (lock ${show(path)})`, { field: what });
  }
  const me: LockHolder = {
    pid: process.pid,
    host: hostname(),
    started: new Date().toISOString(),
    command: process.argv.slice(1).join(' ').slice(0, 200),
    boot: bootId(),
    procStart: processStart(process.pid),
  };
  const text = `${JSON.stringify(me)}\n`;
  for (let attempt = 0; ; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, 'wx');
    } catch (error) {
      if ((error as { code?: string }).code !== 'EEXIST') throw fsErrorToOutput(error, what, path);
      const found = readHolder(path);
      if (attempt < 3 && isStale(path, found)) {
        moveAway(path, found.raw);
        continue;
      }
      throw heldBy(what, target, path, found.holder);
    }
    try {
      writeAll(fd, Buffer.from(text, 'utf8'), 0);
      fsyncSync(fd);
    } catch (error) {
      closeSync(fd);
      rmSync(path, { force: true });
      throw fsErrorToOutput(error, what, path);
    }
    closeSync(fd);
    break;
  }
  held.add(path);
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    held.delete(path);
    unhook();
    try {
      // only our own lock: a stale-lock rule elsewhere may have replaced it
      if (readFileSync(path, 'utf8') === text) unlinkSync(path);
    } catch {
      // already gone
    }
  };
  const unhook = onInterrupt(release);
  return { path, release };
}

function readHolderText(raw: string): LockHolder | null {
  try {
    const h = JSON.parse(raw) as Partial<LockHolder>;
    return typeof h.pid === 'number' && typeof h.host === 'string' ? (h as LockHolder) : null;
  } catch {
    return null;
  }
}

function readHolder(path: string): { holder: LockHolder | null; raw: string | null } {
  let raw: string | null = null;
  try {
    raw = readFileSync(path, 'utf8');
    const h = JSON.parse(raw) as Partial<LockHolder>;
    if (typeof h.pid === 'number' && typeof h.host === 'string') {
      return {
        holder: {
          pid: h.pid,
          host: h.host,
          started: String(h.started ?? '?'),
          command: String(h.command ?? '?'),
          ...(typeof h.boot === 'string' ? { boot: h.boot } : {}),
          ...(typeof h.procStart === 'string' ? { procStart: h.procStart } : {}),
        },
        raw,
      };
    }
  } catch {
    // unreadable or half-written
  }
  return { holder: null, raw };
}

/** A process on this host with that pid exists (EPERM: it exists, owned by another user). */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: string }).code === 'EPERM';
  }
}

function isStale(path: string, found: { holder: LockHolder | null; raw: string | null }): boolean {
  if (found.holder === null) {
    try {
      return Date.now() - statSync(path).mtimeMs > EMPTY_LOCK_GRACE_MS;
    } catch {
      return true; // gone: just retry
    }
  }
  const h = found.holder;
  if (h.host !== hostname()) return false;
  if (!pidAlive(h.pid)) return true;
  // alive — but is it the holder? Not if the host rebooted since, or the pid started at another time.
  const boot = bootId();
  if (h.boot && boot && h.boot !== boot) return true;
  const start = processStart(h.pid);
  return Boolean(h.procStart && start && h.procStart !== start);
}

/** Move a stale lock aside and remove it; if another process replaced it meanwhile, put it back. */
function moveAway(path: string, raw: string | null): void {
  const aside = `${path}.stale-${randomBytes(4).toString('hex')}`;
  try {
    renameSync(path, aside);
  } catch {
    return; // someone else moved it: retry
  }
  let now: string | null = null;
  try {
    now = readFileSync(aside, 'utf8');
  } catch {}
  const same = raw === null ? now === null || readHolderText(now) === null : now === raw;
  if (!same) {
    // we took a fresh lock of another process: give it back (fails only if a third one got in)
    try {
      renameSync(aside, path);
    } catch {}
    return;
  }
  rmSync(aside, { force: true });
}

function heldBy(what: string, target: string, path: string, h: LockHolder | null): OutputError {
  if (h === null) {
    return new OutputError(
      `${show(target)} is locked by another process that is starting (lock ${show(path)}); try again in a moment`,
      { field: what },
    );
  }
  const here = h.host === hostname();
  return new OutputError(
    `${show(target)} is in use by process ${h.pid} on ${here ? 'this host' : `host ${show(h.host)}`} ` +
      `(since ${h.started}: ${show(h.command)}); wait for it to finish` +
      (here ? '' : `, or remove ${show(path)} once that process is gone`),
    { field: what },
  );
}
