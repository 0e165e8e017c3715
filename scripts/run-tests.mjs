#!/usr/bin/env node
// Runs every test/**/*.test.ts with node's test runner (Node 20 has no --test globs).
// Usage: node scripts/run-tests.mjs [substring filter...]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.test.ts') ? [p] : [];
  });
}
const filters = process.argv.slice(2);
const files = walk('test')
  .sort()
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)));
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
// Tests must not write the user's caches (the export's sha256 cache): give them a temporary one.
const cache = mkdtempSync(join(tmpdir(), 'time-debias-test-cache-'));
const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=2', ...files], {
  stdio: 'inherit',
  env: { ...process.env, TIME_DEBIAS_CACHE_DIR: process.env.TIME_DEBIAS_CACHE_DIR ?? cache },
});
rmSync(cache, { recursive: true, force: true });
process.exit(r.status ?? 1);
