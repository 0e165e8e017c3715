/** Canonical JSON and its sha256: equal settings give equal text and equal fingerprints. */
import { createHash } from 'node:crypto';

/** Canonical JSON: object keys sorted, so equal settings give equal text. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function fingerprint(settings: unknown): string {
  return createHash('sha256').update(canonicalJson(settings)).digest('hex');
}
