/**
 * The identity of a model or classifier folder: sha256 over its files (sorted relative paths, sizes
 * and contents). Audits fingerprint their runs with it and queue workers find a task's model by it.
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

/**
 * Digests computed in this process, keyed by folder and every file's path, size and mtime: a job
 * that opens several audits of one model hashes its gigabytes once, and a changed file is hashed again.
 */
const digestCache = new Map<string, string>();

/** sha256 over a folder's files (sorted relative paths and contents): the identity of a model folder. */
export function folderDigest(dir: string): string {
  const walk = (d: string): string[] =>
    readdirSync(d, { withFileTypes: true })
      .flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : e.isFile() ? [join(d, e.name)] : []))
      .sort();
  const files = walk(dir);
  const key = JSON.stringify([
    dir,
    files.map((f) => {
      const st = statSync(f);
      return [f, st.size, st.mtimeMs];
    }),
  ]);
  const cached = digestCache.get(key);
  if (cached) return cached;
  const hash = createHash('sha256');
  for (const file of files) {
    const rel = relative(dir, file).split('\\').join('/');
    hash.update(`${rel}\0${statSync(file).size}\0`);
    const fd = openSync(file, 'r');
    try {
      const buf = Buffer.allocUnsafe(1 << 22);
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, null);
        if (n === 0) break;
        hash.update(buf.subarray(0, n));
      }
    } finally {
      closeSync(fd);
    }
  }
  const digest = hash.digest('hex');
  digestCache.set(key, digest);
  return digest;
}
