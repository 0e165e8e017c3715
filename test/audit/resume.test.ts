/**
 * Crash safety: SIGKILL the `time-debias audit` child process mid-run, run the same command again,
 * and get the same audit.json as an uninterrupted run, with every image generated exactly once
 * (counted from the run store's "generated" records).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { GEN, makeTinyWorld } from './world.js';

const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
const world = makeTinyWorld();
after(() => world.cleanup());

function args(out: string): string[] {
  return [
    '--import',
    'tsx',
    CLI,
    'audit',
    '--model',
    world.model,
    '--classifier',
    world.classifier,
    '--professions',
    'winobias35',
    '--select',
    'nurse',
    'attendant',
    'CEO',
    '--templates',
    'validation',
    'time',
    '--images',
    '4',
    '--steps',
    String(GEN.steps),
    '--height',
    '64',
    '--width',
    '64',
    '--batch-size',
    '2',
    '--threads',
    '1',
    '--bootstrap',
    '300',
    '--out',
    out,
    '--json',
  ];
}
const TOTAL = 3 * 6 * 4;

function runToEnd(out: string): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args(out), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d) => {
      stderr += d;
    });
    child.on('exit', (code) => resolve({ code, stderr }));
  });
}

function records(out: string): { kind: string; key: string }[] {
  const path = join(out, 'records.jsonl');
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.endsWith('}'))
    .map((l) => JSON.parse(l));
}

/** Start the audit and SIGKILL it once `after` images are classified. */
function killMidRun(out: string, afterImages: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(process.execPath, args(out), { stdio: 'ignore' });
    let classified = 0;
    const timer = setInterval(() => {
      try {
        classified = records(out).filter((r) => r.kind === 'classified').length;
      } catch {
        // a line being written; try again
      }
      if (classified >= afterImages) {
        clearInterval(timer);
        child.kill('SIGKILL');
      }
    }, 5);
    child.on('exit', (_code, signal) => {
      clearInterval(timer);
      if (signal !== 'SIGKILL')
        reject(new Error(`the audit finished before it could be killed (${classified} classified)`));
      else resolve(classified);
    });
  });
}

test('SIGKILL mid-run, re-run: same audit.json as an uninterrupted run, no image generated twice', {
  timeout: 120_000,
}, async () => {
  const reference = join(world.root, 'uninterrupted');
  const crashed = join(world.root, 'crashed');
  const [ref, killedAt] = await Promise.all([runToEnd(reference), killMidRun(crashed, 10)]);
  assert.equal(ref.code, 0, ref.stderr);
  const before = records(crashed);
  const done = before.filter((r) => r.kind === 'classified').length;
  assert.ok(done >= killedAt && done < TOTAL, `killed after ${done} of ${TOTAL} images`);
  assert.equal(existsSync(join(crashed, 'audit.json')), false);

  const resumed = await runToEnd(crashed);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.deepEqual(readFileSync(join(crashed, 'audit.json')), readFileSync(join(reference, 'audit.json')));

  const all = records(crashed);
  const generated = new Map<string, number>();
  for (const r of all) if (r.kind === 'generated') generated.set(r.key, (generated.get(r.key) ?? 0) + 1);
  assert.equal(generated.size, TOTAL);
  assert.ok(
    [...generated.values()].every((n) => n === 1),
    'every image generated exactly once',
  );
  assert.equal(all.filter((r) => r.kind === 'classified').length, TOTAL);
  // the records before the crash were kept, not redone
  assert.deepEqual(all.slice(0, before.length), before);
});
