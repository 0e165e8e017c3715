/**
 * README "How it is built" kept true: the floor table it draws is read here and checked against the
 * imports of every module of src/ — a value import goes to a lower floor only (type-only imports,
 * erased at build, may reach up for the renderers in report/), every folder of src/ has a floor,
 * each outside library is imported only in its seam, and every package imported is a dependency.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SRC = join(ROOT, 'src');

/** The README's floor table: area (first folder under src/, `cli` for src/cli.ts too) → floor. */
function readmeFloors(): Map<string, number> {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## How it is built'));
  const floors = new Map<string, number>();
  for (const line of section.split('\n')) {
    const m = /^floor (\d+)\s+((?:src\/[\w.]+\/?,?\s*)+)/.exec(line);
    if (!m) continue;
    for (const path of (m[2] as string).matchAll(/src\/([\w.]+)/g)) {
      const area = (path[1] as string).replace(/\.ts$/, '');
      floors.set(area, Number(m[1]));
    }
  }
  return floors;
}

interface Import {
  file: string;
  specifier: string;
  typeOnly: boolean;
  dynamic: boolean;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return path.endsWith('.ts') ? [path] : [];
  });
}

function importsOf(file: string): Import[] {
  const text = readFileSync(file, 'utf8');
  const out: Import[] = [];
  for (const m of text.matchAll(/^(?:import|export)\s+(type\s+)?([^;]*?)\s+from\s+'([^']+)'/gms)) {
    const names = (m[2] as string).trim();
    const allTypes =
      /^\{[\s\S]*\}$/.test(names) &&
      names
        .slice(1, -1)
        .split(',')
        .map((n) => n.trim())
        .filter(Boolean)
        .every((n) => n.startsWith('type '));
    out.push({ file, specifier: m[3] as string, typeOnly: Boolean(m[1]) || allTypes, dynamic: false });
  }
  for (const m of text.matchAll(/^(?!\s*(?:\/\/|\*)).*?\bawait import\('([^']+)'\)/gm)) {
    out.push({ file, specifier: m[1] as string, typeOnly: false, dynamic: true });
  }
  return out;
}

const areaOf = (path: string) => {
  const parts = relative(SRC, path).split('/');
  return parts.length === 1 ? (parts[0] as string).replace(/\.ts$/, '') : (parts[0] as string);
};
const packageOf = (specifier: string) =>
  specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : (specifier.split('/')[0] as string);
const isBuiltin = (specifier: string) =>
  specifier.startsWith('node:') || builtinModules.includes(specifier.split('/')[0] as string);

/** Each outside library → the modules (paths under src/, a trailing / for a folder) that may import it. */
const SEAMS: Record<string, string[]> = {
  'onnxruntime-node': ['runtime/ort.ts'],
  '@huggingface/transformers': ['runtime/transformers.ts'],
  yargs: ['cli.ts', 'cli/'],
  'cli-progress': ['cli/'],
  bullmq: ['queue/'],
  ioredis: ['queue/'],
  'onnx-proto': ['onnx/'],
  'fast-png': ['generate/png.ts'],
  ajv: [
    'debias/config.ts',
    'edit/manifest.ts',
    'edit/edit-file.ts',
    'audit/schema.ts',
    'evaluate/schema.ts',
    'queue/task.ts',
  ],
  'p-limit': ['generate/pipeline.ts', 'debias/stages/'],
};

describe('architecture (README "How it is built")', () => {
  const floors = readmeFloors();
  const files = sourceFiles(SRC);
  const imports = files.flatMap(importsOf);

  it('the README draws a floor for every folder of src/ (src/demo/ stands beside the floors)', () => {
    assert.ok(floors.size >= 15, `README floor table read: ${[...floors.keys()].join(', ')}`);
    const areas = new Set(files.map(areaOf));
    const missing = [...areas].filter((a) => a !== 'demo' && !floors.has(a));
    assert.deepEqual(missing, [], `folders of src/ without a floor in README: ${missing.join(', ')}`);
    const stale = [...floors.keys()].filter((a) => !areas.has(a));
    assert.deepEqual(stale, [], `README floors naming no folder of src/: ${stale.join(', ')}`);
  });

  it('value imports go only to lower floors; type-only imports reach up only from report/', () => {
    const wrong: string[] = [];
    for (const i of imports) {
      if (!i.specifier.startsWith('.')) continue;
      const from = areaOf(i.file);
      const to = areaOf(resolve(dirname(i.file), i.specifier));
      if (from === to || from === 'demo' || to === 'demo') continue;
      const a = floors.get(from) as number;
      const b = floors.get(to) as number;
      if (b < a) continue;
      if (i.typeOnly && from === 'report') continue;
      wrong.push(`${relative(ROOT, i.file)} (floor ${a}) imports ${i.specifier} (${to}, floor ${b})`);
    }
    assert.deepEqual(wrong, []);
  });

  it('src/demo/ is built on demand by the CLI and the evaluate job only', () => {
    const users = imports
      .filter((i) => i.specifier.startsWith('.') && areaOf(resolve(dirname(i.file), i.specifier)) === 'demo')
      .filter((i) => areaOf(i.file) !== 'demo')
      .map((i) => `${relative(SRC, i.file)}${i.dynamic ? '' : ' (static import)'}`);
    assert.ok(users.length > 0, 'the CLI builds the demo world: its import must be seen here');
    assert.deepEqual(
      users.filter((u) => !/^(cli\/|evaluate\/job\.ts$)/.test(u)),
      [],
      'only src/cli/ and src/evaluate/job.ts import src/demo/, and only dynamically',
    );
  });

  it('each outside library is imported only in its seam, and every package imported is a dependency', () => {
    const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
    };
    const outside: string[] = [];
    const undeclared: string[] = [];
    const seen = new Set<string>();
    for (const i of imports) {
      if (i.specifier.startsWith('.') || isBuiltin(i.specifier)) continue;
      const pkg = packageOf(i.specifier);
      seen.add(pkg);
      if (!(pkg in manifest.dependencies)) undeclared.push(`${relative(ROOT, i.file)}: ${pkg}`);
      const seam = SEAMS[pkg];
      const at = relative(SRC, i.file);
      if (!seam) outside.push(`${at}: ${pkg} has no seam in this test (add it here and to README)`);
      else if (!seam.some((s) => (s.endsWith('/') ? at.startsWith(s) : at === s))) {
        outside.push(`${at} imports ${pkg} (its seam: ${seam.join(', ')})`);
      }
    }
    assert.deepEqual(outside, []);
    assert.deepEqual(undeclared, [], 'packages imported by src/ but not in package.json dependencies');
    for (const pkg of ['onnxruntime-node', '@huggingface/transformers', 'yargs', 'ajv', 'bullmq', 'fast-png']) {
      assert.ok(seen.has(pkg), `${pkg} is imported somewhere (the scan must see it)`);
    }
  });
});
