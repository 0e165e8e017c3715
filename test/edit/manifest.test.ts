import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  assertEditManifest,
  EDIT_MANIFEST_FILE,
  type EditManifest,
  editManifestProblems,
  readEditManifest,
  TIME_METHOD,
} from '../../src/edit/manifest.js';
import { ModelFormatError, OutputError } from '../../src/util/errors.js';

const SITES = [
  'mid_block.attentions.0.transformer_blocks.0.attn2.to_k',
  'mid_block.attentions.0.transformer_blocks.0.attn2.to_v',
];

function valid(): EditManifest {
  return {
    kind: 'time-edit',
    version: 1,
    method: { ...TIME_METHOD, solver: 'woodbury', applyForm: 'lowRank', rank: 77 },
    lambda: 0.1,
    augment: false,
    projections: ['to_k', 'to_v'],
    layers: null,
    pairsFile: null,
    pairs: [
      { source: 'a doctor', destination: 'a female doctor', weight: 1, lambda: 0.1, rows: 77, prompts: ['a doctor'] },
    ],
    preserve: { prompts: ['a dog'], weight: 1, weights: null, rows: 77 },
    rows: { total: 154, pairs: 77, preserve: 77, perPrompt: 77 },
    d: 768,
    sites: [...SITES],
    warnings: [],
    tool: { name: 'time-debias', version: '0.1.0' },
    date: '2026-12-04T21:00:00.000Z',
    sourceModel: {
      dir: '/models/sd14',
      format: 'diffusers-onnx',
      precision: 'float32',
      d: 768,
      files: [{ path: 'unet/weights.pb', bytes: 10, sha256: 'a'.repeat(64) }],
    },
    editedSites: SITES.map((name, i) => ({
      name,
      projection: i === 0 ? 'to_k' : 'to_v',
      initializer: `onnx::MatMul_${i}`,
      shape: [1280, 768],
      dtype: 'float32',
      relativeChange: 0.01,
    })),
  };
}

describe('time-edit.json: one typed shape, one schema', () => {
  test('a complete manifest is valid, with or without the debias section', () => {
    assert.deepEqual(editManifestProblems(valid()), []);
    const withDebias: EditManifest = {
      ...valid(),
      lambda: null,
      pairs: [{ ...valid().pairs[0]!, weight: null, lambda: 0.2 }],
      debias: {
        strategy: 'ed50',
        attribute: { name: 'gender', classes: [] },
        target: { class: 'female', share: 0.5 },
        augment: false,
        preserve: { prompts: ['a dog'], weight: 1, unrelatedWeight: 0.1 },
        professions: [
          {
            profession: 'doctor',
            source: 'a doctor',
            destination: 'a female doctor',
            destinationClass: 'female',
            strength: 5,
            lambda: 0.2,
            rows: 77,
            before: { share: 0.1, lower: 0.05, upper: 0.2, delta: 0.8, n: 100 },
            after: null,
          },
        ],
      },
    };
    assert.deepEqual(editManifestProblems(withDebias), []);
  });
  test('schema and cross-field problems are all listed', () => {
    const cases: [string, (m: Record<string, unknown> & EditManifest) => void, RegExp][] = [
      ['unknown key', (m) => Object.assign(m, { n: 154 }), /additional properties \(n\)/],
      ['kind', (m) => Object.assign(m, { kind: 'edit' }), /kind must be equal to constant/],
      ['λ ≤ 0', (m) => Object.assign(m, { lambda: 0 }), /lambda must be > 0/],
      ['rows add up', (m) => Object.assign(m, { rows: { ...m.rows, total: 100 } }), /rows\.total 100/],
      ['pair rows', (m) => Object.assign(m, { rows: { ...m.rows, pairs: 76, total: 153 } }), /rows\.pairs is 76/],
      ['sites', (m) => Object.assign(m, { sites: [SITES[0]] }), /do not name the same sites/],
      ['augment', (m) => Object.assign(m, { augment: true }), /augment true means 4/],
      ['sha256', (m) => (m.sourceModel.files[0]!.sha256 = 'xyz'), /sha256 must match pattern/],
    ];
    for (const [name, mutate, pattern] of cases) {
      const m = valid() as Record<string, unknown> & EditManifest;
      mutate(m);
      const problems = editManifestProblems(m);
      assert.ok(
        problems.some((p) => pattern.test(p)),
        `${name}: ${problems.join(' | ')}`,
      );
      assert.throws(() => assertEditManifest(m), OutputError);
    }
  });
  test('readEditManifest reads and validates a model folder’s time-edit.json', () => {
    const dir = mkdtempSync(join(tmpdir(), 'td-manifest-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    mkdirSync(join(dir, 'ok'));
    writeFileSync(join(dir, 'ok', EDIT_MANIFEST_FILE), JSON.stringify(valid()));
    assert.deepEqual(readEditManifest(join(dir, 'ok')), valid());
    mkdirSync(join(dir, 'bad'));
    writeFileSync(join(dir, 'bad', EDIT_MANIFEST_FILE), JSON.stringify({ ...valid(), version: 2 }));
    assert.throws(
      () => readEditManifest(join(dir, 'bad')),
      (e: unknown) => e instanceof ModelFormatError && /version/.test(e.message),
    );
    assert.throws(() => readEditManifest(join(dir, 'none')), ModelFormatError);
  });
});
