import assert from 'node:assert/strict';
import { test } from 'node:test';
import { crossing, fitLogistic, normalQuantile } from '../../src/debias/dose-response.js';
import {
  createTuner,
  imagesUsed,
  nextRequest,
  observe,
  type TunerSettings,
  wilsonInterval,
} from '../../src/debias/tuner.js';

test('normalQuantile matches known values', () => {
  assert.ok(Math.abs(normalQuantile(0.975) - 1.959964) < 1e-5);
  assert.ok(Math.abs(normalQuantile(0.9) - 1.281552) < 1e-5);
  assert.ok(Math.abs(normalQuantile(0.5)) < 1e-12);
  assert.ok(Math.abs(normalQuantile(0.001) + 3.090232) < 1e-5);
});

test('wilsonInterval matches a hand computation (k=8, n=20, 95%)', () => {
  // p=0.4, z=1.96: centre = (0.4 + 0.09604)/1.19208 = 0.416115, half = 1.96*sqrt(0.012 + 0.00240100)/1.19208 = 0.197314
  const [lo, hi] = wilsonInterval(8, 20, 1.959964);
  assert.ok(Math.abs(lo - 0.218799) < 1e-4, String(lo));
  assert.ok(Math.abs(hi - 0.613427) < 1e-4, String(hi));
});

test('fitLogistic recovers the parameters of exact binomial means', () => {
  const alpha = -1.5;
  const beta = 0.8;
  const probes = [-2, 0, 1, 2, 4].map((x) => ({
    x,
    n: 1000,
    k: Math.round(1000 / (1 + Math.exp(-(alpha + beta * x)))),
  }));
  const fit = fitLogistic(probes);
  assert.ok(fit);
  assert.ok(Math.abs(fit.alpha - alpha) < 0.05, String(fit.alpha));
  assert.ok(Math.abs(fit.beta - beta) < 0.05, String(fit.beta));
  const c = crossing(fit, 0.5);
  assert.ok(Math.abs(c.x - 1.875) < 0.05);
  assert.ok(c.seShare > 0 && c.seShare < 0.05);
});

test('fitLogistic refuses data without two distinct strengths or with a negative slope', () => {
  assert.equal(fitLogistic([{ x: 1, k: 3, n: 10 }]), null);
  assert.equal(
    fitLogistic([
      { x: 0, k: 9, n: 10 },
      { x: 2, k: 1, n: 10 },
    ]),
    null,
  );
});

const settings: TunerSettings = {
  target: 0.5,
  tolerance: 0.06,
  confidence: 0.8,
  batch: 16,
  imagesPerProbe: 192,
  maxProbes: 10,
  x0: 0,
  step: 1.5,
  xMin: -8,
  xMax: 8,
};

/** Simulated world with common random numbers: seed i flips to the destination class when x > θ_i. */
function simulate(thresholds: number[], st: TunerSettings) {
  const state = createTuner(st);
  let generated = 0;
  for (let guard = 0; guard < 1000; guard++) {
    const req = nextRequest(state);
    if (!req) break;
    generated += req.generate.length;
    observe(
      state,
      req,
      req.generate.map((i) => req.x > (thresholds[i] as number)),
    );
  }
  return { state, generated };
}

function thresholdsFor(centre: number, spread: number, count: number, seed: number): number[] {
  // deterministic logistic-distributed thresholds
  let s = seed >>> 0;
  return Array.from({ length: count }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const u = (s + 0.5) / 2 ** 32;
    return centre + spread * Math.log(u / (1 - u));
  });
}

test('tuner converges to a strength whose true share is within tolerance, with few images', () => {
  for (const [centre, seed] of [
    [2.3, 1],
    [-1.2, 2],
    [4.5, 3],
  ] as const) {
    const thresholds = thresholdsFor(centre, 0.6, 192, seed);
    const { state, generated } = simulate(thresholds, settings);
    assert.equal(state.status, 'converged', JSON.stringify(state.probes));
    const x = state.result!.x;
    const trueShare = 1 / (1 + Math.exp(-(x - centre) / 0.6));
    assert.ok(Math.abs(trueShare - 0.5) < 0.15, `true share ${trueShare} at x=${x} (centre ${centre})`);
    assert.equal(generated, imagesUsed(state));
    assert.ok(generated <= 400, `used ${generated} images`);
  }
});

test('tuner reports exhaustion when the budget cannot reach the target', () => {
  const thresholds = new Array(192).fill(100); // never flips
  const { state } = simulate(thresholds, { ...settings, maxProbes: 4 });
  assert.equal(state.status, 'exhausted');
  assert.equal(state.probes.length, 4);
  assert.ok(state.result);
  assert.ok(state.probes.every((p) => p.outcome === 'below'));
});

test('tuner state is JSON-serializable and resumes identically', () => {
  const thresholds = thresholdsFor(1.0, 0.5, 192, 7);
  const a = createTuner(settings);
  let b = createTuner(settings);
  for (let step = 0; step < 200; step++) {
    const ra = nextRequest(a);
    const rb = nextRequest(b);
    assert.deepEqual(ra, rb);
    if (!ra) break;
    const outcomes = ra.generate.map((i) => ra.x > (thresholds[i] as number));
    observe(a, ra, outcomes);
    observe(b, rb!, outcomes);
    b = JSON.parse(JSON.stringify(b));
  }
  assert.deepEqual(a, b);
  assert.equal(a.status, 'converged');
});
