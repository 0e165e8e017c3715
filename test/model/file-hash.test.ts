import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { hashCacheDir, sha256Files } from '../../src/model/file-hash.js';
import { randomFloats, tempDir } from '../onnx/helpers.js';

const tmp = tempDir('hash');
const saved = { dir: process.env.TIME_DEBIAS_CACHE_DIR, off: process.env.TIME_DEBIAS_HASH_CACHE };
process.env.TIME_DEBIAS_CACHE_DIR = join(tmp.dir, 'cache');
delete process.env.TIME_DEBIAS_HASH_CACHE;
after(() => {
  if (saved.dir === undefined) delete process.env.TIME_DEBIAS_CACHE_DIR;
  else process.env.TIME_DEBIAS_CACHE_DIR = saved.dir;
  if (saved.off !== undefined) process.env.TIME_DEBIAS_HASH_CACHE = saved.off;
  tmp.cleanup();
});

const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

describe('sha256Files', () => {
  test('hashes in a worker, records the result in the cache file, recomputes after a change', async () => {
    const file = join(tmp.dir, 'a.bin');
    writeFileSync(file, new Uint8Array(randomFloats(300_000, 3).buffer));
    const first = await sha256Files(tmp.dir, ['a.bin']);
    assert.deepEqual(first.get('a.bin'), { path: 'a.bin', bytes: 1_200_000, sha256: sha(file) });
    const cachePath = join(tmp.dir, 'cache', 'sha256-v1.json');
    const cache = JSON.parse(readFileSync(cachePath, 'utf8'));
    const entry = Object.values(cache)[0] as { sha256: string; identity: string };
    assert.equal(entry.sha256, sha(file));
    writeFileSync(file, 'changed');
    const second = await sha256Files(tmp.dir, ['a.bin']);
    assert.equal(second.get('a.bin')?.sha256, sha(file));
    assert.equal(second.get('a.bin')?.bytes, 7);
  });

  test('an entry of the cache file with the same identity is trusted (as written by another process); a stale one is not', async () => {
    const file = join(tmp.dir, 'b.bin');
    writeFileSync(file, 'bbb');
    const path = realpathSync(file);
    const st = statSync(path, { bigint: true });
    const identity = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    const cachePath = join(tmp.dir, 'cache', 'sha256-v1.json');
    const cache = JSON.parse(readFileSync(cachePath, 'utf8'));
    cache[path] = { identity, bytes: 3, sha256: 'f'.repeat(64) };
    writeFileSync(cachePath, JSON.stringify(cache));
    assert.equal((await sha256Files(tmp.dir, ['b.bin'])).get('b.bin')?.sha256, 'f'.repeat(64));
    // a different identity (the file was rewritten) is not trusted
    const other = join(tmp.dir, 'b2.bin');
    writeFileSync(other, 'b2');
    const cache2 = JSON.parse(readFileSync(cachePath, 'utf8'));
    cache2[realpathSync(other)] = { identity: `${identity}-stale`, bytes: 2, sha256: 'e'.repeat(64) };
    writeFileSync(cachePath, JSON.stringify(cache2));
    assert.equal((await sha256Files(tmp.dir, ['b2.bin'])).get('b2.bin')?.sha256, sha(other));
  });

  test('TIME_DEBIAS_HASH_CACHE=0 writes no cache file', async () => {
    process.env.TIME_DEBIAS_HASH_CACHE = '0';
    process.env.TIME_DEBIAS_CACHE_DIR = join(tmp.dir, 'cache-off');
    try {
      assert.equal(hashCacheDir(), null);
      writeFileSync(join(tmp.dir, 'c.bin'), 'ccc');
      const r = await sha256Files(tmp.dir, ['c.bin']);
      assert.equal(r.get('c.bin')?.sha256, sha(join(tmp.dir, 'c.bin')));
      assert.ok(!existsSync(join(tmp.dir, 'cache-off')));
    } finally {
      delete process.env.TIME_DEBIAS_HASH_CACHE;
      process.env.TIME_DEBIAS_CACHE_DIR = join(tmp.dir, 'cache');
    }
  });
});
