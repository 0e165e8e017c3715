/**
 * Dose–response of a profession's share to the edit strength, and the ED50-style search for the
 * strength at which the share reaches the target.
 *
 * Notation
 *   s = 1/λ_p        edit strength of profession p (the weight of its rows in the joint objective)
 *   x = ln s         log strength: the search variable
 *   π(x)             share of images classified as the DESTINATION class at strength s = eˣ
 *   t                target share of the destination class (parity: 0.5)
 *   (x_j, k_j, n_j)  probe j: k_j of n_j images in the destination class at x_j
 *
 * Model: π(x) = σ(α + βx), β > 0 (the response is monotone in expectation). Fit by maximum likelihood
 * on every probe's samples (binomial log-likelihood, Newton–Raphson = IRLS), ED50 generalised to t:
 *   x̂_t = (logit t − α̂)/β̂, its standard error by the delta method from the inverse Fisher information,
 * and the share error implied at x̂_t: se(π̂(x̂_t)) ≈ t(1 − t)·√(J I⁻¹ Jᵀ) with J = (1, x̂_t) (the
 * uncertainty of the fitted curve where it crosses t). The search brackets the crossing, proposes
 * x̂_t clamped inside the bracket (bisection when the fit is not yet informative), and stops when the
 * fitted share at the proposal is within tolerance with the requested confidence.
 */

export interface Probe {
  x: number;
  k: number;
  n: number;
}

export interface LogisticFit {
  alpha: number;
  beta: number;
  /** inverse Fisher information [[var α, cov], [cov, var β]] */
  cov: [number, number, number];
  iterations: number;
}

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));
export const logit = (p: number) => Math.log(p / (1 - p));

/**
 * Maximum-likelihood logistic fit π(x) = σ(α + βx) to binomial probes. Returns null when the data
 * cannot identify a positive slope (fewer than two distinct x, or complete separation, or β ≤ 0).
 */
export function fitLogistic(probes: readonly Probe[], maxIterations = 50): LogisticFit | null {
  const data = probes.filter((p) => p.n > 0);
  const xs = new Set(data.map((p) => p.x));
  if (xs.size < 2) return null;
  // Slight ridge (a quarter-observation prior at the pooled mean) keeps separated data finite while
  // leaving well-identified fits unchanged to within sampling error.
  const prior = 0.25;
  let alpha = 0;
  let beta = 0.5;
  for (let it = 1; it <= maxIterations; it++) {
    // Gradient g and Hessian H of the log-likelihood.
    let g0 = 0;
    let g1 = 0;
    let h00 = prior;
    let h01 = 0;
    let h11 = prior;
    g0 -= prior * alpha;
    g1 -= prior * beta;
    for (const { x, k, n } of data) {
      const p = sigmoid(alpha + beta * x);
      const r = k - n * p;
      const w = n * p * (1 - p);
      g0 += r;
      g1 += r * x;
      h00 += w;
      h01 += w * x;
      h11 += w * x * x;
    }
    const det = h00 * h11 - h01 * h01;
    if (!(det > 0)) return null;
    const dA = (h11 * g0 - h01 * g1) / det;
    const dB = (h00 * g1 - h01 * g0) / det;
    alpha += dA;
    beta += dB;
    if (!Number.isFinite(alpha) || !Number.isFinite(beta)) return null;
    if (Math.abs(dA) + Math.abs(dB) < 1e-10) {
      if (beta <= 0) return null;
      return { alpha, beta, cov: [h11 / det, -h01 / det, h00 / det], iterations: it };
    }
  }
  return null;
}

export interface Crossing {
  /** x̂_t */
  x: number;
  /** standard error of x̂_t (delta method) */
  seX: number;
  /** standard error of the fitted share at x̂_t */
  seShare: number;
}

export function crossing(fit: LogisticFit, target: number): Crossing {
  const x = (logit(target) - fit.alpha) / fit.beta;
  const [vA, cAB, vB] = fit.cov;
  // Var(α + βx) at fixed x: the fitted curve's uncertainty where it crosses t.
  const varEta = vA + 2 * x * cAB + x * x * vB;
  const seShare = target * (1 - target) * Math.sqrt(Math.max(varEta, 0));
  const seX = Math.sqrt(Math.max(varEta, 0)) / fit.beta;
  return { x, seX, seShare };
}

/** Standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9). */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new RangeError(`normalQuantile: p must be in (0, 1), got ${p}`);
  const a = [
    -39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239,
  ];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [
    -0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968,
    2.938163982698783,
  ];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  let q: number;
  if (p < lo) {
    const r = Math.sqrt(-2 * Math.log(p));
    q =
      (((((c[0]! * r + c[1]!) * r + c[2]!) * r + c[3]!) * r + c[4]!) * r + c[5]!) /
      ((((d[0]! * r + d[1]!) * r + d[2]!) * r + d[3]!) * r + 1);
  } else if (p <= 1 - lo) {
    const r = (p - 0.5) * (p - 0.5);
    q =
      ((((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * (p - 0.5)) /
      (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1);
  } else {
    const r = Math.sqrt(-2 * Math.log(1 - p));
    q =
      -(((((c[0]! * r + c[1]!) * r + c[2]!) * r + c[3]!) * r + c[4]!) * r + c[5]!) /
      ((((d[0]! * r + d[1]!) * r + d[2]!) * r + d[3]!) * r + 1);
  }
  return q;
}
