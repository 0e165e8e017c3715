/**
 * Renders the config reference (a Markdown table per section) from configs/schema.json and writes it
 * into README.md between the config-reference markers. `--check` exits 1 when README is stale.
 *   node --import tsx scripts/config-reference.ts [--check]
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface Node {
  type?: string;
  anyOf?: Node[];
  const?: unknown;
  enum?: unknown[];
  default?: unknown;
  description?: string;
  properties?: Record<string, Node>;
  items?: Node;
  required?: string[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  multipleOf?: number;
  minItems?: number;
  maxItems?: number;
  pattern?: string;
}

const START = '<!-- config-reference:start -->';
const END = '<!-- config-reference:end -->';

function typeOf(n: Node): string {
  if (n.anyOf) return n.anyOf.map(typeOf).join(' \\| ');
  if (n.const !== undefined) return `\`${JSON.stringify(n.const)}\``;
  if (n.enum) return n.enum.map((v) => `\`${JSON.stringify(v)}\``).join(' \\| ');
  if (n.type === 'array') return `${n.items ? typeOf(n.items) : 'any'}[]`;
  return n.type ?? 'any';
}

function rules(n: Node): string {
  const r: string[] = [];
  if (n.exclusiveMinimum !== undefined) r.push(`> ${n.exclusiveMinimum}`);
  if (n.minimum !== undefined) r.push(`≥ ${n.minimum}`);
  if (n.exclusiveMaximum !== undefined) r.push(`< ${n.exclusiveMaximum}`);
  if (n.maximum !== undefined) r.push(`≤ ${n.maximum}`);
  if (n.multipleOf !== undefined) r.push(`multiple of ${n.multipleOf}`);
  if (n.minItems !== undefined) r.push(`≥ ${n.minItems} items`);
  if (n.maxItems !== undefined) r.push(`≤ ${n.maxItems} items`);
  if (n.pattern !== undefined) r.push(`matches \`${n.pattern.replace(/\|/g, '\\|')}\``);
  return r.join(', ');
}

function cell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function rows(node: Node, prefix: string, required: string[], out: string[]): void {
  for (const [key, child] of Object.entries(node.properties ?? {})) {
    if (key === '$schema') continue;
    const path = prefix ? `${prefix}.${key}` : key;
    const def =
      child.default === undefined ||
      (typeof child.default === 'object' &&
        child.default !== null &&
        !Array.isArray(child.default) &&
        Object.keys(child.default).length === 0)
        ? required.includes(key)
          ? '**required**'
          : ''
        : `\`${cell(JSON.stringify(child.default))}\``;
    out.push(
      `| \`${path}\` | ${cell(typeOf(child))} | ${def} | ${cell([child.description ?? '', rules(child)].filter(Boolean).join(' — '))} |`,
    );
    if (child.properties) rows(child, path, child.required ?? [], out);
    // an object form among alternatives (e.g. classifier: "DIR" or {path, preprocess}): its keys too
    for (const alt of child.anyOf ?? []) if (alt.properties) rows(alt, path, alt.required ?? [], out);
  }
}

export function renderConfigReference(schema: Node): string {
  const out = ['| key | type | default | meaning |', '| --- | --- | --- | --- |'];
  rows(schema, '', schema.required ?? [], out);
  return out.join('\n');
}

const root = fileURLToPath(new URL('..', import.meta.url));
const schema = JSON.parse(readFileSync(`${root}configs/schema.json`, 'utf8')) as Node;
const readme = readFileSync(`${root}README.md`, 'utf8');
const a = readme.indexOf(START);
const b = readme.indexOf(END);
if (a < 0 || b < a) {
  console.error('README.md has no config-reference markers');
  process.exit(1);
}
const next = `${readme.slice(0, a + START.length)}\n${renderConfigReference(schema)}\n${readme.slice(b)}`;
if (process.argv.includes('--check')) {
  if (next !== readme) {
    console.error('README.md config reference is stale: run `node --import tsx scripts/config-reference.ts`');
    process.exit(1);
  }
} else if (next !== readme) {
  writeFileSync(`${root}README.md.tmp`, next);
  renameSync(`${root}README.md.tmp`, `${root}README.md`);
}
