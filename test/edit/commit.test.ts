import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { buildTinySdModel } from '../../src/demo/sd-model.js';
import { commitEdit, describeRows } from '../../src/edit/commit.js';
import { editManifestProblems, readEditManifest } from '../../src/edit/manifest.js';
import { solveEdit } from '../../src/edit/solve.js';
import { GemmEngine } from '../../src/linalg/gemm.js';
import { openSdModel } from '../../src/model/folder.js';
import { locateSites } from '../../src/model/sites.js';
import { OutputError } from '../../src/util/errors.js';
import { rng } from '../linalg/reference.js';
import { randomRows } from './problem.js';

const root = mkdtempSync(join(tmpdir(), 'td-commit-'));
const gemm = new GemmEngine({ threads: 1 });
after(async () => {
  await gemm.dispose();
  rmSync(root, { recursive: true, force: true });
});

describe('commitEdit: apply + export with the one time-edit.json', () => {
  test('describeRows reads pairs (augmentations folded in) and preservation off a row set', () => {
    const rows = randomRows(rng(1), { d: 8, L: 3, pairs: 2, perPair: 4, preserve: 2 });
    const mu = new Map([['p1', 0.25]]);
    const described = describeRows(rows, { lambdas: [0.1, 0.2], lambda: null, mu: 1, muByPrompt: mu });
    assert.equal(described.perPrompt, 3);
    assert.deepEqual(
      described.pairs.map((p) => [p.source, p.lambda, p.weight, p.rows, p.prompts.length]),
      [
        ['s0.0', 0.1, null, 12, 4],
        ['s1.0', 0.2, null, 12, 4],
      ],
    );
    const preserve = rows.groups.filter((g) => g.kind === 'preserve');
    assert.equal(described.preserve?.rows, 6);
    assert.equal(described.preserve?.prompts.length, preserve.length);
    const withGlobal = describeRows(rows, { lambdas: [0.1, 0.05], lambda: 0.1, mu: 1 });
    assert.deepEqual(
      withGlobal.pairs.map((p) => p.weight),
      [1, 2],
    );
    assert.equal(withGlobal.preserve?.weights, null);
  });

  test('a joint edit with a debias section is written once and validates; a bad description writes nothing', async () => {
    const dir = join(root, 'model');
    buildTinySdModel(dir, { sites: 1 });
    const model = openSdModel(dir);
    const sites = locateSites(model);
    const rows = randomRows(rng(2), { d: model.d, L: 77, pairs: 1, preserve: 1, shift: 0.2 });
    const solution = await solveEdit(rows, { lambda: [0.2], mu: 1, gemm });
    const described = describeRows(rows, { lambdas: [0.2], lambda: null, mu: 1 });
    const debias = {
      strategy: 'ed50' as const,
      attribute: { name: 'gender' },
      target: { class: 'female', share: 0.5 },
      augment: false,
      preserve: { prompts: ['p0'], weight: 1, unrelatedWeight: 0.1 },
      professions: [
        {
          profession: 'doctor',
          source: 's0.0',
          destination: 'd0.0',
          destinationClass: 'female',
          strength: 5,
          lambda: 0.2,
          rows: 77,
          before: { share: 0.1, lower: 0.05, upper: 0.2, delta: 0.8, n: 50 },
          after: null,
        },
      ],
    };
    const outDir = join(root, 'edited');
    const result = await commitEdit({
      model,
      outDir,
      allSites: sites,
      sites,
      solution,
      gemm,
      describe: { lambda: null, augment: false, projections: ['to_k', 'to_v'], layers: null, ...described, debias },
    });
    assert.equal(result.kind, 'edit-commit');
    assert.deepEqual(editManifestProblems(JSON.parse(readFileSync(join(outDir, 'time-edit.json'), 'utf8'))), []);
    const manifest = readEditManifest(outDir);
    assert.deepEqual(manifest, result.manifest);
    assert.equal(manifest.lambda, null);
    assert.equal(manifest.debias?.professions[0]?.strength, 5);
    assert.equal(manifest.rows.total, 154);
    assert.deepEqual(
      manifest.sites,
      sites.map((s) => s.name),
    );

    // rows that do not add up: refused before anything is renamed into place
    const bad = join(root, 'bad');
    await assert.rejects(
      commitEdit({
        model,
        outDir: bad,
        sites,
        solution,
        gemm,
        describe: {
          lambda: null,
          augment: true, // one prompt per pair, but augment says four
          projections: ['to_k', 'to_v'],
          layers: null,
          ...described,
        },
      }),
      (e: unknown) => e instanceof OutputError && /augment true means 4/.test(e.message),
    );
    assert.equal(existsSync(bad), false);
    assert.deepEqual(
      readdirSync(root).filter((name) => name.startsWith('bad')),
      [],
      'no temporary folder is left',
    );
  });
});
