/**
 * sha256 of the source files an export edits (the source model's identity in time-edit.json).
 *
 * Hashing 3.4 GB is seconds of CPU, so:
 *   - it runs in a worker thread, overlapping the copy (libuv pool) and the caller's edit;
 *   - results are remembered per file identity — real path + (device, inode, size, mtime, ctime in
 *     ns), which any write to the file changes — in this process, and in a small JSON cache file
 *     (`$TIME_DEBIAS_CACHE_DIR`, else `$XDG_CACHE_HOME/time-debias`, else `~/.cache/time-debias`;
 *     `TIME_DEBIAS_HASH_CACHE=0` turns the file off). A hash is remembered only when the identity
 *     is the same before and after reading, so a file changing while it is read is never cached.
 */
import { mkdirSync, readFileSync, realpathSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, sep } from 'node:path';
import { Worker } from 'node:worker_threads';
import { OutputError } from '../util/errors.js';

export interface SourceFileRecord {
  /** Path relative to the model folder ('/'-separated). */
  path: string;
  bytes: number;
  sha256: string;
}

interface CacheEntry {
  identity: string;
  bytes: number;
  sha256: string;
}

const CACHE_FILE = 'sha256-v1.json';
const CACHE_LIMIT = 256;
const memo = new Map<string, CacheEntry>();

function fileIdentity(path: string): string {
  const st = statSync(path, { bigint: true });
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

/** The cache folder, or null when the file cache is off. */
export function hashCacheDir(): string | null {
  if (process.env.TIME_DEBIAS_HASH_CACHE === '0') return null;
  if (process.env.TIME_DEBIAS_CACHE_DIR) return process.env.TIME_DEBIAS_CACHE_DIR;
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'time-debias');
}

function readCache(dir: string): Record<string, CacheEntry> {
  try {
    const data = JSON.parse(readFileSync(join(dir, CACHE_FILE), 'utf8')) as Record<string, CacheEntry>;
    return data && typeof data === 'object' && !Array.isArray(data) ? data : {};
  } catch {
    return {}; // absent or unreadable: the cache is best-effort
  }
}

function writeCache(dir: string, entries: Record<string, CacheEntry>): void {
  try {
    mkdirSync(dir, { recursive: true });
    const keys = Object.keys(entries);
    const kept = Object.fromEntries(keys.slice(Math.max(0, keys.length - CACHE_LIMIT)).map((k) => [k, entries[k]]));
    const tmp = join(dir, `${CACHE_FILE}.${process.pid}.tmp`);
    writeFileSync(tmp, JSON.stringify(kept));
    renameSync(tmp, join(dir, CACHE_FILE));
  } catch {
    // a read-only home or a full disk must not fail the export
  }
}

/** sha256 of each file (paths relative to `dir`), keyed by the relative path. */
export async function sha256Files(dir: string, rels: readonly string[]): Promise<Map<string, SourceFileRecord>> {
  const cacheDir = hashCacheDir();
  const cache = cacheDir ? readCache(cacheDir) : {};
  const out = new Map<string, SourceFileRecord>();
  const missing: { rel: string; path: string; identity: string }[] = [];
  for (const rel of rels) {
    const path = realpathSync(join(dir, rel));
    const identity = fileIdentity(path);
    const known = memo.get(path) ?? cache[path];
    if (known && known.identity === identity) {
      out.set(rel, { path: toPosix(rel), bytes: known.bytes, sha256: known.sha256 });
      memo.set(path, known);
    } else missing.push({ rel, path, identity });
  }
  if (missing.length === 0) return out;
  const hashed = await hashInWorker(missing.map((m) => m.path));
  let changed = false;
  missing.forEach(({ rel, path, identity }, i) => {
    const h = hashed[i] as { bytes: number; sha256: string };
    out.set(rel, { path: toPosix(rel), ...h });
    if (fileIdentity(path) !== identity) return; // changed while read: do not remember
    const entry = { identity, ...h };
    memo.set(path, entry);
    delete cache[path];
    cache[path] = entry; // most recent last
    changed = true;
  });
  if (cacheDir && changed) writeCache(cacheDir, cache);
  return out;
}

function toPosix(rel: string): string {
  return rel.split(sep).join('/');
}

/** The worker's code (plain CommonJS, no loader needed): hash each path, post [{bytes, sha256}]. */
const HASH_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { openSync, readSync, closeSync } = require('node:fs');
const { createHash } = require('node:crypto');
const buf = Buffer.allocUnsafe(8 << 20);
const out = [];
for (const path of workerData.paths) {
  const fd = openSync(path, 'r');
  try {
    const h = createHash('sha256');
    let bytes = 0;
    let n;
    while ((n = readSync(fd, buf, 0, buf.length, null)) > 0) { h.update(buf.subarray(0, n)); bytes += n; }
    out.push({ bytes, sha256: h.digest('hex') });
  } finally { closeSync(fd); }
}
parentPort.postMessage(out);
`;

function hashInWorker(paths: string[]): Promise<{ bytes: number; sha256: string }[]> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(HASH_WORKER, { eval: true, workerData: { paths } });
    let result: { bytes: number; sha256: string }[] | undefined;
    worker.once('message', (m: { bytes: number; sha256: string }[]) => {
      result = m;
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (result) resolve(result);
      else reject(new OutputError(`export: hashing ${paths.join(', ')} failed (worker exit code ${code})`));
    });
  });
}
