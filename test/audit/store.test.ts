import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { canonicalJson, fingerprint, folderDigest, RunStore, settingsDiff } from '../../src/audit/store.js';
import { OutputError } from '../../src/util/errors.js';

const tmp = mkdtempSync(join(tmpdir(), 'td-store-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('canonical JSON and fingerprints ignore key order', () => {
  assert.equal(canonicalJson({ b: 1, a: [1, { d: 2, c: 3 }] }), '{"a":[1,{"c":3,"d":2}],"b":1}');
  assert.equal(fingerprint({ a: 1, b: 2 }), fingerprint({ b: 2, a: 1 }));
  assert.notEqual(fingerprint({ a: 1 }), fingerprint({ a: 2 }));
  assert.deepEqual(settingsDiff({ a: 1, g: { s: 20, h: 64 } }, { a: 1, g: { s: 25, h: 64 } }), ['g.s']);
});

test('folder digest changes with any byte of any file', () => {
  const d = join(tmp, 'model');
  mkdirSync(join(d, 'unet'), { recursive: true });
  writeFileSync(join(d, 'unet', 'weights.pb'), Buffer.alloc(100, 1));
  writeFileSync(join(d, 'model_index.json'), '{}');
  const a = folderDigest(d);
  const buf = Buffer.alloc(100, 1);
  buf[57] = 2;
  writeFileSync(join(d, 'unet', 'weights.pb'), buf);
  assert.notEqual(folderDigest(d), a);
});

test('appendAll writes a group of records at once; a crash inside the group keeps its whole lines only', () => {
  const dir = join(tmp, 'run-group');
  const s = RunStore.open(dir, { x: 1 });
  const group = [1, 2].flatMap((seed) => [
    { kind: 'generated' as const, key: `k${seed}`, profession: 'nurse', prompt: 'a nurse', seed },
    {
      kind: 'classified' as const,
      key: `k${seed}`,
      profession: 'nurse',
      label: 'male',
      unclear: false,
      probabilities: { female: 0.2, male: 0.8 },
    },
  ]);
  s.appendAll(group);
  s.appendAll([]);
  assert.equal(s.records.length, 4);
  s.close();
  const lines = readFileSync(join(dir, 'records.jsonl'), 'utf8').split('\n').filter(Boolean);
  assert.deepEqual(
    lines.map((l) => JSON.parse(l)),
    group,
  );
  // a torn group: three whole lines and a partial one
  writeFileSync(join(dir, 'records.jsonl'), `${lines.slice(0, 3).join('\n')}\n${(lines[3] as string).slice(0, 20)}`);
  const t = RunStore.open(dir, { x: 1 });
  assert.deepEqual(
    t.records.map((r) => `${r.kind}:${r.key}`),
    ['generated:k1', 'classified:k1', 'generated:k2'],
  );
  t.close();
});

test('records are appended, survive reopening, and a torn last line is dropped', () => {
  const dir = join(tmp, 'run1');
  const s = RunStore.open(dir, { x: 1 });
  s.append({ kind: 'generated', key: 'k1', profession: 'nurse', prompt: 'a nurse', seed: 1 });
  s.append({
    kind: 'classified',
    key: 'k1',
    profession: 'nurse',
    label: 'female',
    unclear: false,
    probabilities: { female: 0.9, male: 0.1 },
  });
  s.close();
  // a crash in the middle of a write leaves a partial line
  appendFileSync(join(dir, 'records.jsonl'), '{"kind":"generated","key":"k2","prof');
  const t = RunStore.open(dir, { x: 1 });
  assert.equal(t.records.length, 2);
  assert.ok(readFileSync(join(dir, 'records.jsonl'), 'utf8').endsWith('}\n'));
  t.append({ kind: 'generated', key: 'k2', profession: 'nurse', prompt: 'a nurse', seed: 2 });
  t.close();
  const u = RunStore.open(dir, { x: 1 });
  assert.deepEqual(
    u.records.map((r) => r.key),
    ['k1', 'k1', 'k2'],
  );
  u.close();
});

test('a run folder made with the old defaults (no preprocessing, no size decision recorded) is refused with that reason', () => {
  const dir = join(tmp, 'run-old-defaults');
  const before = {
    source: { kind: 'generator', model: { path: '/m', digest: 'd' }, steps: 25, height: 512, width: 512 },
    classifier: { path: '/c', digest: 'e', logitScale: 100 },
  };
  RunStore.open(dir, before).close();
  const now = {
    source: { ...before.source, height: 64, width: 64, sizeFrom: 'model-index', vaeScale: 8 },
    classifier: { ...before.classifier, preprocess: 'transformers' },
  };
  assert.throws(
    () => RunStore.open(dir, now),
    (e: Error) =>
      e instanceof OutputError &&
      /made by an earlier time-debias with the old defaults \(classifier preprocessing not recorded; image size not decided from the model/.test(
        e.message,
      ) &&
      (e as OutputError).field === 'out' &&
      /`restart` to discard/.test(e.message) &&
      (e as OutputError).mentions.includes('restart'),
  );
  RunStore.open(dir, now, { restart: true }).close();
  RunStore.open(dir, now).close();
});

test("another run's folder is refused (settings named); --restart discards its results", () => {
  const dir = join(tmp, 'run2');
  const s = RunStore.open(dir, { generation: { steps: 20 } });
  s.append({ kind: 'generated', key: 'k', profession: 'p', prompt: 'a p', seed: 0 });
  s.close();
  assert.throws(
    () => RunStore.open(dir, { generation: { steps: 25 } }),
    (e: Error) =>
      e instanceof OutputError &&
      e.field === 'out' &&
      /other settings \(generation\.steps differ\).*Use another `out`, or `restart`/.test(e.message),
  );
  const r = RunStore.open(dir, { generation: { steps: 25 } }, { restart: true });
  assert.equal(r.records.length, 0);
  r.close();
  const other = join(tmp, 'not-a-run');
  mkdirSync(other);
  writeFileSync(join(other, 'notes.txt'), 'x');
  assert.throws(() => RunStore.open(other, {}), /not an audit run folder/);
  const broken = join(tmp, 'broken');
  const b = RunStore.open(broken, {});
  b.close();
  writeFileSync(join(broken, 'records.jsonl'), 'garbage\n');
  assert.throws(() => RunStore.open(broken, {}), /line 1 is not valid JSON/);
});

test('two processes on one run folder: the second open is refused at once, naming the first; after close it opens', async () => {
  const dir = join(tmp, 'two-procs');
  const store = fileURLToPath(new URL('../../src/audit/store.ts', import.meta.url));
  const script = `
    import { RunStore } from ${JSON.stringify(store)};
    const s = RunStore.open(${JSON.stringify(dir)}, { x: 1 });
    s.append({ kind: 'generated', key: 'k1', profession: 'nurse', prompt: 'a nurse', seed: 1 });
    process.stdout.write('open\\n');
    process.stdin.once('data', () => { s.close(); process.exit(0); });`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  await new Promise<void>((res) => child.stdout.once('data', () => res()));
  try {
    assert.throws(
      () => RunStore.open(dir, { x: 1 }),
      (e: unknown) => e instanceof OutputError && e.message.includes(`in use by process ${child.pid}`),
    );
  } finally {
    child.stdin.write('close\n');
    await new Promise((res) => child.once('exit', res));
  }
  const s = RunStore.open(dir, { x: 1 });
  assert.equal(s.records.length, 1);
  s.close();
});

test('a folder of other files is refused before anything is written into it (no lock file left)', () => {
  const dir = join(tmp, 'others-files');
  mkdirSync(dir);
  writeFileSync(join(dir, 'notes.txt'), 'mine');
  assert.throws(() => RunStore.open(dir, { x: 1 }), /not an audit run folder/);
  assert.deepEqual(readdirSync(dir), ['notes.txt']);
});
