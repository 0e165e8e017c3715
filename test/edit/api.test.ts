/**
 * editModel end to end on the project's tiny real-format models: edit → export → every part loads in
 * onnxruntime and the UNet runs; the edited tensors equal TIME's closed form computed here
 * independently (float64 normal equations); every other byte of the folder equals the input; the
 * input folder is unchanged; bad requests write nothing.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { buildTinySdModel, type TinySdOptions } from '../../src/demo/sd-model.js';
import { type EditRequest, type EditResult, editModel, selectSites } from '../../src/edit/api.js';
import { editManifestProblems } from '../../src/edit/manifest.js';
import { openSdModel } from '../../src/model/folder.js';
import { locateSites, readSiteWeight } from '../../src/model/sites.js';
import { ClipTextEncoder, encodePrompts } from '../../src/text/encoder.js';
import { ClipTokenizer } from '../../src/text/tokenizer.js';
import { EditError, OutputError, TimeDebiasError, UsageError } from '../../src/util/errors.js';
import {
  diffOutside,
  directTimeSolve,
  exportLeftovers,
  listFiles,
  loadAllAndRunUnet,
  tensorRanges,
} from '../cli/helpers.js';
import { checksums, rewriteModel, tempDir } from '../onnx/helpers.js';

const tmp = tempDir('edit-api');
after(tmp.cleanup);
let counter = 0;

function tiny(options: TinySdOptions = {}): { dir: string; root: string } {
  const root = join(tmp.dir, `case${counter++}`);
  const dir = join(root, 'model');
  buildTinySdModel(dir, options);
  return { dir, root };
}

interface Rows {
  c: Float64Array;
  cStar: Float64Array;
  w: Float64Array;
  n: number;
}

/**
 * The rows of TIME's objective, built here from the model's own tokenizer and text encoder. Only
 * pairs whose destination inserts words into the source are used, so the reference alignment is
 * simply: positions before the first difference map to themselves, every later position p maps to
 * p + (number of inserted tokens), clamped at 76.
 */
async function referenceRows(
  dir: string,
  pairs: { source: string; destination: string; w: number }[],
  preserve: { prompts: string[]; w: number } | null,
): Promise<Rows> {
  const tokenizer = await ClipTokenizer.fromFolder(join(dir, 'tokenizer'));
  const encoder = await ClipTextEncoder.create(join(dir, 'text_encoder', 'model.onnx'), { threads: 1 });
  try {
    const prompts = [...pairs.flatMap((p) => [p.source, p.destination]), ...(preserve?.prompts ?? [])];
    const enc = await encodePrompts(tokenizer, encoder, prompts);
    const L = 77;
    const d = enc[0]?.d as number;
    const n = L * (pairs.length + (preserve?.prompts.length ?? 0));
    const c = new Float64Array(n * d);
    const cStar = new Float64Array(n * d);
    const w = new Float64Array(n);
    let row = 0;
    pairs.forEach((p, k) => {
      const s = enc[2 * k] as (typeof enc)[number];
      const t = enc[2 * k + 1] as (typeof enc)[number];
      const shift = t.length - s.length;
      let first = 0;
      while (s.ids[first] === t.ids[first]) first++;
      for (let i = 0; i < L; i++, row++) {
        const j = i < first ? i : Math.min(L - 1, i + shift);
        c.set(s.hidden.subarray(i * d, (i + 1) * d), row * d);
        cStar.set(t.hidden.subarray(j * d, (j + 1) * d), row * d);
        w[row] = p.w;
      }
    });
    (preserve?.prompts ?? []).forEach((_, k) => {
      const q = enc[2 * pairs.length + k] as (typeof enc)[number];
      for (let i = 0; i < L; i++, row++) {
        c.set(q.hidden.subarray(i * d, (i + 1) * d), row * d);
        cStar.set(q.hidden.subarray(i * d, (i + 1) * d), row * d);
        w[row] = preserve?.w as number;
      }
    });
    return { c, cStar, w, n };
  } finally {
    await encoder.dispose();
  }
}

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function relErr(a: ArrayLike<number>, e: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < e.length; i++) {
    const diff = (a[i] as number) - (e[i] as number);
    num += diff * diff;
    den += (e[i] as number) ** 2;
  }
  return Math.sqrt(num / den);
}

/**
 * The checks every end-to-end case shares. `expected` = the float64 reference rows, or null when
 * the case does not check W' values. Returns the result for case-specific checks.
 */
async function editAndVerify(
  dir: string,
  request: Omit<EditRequest, 'modelDir' | 'outDir'>,
  reference: Rows | null,
  tolerance: number,
): Promise<{ result: EditResult; outDir: string }> {
  const outDir = join(dir, '..', 'edited');
  const before = checksums(dir);
  const result = await editModel({ ...request, modelDir: dir, outDir, threads: 1 });

  // The input folder is unchanged, byte for byte.
  assert.deepEqual(checksums(dir), before, 'the input folder must not change');
  assert.deepEqual(exportLeftovers(outDir), [], 'no temporary folders are left');

  // The output has every input file plus time-edit.json and the portable edit file.
  assert.deepEqual(listFiles(outDir), [...listFiles(dir), 'edit.safetensors', 'time-edit.json'].sort());

  const input = openSdModel(dir);
  const output = openSdModel(outDir);
  const inSites = locateSites(input);
  const outSites = locateSites(output);
  assert.deepEqual(
    outSites.map((s) => s.name),
    inSites.map((s) => s.name),
  );
  const editedNames = new Set(result.sites.map((s) => s.name));
  const selected = selectSites(inSites, result.projections, result.layers);
  assert.deepEqual([...editedNames].sort(), selected.map((s) => s.name).sort());

  // Every byte outside the edited tensors equals the input; the edited tensors did change.
  const edited = new Set(inSites.filter((s) => editedNames.has(s.name)).map((s) => s.initializer));
  const ranges = tensorRanges(dir, edited);
  let changedInside = 0;
  for (const file of listFiles(dir)) {
    const a = readFileSync(join(dir, file));
    const b = readFileSync(join(outDir, file));
    const diff = diffOutside(a, b, ranges.get(file) ?? []);
    assert.equal(diff.outside, 0, `${file}: bytes outside the edited tensors differ`);
    changedInside += diff.inside;
  }
  assert.ok(changedInside > 0, 'the edited tensors changed');

  // The edited tensors are TIME's W', computed here directly from the rows.
  for (const site of inSites) {
    const W = readSiteWeight(input, site);
    const Wp = readSiteWeight(output, outSites.find((s) => s.name === site.name) as (typeof outSites)[number]);
    const reported = result.sites.find((s) => s.name === site.name);
    if (!editedNames.has(site.name)) {
      assert.deepEqual(Wp, W, `${site.name} is not selected and must not change`);
      continue;
    }
    assert.ok(reported);
    const actual = relErr(Wp, W);
    assert.ok(Math.abs(reported.relativeChange - actual) <= 1e-6 + 1e-4 * actual, `${site.name}: reported ‖ΔW‖/‖W‖`);
    if (reference) {
      const expected = directTimeSolve(W, site.out, site.d, reference.c, reference.cStar, reference.w);
      const err = relErr(Wp, expected);
      assert.ok(err <= tolerance, `${site.name}: ‖W'_out − W'_direct‖/‖W'_direct‖ = ${err} > ${tolerance}`);
      assert.ok(relErr(expected, W) > 10 * tolerance, `${site.name}: the edit is large enough to be checked`);
    }
  }

  // The manifest says what was edited, and identifies the source files.
  const manifest = JSON.parse(readFileSync(join(outDir, 'time-edit.json'), 'utf8'));
  assert.equal(manifest.kind, 'time-edit');
  assert.deepEqual(editManifestProblems(manifest), [], 'the one schema of time-edit.json');
  assert.equal(manifest.lambda, result.lambda);
  assert.equal(manifest.method.solver, result.method);
  assert.equal(manifest.rows.total, result.rows.total);
  assert.equal(manifest.d, result.d);
  assert.deepEqual(
    manifest.sites,
    result.sites.map((s) => s.name),
  );
  assert.deepEqual(
    manifest.pairs.map((p: { source: string; destination: string; rows: number }) => [p.source, p.destination, p.rows]),
    result.pairs.map((p) => [p.source, p.destination, p.rows]),
  );
  assert.equal(manifest.tool.name, 'time-debias');
  assert.match(manifest.tool.version, /^\d+\.\d+\.\d+/);
  assert.deepEqual(
    manifest.editedSites.map((s: { name: string; relativeChange: number }) => [s.name, s.relativeChange]),
    result.sites.map((s) => [s.name, s.relativeChange]),
  );
  assert.ok(manifest.sourceModel.files.length >= 1);
  for (const f of manifest.sourceModel.files as { path: string; sha256: string }[]) {
    assert.equal(f.sha256, sha256(join(dir, f.path)), `sha256 of the source ${f.path}`);
  }

  // Every part of the output loads in onnxruntime and the UNet runs.
  const run = await loadAllAndRunUnet(outDir, result.d);
  assert.ok(run.parts.length >= 4, `parts: ${run.parts.join(', ')}`);
  assert.equal(run.outSample.length, 4);

  // The result is plain JSON.
  assert.deepEqual(JSON.parse(JSON.stringify(result)), result);
  return { result, outDir };
}

describe('editModel end to end', () => {
  test('diffusers fp32, weights.pb: one pair, W′ = TIME closed form', async () => {
    const { dir } = tiny({ sites: 4 });
    const pair = { source: 'a pack of roses', destination: 'a pack of blue roses' };
    const reference = await referenceRows(dir, [{ ...pair, w: 1 / 0.1 }], null);
    const { result } = await editAndVerify(dir, { pairs: [pair] }, reference, 1e-5);
    assert.equal(result.format, 'diffusers-onnx');
    assert.equal(result.lambda, 0.1);
    assert.equal(result.rows.total, 77);
    assert.equal(result.method, 'cholesky'); // n = 77 ≥ d = 32
    assert.equal(result.sites.length, 8);
    assert.equal(result.sitesInModel, 8);
    assert.deepEqual(result.projections, ['to_k', 'to_v']);
    assert.equal(result.parameters, 2 * (8 + 8 + 16 + 16) * 32);
  });

  test('diffusers fp16: the stored half-precision tensors are W′ rounded', async () => {
    const { dir } = tiny({ sites: 3, precision: 'float16' });
    const pair = { source: 'a photo of a nurse', destination: 'a photo of a male nurse' };
    const reference = await referenceRows(dir, [{ ...pair, w: 1 / 0.5 }], null);
    const { result } = await editAndVerify(dir, { pairs: [pair], lambda: 0.5 }, reference, 2e-3);
    assert.equal(result.precision, 'float16');
    assert.ok(result.sites.every((s) => s.dtype === 'float16'));
  });

  test('Optimum, model.onnx_data: joint pairs with weights, augmentations and a preserved prompt', async () => {
    const { dir } = tiny({ sites: 2, flavor: 'optimum' });
    const lambda = 0.2;
    const pairs = [
      { source: 'a doctor', destination: 'a female doctor', weight: 2 },
      { source: 'a nurse', destination: 'a male nurse', lambda: 0.4 },
    ];
    const preserve = { prompts: ['a photo of a dog'], weight: 3 };
    const expand = (p: { source: string; destination: string; weight?: number; lambda?: number }) =>
      ['', 'a photo of ', 'an image of ', 'a picture of '].map((prefix) => ({
        source: prefix + p.source,
        destination: prefix + p.destination,
        w: p.lambda !== undefined ? 1 / p.lambda : (p.weight ?? 1) / lambda,
      }));
    const reference = await referenceRows(dir, pairs.flatMap(expand), { prompts: preserve.prompts, w: 3 });
    const { result } = await editAndVerify(dir, { pairs, lambda, augment: true, preserve }, reference, 1e-5);
    assert.equal(result.format, 'optimum-onnx');
    assert.deepEqual(
      result.pairs.map((p) => [p.weight, p.lambda, p.rows]),
      [
        [2, 0.1, 4 * 77],
        [0.5, 0.4, 4 * 77],
      ],
    );
    assert.deepEqual(result.pairs[0]?.prompts, [
      'a doctor',
      'A photo of a doctor',
      'An image of a doctor',
      'A picture of a doctor',
    ]);
    assert.deepEqual(result.preserve, { prompts: ['a photo of a dog'], weight: 3, rows: 77 });
    assert.deepEqual(result.rows, { total: 9 * 77, pairs: 8 * 77, preserve: 77, perPrompt: 77 });
  });

  test('inline weights: --no-keys and --layers edit only the selected to_v sites', async () => {
    const { dir } = tiny({ sites: 4, externalData: 'inline' });
    const pair = { source: 'a pack of roses', destination: 'a pack of red roses' };
    const reference = await referenceRows(dir, [{ ...pair, w: 10 }], null);
    const { result } = await editAndVerify(
      dir,
      { pairs: [pair], projections: ['to_v'], layers: ['down_blocks.1', 'down_blocks.0.attentions.0'] },
      reference,
      1e-5,
    );
    assert.deepEqual(
      result.sites.map((s) => s.name),
      [
        'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v',
        'down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v',
        'down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v',
      ],
    );
    assert.equal(result.sitesInModel, 8);
  });

  test('small λ: W′c_i ≈ v*_i = W c*_i on the edited rows (d = 128 > n = 77: Woodbury)', async () => {
    const { dir } = tiny({ sites: 2, d: 128 });
    const pair = { source: 'a pack of roses', destination: 'a pack of blue roses' };
    const outDir = join(dir, '..', 'edited');
    const result = await editModel({ modelDir: dir, outDir, pairs: [pair], lambda: 1e-6, threads: 1 });
    assert.equal(result.method, 'woodbury');
    const reference = await referenceRows(dir, [{ ...pair, w: 1 }], null);
    const input = openSdModel(dir);
    const output = openSdModel(outDir);
    const d = 128;
    for (const site of locateSites(input)) {
      const W = readSiteWeight(input, site);
      const Wp = readSiteWeight(output, site);
      let worst = 0;
      let moved = 0;
      for (let i = 0; i < reference.n; i++) {
        const c = reference.c.subarray(i * d, (i + 1) * d);
        const cs = reference.cStar.subarray(i * d, (i + 1) * d);
        let num = 0;
        let den = 0;
        let before = 0;
        for (let o = 0; o < site.out; o++) {
          let wpc = 0;
          let wcs = 0;
          let wc = 0;
          for (let j = 0; j < d; j++) {
            wpc += (Wp[o * d + j] as number) * (c[j] as number);
            wcs += (W[o * d + j] as number) * (cs[j] as number);
            wc += (W[o * d + j] as number) * (c[j] as number);
          }
          num += (wpc - wcs) ** 2;
          den += wcs ** 2;
          before += (wc - wcs) ** 2;
        }
        worst = Math.max(worst, Math.sqrt(num / den));
        moved = Math.max(moved, Math.sqrt(before / den));
      }
      assert.ok(moved > 0.05, `${site.name}: some rows must need the edit (max ‖Wc − v*‖/‖v*‖ = ${moved})`);
      assert.ok(worst < 1e-3, `${site.name}: max ‖W′c_i − v*_i‖/‖v*_i‖ = ${worst}`);
    }
  });

  test('--force replaces an exported model folder, never a folder of other files', async () => {
    const { dir, root } = tiny({ sites: 1 });
    const outDir = join(root, 'edited');
    mkdirSync(outDir);
    writeFileSync(join(outDir, 'old-file.txt'), 'old');
    const request = {
      modelDir: dir,
      outDir,
      force: true,
      pairs: [{ source: 'a cat', destination: 'a blue cat' }],
      threads: 1,
    };
    await assert.rejects(
      editModel(request),
      /outDir: .* is a folder of 1 entry \(old-file\.txt\).*refusing to delete it/,
    );
    assert.equal(readFileSync(join(outDir, 'old-file.txt'), 'utf8'), 'old');
    rmSync(outDir, { recursive: true });
    await editModel({ ...request, force: false });
    const result = await editModel(request);
    assert.equal(result.replaced, true);
    assert.ok(existsSync(join(outDir, 'time-edit.json')));
    assert.deepEqual(exportLeftovers(outDir), []);
  });
});

describe('editModel rejects bad requests before writing anything', () => {
  const { dir, root } = tiny({ sites: 1 });
  const outDir = join(root, 'edited');
  const pair = { source: 'a pack of roses', destination: 'a pack of blue roses' };
  const base: EditRequest = { modelDir: dir, outDir, pairs: [pair], threads: 1 };
  const inputSums = checksums(dir);

  async function rejects(request: EditRequest, errorClass: new (...args: never[]) => Error, pattern: RegExp) {
    await assert.rejects(editModel(request), (error: Error) => {
      assert.ok(error instanceof errorClass, `${error.name}: ${error.message}`);
      assert.match(error.message, pattern);
      // The library names its own parameter (the CLI relabels it with the flag).
      if (error instanceof TimeDebiasError && error.field) assert.ok(error.message.startsWith(`${error.field}: `));
      return true;
    });
    assert.equal(existsSync(request.outDir), false, 'nothing is written');
    assert.deepEqual(exportLeftovers(outDir), []);
    assert.deepEqual(checksums(dir), inputSums);
  }

  test('λ ≤ 0, NaN or infinite', async () => {
    for (const lambda of [0, -0.1, Number.NaN, Number.POSITIVE_INFINITY]) {
      await rejects({ ...base, lambda }, UsageError, /^lambda: .*finite number > 0/);
    }
  });

  test('empty prompts and no pairs', async () => {
    await rejects(
      { ...base, pairs: [{ source: '', destination: 'a cat' }] },
      UsageError,
      /^pairs\[0\]\.source: "" is empty/,
    );
    await rejects(
      { ...base, pairs: [{ source: 'a cat', destination: '  ' }] },
      UsageError,
      /^pairs\[0\]\.destination: " {2}" is empty/,
    );
    await rejects({ ...base, pairs: [] }, UsageError, /at least one/);
    await rejects(
      { ...base, pairs: [pair, { source: 'a dog', destination: '' }], pairsFile: 'p.tsv' },
      UsageError,
      /^pairs\[1\]\.destination: "" is empty/,
    );
    await rejects({ ...base, preserve: { prompts: [''] } }, UsageError, /^preserve\.prompts\[0\]: "" is empty/);
    await rejects({ ...base, preserve: { prompts: ['a dog'], weight: 0 } }, UsageError, /^preserve\.weight: 0/);
    await rejects({ ...base, pairs: [{ ...pair, weight: -1 }] }, UsageError, /^pairs\[0\]\.weight: -1/);
    await rejects({ ...base, pairs: [{ ...pair, lambda: 0 }] }, UsageError, /^pairs\[0\]\.lambda: 0 is not valid/);
    await rejects({ ...base, pairs: [{ ...pair, weight: 2, lambda: 0.1 }] }, UsageError, /both given/);
  });

  test('a destination that lacks a source token: EditError naming both prompts', async () => {
    await rejects(
      { ...base, pairs: [{ source: 'a pack of roses', destination: 'a blue flower' }] },
      EditError,
      /"a blue flower".*"a pack of roses".*"pack<\/w>"/,
    );
  });

  test('unknown device, bad thread count', async () => {
    await rejects(
      { ...base, device: 'tpu' as never },
      UsageError,
      /^device: "tpu" is not a known device; valid devices are cpu, cuda/,
    );
    await rejects({ ...base, threads: -1 }, UsageError, /^threads: -1 must be an integer ≥ 0/);
  });

  test('layers that match no site, and an empty projection list', async () => {
    await rejects({ ...base, layers: ['up_blocks.9'] }, UsageError, /^layers: "up_blocks.9" matches no/);
    await rejects({ ...base, projections: [] }, UsageError, /projections/);
  });

  test('an output that exists, or lies inside / around the input', async () => {
    const existing = join(root, 'existing');
    mkdirSync(existing);
    writeFileSync(join(existing, 'keep.txt'), 'keep');
    await assert.rejects(editModel({ ...base, outDir: existing }), (e: Error) => {
      assert.ok(e instanceof OutputError);
      assert.match(e.message, /^outDir: .*already exists.*replace it \(`force`\)/);
      return true;
    });
    assert.deepEqual(listFiles(existing), ['keep.txt']);
    await assert.rejects(editModel({ ...base, outDir: join(dir, 'edited') }), OutputError);
    await assert.rejects(editModel({ ...base, outDir: root, force: true }), /contains the model folder/);
    assert.deepEqual(checksums(dir), inputSums);
  });

  test('a failure after the checks (a text encoder onnxruntime cannot load) removes the started export', async () => {
    const broken = tiny({ sites: 1 });
    rewriteModel(join(broken.dir, 'text_encoder', 'model.onnx'), (m) => {
      const node = m.graph?.node?.[0];
      assert.ok(node);
      node.opType = 'NoSuchOperator';
    });
    const sums = checksums(broken.dir);
    const out = join(broken.root, 'edited');
    await assert.rejects(editModel({ ...base, modelDir: broken.dir, outDir: out }), /NoSuchOperator/);
    assert.equal(existsSync(out), false);
    assert.deepEqual(exportLeftovers(out), []);
    assert.deepEqual(checksums(broken.dir), sums);
  });

  test('a model folder that does not exist', async () => {
    await rejects({ ...base, modelDir: join(root, 'nope') }, Error, /does not exist/);
  });
});
