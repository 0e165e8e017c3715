/**
 * Portable edits end to end on the tiny SD model and checkpoints built from it in the real layouts:
 *   - `edit` writes edit.safetensors into its output (and --edit-only writes just it);
 *   - apply to the ONNX folder is byte-identical to the direct export of the same edit;
 *   - apply to diffusers (one file, sharded) and single-file CompVis checkpoints gives the same W′ as
 *     the ONNX export: float32 to float32 rounding (relative 1e-6: the product's summation order
 *     differs between the stored layouts), float16 / bfloat16 within one unit in the last place;
 *   - every other byte is copied; the input is unchanged; --scale, --revert;
 *   - the W·M form equals the direct joint solve with preservation to 1e-6 relative;
 *   - bad inputs: each a clear error, nothing written.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { buildTinySdModel } from '../../src/demo/sd-model.js';
import { editModel } from '../../src/edit/api.js';
import { applyEditFileEarly } from '../../src/edit/apply-early.js';
import { readEditFile, writeEditFile } from '../../src/edit/edit-file.js';
import { applyEditFile, effectiveMatrix } from '../../src/edit/portable.js';
import { readSafetensorsHeader, readTensorData, toFloat32 } from '../../src/formats/safetensors.js';
import { openCheckpoint } from '../../src/model/checkpoints.js';
import { openSdModel } from '../../src/model/folder.js';
import { locateSites, readSiteWeight } from '../../src/model/sites.js';
import { ClipTextEncoder, encodePrompts } from '../../src/text/encoder.js';
import { ClipTokenizer } from '../../src/text/tokenizer.js';
import { EditError, ModelFormatError, OutputError, UsageError } from '../../src/util/errors.js';
import { directTimeSolve } from '../cli/helpers.js';
import { buildDiffusersFixture, buildSingleFileFixture, type FixtureDtype } from '../model/checkpoint-fixtures.js';
import { checksums, tempDir } from '../onnx/helpers.js';

const tmp = tempDir('portable');
after(tmp.cleanup);
const D = 16;
const PAIR = { source: 'a doctor', destination: 'a female doctor' };

interface World {
  onnx: string;
  edited: string;
  editFile: string;
  /** site → W′ of the direct ONNX export (torch layout float32) */
  exported: Map<string, Float32Array>;
  original: Map<string, Float32Array>;
}

async function world(name: string, precision: 'float32' | 'float16', lambda: number): Promise<World> {
  const onnx = join(tmp.dir, name, 'onnx');
  buildTinySdModel(onnx, { d: D, precision });
  const edited = join(tmp.dir, name, 'edited');
  const r = await editModel({ modelDir: onnx, pairs: [PAIR], lambda, outDir: edited, threads: 1 });
  const read = (dir: string) => {
    const m = openSdModel(dir);
    return new Map(locateSites(m).map((s) => [s.name, readSiteWeight(m, s)]));
  };
  return { onnx, edited, editFile: r.editFile, exported: read(edited), original: read(onnx) };
}

function checkpointWeights(path: string): Map<string, { W: Float32Array; dtype: string }> {
  const c = openCheckpoint(path);
  const out = new Map<string, { W: Float32Array; dtype: string }>();
  for (const s of c.sites) {
    const h = c.unetFiles.find((f) => f.path === s.file) ?? readSafetensorsHeader(s.file);
    out.set(s.name, { W: toFloat32(readTensorData(h, s.key), s.dtype), dtype: s.dtype });
  }
  return out;
}

/** ulp of x in a dtype with `mant` fraction bits (normal range). */
function ulp(x: number, mant: number): number {
  return 2 ** (Math.floor(Math.log2(Math.max(Math.abs(x), 2 ** -14))) - mant);
}

function compareSites(
  got: Map<string, { W: Float32Array }>,
  want: Map<string, Float32Array>,
  dtype: FixtureDtype,
): number {
  let worst = 0;
  for (const [name, w] of want) {
    const g = got.get(name)?.W;
    assert.ok(g, `site ${name} present`);
    for (let i = 0; i < w.length; i++) {
      const a = g[i] as number;
      const b = w[i] as number;
      if (dtype === 'F32') {
        const rel = Math.abs(a - b) / Math.max(1e-6, Math.abs(b));
        worst = Math.max(worst, rel);
        assert.ok(Math.abs(a - b) <= 1e-6 * Math.abs(b) + 1e-7, `${name}[${i}]: ${a} vs ${b}`);
      } else {
        const u = ulp(b, dtype === 'F16' ? 10 : 7);
        worst = Math.max(worst, Math.abs(a - b) / u);
        assert.ok(Math.abs(a - b) <= u, `${name}[${i}]: ${a} vs ${b} (${dtype}: 1 ulp = ${u})`);
      }
    }
  }
  return worst;
}

/** Stored bytes of every non-site tensor of a checkpoint equal the source's. */
function otherTensorsEqual(src: string, dst: string): void {
  const a = openCheckpoint(src);
  const b = openCheckpoint(dst);
  const siteKeys = new Set(a.sites.map((s) => s.key));
  a.unetFiles.forEach((h, i) => {
    const g = b.unetFiles[i] as (typeof b.unetFiles)[number];
    assert.deepEqual(
      readFileSync(g.path).subarray(0, g.dataStart),
      readFileSync(h.path).subarray(0, h.dataStart),
      'header',
    );
    for (const t of h.tensors) {
      if (siteKeys.has(t.name)) continue;
      assert.deepEqual(readTensorData(g, t.name), readTensorData(h, t.name), `${t.name} copied byte for byte`);
    }
  });
}

describe('portable edits (float32)', () => {
  let w: World;
  before(async () => {
    // λ = 1: a mild edit (‖ΔW‖/‖W‖ of a few per cent) that the product form applies (n = 77 > 0.375·d).
    w = await world('f32', 'float32', 1);
  });

  test('edit writes edit.safetensors; it loads and checks', () => {
    const e = readEditFile(w.editFile);
    assert.equal(e.d, D);
    assert.equal(e.meta.sites.length, 32);
    assert.equal(e.meta.edit.pairs[0]?.source, PAIR.source);
    assert.ok(e.meta.unet && Object.keys(e.meta.unet.sites).length === 32);
  });

  test('apply to the ONNX folder equals the direct export, byte for byte', async () => {
    const out = join(tmp.dir, 'f32', 'applied-onnx');
    const r = await applyEditFile({ editFile: w.editFile, modelPath: w.onnx, outPath: out, threads: 1 });
    assert.equal(r.textEncoder, 'match');
    assert.equal(r.unet, 'same');
    const a = checksums(out);
    const b = checksums(w.edited);
    for (const f of Object.keys(b)) {
      if (f === 'time-edit.json' || f === 'edit.safetensors') continue;
      assert.equal(a[f], b[f], `${f} identical to edit's export`);
    }
  });

  const diffusers = (dir: string, onnx: string) => {
    buildDiffusersFixture(onnx, dir);
    return dir;
  };
  const sharded = (dir: string, onnx: string) => {
    buildDiffusersFixture(onnx, dir, { sharded: true });
    return dir;
  };
  const single = (dir: string, onnx: string) => {
    const f = `${dir}.safetensors`;
    buildSingleFileFixture(onnx, f);
    return f;
  };
  for (const [label, build] of [
    ['diffusers folder', diffusers],
    ['sharded diffusers folder', sharded],
    ['single file (SD 1.x keys)', single],
  ] as const) {
    test(`apply to a ${label}: W′ equals the ONNX export (float32, 1e-6 relative), the rest is copied`, async () => {
      const src = build(join(tmp.dir, 'f32', label.replace(/\W+/g, '-')), w.onnx);
      const before = checksums(join(src, '..'));
      const out = src.endsWith('.safetensors') ? src.replace(/\.safetensors$/, '-out.safetensors') : `${src}-out`;
      const r = await applyEditFile({ editFile: w.editFile, modelPath: src, outPath: out, threads: 1 });
      assert.equal(r.sites.length, 32);
      assert.equal(r.textEncoder, 'match');
      assert.equal(r.unet, 'same');
      const worst = compareSites(checkpointWeights(out), w.exported, 'F32');
      console.log(`measured: ${label} float32 W′ vs ONNX export, max relative difference ${worst.toExponential(2)}`);
      otherTensorsEqual(src, out);
      const manifest = JSON.parse(readFileSync(r.manifestPath, 'utf8'));
      assert.equal(manifest.sourceModel.files.length, openCheckpoint(src).unetFiles.length);
      assert.match(manifest.sourceModel.files[0].sha256, /^[0-9a-f]{64}$/);
      // the input is unchanged (the folder holding it, output aside)
      const afterSums = checksums(join(src, '..'));
      for (const [f, h] of Object.entries(before)) assert.equal(afterSums[f], h, `${f} unchanged`);
    });
  }

  test('--scale 0 is the identity; --revert undoes the edit (to float32 rounding)', async () => {
    const src = join(tmp.dir, 'f32', 'rev.safetensors');
    buildSingleFileFixture(w.onnx, src);
    const zero = join(tmp.dir, 'f32', 'zero.safetensors');
    await applyEditFile({ editFile: w.editFile, modelPath: src, outPath: zero, scale: 0, threads: 1 });
    compareSites(checkpointWeights(zero), w.original, 'F32');
    const fwd = join(tmp.dir, 'f32', 'fwd.safetensors');
    await applyEditFile({ editFile: w.editFile, modelPath: src, outPath: fwd, threads: 1 });
    const back = join(tmp.dir, 'f32', 'back.safetensors');
    const r = await applyEditFile({ editFile: w.editFile, modelPath: fwd, outPath: back, revert: true, threads: 1 });
    assert.ok(r.condition !== null && r.condition < 1e6);
    assert.equal(r.unet, 'different', 'the edited UNet is not the one the edit was computed on');
    const got = checkpointWeights(back);
    for (const [name, W] of w.original) {
      const g = got.get(name)?.W as Float32Array;
      for (let i = 0; i < W.length; i++)
        assert.ok(Math.abs((g[i] as number) - (W[i] as number)) <= 1e-5 * (1 + Math.abs(W[i] as number)));
    }
  });

  test('the W·M form equals the direct joint solve with preservation (1e-6 relative)', async () => {
    const pairs = [
      { source: 'a doctor', destination: 'a female doctor', lambda: 0.5 },
      { source: 'a nurse', destination: 'a male nurse', lambda: 0.2 },
    ];
    const preserve = ['a photo of a dog'];
    const file = join(tmp.dir, 'f32', 'joint.safetensors');
    await editModel({
      modelDir: w.onnx,
      pairs,
      preserve: { prompts: preserve, weight: 2 },
      outDir: file,
      editOnly: true,
      threads: 1,
    });
    const e = readEditFile(file);
    // Rows built here: inserted words shift later positions (the reference alignment for insertions).
    const tokenizer = await ClipTokenizer.fromFolder(join(w.onnx, 'tokenizer'));
    const encoder = await ClipTextEncoder.create(join(w.onnx, 'text_encoder', 'model.onnx'), { threads: 1 });
    const enc = await encodePrompts(tokenizer, encoder, [
      ...pairs.flatMap((p) => [p.source, p.destination]),
      ...preserve,
    ]);
    await encoder.dispose();
    const L = 77;
    const n = L * (pairs.length + preserve.length);
    const c = new Float64Array(n * D);
    const cStar = new Float64Array(n * D);
    const wts = new Float64Array(n);
    let row = 0;
    pairs.forEach((p, k) => {
      const s = enc[2 * k] as (typeof enc)[number];
      const t = enc[2 * k + 1] as (typeof enc)[number];
      const shift = t.length - s.length;
      let first = 0;
      while (s.ids[first] === t.ids[first]) first++;
      for (let i = 0; i < L; i++, row++) {
        const j = i < first ? i : Math.min(L - 1, i + shift);
        c.set(s.hidden.subarray(i * D, (i + 1) * D), row * D);
        cStar.set(t.hidden.subarray(j * D, (j + 1) * D), row * D);
        wts[row] = 1 / p.lambda;
      }
    });
    const q = enc[2 * pairs.length] as (typeof enc)[number];
    for (let i = 0; i < L; i++, row++) {
      c.set(q.hidden.subarray(i * D, (i + 1) * D), row * D);
      cStar.set(q.hidden.subarray(i * D, (i + 1) * D), row * D);
      wts[row] = 2;
    }
    let worst = 0;
    for (const W of w.original.values()) {
      const out = W.length / D;
      const direct = directTimeSolve(W, out, D, c, cStar, wts);
      let num = 0;
      let den = 0;
      for (let o = 0; o < out; o++) {
        for (let j = 0; j < D; j++) {
          let s = 0;
          for (let k = 0; k < D; k++) s += (W[o * D + k] as number) * (e.M[k * D + j] as number);
          num += (s - (direct[o * D + j] as number)) ** 2;
          den += (direct[o * D + j] as number) ** 2;
        }
      }
      worst = Math.max(worst, Math.sqrt(num / den));
    }
    console.log(`measured: ‖W·M − W′_direct‖/‖W′_direct‖ max over sites ${worst.toExponential(2)}`);
    assert.ok(worst <= 1e-6, `‖W·M − W′_direct‖/‖W′_direct‖ = ${worst}`);
  });

  test('the CLI entry (apply-early: the copy starts before the checks): the same bytes; a refusal leaves nothing', async () => {
    const src = join(tmp.dir, 'f32', 'early.safetensors');
    buildSingleFileFixture(w.onnx, src);
    const plain = join(tmp.dir, 'f32', 'early-plain.safetensors');
    const early = join(tmp.dir, 'f32', 'early-out.safetensors');
    const a = await applyEditFile({ editFile: w.editFile, modelPath: src, outPath: plain, threads: 1 });
    const b = await applyEditFileEarly({ editFile: w.editFile, modelPath: src, outPath: early, threads: 1 });
    assert.ok(readFileSync(early).equals(readFileSync(plain)), 'byte-identical outputs');
    const [ma, mb] = [a, b].map((r) => JSON.parse(readFileSync(r.manifestPath, 'utf8')));
    assert.deepEqual(mb.sourceModel, ma.sourceModel);
    assert.deepEqual(mb.output, ma.output);
    const stream = b.timings.written?.files[0];
    assert.ok(stream && stream.startedAtProcessMs < b.timings.startedAtProcessMs, 'the copy started before apply');
    // Refused after the copy started (an edit file with NaN in M): the copy is stopped and removed.
    const bytes = Buffer.from(readFileSync(w.editFile));
    bytes.writeFloatLE(Number.NaN, readSafetensorsHeader(w.editFile).dataStart + 4);
    const nan = join(tmp.dir, 'f32', 'early-nan.safetensors');
    writeFileSync(nan, bytes);
    const out = join(tmp.dir, 'early-refused', 'out.safetensors');
    mkdirSync(join(out, '..'));
    await assert.rejects(
      applyEditFileEarly({ editFile: nan, modelPath: src, outPath: out }),
      (e: unknown) => e instanceof EditError && /= NaN/.test(e.message),
    );
    assert.deepEqual(readdirSync(join(out, '..')), [], 'nothing written, no temporary file left');
  });

  describe('bad inputs: a clear error, nothing written', () => {
    const nothingWritten = (out: string) => {
      assert.ok(!existsSync(out), `${out} not written`);
      const parent = join(out, '..');
      assert.ok(!readdirSync(parent).some((f) => f.includes('.tmp-')), 'no temporary file left');
    };
    test('wrong text encoder (another model) is refused unless --force', async () => {
      const other = join(tmp.dir, 'f32', 'other-model');
      buildTinySdModel(other, { d: D, seed: 7 });
      const file = join(tmp.dir, 'f32', 'other.safetensors');
      buildSingleFileFixture(other, file);
      const out = join(tmp.dir, 'f32', 'bad-te.safetensors');
      await assert.rejects(
        applyEditFile({ editFile: w.editFile, modelPath: file, outPath: out }),
        (e: unknown) =>
          e instanceof EditError &&
          e.field === 'editFile' &&
          /another text encoder than `modelPath`/.test(e.message) &&
          /Pass `force` to apply it anyway/.test(e.message) &&
          e.mentions.join() === 'modelPath,force',
      );
      nothingWritten(out);
      const r = await applyEditFile({ editFile: w.editFile, modelPath: file, outPath: out, force: true, threads: 1 });
      assert.equal(r.textEncoder, 'mismatch-forced');
    });
    test('d mismatch', async () => {
      const other = join(tmp.dir, 'f32', 'd24');
      buildTinySdModel(other, { d: 24 });
      const out = join(tmp.dir, 'f32', 'bad-d');
      await assert.rejects(
        applyEditFile({ editFile: w.editFile, modelPath: other, outPath: out }),
        (e: unknown) => e instanceof EditError && /d = 16 edit/.test(e.message) && /d = 24/.test(e.message),
      );
      nothingWritten(out);
    });
    test('a checkpoint without the expected keys', async () => {
      const few = join(tmp.dir, 'f32', 'few-sites');
      buildTinySdModel(few, { d: D, sites: 8 });
      const file = join(tmp.dir, 'f32', 'few.safetensors');
      buildSingleFileFixture(few, file);
      const out = join(tmp.dir, 'f32', 'bad-keys.safetensors');
      await assert.rejects(
        applyEditFile({ editFile: w.editFile, modelPath: file, outPath: out, force: true }),
        (e: unknown) => e instanceof ModelFormatError && /lacks 16 of the edit's 32 sites/.test(e.message),
      );
      nothingWritten(out);
    });
    test('a truncated checkpoint', async () => {
      const file = join(tmp.dir, 'f32', 'trunc.safetensors');
      buildSingleFileFixture(w.onnx, file);
      const bytes = readFileSync(file);
      writeFileSync(file, bytes.subarray(0, bytes.byteLength - 10));
      const out = join(tmp.dir, 'f32', 'bad-trunc.safetensors');
      await assert.rejects(
        applyEditFile({ editFile: w.editFile, modelPath: file, outPath: out }),
        (e: unknown) => e instanceof ModelFormatError && e.message.includes(file) && /truncated/.test(e.message),
      );
      nothingWritten(out);
    });
    test('NaN in M', async () => {
      const e = readEditFile(w.editFile);
      const M = Float32Array.from(e.M);
      M[5] = Number.NaN;
      const bad = join(tmp.dir, 'f32', 'nan-edit.safetensors');
      // written around the writer's own check, as a corrupted file would be
      const good = readFileSync(w.editFile);
      const h = readSafetensorsHeader(w.editFile);
      const patched = Buffer.from(good);
      patched.writeFloatLE(Number.NaN, h.dataStart + 5 * 4);
      writeFileSync(bad, patched);
      assert.throws(() => writeEditFile(join(tmp.dir, 'f32', 'x.safetensors'), M, e.meta), /must be finite/);
      const out = join(tmp.dir, 'f32', 'bad-nan');
      await assert.rejects(
        applyEditFile({ editFile: bad, modelPath: w.onnx, outPath: out }),
        (err: unknown) => err instanceof EditError && /M\[0, 5\] = NaN/.test(err.message),
      );
      nothingWritten(out);
    });
    test('output inside the input; existing output without --force', async () => {
      await assert.rejects(
        applyEditFile({ editFile: w.editFile, modelPath: w.onnx, outPath: join(w.onnx, 'sub') }),
        OutputError,
      );
      assert.ok(!existsSync(join(w.onnx, 'sub')));
      const file = join(tmp.dir, 'f32', 'exists.safetensors');
      buildSingleFileFixture(w.onnx, file);
      const out = join(tmp.dir, 'f32', 'exists-out.safetensors');
      writeFileSync(out, 'keep me');
      await assert.rejects(
        applyEditFile({ editFile: w.editFile, modelPath: file, outPath: out }),
        (e: unknown) => e instanceof OutputError && /already exists/.test(e.message),
      );
      assert.equal(readFileSync(out, 'utf8'), 'keep me');
      await assert.rejects(
        applyEditFile({ editFile: w.editFile, modelPath: file, outPath: file, force: true }),
        OutputError,
      );
    });
    test('--scale so large that M_α overflows float32 is refused naming scale', () => {
      const M = Float32Array.of(1.5, 0, 0, 1);
      assert.throws(
        () => effectiveMatrix(M, 2, { scale: 1e308 }),
        (e: unknown) => e instanceof UsageError && e.field === 'scale' && /overflow float32/.test(e.message),
      );
      assert.deepEqual([...effectiveMatrix(M, 2, { scale: 2 }).M], [2, 0, 0, 1]);
    });
    test('--revert of an ill-conditioned M is refused', () => {
      const d = 3;
      const M = Float32Array.of(1, 0, 0, 0, 1e-9, 0, 0, 0, 1);
      assert.throws(
        () => effectiveMatrix(M, d, { revert: true }),
        (e: unknown) =>
          e instanceof EditError && e.field === 'revert' && /^revert: M is ill-conditioned/.test(e.message),
      );
    });
  });
});

describe('portable edits (float16 model and checkpoints; bfloat16 conversion)', () => {
  let w: World;
  before(async () => {
    w = await world('f16', 'float16', 1);
  });
  for (const dtype of ['F16', 'BF16'] as const) {
    test(`${dtype} single file and diffusers folder: W′ within one ${dtype} ulp of the ONNX export`, async () => {
      const file = join(tmp.dir, 'f16', `${dtype}.safetensors`);
      buildSingleFileFixture(w.onnx, file, { dtype, sd2: dtype === 'BF16' });
      const folder = join(tmp.dir, 'f16', `${dtype}-diffusers`);
      buildDiffusersFixture(w.onnx, folder, { dtype });
      for (const [src, out] of [
        [file, file.replace('.safetensors', '-out.safetensors')],
        [folder, `${folder}-out`],
      ] as const) {
        const r = await applyEditFile({ editFile: w.editFile, modelPath: src, outPath: out, threads: 1 });
        assert.ok(r.sites.every((s) => s.dtype === (dtype === 'F16' ? 'float16' : 'bfloat16')));
        const got = checkpointWeights(out);
        assert.ok(
          [...got.values()].every((g) => g.dtype === dtype),
          'dtype kept',
        );
        // The reference: the float16 ONNX export (F16), or W·M of the bf16-rounded weights rounded to bf16.
        if (dtype === 'F16') {
          console.log(`measured: F16 W′ vs float16 ONNX export, max ${compareSites(got, w.exported, 'F16')} ulp`);
        } else {
          const srcW = checkpointWeights(src);
          const e = readEditFile(w.editFile);
          const want = new Map<string, Float32Array>();
          for (const [site, { W }] of srcW) {
            const o = W.length / D;
            const v = new Float32Array(W.length);
            for (let i = 0; i < o; i++) {
              for (let j = 0; j < D; j++) {
                let s = 0;
                for (let k = 0; k < D; k++) s += (W[i * D + k] as number) * (e.M[k * D + j] as number);
                v[i * D + j] = s;
              }
            }
            want.set(site, v);
          }
          console.log(`measured: BF16 W′ vs rounded float32 W·M, max ${compareSites(got, want, 'BF16')} ulp`);
        }
        otherTensorsEqual(src, out);
      }
    });
  }
});
