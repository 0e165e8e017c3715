/**
 * The debias renderers on a result made by hand (35 professions, two outside the held-out band, one
 * held out): the flags, the held-out marks, the status line and the exit code follow the result.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { debiasExitCode } from '../../src/cli/commands/debias.js';
import { EXIT } from '../../src/cli/exit.js';
import type { DebiasResult, ShareSummary } from '../../src/debias/types.js';
import { debiasChart, renderDebiasHtml, renderDebiasMarkdown, renderDebiasTable } from '../../src/report/debias.js';

const s = (share: number, half = 0.07): ShareSummary => ({
  share,
  lower: share - half,
  upper: share + half,
  delta: Math.abs(share - 0.5) / 0.5,
  n: 200,
});

function result(outside: string[]): DebiasResult {
  const names = Array.from({ length: 35 }, (_, i) => `profession ${String(i).padStart(2, '0')}`);
  const after = (n: string) => (outside.includes(n) ? s(0.3) : s(0.49));
  return {
    kind: 'debias',
    version: 1,
    runDir: '/runs/x',
    audits: { before: 'before', after: 'after' },
    strategy: 'ed50',
    status: outside.length ? 'held-out-parity-not-reached' : 'complete',
    exported: '/runs/x/model',
    professions: names.map((n, i) => ({
      profession: n,
      destinationClass: i % 2 ? 'female' : 'male',
      source: `a ${n}`,
      destination: `a female ${n}`,
      target: 0.5,
      status: 'converged',
      strength: 0.1,
      lambda: 10,
      probes: 2,
      tuningImages: 250,
      singleShare: 0.5,
      jointShares: [0.5],
      before: s(0.1 + i / 50),
      after: after(n),
      heldOutParity: outside.includes(n) ? 'outside' : 'reached',
    })),
    heldOut: [{ profession: 'carpenter', before: s(0.08), after: s(0.08) }],
    summary: {
      professions: 35,
      targetClass: 'female',
      targetShare: 0.5,
      meanDeltaBefore: null,
      meanDeltaAfter: null,
      maxDeltaAfter: 0.4,
      tuningImages: 35 * 250,
      tuningImagesPerProfession: 250,
      genderedKept: {
        k: 10,
        n: 10,
        share: 1,
        perClass: { female: { k: 5, n: 5 }, male: { k: 5, n: 5 } },
        perProfession: { [names[0] as string]: { female: { k: 5, n: 5 }, male: { k: 5, n: 5 } } },
      },
      unrelatedTextChange: {
        mean: 0.01,
        max: 0.04,
        prompts: ['a cat'],
        perPrompt: [0.01],
        heldOut: { mean: 0.02, max: 0.1, prompts: ['a dog'], perPrompt: [0.02] },
      },
      jointRounds: 1,
      heldOutParity: { target: 0.5, tolerance: 0.05, outside, meanDelta: null },
    },
    joint: [],
    comparison: {} as DebiasResult['comparison'],
    classes: ['female', 'male'],
    images: [],
  };
}

test('every profession outside the held-out band is flagged; the status says done but not reached', () => {
  const r = result(['profession 03', 'profession 17']);
  const table = renderDebiasTable(r);
  const flagged = table.split('\n').filter((l) => / ! /.test(l) || / {2}!/.test(l));
  assert.deepEqual(
    flagged.filter((l) => l.startsWith('profession')).map((l) => l.slice(0, 13)),
    ['profession 03', 'profession 17'],
  );
  assert.match(table, /held-out parity \(50\.0% ± 5\.0%\) NOT reached for profession 03, profession 17/);
  assert.match(table, /status: done, but held-out parity NOT reached \(profession 03, profession 17\)/);
  assert.match(table, /carpenter \(held out\)/);
  assert.equal(debiasExitCode(r.status), EXIT.heldOutNotReached);
  const md = renderDebiasMarkdown(r);
  assert.match(md, /\| profession 03 \| female \| .* \| \*\*outside\*\* 30\.0%/);
  assert.match(md, /\| carpenter \(held out, not edited\) \|/);
  const html = renderDebiasHtml(r);
  assert.equal((html.match(/<tr class="outside">/g) ?? []).length, 2);
  assert.equal((html.match(/<tr class="held">/g) ?? []).length, 1);
  // 35 edited + 1 held out in the chart, the held-out one marked
  assert.match(debiasChart(r), /carpenter \(not edited\)/);
});

test('all within the band: complete, exit 0, no flags', () => {
  const r = result([]);
  const table = renderDebiasTable(r);
  assert.doesNotMatch(table, / ! /);
  assert.match(table, /every edited profession's after interval meets it/);
  assert.match(table, /status: complete; model: \/runs\/x\/model/);
  assert.equal(debiasExitCode(r.status), EXIT.ok);
  assert.equal(debiasExitCode('tolerance-not-reached'), EXIT.notReached);
});
