import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig, normalizeConfig, SCHEMA_PATH, seedRanges } from '../../src/debias/config.js';
import { ConfigError } from '../../src/util/errors.js';

const minimal = { model: 'demo', classifier: 'demo', professions: { list: 'demo' } };

function errorOf(raw: unknown): string {
  try {
    normalizeConfig(raw, '/base');
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    return (e as Error).message;
  }
  assert.fail('expected a ConfigError');
}

test('defaults are filled in from the schema', () => {
  const c = normalizeConfig(minimal, '/base');
  assert.equal(c.target.share, 0.5);
  assert.equal(c.target.class, 'female');
  assert.equal(c.tuning.strategy, 'ed50');
  assert.equal(c.tuning.uce.imagesPerRound, 250);
  assert.equal(c.tuning.uce.maxRounds, 30);
  assert.deepEqual(c.edit.projections, ['to_k', 'to_v']);
  assert.equal(c.prompts.evaluationTemplates.length, 5);
  assert.equal(c.output, '/base/outputs');
  assert.equal(c.model, 'demo');
});

test('relative paths resolve against the config folder', () => {
  const c = normalizeConfig(
    { ...minimal, model: 'models/sd14', classifier: '/abs/clip', professions: { list: 'lists/p.csv' } },
    '/base',
  );
  assert.equal(c.model, '/base/models/sd14');
  assert.deepEqual(c.classifier, { path: '/abs/clip', preprocess: 'transformers' });
  assert.equal(c.professions.list, '/base/lists/p.csv');
});

test('classifier: a folder, or {path, preprocess}; the string form means preprocess "transformers"', () => {
  const c = normalizeConfig({ ...minimal, classifier: { path: 'clip', preprocess: 'pil' } }, '/base');
  assert.deepEqual(c.classifier, { path: '/base/clip', preprocess: 'pil' });
  assert.deepEqual(normalizeConfig({ ...minimal, classifier: { path: 'demo' } }, '/base').classifier, {
    path: 'demo',
    preprocess: 'transformers',
  });
  // normalizing the normalized config (as a resumed run reads its config.json) changes nothing
  assert.deepEqual(normalizeConfig(c, '/elsewhere').classifier, c.classifier);
  assert.throws(
    () => normalizeConfig({ ...minimal, classifier: { path: 'clip', preprocess: 'opencv' } }, '/base'),
    /config\.classifier\.preprocess: "opencv" must be equal to one of the allowed values/,
  );
});

test('each schema rule is reported with its path, value and rule', () => {
  const cases: [unknown, RegExp][] = [
    [{}, /missing required key "model" \(rule: required\)/],
    [{ ...minimal, bogus: 1 }, /unknown key "bogus"/],
    [{ ...minimal, target: { share: 0 } }, /config\.target\.share: 0 must be > 0 \(rule: exclusiveMinimum\)/],
    [{ ...minimal, target: { share: 1.5 } }, /config\.target\.share: 1\.5 must be < 1 \(rule: exclusiveMaximum\)/],
    [{ ...minimal, tuning: { tolerance: 'x' } }, /config\.tuning\.tolerance: "x" must be number \(rule: type\)/],
    [
      { ...minimal, tuning: { strategy: 'magic' } },
      /config\.tuning\.strategy: "magic" must be equal to one of the allowed values \(rule: enum\)/,
    ],
    [{ ...minimal, generation: { height: 0 } }, /config\.generation\.height: 0 must be >= 1 \(rule: minimum\)/],
    [{ ...minimal, generation: { steps: 0 } }, /config\.generation\.steps: 0 must be >= 1 \(rule: minimum\)/],
    [
      { ...minimal, professions: { list: 'demo', select: [] } },
      /config\.professions\.select: \[\] must NOT have fewer than 1 items \(rule: minItems\)/,
    ],
    [{ ...minimal, attribute: { classes: [{ id: 'a', word: 'a', labels: ['x'] }] } }, /rule: minItems/],
    [{ ...minimal, edit: { projections: ['to_q'] } }, /config\.edit\.projections\[0\].*rule: enum/],
    [{ ...minimal, name: 'has space' }, /config\.name: "has space".*rule: pattern/],
    [{ ...minimal, prompts: { destination: 'a {profession}' } }, /config\.prompts\.destination.*rule: pattern/],
  ];
  for (const [raw, pattern] of cases) assert.match(errorOf(raw), pattern);
});

test('cross-field rules', () => {
  assert.match(
    errorOf({ ...minimal, target: { class: 'other' } }),
    /config\.target\.class: "other" is not one of the attribute's classes female, male/,
  );
  assert.match(
    errorOf({ ...minimal, tuning: { strengthRange: [10, 1] } }),
    /strengthRange: \[10, 1\] must be increasing/,
  );
  assert.match(
    errorOf({ ...minimal, tuning: { initialStrength: 5000 } }),
    /initialStrength: 5000 is outside strengthRange/,
  );
  assert.match(
    errorOf({ ...minimal, tuning: { batch: 64, imagesPerProbe: 32 } }),
    /batch: 64 exceeds tuning\.imagesPerProbe 32/,
  );
  assert.match(
    errorOf({ ...minimal, seeds: { evaluation: 100 } }),
    /tuning seeds \[0, 160\) overlap evaluation seeds \[100, 300\)/,
  );
  assert.match(
    errorOf({ ...minimal, professions: { list: 'demo', select: ['nurse'], heldOut: ['nurse'] } }),
    /"nurse" is also selected for editing/,
  );
  assert.match(
    errorOf({ ...minimal, prompts: { destinationClass: { nurse: 'robot' } } }),
    /destinationClass\.nurse: "robot" is not one of female, male/,
  );
  assert.match(errorOf([1, 2]), /must be a JSON object/);
});

test('seed ranges follow the budgets', () => {
  const c = normalizeConfig({ ...minimal, tuning: { strategy: 'uce' } }, '/base');
  assert.deepEqual(seedRanges(c)[0], { use: 'tuning', start: 0, end: 250 });
});

test('loadConfig reports unreadable and non-JSON files by path', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
  try {
    assert.throws(
      () => loadConfig(join(dir, 'missing.json')),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.field === 'config' &&
        /^config: cannot read ".*missing\.json" \(ENOENT\)/.test(e.message),
    );
    writeFileSync(join(dir, 'bad.json'), '{ nope');
    assert.throws(() => loadConfig(join(dir, 'bad.json')), /is not valid JSON/);
    writeFileSync(join(dir, 'ok.json'), JSON.stringify({ ...minimal, model: './m' }));
    assert.equal(loadConfig(join(dir, 'ok.json')).model, join(dir, 'm'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the schema file is valid JSON with descriptions on every top-level key', () => {
  const schema = JSON.parse(readFileSync(SCHEMA_PATH, 'utf8'));
  for (const [key, value] of Object.entries(
    schema.properties as Record<string, { description?: string; type?: string; properties?: unknown }>,
  )) {
    if (
      [
        'attribute',
        'target',
        'prompts',
        'edit',
        'preserve',
        'tuning',
        'generation',
        'audit',
        'device',
        'name',
      ].includes(key)
    )
      continue;
    assert.ok(value.description, `schema property ${key} has no description`);
  }
});
