/**
 * End to end on the demo world with small N: the designed colour assumptions ("roses are red") are
 * evaluated the paper's way, bad rows are reported without stopping the others, a re-run resumes
 * to the same evaluate.json, and the CLI runs a joint λ sweep with its plot.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ensureDemoWorld } from '../../src/demo/world.js';
import { DEMO_TIMED_FILE, runEvaluateJob } from '../../src/evaluate/job.js';
import { validateEvaluateJson } from '../../src/evaluate/schema.js';
import { assertEvaluateReport } from '../report/tables.js';

const tmp = mkdtempSync(join(tmpdir(), 'evaluate-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));

describe('evaluate on the demo world', () => {
  let modelDir = '';
  let classifierDir = '';
  let dataset = '';
  before(() => {
    const world = ensureDemoWorld({ cacheDir: join(tmp, 'cache') });
    modelDir = world.modelDir;
    classifierDir = world.classifierDir;
    const [header, roses] = readFileSync(DEMO_TIMED_FILE, 'utf8').split('\n');
    const cells = (roses as string).split(',');
    const misaligned = ['A pack of roses', 'A blue flower', ...cells.slice(2)].join(',');
    const long = [cells[0], cells[1], 'a rose '.repeat(40).trim(), ...cells.slice(3)].join(',');
    const short = cells.slice(0, 12).join(',');
    dataset = join(tmp, 'timed.csv');
    writeFileSync(dataset, [header, short, roses, misaligned, long, ''].join('\n'));
  });

  test('roses: efficacy and generality rise, specificity holds; bad rows reported; resume is exact', async () => {
    const out = join(tmp, 'run');
    const options = {
      dataset,
      model: modelDir,
      classifier: classifierDir,
      out,
      images: 4,
      mode: 'per-row' as const,
      lambdas: [0.1],
      augment: false,
      generation: { steps: 8, guidance: 7.5, height: 64, width: 64, batchSize: 16 },
      sheetImages: 2,
    };
    const job = await runEvaluateJob(options);
    const r = job.result;
    assert.deepEqual(
      r.issues.map((i) => [i.index, i.kind]),
      [
        [0, 'columns'],
        [2, 'alignment'],
        [3, 'too-long'],
      ],
    );
    assert.match(r.issues[1]?.message ?? '', /line 4: alignment: destination "A blue flower" does not contain/);
    assert.match(r.issues[2]?.message ?? '', /line 5: positive1 "a rose a rose.* longer than 77 tokens/);
    assert.equal(r.rows.length, 1);
    const row = r.rows[0]!;
    const after0 = row.after[0]!.result.metrics;
    // designed: roses red in ≈ 99 % of images before; the edit makes them (and "a rose", "a rose garden", …) blue
    assert.ok((row.before.metrics.efficacy.value as number) <= 0.25, JSON.stringify(row.before.metrics));
    assert.ok((row.before.metrics.generality.value as number) <= 0.1);
    assert.ok((after0.efficacy.value as number) >= 0.75, JSON.stringify(after0));
    assert.ok((after0.generality.value as number) >= 0.8, JSON.stringify(after0));
    assert.ok((after0.specificity.value as number) >= 0.9, JSON.stringify(after0));
    assert.equal(row.before.prompts.length, 11);
    assert.ok(row.before.prompts.every((p) => p.n === 4));
    assert.equal(r.summary.after[0]?.metrics.efficacy.value, after0.efficacy.value);
    const change = row.after[0]!.changes.find((c) => c.metric === 'generality')!.change;
    assert.ok(change.difference > 0.5 && change.significant && change.paired);
    // the run folder
    const json = JSON.parse(readFileSync(join(out, 'evaluate.json'), 'utf8'));
    validateEvaluateJson(json);
    for (const f of ['report.md', 'report.html', ...row.sheets]) assert.ok(existsSync(join(out, f)), f);
    assert.equal(r.plot, null);
    assert.match(readFileSync(join(out, 'report.md'), 'utf8'), /\| efficacy \| 0\.0% .*\|/);
    // report.md and report.html hold the tables of evaluate.json (the same rows, the same numbers)
    assertEvaluateReport(
      json,
      readFileSync(join(out, 'report.md'), 'utf8'),
      readFileSync(join(out, 'report.html'), 'utf8'),
    );
    // resume: nothing regenerated, the same file
    const records = readFileSync(join(out, 'records.jsonl'), 'utf8');
    assert.equal(records.trim().split('\n').length, 2 * 11 * 4);
    const again = await runEvaluateJob(options);
    assert.equal(readFileSync(join(out, 'records.jsonl'), 'utf8'), records);
    assert.deepEqual(again.result, r);
  });

  test('CLI: joint mode, λ sweep with its plot, --json', () => {
    const out = join(tmp, 'cli');
    const res = spawnSync(
      process.execPath,
      [
        '--import',
        'tsx',
        CLI,
        'evaluate',
        '--dataset',
        'demo',
        '--model',
        modelDir,
        '--classifier',
        classifierDir,
        '--rows',
        '1',
        '--mode',
        'joint',
        '--images',
        '2',
        '--steps',
        '8',
        '--height',
        '64',
        '--width',
        '64',
        '--lambda',
        '0.1,10',
        '--out',
        out,
        '--json',
      ],
      { encoding: 'utf8' },
    );
    assert.equal(res.status, 0, res.stderr);
    const r = JSON.parse(res.stdout);
    assert.equal(r.mode, 'joint');
    assert.deepEqual(r.lambdas, [0.1, 10]);
    assert.deepEqual(r.dataset.selected, [1]);
    assert.equal(r.rows[0].old, 'A sky');
    assert.equal(r.summary.after.length, 2);
    const svg = readFileSync(join(out, 'lambda.svg'), 'utf8');
    assert.match(svg, /^<svg [^>]*>/);
    assert.match(svg, /efficacy/);
    // bad arguments: exit code 2 with the argument named
    const bad = spawnSync(
      process.execPath,
      [
        '--import',
        'tsx',
        CLI,
        'evaluate',
        '--dataset',
        'demo',
        '--model',
        modelDir,
        '--classifier',
        classifierDir,
        '--lambda',
        '0.1,-1',
        '--out',
        join(tmp, 'bad'),
      ],
      { encoding: 'utf8' },
    );
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--lambda: "-1" is not a valid λ/);
    // a library error names the flag: the field `rows` is relabelled `--rows`
    const rows = spawnSync(
      process.execPath,
      [
        '--import',
        'tsx',
        CLI,
        'evaluate',
        '--dataset',
        'demo',
        '--model',
        modelDir,
        '--classifier',
        classifierDir,
        '--rows',
        '9',
        '--out',
        join(tmp, 'bad'),
      ],
      { encoding: 'utf8' },
    );
    assert.equal(rows.status, 2);
    assert.match(rows.stderr, /--rows: row 9 does not exist \(rule: 0-based indices below the file's 3 data rows\)/);
  });
});
