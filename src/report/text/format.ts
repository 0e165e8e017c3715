/**
 * Number formats of every report and terminal table, written once: percentages, decimals,
 * intervals, p-values. A missing or non-finite value prints as an en dash.
 */

type Maybe = number | null | undefined;

const missing = (x: Maybe): x is null | undefined => x === null || x === undefined || !Number.isFinite(x);

/** 0.915 → "91.5%" */
export function pct(x: Maybe, digits = 1): string {
  return missing(x) ? '–' : `${(100 * x).toFixed(digits)}%`;
}

/** 0.5712 → "0.57" */
export function dec(x: Maybe, digits = 2): string {
  return missing(x) ? '–' : x.toFixed(digits);
}

/** "[lo, hi]" in the given format. */
export function interval(lo: Maybe, hi: Maybe, format: (x: Maybe) => string = (x) => dec(x)): string {
  return `[${format(lo)}, ${format(hi)}]`;
}

/** A share with its interval: "48.5% [41.7%, 55.4%]"; "–" without a share. */
export function shareText(s: { p?: Maybe; share?: Maybe; lower: Maybe; upper: Maybe } | null | undefined): string {
  const p = s ? (s.p !== undefined ? s.p : s.share) : null;
  return s && !missing(p) ? `${pct(p)} ${interval(s.lower, s.upper, (x) => pct(x))}` : '–';
}

/** p < 0.001 → "<0.001", else three decimals. */
export function pValue(p: number): string {
  return p < 0.001 ? '<0.001' : p.toFixed(3);
}
