/**
 * export-lora: rebuilding W + up·down·(alpha/r) from the written file gives W·M within the error the
 * export reported (measured, not predicted); --error picks the smallest rank that meets ε; full rank
 * is exact to float32 rounding; kohya and peft keys; bad requests refused.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { buildTinySdModel } from '../../src/demo/sd-model.js';
import { editModel } from '../../src/edit/api.js';
import { readEditFile, writeEditFile } from '../../src/edit/edit-file.js';
import { type EditBasis, exportLora, factorDelta, factorEditDelta, loraKeys } from '../../src/edit/lora.js';
import { readSafetensorsHeader, readTensorData, toFloat32 } from '../../src/formats/safetensors.js';
import { GemmEngine, matrix } from '../../src/linalg/gemm.js';
import { openSdModel } from '../../src/model/folder.js';
import { locateSites, readSiteWeight } from '../../src/model/sites.js';
import { UsageError } from '../../src/util/errors.js';
import { buildSingleFileFixture } from '../model/checkpoint-fixtures.js';
import { tempDir } from '../onnx/helpers.js';

const tmp = tempDir('lora');
after(tmp.cleanup);
const D = 16;

describe('export-lora', () => {
  const onnx = join(tmp.dir, 'onnx');
  const editFile = join(tmp.dir, 'edit.safetensors');
  let original: Map<string, Float32Array>;
  before(async () => {
    buildTinySdModel(onnx, { d: D });
    await editModel({
      modelDir: onnx,
      pairs: [
        { source: 'a doctor', destination: 'a female doctor' },
        { source: 'a nurse', destination: 'a male nurse' },
      ],
      preserve: { prompts: ['a photo of a dog'] },
      lambda: 0.5,
      outDir: editFile,
      editOnly: true,
      threads: 1,
    });
    const m = openSdModel(onnx);
    original = new Map(locateSites(m).map((s) => [s.name, readSiteWeight(m, s)]));
  });

  /** ‖W + up·down·alpha/r − W·M‖_F / ‖W·(M − I)‖_F per site, from the file. */
  function rebuiltErrors(
    file: string,
    format: 'kohya' | 'peft',
    edit = editFile,
  ): Map<string, { error: number; rank: number }> {
    const h = readSafetensorsHeader(file);
    const M = readEditFile(edit).M;
    const out = new Map<string, { error: number; rank: number }>();
    for (const [name, W] of original) {
      const keys = loraKeys(name, format);
      const down = toFloat32(readTensorData(h, keys.down), 'F32');
      const up = toFloat32(readTensorData(h, keys.up), 'F32');
      const r = h.byName.get(keys.down)?.shape[0] ?? 0;
      const alpha = keys.alpha ? (toFloat32(readTensorData(h, keys.alpha), 'F32')[0] as number) : r;
      const o = W.length / D;
      let num = 0;
      let den = 0;
      for (let i = 0; i < o; i++) {
        for (let j = 0; j < D; j++) {
          let wm = 0;
          for (let k = 0; k < D; k++) wm += (W[i * D + k] as number) * (M[k * D + j] as number);
          let ud = 0;
          for (let k = 0; k < r; k++) ud += (up[i * r + k] as number) * (down[k * D + j] as number);
          const rebuilt = (W[i * D + j] as number) + ud * (alpha / r);
          num += (rebuilt - wm) ** 2;
          den += (wm - (W[i * D + j] as number)) ** 2;
        }
      }
      out.set(name, { error: Math.sqrt(num / den), rank: r });
    }
    return out;
  }

  test('--error ε: reported errors match the rebuilt ones, every site ≤ ε, ranks minimal', async () => {
    const file = join(tmp.dir, 'kohya.safetensors');
    const r = await exportLora({ editFile, modelPath: onnx, outPath: file, error: 0.05, threads: 1 });
    assert.equal(r.sites.length, 32);
    const rebuilt = rebuiltErrors(file, 'kohya');
    let worstGap = 0;
    for (const s of r.sites) {
      const b = rebuilt.get(s.name) as { error: number; rank: number };
      assert.equal(b.rank, s.rank);
      assert.ok(s.error <= 0.05, `${s.name}: ${s.error}`);
      // the rebuilt error adds W's float32 rounding of W·M: agreement to 1e-4 absolute
      worstGap = Math.max(worstGap, Math.abs(b.error - s.error));
      assert.ok(Math.abs(b.error - s.error) <= 1e-4, `${s.name}: reported ${s.error}, rebuilt ${b.error}`);
    }
    console.log(
      `measured: LoRA reported vs rebuilt error, max |gap| ${worstGap.toExponential(2)}; ranks ${r.sites.map((s) => s.rank).join(',')}`,
    );
    // minimal: one rank less breaks ε at some site
    const lower = await exportLora({
      editFile,
      modelPath: onnx,
      outPath: join(tmp.dir, 'lower.safetensors'),
      rank: Math.max(1, Math.max(...r.sites.map((s) => s.rank)) - 1),
      threads: 1,
    });
    assert.ok(lower.maxError > 0.05 || r.sites.every((s) => s.rank === 1));
  });

  test('full rank (peft keys, on a single-file base) is exact to float32 rounding', async () => {
    const base = join(tmp.dir, 'base.safetensors');
    buildSingleFileFixture(onnx, base);
    const file = join(tmp.dir, 'peft.safetensors');
    const r = await exportLora({ editFile, modelPath: base, outPath: file, rank: D, format: 'peft', threads: 1 });
    assert.ok(r.maxError < 1e-5, `max error ${r.maxError}`);
    const rebuilt = rebuiltErrors(file, 'peft');
    for (const [, b] of rebuilt) assert.ok(b.error < 1e-4);
    assert.ok(
      readSafetensorsHeader(file).byName.has(
        'unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight',
      ),
    );
  });

  test('a low-rank edit: each site factored in the basis of M − I (the same ranks and errors as from ΔW); reported = rebuilt', async () => {
    // M′ = I + (M − I)·B·Bᵀ with B 3 orthonormal columns: M′ − I has rank 3, as a single pair's edit has.
    const e = readEditFile(editFile);
    const B = new Float64Array(D * 3);
    for (let c = 0; c < 3; c++) {
      for (let i = 0; i < D; i++) B[i * 3 + c] = Math.sin(1 + i * (c + 1) * 0.7);
      for (let q = 0; q < c; q++) {
        let dot = 0;
        for (let i = 0; i < D; i++) dot += (B[i * 3 + c] as number) * (B[i * 3 + q] as number);
        for (let i = 0; i < D; i++) B[i * 3 + c] = (B[i * 3 + c] as number) - dot * (B[i * 3 + q] as number);
      }
      let norm = 0;
      for (let i = 0; i < D; i++) norm += (B[i * 3 + c] as number) ** 2;
      for (let i = 0; i < D; i++) B[i * 3 + c] = (B[i * 3 + c] as number) / Math.sqrt(norm);
    }
    const delta = new Float64Array(D * D);
    for (let i = 0; i < D; i++) {
      for (let j = 0; j < D; j++) {
        let v = 0;
        for (let a = 0; a < D; a++) {
          const dij = (e.M[i * D + a] as number) - (i === a ? 1 : 0);
          for (let c = 0; c < 3; c++) v += dij * (B[a * 3 + c] as number) * (B[j * 3 + c] as number);
        }
        delta[i * D + j] = v;
      }
    }
    const gemm = new GemmEngine({ threads: 1 });
    try {
      const basis = await factorEditDelta(delta, D, gemm);
      assert.equal(basis?.k, 3, 'M − I of rank 3 has a 3-column basis');
      const W = original.get('mid_block.attentions.0.transformer_blocks.0.attn2.to_k') as Float32Array;
      const out = W.length / D;
      const Wm = matrix(Float64Array.from(W), out, D);
      const dW = (await gemm.gemm(Wm, matrix(delta, D, D), { compute: 'float64' })).data as Float64Array;
      const C = (await gemm.gemm(Wm, matrix((basis as EditBasis).L, D, 3), { compute: 'float64' }))
        .data as Float64Array;
      const projected = { C, basis: basis as EditBasis };
      for (const choice of [{ rank: 1 }, { rank: 2 }, { rank: 3 }, { error: 0.2 }, { error: 1e-3 }, { rank: 5 }]) {
        const full = await factorDelta(dW, out, D, choice, gemm);
        const proj = await factorDelta(dW, out, D, choice, gemm, projected);
        assert.equal(proj.rank, full.rank, JSON.stringify(choice));
        assert.ok(
          Math.abs(proj.error - full.error) <= 1e-6,
          `${JSON.stringify(choice)}: ${proj.error} vs ${full.error}`,
        );
      }
    } finally {
      await gemm.dispose();
    }
    // End to end: an edit file holding M′; every site goes through the basis; reported = rebuilt.
    const lowRank = join(tmp.dir, 'low-rank-edit.safetensors');
    const M2 = new Float32Array(D * D);
    for (let i = 0; i < D * D; i++) M2[i] = (delta[i] as number) + (i % (D + 1) === 0 ? 1 : 0);
    writeEditFile(lowRank, M2, e.meta);
    const file = join(tmp.dir, 'low-rank-lora.safetensors');
    const r = await exportLora({ editFile: lowRank, modelPath: onnx, outPath: file, error: 1e-3, threads: 1 });
    assert.equal(r.basisRank, 3, 'factored in the basis of M′ − I');
    const rebuilt = rebuiltErrors(file, 'kohya', lowRank);
    for (const s of r.sites) {
      const b = rebuilt.get(s.name) as { error: number; rank: number };
      assert.ok(s.rank <= 3 && b.rank === s.rank && s.error <= 1e-3, `${s.name}: rank ${s.rank}, error ${s.error}`);
      assert.ok(Math.abs(b.error - s.error) <= 1e-4, `${s.name}: reported ${s.error}, rebuilt ${b.error}`);
    }
  });

  test('bad requests', async () => {
    await assert.rejects(
      exportLora({ editFile, modelPath: onnx, outPath: join(tmp.dir, 'x.safetensors') }),
      UsageError,
    );
    await assert.rejects(
      exportLora({ editFile, modelPath: onnx, outPath: join(tmp.dir, 'x.safetensors'), rank: 2, error: 0.1 }),
      UsageError,
    );
    await assert.rejects(
      exportLora({ editFile, modelPath: onnx, outPath: join(tmp.dir, 'x.bin'), rank: 2 }),
      /\.safetensors/,
    );
    await assert.rejects(
      exportLora({ editFile, modelPath: onnx, outPath: join(tmp.dir, 'x.safetensors'), error: 1.5 }),
      /\[0, 1\)/,
    );
  });
});
