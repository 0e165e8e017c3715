/**
 * One error vocabulary (issue 10 item 5): library errors name the LIBRARY parameter (`field`) and
 * write other parameters they advise as `name` (`mentions`); they never name a CLI flag or a config
 * path. The CLI names them `--flag`; a config-driven run (`debias --config`) names them by their
 * config path, or by the flag for a parameter only the command line has (`--restart`).
 *
 *   1. a representative error of each converted module, thrown by the library: its field, no `--`;
 *   2. the same errors through the CLI: the flags;
 *   3. through `debias --config`: the config paths, and `--restart` for the run folder's advice;
 *   4. a guard: no string in library code (src/ but src/cli*) names a flag, but an explicit allow-list.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runAuditJob } from '../../src/audit/job.js';
import { loadProfessions } from '../../src/audit/professions.js';
import { auditImageFolder } from '../../src/audit/run.js';
import { seedPlan } from '../../src/audit/seeds.js';
import { RunStore } from '../../src/audit/store.js';
import { resolveTemplates } from '../../src/audit/templates.js';
import type { ClipClassifier } from '../../src/classify/clip.js';
import { genderAttribute } from '../../src/classify/labels.js';
import { parseImageProcessorConfig } from '../../src/classify/preprocess-pil.js';
import { EXIT } from '../../src/cli/exit.js';
import { configRunNameOf, flagOf, relabelForUser } from '../../src/cli/fields.js';
import { loadConfig, normalizeConfig } from '../../src/debias/config.js';
import { renderPlan } from '../../src/debias/plan.js';
import { RunFolder, runDirOf } from '../../src/debias/run-folder.js';
import { ensureDemoWorld } from '../../src/demo/world.js';
import { readEditFile } from '../../src/edit/edit-file.js';
import { exportLora } from '../../src/edit/lora.js';
import { readPairsFile } from '../../src/edit/pairs-file.js';
import { effectiveMatrix, normalizeApplyRequest } from '../../src/edit/portable.js';
import { writeSafetensors } from '../../src/formats/safetensors.js';
import { checkWorkBounds } from '../../src/generate/bounds.js';
import { detectModelKind } from '../../src/model/checkpoints.js';
import { parseQueueUrl } from '../../src/queue/connection.js';
import { RenderQueue } from '../../src/queue/producer.js';
import { ModelIndex } from '../../src/queue/worker.js';
import { TimeDebiasError, UsageError } from '../../src/util/errors.js';
import { REPO, runCli } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'td-error-vocabulary-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A safetensors file that is not an edit file (no time-debias metadata). */
function notAnEditFile(): string {
  const path = join(tmp, 'not-an-edit.safetensors');
  writeSafetensors(path, [{ name: 'M', dtype: 'F32', shape: [1, 1], data: new Uint8Array(4) }], { format: 'pt' });
  return path;
}

/** What a library call threw (it must throw a TimeDebiasError). */
async function thrown(fn: () => unknown): Promise<TimeDebiasError> {
  try {
    await fn();
  } catch (error) {
    assert.ok(error instanceof TimeDebiasError, `expected a TimeDebiasError, got ${String(error)}`);
    return error;
  }
  assert.fail('expected an error');
}

/** The library's form: `<field>: <detail>`, no flag, no config path; mentions written as `name`. */
function assertLibraryForm(e: TimeDebiasError, field: string | undefined, detail: RegExp, mentions: string[] = []) {
  assert.equal(e.field, field, e.message);
  assert.match(e.detail, detail);
  assert.equal(e.message, field === undefined ? e.detail : `${field}: ${e.detail}`);
  assert.doesNotMatch(e.message, /--[a-z]/, `a flag in the library's message: ${e.message}`);
  assert.doesNotMatch(e.message, /\bconfig\.[a-z]/, `a config path in the library's message: ${e.message}`);
  assert.deepEqual([...e.mentions], mentions);
  for (const m of mentions) assert.ok(e.detail.includes(`\`${m}\``), `${m} is written \`${m}\` in "${e.detail}"`);
}

describe('1. library errors name the library parameter, never a flag', () => {
  test('model/checkpoints: the model path', async () => {
    const e = await thrown(() => detectModelKind(join(tmp, 'no-model')));
    assertLibraryForm(e, 'modelPath', /no-model" does not exist$/);
  });
  test('edit/pairs-file: the pairs file', async () => {
    const e = await thrown(() => readPairsFile(join(tmp, 'none.tsv')));
    assertLibraryForm(e, 'pairsFile', /^file ".*none\.tsv" does not exist$/);
  });
  test('edit/portable: scale; revert; the text encoder advice mentions modelPath and force', async () => {
    const e = await thrown(() =>
      normalizeApplyRequest({ editFile: 'e', modelPath: 'm', outPath: 'o', scale: Number.NaN }),
    );
    assertLibraryForm(e, 'scale', /^NaN is not valid; α must be a finite number/);
    const r = await thrown(() => effectiveMatrix(Float32Array.of(1, 0, 0, 0), 2, { revert: true }));
    assertLibraryForm(r, 'revert', /^M is ill-conditioned/);
  });
  test('edit/edit-file: the edit file', async () => {
    const e = await thrown(() => readEditFile(notAnEditFile()));
    assertLibraryForm(
      e,
      'editFile',
      /not-an-edit\.safetensors": no "time_edit" metadata; not an edit file written by time-debias$/,
    );
  });
  test('edit/lora: rank or error, an error about no single parameter that mentions both', async () => {
    const e = await thrown(() => exportLora({ editFile: 'e', modelPath: 'm', outPath: 'o.safetensors' }));
    assertLibraryForm(e, undefined, /^give exactly one of `rank` r \(a fixed rank\) or `error` ε/, ['rank', 'error']);
    const f = await thrown(() => exportLora({ editFile: 'e', modelPath: 'm', outPath: 'o.safetensors', rank: 0 }));
    assertLibraryForm(f, 'rank', /^0 must be an integer ≥ 1$/);
  });
  test('classify/preprocess-pil: the processor config names the preprocess parameter as a mention', async () => {
    const e = await thrown(() => parseImageProcessorConfig([], 'p.json'));
    assertLibraryForm(e, undefined, /\(needed by `preprocess` "pil"\)$/, ['preprocess']);
  });
  test('audit/templates, seeds, professions', async () => {
    assertLibraryForm(
      await thrown(() => resolveTemplates(['no placeholder'])),
      'templates',
      /^"no placeholder" is neither a template set/,
    );
    assertLibraryForm(
      await thrown(() => seedPlan('evaluation', 10, -1)),
      'seedStart',
      /^-1 must be an integer ≥ 0 with start \+ `images` ≤ 2\^32$/,
      ['images'],
    );
    assertLibraryForm(
      await thrown(() => loadProfessions('winobias99')),
      'professions',
      /^"winobias99" is not a known list/,
    );
    assertLibraryForm(
      await thrown(() => loadProfessions('winobias35', { select: ['astronaut'] })),
      'select',
      /^"astronaut" not in profession list/,
    );
  });
  test('audit/run and audit/job: target share, the image folder, model or fromImages', async () => {
    const base = { out: join(tmp, 'a'), classifier: null as unknown as ClipClassifier, attribute: genderAttribute() };
    assertLibraryForm(
      await thrown(() => auditImageFolder({ ...base, dir: tmp, targetShare: 1.5 })),
      'targetShare',
      /^1\.5 must be in \(0, 1\)$/,
    );
    assertLibraryForm(
      await thrown(() => auditImageFolder({ ...base, dir: join(tmp, 'no-images') })),
      'fromImages',
      /no-images" is not a folder$/,
    );
    assertLibraryForm(
      await thrown(() => runAuditJob({ classifier: 'c', out: join(tmp, 'b') })),
      undefined,
      /^give one of `model` and `fromImages`/,
      ['model', 'fromImages'],
    );
  });
  test('audit/store: the run folder; the advice mentions out and restart', async () => {
    const dir = join(tmp, 'store');
    RunStore.open(dir, { generation: { steps: 20 } }).close();
    const e = await thrown(() => RunStore.open(dir, { generation: { steps: 25 } }));
    assertLibraryForm(e, 'out', /Use another `out`, or `restart` to discard its results\.$/, ['out', 'restart']);
  });
  test('queue/worker, queue/connection, queue/producer: models, the queue URL', async () => {
    assertLibraryForm(await thrown(() => ModelIndex.open([])), 'models', /^give at least one folder/);
    assertLibraryForm(await thrown(() => parseQueueUrl('http://h:1')), 'queue', /^"http:\/\/h:1" has scheme http:/);
    const e = await thrown(() => RenderQueue.connect('redis://127.0.0.1:1', { redisTimeoutMs: 300 }));
    assertLibraryForm(e, 'queue', /^redis:\/\/127\.0\.0\.1:1: (Redis did not answer|cannot connect)/);
  });
  test('generate/bounds: each number by its field', async () => {
    const e = await thrown(() =>
      checkWorkBounds({ height: 100, width: 64 }, { error: (m, o) => new UsageError(m, o) }),
    );
    assertLibraryForm(e, 'height', /^100 is not a positive multiple of 8$/);
  });
  test('debias/config and debias/run-folder: the config file; the run folder advises restart, name, outDir', async () => {
    assertLibraryForm(await thrown(() => loadConfig(join(tmp, 'none.json'))), 'config', /^cannot read ".*none\.json"/);
    const config = normalizeConfig(
      { model: 'demo', classifier: 'demo', professions: { list: 'demo' }, output: tmp, name: 'vocab' },
      tmp,
    );
    const dir = runDirOf(config);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'state.json'), '{ not json');
    writeFileSync(join(dir, 'config.json'), '{}');
    const e = await thrown(() => RunFolder.open(config));
    assertLibraryForm(e, 'outDir', /state\.json is not valid JSON; pass `restart` to start over$/, ['restart']);
  });
});

describe('the user’s names of the library’s fields', () => {
  test('a config-driven run: config paths, and flags for what only the command line sets', () => {
    assert.equal(configRunNameOf('professions'), 'config.professions.list');
    assert.equal(configRunNameOf('targetShare'), 'config.target.share');
    assert.equal(configRunNameOf('outDir'), 'config.output');
    assert.equal(configRunNameOf('name'), 'config.name');
    assert.equal(configRunNameOf('queue'), 'config.queue');
    assert.equal(configRunNameOf('restart'), '--restart');
    assert.equal(configRunNameOf('exportPartial'), '--export-partial');
    assert.equal(configRunNameOf('dryRun'), '--dry-run');
    assert.equal(configRunNameOf('config'), '--config');
    assert.equal(configRunNameOf('config.edit'), 'config.edit'); // the job config's own checks
    assert.equal(flagOf('editFile'), '--edit');
    assert.equal(flagOf('modelPath'), '--model');
    assert.equal(flagOf('outPath'), '--out');
    assert.equal(flagOf('seedStart'), '--seed');
    assert.equal(flagOf('lambdas[2]'), '--lambda #3');
    assert.equal(flagOf('fromImages'), '--from-images');
  });
  test('an error about no single field has its mentions renamed', () => {
    const e = new UsageError('give exactly one of `rank` r or `error` ε', { mentions: ['rank', 'error'] });
    relabelForUser(e, flagOf);
    assert.equal(e.message, 'give exactly one of --rank r or --error ε');
    relabelForUser(e, configRunNameOf); // once only
    assert.equal(e.message, 'give exactly one of --rank r or --error ε');
  });
  test('the dry run advice names the config paths in a config-driven run', () => {
    const plan = {
      professions: [],
      heldOut: [],
      rows: { pairs: 0, perPair: 0, preserved: 0, total: 0, d: 8, method: 'cholesky' },
      budget: {
        beforeAudit: 0,
        tuningExpected: 0,
        tuningMax: 0,
        verificationExpected: 0,
        verification: 0,
        afterAudit: 0,
        genderedAudit: 0,
        totalExpected: 0,
        totalMax: 0,
      },
      size: { height: 64, width: 64, decidedBy: 'given', detail: '' },
      estimate: { secondsPerImage: 1, byWorkers: [], queueWorkers: null },
    } as unknown as Parameters<typeof renderPlan>[0];
    const text = renderPlan(plan, configRunNameOf);
    assert.match(text, /given: config\.generation\.height and config\.generation\.width/);
    assert.match(
      text,
      /other machines, config\.queue\), GPU workers \(config\.device cuda,.*fewer steps \(config\.generation\.steps\)/s,
    );
    assert.match(text, /fewer images \(config\.audit\.imagesPerProfession, config\.tuning\.verificationImages\)/);
    assert.doesNotMatch(renderPlan(plan), /--|config\./);
  });
});

describe('2. through the CLI: the flags', () => {
  test('export-lora, apply, worker, audit name --rank/--error, --edit, --queue, --seed', async () => {
    const lora = await runCli(['export-lora', '--edit', 'e', '--model', 'm', '--out', join(tmp, 'l.safetensors')]);
    assert.equal(lora.code, EXIT.usage, lora.stderr);
    assert.match(lora.stderr, /UsageError: give exactly one of --rank r \(a fixed rank\) or --error ε/);
    const apply = await runCli([
      'apply',
      '--edit',
      notAnEditFile(),
      '--model',
      'm',
      '--out',
      join(tmp, 'x.safetensors'),
    ]);
    assert.notEqual(apply.code, 0);
    assert.match(apply.stderr, /EditError: --edit: ".*not-an-edit\.safetensors": no ".*" metadata/);
    const worker = await runCli(['worker', '--queue', 'http://h:1', '--models', tmp]);
    assert.equal(worker.code, EXIT.usage, worker.stderr);
    assert.match(worker.stderr, /UsageError: --queue: "http:\/\/h:1" has scheme http:/);
    const audit = await runCli([
      'audit',
      '--model',
      'nowhere',
      '--classifier',
      'nowhere',
      '--professions',
      'winobias35',
      '--seed',
      '-1',
      '--out',
      join(tmp, 'audit-out'),
    ]);
    assert.equal(audit.code, EXIT.usage, audit.stderr);
    assert.match(audit.stderr, /UsageError: --seed: -1 must be an integer ≥ 0 with start \+ --images ≤ 2\^32/);
  });
});

describe('3. through debias --config: config paths, and --restart', () => {
  const base = {
    model: 'demo',
    classifier: 'demo',
    professions: { list: 'demo', select: ['nurse'] },
    generation: { steps: 4, height: 64, width: 64, batchSize: 16 },
    audit: { imagesPerProfession: 10, gendered: false },
    tuning: { imagesPerProbe: 16, batch: 8, maxProbes: 1, verificationImages: 8, jointRounds: 0 },
  };
  const writeConfig = (name: string, config: Record<string, unknown>) => {
    const path = join(tmp, `${name}.json`);
    writeFileSync(path, JSON.stringify(config));
    return path;
  };
  before(() => {
    ensureDemoWorld();
  });

  test('an unknown profession list (the audit layer validates it): config.professions.list', async () => {
    const r = await runCli([
      'debias',
      '--config',
      writeConfig('list', { ...base, professions: { list: 'winobias99' } }),
    ]);
    assert.equal(r.code, EXIT.usage, r.stderr);
    assert.match(r.stderr, /UsageError: config\.professions\.list: "winobias99" is not a known list/);
  });

  test('a queue URL: config.queue from the config, --queue from the flag that overrides it', async () => {
    const fromConfig = await runCli(['debias', '--config', writeConfig('queue', { ...base, queue: 'redis://h:1/x' })]);
    assert.equal(fromConfig.code, EXIT.usage, fromConfig.stderr);
    assert.match(
      fromConfig.stderr,
      /UsageError: config\.queue: "redis:\/\/h:1\/x": the path must be a database number/,
    );
    const fromFlag = await runCli(['debias', '--config', writeConfig('queue2', base), '--queue', 'http://h:2']);
    assert.equal(fromFlag.code, EXIT.usage, fromFlag.stderr);
    assert.match(fromFlag.stderr, /UsageError: --queue: "http:\/\/h:2" has scheme http:/);
  });

  test('a run folder of other settings: config.output, and --restart (a flag the config does not have)', async () => {
    const output = join(tmp, 'runs');
    const path = writeConfig('other', { ...base, output, name: 'job' });
    const dir = join(output, 'job');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'state.json'),
      JSON.stringify({ kind: 'debias-state', version: 1, fingerprint: 'f'.repeat(64) }),
    );
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, output, name: 'job' }));
    const r = await runCli(['debias', '--config', path], 120_000);
    assert.equal(r.code, EXIT.output, r.stderr);
    assert.match(
      r.stderr,
      /OutputError: config\.output: .*job holds a run made .*[Pp]ass --restart to start over, or choose another config\.name or config\.output/,
    );
  });
});

describe('4. guard: library code names no flag', () => {
  /**
   * Strings of library code that may name a flag, each with why. Keep this short: an error names its
   * field (and mentions), a log line or note takes the caller's `nameOf`.
   */
  const ALLOWED: readonly { file: string; text: string; why: string }[] = [
    {
      file: 'src/queue/producer.ts',
      text: "const WORKER_COMMAND = 'time-debias worker --queue URL --models DIR';",
      why: 'a command line of another command (`worker`), the same whichever way this run was called',
    },
  ];

  const sources = (dir: string): string[] =>
    readdirSync(dir).flatMap((name) => {
      const p = join(dir, name);
      return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
    });

  test('no string literal in src/ (but src/cli*) contains --<letter>, but the allow-list', () => {
    const src = join(REPO, 'src');
    const found: string[] = [];
    for (const path of sources(src)) {
      const rel = relative(REPO, path);
      if (rel.startsWith('src/cli/') || rel === 'src/cli.ts') continue;
      readFileSync(path, 'utf8')
        .split('\n')
        .forEach((line, i) => {
          const code = line.trim();
          if (code.startsWith('*') || code.startsWith('//') || code.startsWith('/*')) return; // comments
          if (!/['`"][^'`"]*--[a-z][a-z-]+/.test(code)) return;
          if (ALLOWED.some((a) => a.file === rel && a.text === code)) return;
          found.push(`${rel}:${i + 1}: ${code}`);
        });
    }
    assert.deepEqual(
      found,
      [],
      `library strings that name a flag (give the error a field, or mention it):\n${found.join('\n')}`,
    );
    // every allow-list entry still exists (a stale entry would hide nothing but mislead)
    for (const a of ALLOWED) assert.ok(readFileSync(join(REPO, a.file), 'utf8').includes(a.text), a.file);
  });
});
