/**
 * Resume: the job is SIGKILLed at three points (during the before audit, during tuning, after the
 * joint commit), re-run each time with the same command, and ends with the same manifest and the
 * same results as an uninterrupted run. (`--export-partial`: this small, noisy job need not reach the
 * tolerance; the model is exported either way, so the manifests can be compared.)
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ensureDemoWorld } from '../../src/demo/world.js';
import { REPO, runCli } from '../cli/helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'debias-resume-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const config = {
  model: 'demo',
  classifier: 'demo',
  professions: { list: 'demo', select: ['nurse', 'doctor'] },
  prompts: { augment: false, tuningTemplates: ['{Article} {profession}'] },
  generation: { steps: 5, height: 64, width: 64, batchSize: 16 },
  tuning: { imagesPerProbe: 64, batch: 16, tolerance: 0.1, verificationImages: 32, jointRounds: 1 },
  audit: { imagesPerProfession: 30, gendered: false },
};

function writeConfig(name: string): string {
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify({ ...config, name, output: join(dir, 'runs') }));
  return path;
}

function lines(path: string): number {
  return existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean).length : 0;
}

function storeLines(runDir: string): number {
  const before = join(runDir, 'before');
  return existsSync(before)
    ? readdirSync(before)
        .filter((f) => f.endsWith('.jsonl'))
        .reduce((a, f) => a + lines(join(before, f)), 0)
    : 0;
}

function state(runDir: string): { phase: string; probeLog: unknown[] } | null {
  try {
    return JSON.parse(readFileSync(join(runDir, 'state.json'), 'utf8'));
  } catch {
    return null;
  }
}

/** Run the job and SIGKILL it as soon as `when` holds (polled). Resolves whether it was killed. */
function runUntil(path: string, when: () => boolean): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [join(REPO, 'bin', 'time-debias.js'), 'debias', '--config', path, '--quiet', '--export-partial'],
      {
        cwd: REPO,
        stdio: 'ignore',
      },
    );
    let killed = false;
    const timer = setInterval(() => {
      if (!killed && when()) {
        killed = true;
        child.kill('SIGKILL');
      }
    }, 25);
    child.on('error', reject);
    child.on('close', () => {
      clearInterval(timer);
      resolve(killed);
    });
  });
}

/** The manifest and result without paths and the export date. */
function comparable(runDir: string) {
  const manifest = JSON.parse(readFileSync(join(runDir, 'model', 'time-edit.json'), 'utf8'));
  delete manifest.date;
  delete manifest.source;
  const job = JSON.parse(readFileSync(join(runDir, 'job.json'), 'utf8'));
  const strip = (s: string) => s.split(runDir).join('<run>');
  return JSON.parse(
    strip(
      JSON.stringify({
        manifest: { ...manifest, sourceFiles: undefined },
        professions: job.professions,
        summary: job.summary,
        probes: job.probes,
      }),
    ),
  );
}

test('SIGKILL at three points, re-run: same manifest and results as an uninterrupted run', {
  timeout: 600_000,
}, async () => {
  ensureDemoWorld();
  const reference = await runCli(
    ['debias', '--config', writeConfig('reference'), '--quiet', '--export-partial'],
    300_000,
  );
  assert.ok(reference.code === 0 || reference.code === 9, reference.stderr);
  const runDir = join(dir, 'runs', 'resumed');
  const path = writeConfig('resumed');
  const kills = [
    () => storeLines(runDir) >= 10, // during the before audit
    () => (state(runDir)?.probeLog.length ?? 0) >= 2, // during tuning
    () => ['export', 'after', 'done'].includes(state(runDir)?.phase ?? '') || existsSync(join(runDir, 'after')), // after the joint commit
  ];
  let killedCount = 0;
  for (const when of kills) if (await runUntil(path, when)) killedCount++;
  assert.ok(killedCount >= 3, `killed ${killedCount} times`);
  const final = await runCli(['debias', '--config', path, '--quiet', '--export-partial'], 300_000);
  assert.equal(final.code, reference.code, final.stderr);
  const a = comparable(join(dir, 'runs', 'reference'));
  const b = comparable(runDir);
  // the run names differ ("reference"/"resumed"): compare with the names normalized
  assert.deepEqual(JSON.parse(JSON.stringify(b).replace(/resumed/g, 'reference')), a);
});
