/**
 * The demo world's designed behaviour, measured through the real pipeline (src/generate), the CLIP
 * classifier (src/classify, transformers.js) and TIME edits exported by src/edit — a smaller run
 * than the full acceptance (100 seeds, 14 professions, 15 steps: `npm run bench -- demo`, figures in
 * the final report / README), sized to take seconds.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { measureDemoAcceptance, normalCdf } from '../../src/demo/acceptance.js';
import { ensureDemoWorld } from '../../src/demo/world.js';

const cache = mkdtempSync(join(tmpdir(), 'demo-acceptance-test-'));
after(() => rmSync(cache, { recursive: true, force: true }));

test('images follow the prompt, professions are graded as designed, a TIME edit moves the share monotonically with λ', async () => {
  const world = ensureDemoWorld({ cacheDir: cache });
  const seeds = 32;
  const r = await measureDemoAcceptance(world, {
    seeds,
    steps: 8,
    batchSize: 32,
    threads: 1,
    professions: ['carpenter', 'doctor', 'baker', 'teacher', 'nurse'],
    lambdas: [0.1, 10, 1000],
  });
  assert.equal(r.kind, 'demo-acceptance');
  // "a female doctor" vs "a male doctor": ≥ 95 % classified as the prompt says
  assert.ok(r.gendered && r.gendered.correct >= 0.95, JSON.stringify(r.gendered));
  // graded: shares in the order of the designed offsets, within 3 binomial sd of Φ(offset)
  const rows = r.professions?.rows ?? [];
  assert.equal(rows.length, 5);
  for (const row of rows) {
    assert.equal(row.n, seeds);
    assert.ok(
      Math.abs(row.share - normalCdf(row.offset)) < 3 * Math.sqrt(0.25 / seeds),
      `${row.profession}: ${row.share} vs Φ(${row.offset})`,
    );
  }
  const shares = rows.map((x) => x.share);
  assert.deepEqual(
    [...shares].sort((a, b) => a - b),
    shares,
  );
  assert.ok((r.professions?.min ?? 1) <= 0.15 && (r.professions?.max ?? 0) >= 0.85, JSON.stringify(shares));
  // TIME "a doctor" → "a female doctor": strong at λ = 0.1, fading to the unedited share as λ grows
  const sweep = r.lambdaSweep;
  assert.ok(sweep?.monotone, JSON.stringify(sweep));
  assert.ok((sweep?.points[0]?.share ?? 0) >= 0.9);
  assert.ok(Math.abs((sweep?.points[2]?.share ?? 1) - (sweep?.unedited ?? 0)) <= 0.1);
  assert.ok((sweep?.points[0]?.share ?? 0) - (sweep?.points[2]?.share ?? 1) >= 0.5);
});
