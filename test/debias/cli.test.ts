/**
 * `time-debias debias` as a user runs it: bad configs (each rule) exit non-zero with a message that
 * names the path and the rule; --dry-run prints the plan; a tuning budget too small to reach the
 * tolerance exits 9 with the per-profession state and exports only with --export-partial.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { EXIT } from '../../src/cli/exit.js';
import { ensureDemoWorld } from '../../src/demo/world.js';
import { runCli } from '../cli/helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'debias-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function writeConfig(name: string, config: Record<string, unknown>): string {
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify(config));
  return path;
}

const base = {
  model: 'demo',
  classifier: 'demo',
  professions: { list: 'demo', select: ['nurse'] },
  generation: { steps: 4, height: 64, width: 64, batchSize: 16 },
  audit: { imagesPerProfession: 10, gendered: false },
  tuning: { imagesPerProbe: 16, batch: 8, maxProbes: 1, verificationImages: 8, jointRounds: 0 },
};

before(() => {
  ensureDemoWorld();
});

describe('time-debias debias: bad configs', () => {
  const cases: [string, Record<string, unknown>, number, RegExp][] = [
    [
      'schema',
      { ...base, tuning: { tolerance: 'tight' } },
      EXIT.config,
      /config\.tuning\.tolerance: "tight" must be number \(rule: type\)/,
    ],
    ['unknown key', { ...base, profesions: {} }, EXIT.config, /unknown key "profesions"/],
    [
      'target share',
      { ...base, target: { share: 1 } },
      EXIT.config,
      /config\.target\.share: 1 must be < 1 \(rule: exclusiveMaximum\)/,
    ],
    [
      'empty professions',
      { ...base, professions: { list: 'demo', select: [] } },
      EXIT.config,
      /config\.professions\.select: \[\] must NOT have fewer than 1 items/,
    ],
    [
      'missing model',
      { ...base, model: './no-such-model' },
      EXIT.config,
      /config\.model: ".*no-such-model" does not exist/,
    ],
    [
      'unknown profession',
      { ...base, professions: { list: 'demo', select: ['astronaut'] } },
      EXIT.config,
      /"astronaut" not in the demo list/,
    ],
    ['unknown list', { ...base, professions: { list: 'winobias99' } }, EXIT.usage, /winobias99/],
    // preflight: refused before the baseline audit (nothing written)
    [
      'site subset',
      { ...base, edit: { projections: ['to_k'] } },
      EXIT.config,
      /config\.edit: tuning edits of a subset of sites/,
    ],
    // run names are one folder name: "." and ".." named the output folder or its parent (--restart deleted it)
    ['name dot', { ...base, name: '.' }, EXIT.config, /config\.name: "\." must match pattern/],
    ['name dotdot', { ...base, name: '..' }, EXIT.config, /config\.name: "\.\." must match pattern/],
    [
      'unknown held-out',
      { ...base, professions: { list: 'demo', select: ['nurse'], heldOut: ['astronaut'] } },
      EXIT.config,
      /astronaut/,
    ],
  ];
  for (const [name, config, code, pattern] of cases) {
    test(name, async () => {
      const r = await runCli([
        'debias',
        '--config',
        writeConfig(name.replace(/ /g, '-'), { ...config, output: join(dir, 'out') }),
      ]);
      assert.equal(r.code, code, r.stderr);
      assert.match(r.stderr, pattern);
      assert.equal(existsSync(join(dir, 'out')), false, 'nothing written');
    });
  }
  test('--dry-run runs the same preflight: a site subset is refused there too', async () => {
    const path = writeConfig('dry-subset', { ...base, edit: { projections: ['to_k'] }, output: join(dir, 'out') });
    const r = await runCli(['debias', '--config', path, '--dry-run']);
    assert.equal(r.code, EXIT.config, r.stderr);
    assert.match(r.stderr, /config\.edit: tuning edits of a subset of sites/);
  });
  test('an output inside the model folder is refused before any work, by the run and by --dry-run', async () => {
    const model = ensureDemoWorld().modelDir;
    const path = writeConfig('in-model', { ...base, output: join(model, 'runs') });
    for (const extra of [[], ['--dry-run']]) {
      const r = await runCli(['debias', '--config', path, ...extra]);
      assert.equal(r.code, EXIT.output, r.stderr);
      assert.match(r.stderr, /config\.output: ".*runs[/\\]debias" is inside the model folder/);
      assert.equal(existsSync(join(model, 'runs')), false, 'nothing written into the model');
    }
  });
  test('--height 100000 in a config: refused by the run and by --dry-run alike (was a RangeError)', async () => {
    const path = writeConfig('huge', {
      ...base,
      generation: { ...base.generation, height: 100000, width: 100000 },
      output: join(dir, 'out'),
    });
    for (const extra of [['--dry-run'], []]) {
      const r = await runCli(['debias', '--config', path, ...extra]);
      assert.equal(r.code, EXIT.config, r.stderr);
      assert.match(r.stderr, /config\.generation\.height: 100000 is larger than 2048/);
      assert.equal(existsSync(join(dir, 'out')), false, 'nothing written');
    }
  });
  test('missing config file', async () => {
    const r = await runCli(['debias', '--config', join(dir, 'nope.json')]);
    assert.equal(r.code, EXIT.config);
    assert.match(r.stderr, /--config: cannot read ".*nope\.json" \(ENOENT\)/);
  });
});

describe('time-debias debias: dry run and budget', () => {
  test('--dry-run prints pairs, rows, budget and a time estimate, and generates no run folder', async () => {
    const out = join(dir, 'dry');
    const r = await runCli(['debias', '--config', writeConfig('dry', { ...base, output: out }), '--dry-run']);
    assert.equal(r.code, EXIT.ok, r.stderr);
    assert.match(r.stdout, /"a nurse" → "a female nurse" or "a male nurse"/);
    assert.match(r.stdout, /rows: 1 pairs × 308 \+ \d+ preserved = \d+ rows of d = \d+/);
    // base: 1 edited profession, one probe of at most 16 images (the expected 1.75 × 16 is capped by
    // it), 8 verification images per round, one round (jointRounds 0)
    assert.match(r.stdout, /tuning ≈ 16 \(at most 16\)/);
    assert.match(r.stdout, /verification ≈ 8 \(at most 8\)/);
    assert.match(r.stdout, /total ≈ \d+ images/);
    assert.match(r.stdout, /s per image \(measured\)/);
    // the estimate in human units for 1, 4 and 16 workers (no queue given)
    assert.match(r.stdout, /^ {2}1 worker of this speed .*: ≈ [\d.]+ (s|min|h|days) \(at most/m);
    assert.match(r.stdout, /^ {2}16 workers of this speed/m);
    assert.equal(existsSync(out), false);
  });

  test('a budget too small: exit 9, the per-profession state, no model; --export-partial exports it', async () => {
    const out = join(dir, 'budget');
    // One probe, far from the crossing (s = 1000): the tuning cannot get there, and the joint
    // verification (32 images) sees it.
    const small = { ...base.tuning, initialStrength: 1000, verificationImages: 32 };
    const path = writeConfig('budget', { ...base, tuning: small, output: out, name: 'small' });
    const r = await runCli(['debias', '--config', path], 180_000);
    assert.equal(r.code, EXIT.notReached, r.stderr);
    assert.match(r.stderr, /tolerance not reached for nurse/);
    assert.match(r.stdout, /tolerance NOT reached; model not exported \(use --export-partial\)/);
    assert.equal(existsSync(join(out, 'small', 'model')), false);
    const job = JSON.parse(readFileSync(join(out, 'small', 'job.json'), 'utf8'));
    assert.equal(job.professions[0].status, 'exhausted');
    assert.equal(job.probes.length, 1);
    const partial = await runCli(['debias', '--config', path, '--export-partial'], 180_000);
    assert.equal(partial.code, EXIT.notReached, partial.stderr);
    assert.ok(existsSync(join(out, 'small', 'model', 'time-edit.json')));
    assert.match(partial.stdout, /partial model: /);
  });
});
