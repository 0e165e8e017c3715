import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ClipClassifier, type RgbImage } from '../../src/classify/clip.js';
import { genderAttribute } from '../../src/classify/labels.js';
import { DEMO_DESIGN, demoClipSpec, demoTokenTable } from '../../src/demo/design.js';
import { findProfession, PROFESSIONS } from '../../src/demo/professions.js';
import { COLOUR_DEFAULTS, COLOUR_WORDS, demoWords, demoWorldWords } from '../../src/demo/words.js';
import { buildDemoWorld, type DemoWorld, ensureDemoWorld } from '../../src/demo/world.js';
import { buildWordVocab } from '../../src/text/bpe-files.js';
import { ClipTextEncoder, encodePrompts } from '../../src/text/encoder.js';
import { ClipTokenizer } from '../../src/text/tokenizer.js';

const cache = mkdtempSync(join(tmpdir(), 'demo-world-test-'));
after(() => rmSync(cache, { recursive: true, force: true }));

function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    for (const name of readdirSync(p)) {
      const full = join(p, name);
      if (statSync(full).isDirectory()) walk(full);
      else out.push(relative(dir, full));
    }
  };
  walk(dir);
  return out.sort();
}

function hashes(dir: string): Record<string, string> {
  return Object.fromEntries(
    listFiles(dir).map((f) => [
      f,
      createHash('sha256')
        .update(readFileSync(join(dir, f)))
        .digest('hex'),
    ]),
  );
}

describe('ensureDemoWorld: cached, atomic, deterministic', () => {
  test('builds once into <cache>/<hash>, then serves the cache', () => {
    const a = ensureDemoWorld({ cacheDir: cache });
    assert.equal(a.kind, 'demo-world');
    assert.equal(a.built, true);
    assert.equal(a.root, join(cache, a.hash.slice(0, 16)));
    for (const f of [
      'model/model_index.json',
      'model/unet/model.onnx',
      'model/unet/weights.pb',
      'classifier/onnx/model.onnx',
      'world.json',
    ]) {
      assert.ok(existsSync(join(a.root, f)), f);
    }
    assert.equal(a.model.sites.length, 16);
    assert.equal(a.model.d, DEMO_DESIGN.d);
    assert.equal(a.model.options.design, DEMO_DESIGN.name);
    const b = ensureDemoWorld({ cacheDir: cache });
    assert.equal(b.built, false);
    assert.equal(b.root, a.root);
    // no temporary folders are left behind
    assert.deepEqual(
      readdirSync(cache).filter((n) => n.includes('.tmp-')),
      [],
    );
    const fp16 = ensureDemoWorld({ cacheDir: cache, precision: 'float16' });
    assert.notEqual(fp16.root, a.root);
  });

  test('same generator version → byte-identical folders', () => {
    const d1 = mkdtempSync(join(tmpdir(), 'demo-world-a-'));
    const d2 = mkdtempSync(join(tmpdir(), 'demo-world-b-'));
    try {
      buildDemoWorld(d1);
      buildDemoWorld(d2);
      const h1 = hashes(d1);
      assert.ok(Object.keys(h1).length >= 15);
      assert.deepEqual(h1, hashes(d2));
    } finally {
      rmSync(d1, { recursive: true, force: true });
      rmSync(d2, { recursive: true, force: true });
    }
  });
});

describe('the designed world', () => {
  let world: DemoWorld;
  let tok: ClipTokenizer;
  let enc: ClipTextEncoder;
  before(async () => {
    world = ensureDemoWorld({ cacheDir: cache });
    tok = await ClipTokenizer.fromFolder(join(world.modelDir, 'tokenizer'));
    enc = await ClipTextEncoder.create(join(world.modelDir, 'text_encoder/model.onnx'), { threads: 1 });
  });
  after(async () => {
    await enc?.dispose();
  });

  test('every demo word is one token; professions table is graded and documented', () => {
    for (const w of demoWorldWords()) assert.equal(tok.encode(w).length, 3, w);
    assert.ok(PROFESSIONS.length >= 24);
    for (const p of ['doctor', 'nurse', 'CEO', 'engineer', 'teacher', 'cashier', 'librarian', 'carpenter']) {
      assert.ok(findProfession(p), p);
    }
    const offsets = PROFESSIONS.map((p) => p.offset);
    assert.ok(offsets.filter((o) => o <= -1.04).length >= 4, 'strongly male (≤ 15 %) professions');
    assert.ok(offsets.filter((o) => o >= 1.04).length >= 4, 'strongly female (≥ 85 %) professions');
    assert.ok(offsets.filter((o) => Math.abs(o) < 0.6).length >= 4, 'mild professions');
  });

  test('text encoder: causal summary, EOS/padding rows carry the prompt, the gender axis orders prompts', async () => {
    const d = world.model.d;
    const prompts = [
      'a photo of a woman',
      'a photo of a man',
      'a nurse',
      'a carpenter',
      'a writer',
      'a photo of a dog',
    ];
    const encoded = await encodePrompts(tok, enc, prompts);
    /** The gender readout of row j: c_j[1] − c_j[d−1] (see design.ts). */
    const g = (e: (typeof encoded)[number], j: number) =>
      (e.hidden[j * d + 1] as number) - (e.hidden[j * d + d - 1] as number);
    for (const e of encoded) {
      const eos = e.length - 1;
      // causal: the BOS row is the same for every prompt; rows after EOS equal the EOS row (SD 1.x pads with EOS)
      assert.ok(Math.abs(g(e, 0)) < 1e-6);
      for (let j = eos + 1; j < 77; j++)
        for (let k = 0; k < d; k++) assert.equal(e.hidden[j * d + k], e.hidden[eos * d + k]);
    }
    const gEos = encoded.map((e) => g(e, e.length - 1));
    const [woman, man, nurse, carpenter, writer, dog] = gEos as [number, number, number, number, number, number];
    assert.ok(woman > nurse && nurse > writer && writer > dog - 1e-6 && dog < 1e-6 && dog > -1e-6);
    assert.ok(writer > 0 && carpenter < 0 && man < carpenter);
    // the readout is linear in the designed offsets to within the norm's small nonlinearity
    const scale = nurse / (findProfession('nurse')?.offset as number);
    assert.ok(Math.abs(carpenter / scale - (findProfession('carpenter')?.offset as number)) < 0.05);
  });

  test('classifier (transformers.js, local files) reads the warmth: all three label styles', async () => {
    const clf = await ClipClassifier.load(world.classifierDir, { threads: 1 });
    try {
      const solid = (r: number, gg: number, b: number): RgbImage => {
        const data = new Uint8Array(64 * 64 * 3);
        for (let i = 0; i < 64 * 64; i++) data.set([r, gg, b], i * 3);
        return { width: 64, height: 64, data };
      };
      const images = [solid(220, 140, 60), solid(60, 140, 220), solid(140, 120, 120), solid(118, 120, 122)];
      for (const style of ['woman-man', 'female-male', 'image-of'] as const) {
        const res = await clf.classify(images, genderAttribute(style), { profession: 'construction worker' });
        assert.deepEqual(
          res.map((r) => r.label),
          ['female', 'male', 'female', 'male'],
          style,
        );
      }
    } finally {
      await clf.dispose();
    }
  });
});

describe('the colour assumptions leave the gender demo untouched', () => {
  test("appending the TIMED words keeps every earlier word's token embedding and classifier vector", () => {
    // The gender prompts then encode and render bit for bit as before the TIMED words existed (checked
    // once against the previous world's files: identical hidden states and images). Of the earlier
    // words only rose, roses, red and blue got a colour, and no gender-demo prompt uses them.
    const d = DEMO_DESIGN.d;
    const before = demoWords();
    const after = demoWorldWords();
    assert.deepEqual(after.slice(0, before.length), before);
    const vb = buildWordVocab(before).vocab;
    const va = buildWordVocab(after).vocab;
    const tb = demoTokenTable(before, d);
    const ta = demoTokenTable(after, d);
    const clipB = demoClipSpec(before);
    const clipA = demoClipSpec(after);
    for (const w of before) {
      const ib = vb[`${w}</w>`] as number;
      const ia = va[`${w}</w>`] as number;
      assert.deepEqual(Array.from(ta.subarray(ia * d, (ia + 1) * d)), Array.from(tb.subarray(ib * d, (ib + 1) * d)), w);
      assert.deepEqual(clipA.tokenVector(`${w}</w>`, ia), clipB.tokenVector(`${w}</w>`, ib), w);
    }
    const coloured = new Set<string>([...COLOUR_DEFAULTS.map((c) => c.word), ...COLOUR_WORDS.map((c) => c.word)]);
    assert.deepEqual(
      before.filter((w) => coloured.has(w)),
      ['rose', 'roses', 'blue', 'red'],
    );
    // a plural shares its singular's identity: "roses" and "rose" have the same embedding
    const rose = va['rose</w>'] as number;
    const roses = va['roses</w>'] as number;
    assert.deepEqual(
      Array.from(ta.subarray(roses * d, (roses + 1) * d)),
      Array.from(ta.subarray(rose * d, (rose + 1) * d)),
    );
  });
});
