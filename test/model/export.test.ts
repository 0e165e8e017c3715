import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { buildTinySdModel, type TinySdOptions } from '../../src/demo/sd-model.js';
import { EDIT_MANIFEST, exportEditedModel, relativeChange, startExport } from '../../src/model/export.js';
import { openSdModel, type SdModel } from '../../src/model/folder.js';
import { type EditSite, locateSites, readSiteWeight, readSiteWeightStored } from '../../src/model/sites.js';
import { readTensorBytes } from '../../src/onnx/model-file.js';
import { Session, tensor } from '../../src/runtime/ort.js';
import { EditError, ModelFormatError, OutputError } from '../../src/util/errors.js';
import { fromHalf, toHalf } from '../../src/util/half.js';
import { checksums, randomFloats, tempDir } from '../onnx/helpers.js';

const tmp = tempDir('export');
// keep the source-hash cache of these tests out of the user's ~/.cache
process.env.TIME_DEBIAS_CACHE_DIR = join(tmp.dir, 'hash-cache');
after(tmp.cleanup);
let counter = 0;

function tiny(options: TinySdOptions = {}): { dir: string; model: SdModel; sites: EditSite[] } {
  const dir = join(tmp.dir, `in${counter++}`, 'model');
  buildTinySdModel(dir, options);
  const model = openSdModel(dir);
  return { dir, model, sites: locateSites(model) };
}

/** W' = W + a random perturbation, for every site (or those picked). */
function editedWeights(model: SdModel, sites: EditSite[], seed: number): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const s of sites) {
    const W = readSiteWeight(model, s);
    const noise = randomFloats(W.length, seed++);
    out.set(
      s.name,
      W.map((w, i) => w + 0.1 * (noise[i] as number)),
    );
  }
  return out;
}

/** Run the UNet once on fixed inputs; returns out_sample as float32. */
async function unetForward(dir: string, model: SdModel): Promise<Float32Array> {
  const session = await Session.create(join(dir, 'unet', 'model.onnx'), { label: 'unet' });
  try {
    const f16 = model.unetIo.inputs.find((i) => i.name === 'sample')?.dtype === 'float16';
    const feed = (x: Float32Array, dims: number[]) =>
      f16 ? tensor('float16', toHalf(x), dims) : tensor('float32', x, dims);
    const ts = model.unetIo.inputs.find((i) => i.name === 'timestep');
    const timestep =
      ts?.dtype === 'int64'
        ? tensor('int64', BigInt64Array.from([500n]), [1])
        : feed(Float32Array.from([500]), ts?.shape.length === 0 ? [] : [1]);
    const outs = await session.run({
      sample: feed(randomFloats(4 * 8 * 8, 1), [1, 4, 8, 8]),
      timestep,
      encoder_hidden_states: feed(randomFloats(77 * model.d, 2), [1, 77, model.d]),
    });
    const data = outs.out_sample?.data;
    assert.ok(data);
    return f16 ? fromHalf(data as Uint16Array) : Float32Array.from(data as Float32Array);
  } finally {
    await session.dispose();
  }
}

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Leftover temporary/old folders next to `outDir`. */
function leftovers(outDir: string): string[] {
  const parent = dirname(outDir);
  return existsSync(parent) ? readdirSync(parent).filter((n) => /\.(tmp|old)-/.test(n)) : [];
}

describe('exportEditedModel end to end on the tiny models', () => {
  const variants: [string, TinySdOptions, boolean][] = [
    ['diffusers weights.pb fp32', {}, true],
    ['optimum model.onnx_data', { flavor: 'optimum' }, false],
    ['fp16 inline', { precision: 'float16', externalData: 'inline' }, false],
  ];
  for (const [label, options, compareWithInput] of variants) {
    test(`${label}: edited tensors = W', every other byte equal, input unchanged, onnxruntime runs it`, async () => {
      const { dir, model, sites } = tiny(options);
      const before = checksums(dir);
      // edit the values of every site and the keys of the first four
      const picked = sites.filter((s, i) => s.projection === 'to_v' || i < 8);
      const weights = editedWeights(model, picked, 1000);
      const outDir = join(tmp.dir, `out${counter++}`, 'edited');
      const result = await exportEditedModel({
        model,
        weights,
        outDir,
        manifest: { kind: 'time-edit', lambda: 0.1, pairs: [['a', 'b']] },
      });

      assert.deepEqual(checksums(dir), before, 'input files unchanged');
      assert.equal(result.kind, 'model-export');
      assert.equal(result.editedSites.length, picked.length);
      assert.deepEqual(leftovers(outDir), []);

      // every input file is in the output, byte-equal except the patched UNet file
      const after = checksums(outDir);
      const patched = model.unetExternalData.length ? `unet/${model.unetExternalData[0]?.location}` : 'unet/model.onnx';
      assert.deepEqual(result.patchedFiles, [patched]);
      for (const [rel, sum] of Object.entries(before)) {
        if (rel === patched) assert.notEqual(after[rel], sum, rel);
        else assert.equal(after[rel], sum, rel);
      }
      assert.deepEqual(Object.keys(after).sort(), [...Object.keys(before), EDIT_MANIFEST].sort());
      // no hard links: each output file has one link and is not the input's inode
      for (const rel of Object.keys(before)) {
        const a = statSync(join(outDir, rel));
        assert.equal(a.nlink, 1, rel);
        assert.notEqual(a.ino, statSync(join(dir, rel)).ino, rel);
      }

      // reopen: edited tensors hold W' (rounded to the stored dtype), all other initializers byte-equal
      const out = openSdModel(outDir);
      const outSites = locateSites(out);
      assert.deepEqual(outSites, sites);
      const round = (x: Float32Array) => (model.precision === 'float16' ? fromHalf(toHalf(x)) : x);
      for (const s of outSites) {
        const W = weights.get(s.name);
        const got = readSiteWeight(out, s);
        assert.deepEqual(Array.from(got), Array.from(W ? round(W) : readSiteWeight(model, s)), s.name);
      }
      const editedInits = new Set(picked.map((s) => s.initializer));
      for (const init of model.unet.initializers) {
        if (editedInits.has(init.name)) continue;
        const o = out.unet.initializerByName.get(init.name);
        assert.ok(o);
        assert.deepEqual(readTensorBytes(out.unet, o), readTensorBytes(model.unet, init), init.name);
      }

      // the manifest
      const manifest = JSON.parse(readFileSync(join(outDir, EDIT_MANIFEST), 'utf8'));
      assert.equal(manifest.kind, 'time-edit');
      assert.equal(manifest.lambda, 0.1);
      assert.equal(manifest.tool.name, 'time-debias');
      assert.equal(manifest.tool.version, JSON.parse(readFileSync('package.json', 'utf8')).version);
      assert.equal(manifest.date, undefined, 'no clock in the manifest: exports are reproducible byte for byte');
      assert.deepEqual(
        manifest.sourceModel.files.map((f: { path: string; sha256: string }) => [f.path, f.sha256]),
        [[patched, sha256(join(dir, patched))]],
      );
      for (const rec of manifest.editedSites) {
        const s = sites.find((x) => x.name === rec.name) as EditSite;
        const expected = relativeChange(readSiteWeight(model, s), round(weights.get(s.name) as Float32Array));
        assert.ok(Math.abs(rec.relativeChange - expected) <= 1e-9 * Math.max(1, expected), rec.name);
        assert.ok(rec.relativeChange > 0);
        assert.deepEqual(rec.shape, [s.out, s.d]);
      }

      // onnxruntime loads and runs the exported UNet (session creation dominates: compare once)
      const y1 = await unetForward(outDir, out);
      assert.equal(y1.length, 4 * 8 * 8);
      assert.ok(y1.every((v) => Number.isFinite(v)));
      if (compareWithInput) {
        const y0 = await unetForward(dir, model);
        assert.ok(
          y1.some((v, i) => v !== y0[i]),
          'the edit changes out_sample',
        );
      }
    });
  }

  test("W' = W exports a byte-identical folder (plus the manifest) with relative change 0", async () => {
    const { dir, model, sites } = tiny();
    const weights = new Map(sites.map((s) => [s.name, readSiteWeight(model, s)]));
    const outDir = join(tmp.dir, `out${counter++}`);
    const result = await exportEditedModel({ model, weights, outDir });
    const a = checksums(dir);
    const b = checksums(outDir);
    delete b[EDIT_MANIFEST];
    assert.deepEqual(b, a);
    assert.ok(result.editedSites.every((s) => s.relativeChange === 0));
  });

  test("layout 'stored': weights as readSiteWeightStored gives them export the same bytes as torch layout", async () => {
    const { model, sites } = tiny({ precision: 'float16' });
    const torch = editedWeights(model, sites, 71);
    const stored = new Map(
      sites.map((s) => {
        const { transposed } = readSiteWeightStored(model, s);
        assert.equal(transposed, s.layout === 'transposed');
        const W = torch.get(s.name) as Float32Array;
        // torch [out, d] → stored [d, out] for the exporter's layout
        const T = new Float32Array(W.length);
        if (transposed)
          for (let o = 0; o < s.out; o++) for (let k = 0; k < s.d; k++) T[k * s.out + o] = W[o * s.d + k] as number;
        else T.set(W);
        return [s.name, T];
      }),
    );
    const a = join(tmp.dir, `out${counter++}`);
    const b = join(tmp.dir, `out${counter++}`);
    await exportEditedModel({ model, weights: torch, outDir: a });
    await exportEditedModel({ model, weights: stored, layout: 'stored', outDir: b });
    const ca = checksums(a);
    const cb = checksums(b);
    delete ca[EDIT_MANIFEST];
    delete cb[EDIT_MANIFEST];
    assert.deepEqual(cb, ca);
  });

  test('symlinked files in the input are copied as files', async () => {
    const { dir, model, sites } = tiny();
    const real = join(tmp.dir, `shared-${counter++}.txt`);
    writeFileSync(real, 'hello');
    symlinkSync(real, join(dir, 'README.txt'));
    const outDir = join(tmp.dir, `out${counter++}`);
    await exportEditedModel({ model, weights: editedWeights(model, sites.slice(0, 1), 5), outDir });
    assert.ok(!statSync(join(outDir, 'README.txt')).isSymbolicLink());
    assert.equal(readFileSync(join(outDir, 'README.txt'), 'utf8'), 'hello');
  });
});

describe('exportEditedModel refuses, and writes nothing', () => {
  test('output exists: refused without force; with force a folder of other files is refused, an export replaced atomically', async () => {
    const { model, sites } = tiny();
    const outDir = join(tmp.dir, `out${counter++}`);
    mkdirSync(outDir);
    writeFileSync(join(outDir, 'keep.txt'), 'old');
    const weights = editedWeights(model, sites.slice(0, 2), 9);
    await assert.rejects(
      exportEditedModel({ model, weights, outDir }),
      (e: Error) =>
        e instanceof OutputError &&
        /already exists/.test(e.message) &&
        e.field === 'outDir' &&
        /replace it \(`force`\)/.test(e.message),
    );
    // issue 11: --force replaced whatever was there; only this tool's exports are replaced now
    await assert.rejects(
      exportEditedModel({ model, weights, outDir, force: true }),
      (e: Error) => e instanceof OutputError && /a folder of 1 entry \(keep\.txt\)/.test(e.message),
    );
    assert.deepEqual(readdirSync(outDir), ['keep.txt']);
    assert.deepEqual(leftovers(outDir), []);
    const first = join(tmp.dir, `out${counter++}`);
    await exportEditedModel({ model, weights, outDir: first });
    const result = await exportEditedModel({
      model,
      weights: editedWeights(model, sites.slice(0, 1), 3),
      outDir: first,
      force: true,
    });
    assert.equal(result.replaced, true);
    assert.equal(JSON.parse(readFileSync(join(first, EDIT_MANIFEST), 'utf8')).editedSites.length, 1);
    assert.deepEqual(leftovers(first), []);
  });

  test('output inside the input, or containing it (force would delete the input)', async () => {
    const { dir, model, sites } = tiny();
    const before = checksums(dir);
    const weights = editedWeights(model, sites.slice(0, 1), 3);
    await assert.rejects(
      exportEditedModel({ model, weights, outDir: join(dir, 'edited') }),
      (e: Error) => e instanceof OutputError && /inside the model folder/.test(e.message),
    );
    await assert.rejects(exportEditedModel({ model, weights, outDir: dir, force: true }), OutputError);
    // a not-yet-existing output under a symlink that points into the input
    const link = join(tmp.dir, `link${counter++}`);
    symlinkSync(dir, link);
    await assert.rejects(exportEditedModel({ model, weights, outDir: join(link, 'new', 'edited') }), OutputError);
    await assert.rejects(
      exportEditedModel({ model, weights, outDir: dirname(dir), force: true }),
      (e: Error) => e instanceof OutputError && /contains the model folder/.test(e.message),
    );
    assert.deepEqual(checksums(dir), before);
  });

  test('bad weights: unknown site, wrong size, non-finite, none', async () => {
    const { dir, model, sites } = tiny();
    const before = checksums(dir);
    const outDir = join(tmp.dir, `out${counter++}`, 'x');
    const site = sites[0] as EditSite;
    const cases: [Map<string, Float32Array>, RegExp][] = [
      [new Map([['up_blocks.9.nope', new Float32Array(4)]]), /is not a site/],
      [new Map([[site.name, new Float32Array(3)]]), /3 values given, expected out × d/],
      [new Map([[site.name, new Float32Array(site.out * site.d).fill(Number.NaN)]]), /non-finite/],
      [new Map(), /no edited weights/],
    ];
    for (const [weights, pattern] of cases) {
      await assert.rejects(
        exportEditedModel({ model, weights, outDir }),
        (e: Error) => e instanceof EditError && pattern.test(e.message),
      );
    }
    assert.ok(!existsSync(outDir));
    assert.deepEqual(leftovers(outDir), []);
    assert.deepEqual(checksums(dir), before);
  });

  test('a broken symlink in the input is a ModelFormatError, nothing left behind', async () => {
    const { dir, model, sites } = tiny();
    symlinkSync(join(tmp.dir, 'nowhere'), join(dir, 'dangling.txt'));
    const outDir = join(tmp.dir, `out${counter++}`, 'z');
    await assert.rejects(
      exportEditedModel({ model, weights: editedWeights(model, sites.slice(0, 1), 6), outDir }),
      (e: Error) => e instanceof ModelFormatError && /dangling\.txt/.test(e.message),
    );
    assert.ok(!existsSync(outDir));
    assert.deepEqual(leftovers(outDir), []);
  });

  test('a failure after copying removes the temporary folder', async () => {
    const { dir, model, sites } = tiny();
    const outDir = join(tmp.dir, `out${counter++}`, 'y');
    const weights = editedWeights(model, sites.slice(0, 1), 4);
    // the UNet's weights file vanishes between opening and exporting: the copy fails
    renameSync(join(dir, 'unet', 'weights.pb'), join(dir, 'unet', 'weights.moved'));
    await assert.rejects(exportEditedModel({ model, weights, outDir }), /ENOENT/);
    assert.ok(!existsSync(outDir));
    assert.deepEqual(leftovers(outDir), []);
  });
});

describe("startExport: the copy overlaps the caller's computation", () => {
  test('start, compute, finish: same output as exportEditedModel; abort leaves nothing', async () => {
    const { dir, model, sites } = tiny();
    const before = checksums(dir);
    const outDir = join(tmp.dir, `out${counter++}`, 'overlap');
    const job = startExport({ model, outDir, sites });
    assert.ok(job.tmpDir.startsWith(`${outDir}.tmp-`));
    const weights = editedWeights(model, sites, 77); // "the edit", while the clone runs
    const result = await job.finish({ weights, manifest: { kind: 'time-edit' } });
    assert.equal(result.editedSites.length, sites.length);
    assert.equal(
      result.sourceFiles[0]?.sha256,
      createHash('sha256')
        .update(readFileSync(join(dir, 'unet', 'weights.pb')))
        .digest('hex'),
    );
    assert.ok(result.timings.total >= result.timings.clone);
    const out = openSdModel(outDir);
    for (const s of locateSites(out))
      assert.deepEqual(Array.from(readSiteWeight(out, s)), Array.from(weights.get(s.name) as Float32Array));
    await assert.rejects(job.finish({ weights }), OutputError);
    assert.deepEqual(leftovers(outDir), []);

    const other = join(tmp.dir, `out${counter++}`, 'aborted');
    const aborted = startExport({ model, outDir: other });
    await aborted.abort();
    assert.ok(!existsSync(other) && !existsSync(aborted.tmpDir));
    assert.deepEqual(leftovers(other), []);

    const bad = startExport({ model, outDir: join(tmp.dir, `out${counter++}`, 'bad') });
    await assert.rejects(bad.finish({ weights: new Map([[sites[0]!.name, new Float32Array(2)]]) }), EditError);
    assert.ok(!existsSync(bad.tmpDir));
    assert.deepEqual(checksums(dir), before);
  });

  test('the source hash is remembered per file identity, and recomputed when the file changes', async () => {
    const { dir, model, sites } = tiny();
    const weightsFile = join(dir, 'unet', 'weights.pb');
    const first = await exportEditedModel({
      model,
      weights: editedWeights(model, sites.slice(0, 1), 1),
      outDir: join(tmp.dir, `out${counter++}`),
    });
    const again = await exportEditedModel({
      model,
      weights: editedWeights(model, sites.slice(0, 1), 2),
      outDir: join(tmp.dir, `out${counter++}`),
    });
    assert.deepEqual(again.sourceFiles, first.sourceFiles);
    // change one byte of the source (same size): the next export hashes it again
    const bytes = readFileSync(weightsFile);
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0xff;
    writeFileSync(weightsFile, bytes);
    const reopened = openSdModel(dir);
    const third = await exportEditedModel({
      model: reopened,
      weights: editedWeights(reopened, sites.slice(0, 1), 3),
      outDir: join(tmp.dir, `out${counter++}`),
    });
    assert.notEqual(third.sourceFiles[0]?.sha256, first.sourceFiles[0]?.sha256);
    assert.equal(third.sourceFiles[0]?.sha256, sha256(weightsFile));
  });

  test('the output checks run when the export starts', () => {
    const { dir, model } = tiny();
    assert.throws(() => startExport({ model, outDir: join(dir, 'inside') }), OutputError);
    assert.throws(() => startExport({ model, outDir: dir }), OutputError);
  });
});
