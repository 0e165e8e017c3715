/**
 * Export guards (issue 11): a symlinked component folder is protected from --force, a regular file
 * or a folder of other files is never replaced, a read-only source gives an editable export to a
 * normal user, and an export interrupted by SIGINT or SIGKILL leaves nothing a rerun trips over.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildTinySdModel } from '../../src/demo/sd-model.js';
import { EDIT_MANIFEST, exportEditedModel } from '../../src/model/export.js';
import { openSdModel } from '../../src/model/folder.js';
import { locateSites, readSiteWeight } from '../../src/model/sites.js';
import { OutputError } from '../../src/util/errors.js';
import { checksums, tempDir } from '../onnx/helpers.js';

const tmp = tempDir('export-guards');
process.env.TIME_DEBIAS_CACHE_DIR = join(tmp.dir, 'hash-cache');
after(tmp.cleanup);
const EXPORT_MODULE = fileURLToPath(new URL('../../src/model/export.ts', import.meta.url));
const FOLDER_MODULE = fileURLToPath(new URL('../../src/model/folder.ts', import.meta.url));
const SITES_MODULE = fileURLToPath(new URL('../../src/model/sites.ts', import.meta.url));

function tinyModel(dir: string) {
  buildTinySdModel(dir);
  const model = openSdModel(dir);
  const site = locateSites(model)[0]!;
  const W = readSiteWeight(model, site).map((w) => w * 1.01);
  return { model, weights: new Map([[site.name, W]]) };
}

test('a symlinked component folder (snap/unet -> ../store/unet): --force on the real folder is refused', async () => {
  const root = join(tmp.dir, 'cache');
  const snap = join(root, 'snap');
  buildTinySdModel(snap);
  mkdirSync(join(root, 'store'));
  renameSync(join(snap, 'unet'), join(root, 'store', 'unet'));
  symlinkSync('../store/unet', join(snap, 'unet'));
  const model = openSdModel(snap);
  const site = locateSites(model)[0]!;
  const weights = new Map([[site.name, readSiteWeight(model, site)]]);
  const before = checksums(join(root, 'store'));
  for (const outDir of [join(root, 'store', 'unet'), join(root, 'store'), join(root, 'store', 'unet', 'edited')]) {
    await assert.rejects(
      exportEditedModel({ model, weights, outDir, force: true }),
      (e: Error) => e instanceof OutputError && /component folder of the model/.test(e.message),
      outDir,
    );
  }
  assert.deepEqual(checksums(join(root, 'store')), before);
});

test('--force never replaces a regular file or a symbolic link', async () => {
  const { model, weights } = tinyModel(join(tmp.dir, 'm-file', 'model'));
  const file = join(tmp.dir, 'm-file', 'notes.txt');
  writeFileSync(file, 'mine');
  await assert.rejects(exportEditedModel({ model, weights, outDir: file, force: true }), /a file of 4 bytes/);
  const link = join(tmp.dir, 'm-file', 'link');
  mkdirSync(join(tmp.dir, 'm-file', 'target'));
  symlinkSync(join(tmp.dir, 'm-file', 'target'), link);
  await assert.rejects(exportEditedModel({ model, weights, outDir: link, force: true }), /a symbolic link to/);
  assert.equal(readFileSync(file, 'utf8'), 'mine');
});

/** Drop to `nobody` where the test runs as root and setpriv exists; null otherwise. */
function asNobody(): string[] | null {
  if (process.getuid?.() !== 0) return null;
  if (!existsSync('/usr/bin/setpriv')) return null;
  return ['/usr/bin/setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
}

function runChild(argv: string[], env: Record<string, string> = {}): ChildProcess {
  const [cmd, ...rest] = argv;
  return spawn(cmd as string, rest, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
}

function exportScript(modelDir: string, outDir: string, finish: boolean): string {
  return `
    import { startExport } from ${JSON.stringify(EXPORT_MODULE)};
    import { openSdModel } from ${JSON.stringify(FOLDER_MODULE)};
    import { locateSites, readSiteWeight } from ${JSON.stringify(SITES_MODULE)};
    const model = openSdModel(${JSON.stringify(modelDir)});
    const site = locateSites(model)[0];
    const W = readSiteWeight(model, site).map((w) => w * 1.01);
    const pending = startExport({ model, outDir: ${JSON.stringify(outDir)} });
    process.stdout.write('started\\n');
    ${finish ? "await pending.finish({ weights: new Map([[site.name, W]]) }); process.stdout.write('done\\n');" : 'setInterval(() => {}, 1000);'}`;
}

async function outputOf(child: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => {
    stdout += c;
  });
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c;
  });
  const code = await new Promise<number | null>((res) => child.once('exit', (c) => res(c)));
  return { code, stdout, stderr };
}

test('a read-only source model: a normal user exports it, and the export has umask permissions', async (t) => {
  const source = join(tmp.dir, 'ro', 'model');
  buildTinySdModel(source);
  const outParent = join(tmp.dir, 'ro', 'out');
  mkdirSync(outParent);
  // every file 0444, every folder 0555
  const lock = (p: string) => {
    for (const e of readdirSync(p, { withFileTypes: true })) {
      const q = join(p, e.name);
      if (e.isDirectory()) lock(q);
      else chmodSync(q, 0o444);
    }
    chmodSync(p, 0o555);
  };
  lock(source);
  const before = checksums(source);
  const drop = asNobody();
  const outDir = join(outParent, 'edited');
  if (drop) {
    chmodSync(tmp.dir, 0o755);
    chmodSync(dirname(outParent), 0o755);
    chownSync(outParent, 65534, 65534);
    const cache = join(outParent, 'cache');
    const script = join(dirname(outParent), 'export-child.mts');
    writeFileSync(script, exportScript(source, outDir, true));
    const child = runChild([...drop, process.execPath, '--import', 'tsx', script], {
      TIME_DEBIAS_CACHE_DIR: cache,
      HOME: outParent,
    });
    const r = await outputOf(child);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /done/);
    assert.equal(statSync(join(outDir, EDIT_MANIFEST)).uid, 65534);
  } else {
    t.diagnostic('not root or no setpriv: exporting as this user and checking the modes only');
    const model = openSdModel(source);
    const site = locateSites(model)[0]!;
    await exportEditedModel({ model, weights: new Map([[site.name, readSiteWeight(model, site)]]), outDir });
  }
  // every exported file is writable by its owner (the umask's mode), none keeps the source's 0444
  const walk = (p: string) => {
    for (const e of readdirSync(p, { withFileTypes: true })) {
      const q = join(p, e.name);
      if (e.isDirectory()) walk(q);
      else assert.ok((statSync(q).mode & 0o200) !== 0, `${q} mode ${(statSync(q).mode & 0o777).toString(8)}`);
    }
  };
  walk(outDir);
  assert.deepEqual(checksums(source), before);
});

for (const signal of ['SIGINT', 'SIGKILL'] as const) {
  test(`${signal} during an export, then a rerun: the rerun succeeds and no temporary folder is left`, async () => {
    const base = join(tmp.dir, `sig-${signal}`);
    const source = join(base, 'model');
    buildTinySdModel(source);
    const outDir = join(base, 'out', 'edited');
    const child = runChild([
      process.execPath,
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      exportScript(source, outDir, false),
    ]);
    const exited = outputOf(child);
    await new Promise<void>((res) => child.stdout?.once('data', () => res()));
    const tmpNames = () => readdirSync(dirname(outDir)).filter((n) => n.includes('.tmp-'));
    assert.equal(tmpNames().length, 1, 'the export is under way in <out>.tmp-<hex>');
    child.kill(signal);
    const r = await exited;
    if (signal === 'SIGINT') {
      assert.equal(r.code, 130, r.stderr);
      assert.deepEqual(readdirSync(dirname(outDir)), [], 'SIGINT removed the temporary folder and the lock');
    } else {
      assert.equal(tmpNames().length, 1, 'SIGKILL leaves the temporary folder');
    }
    const { model, weights } = tinyModel(join(base, 'model2'));
    const result = await exportEditedModel({ model, weights, outDir });
    assert.ok(existsSync(result.manifestPath));
    assert.deepEqual(readdirSync(dirname(outDir)), ['edited'], 'leftovers of the interrupted export removed');
  });
}

test('killed between the two renames of a replacing export: the earlier export is restored, never removed', async () => {
  const base = join(tmp.dir, 'between-renames');
  const { model, weights } = tinyModel(join(base, 'model'));
  const outDir = join(base, 'out', 'edited');
  await exportEditedModel({ model, weights, outDir });
  const earlier = checksums(outDir);
  // The state a SIGKILL leaves after `rename(out, out.tmp-old-…)` and before `rename(out.tmp-…, out)`:
  // the earlier export renamed away and a complete new one beside it, nothing at the target.
  renameSync(outDir, `${outDir}.tmp-old-0a1b2c3d4e5f`);
  await exportEditedModel({
    model,
    weights: new Map([...weights].map(([k, w]) => [k, w.map((x) => x * 2)])),
    outDir: `${outDir}.tmp-9f8e7d6c5b4a`,
  }).catch(() => undefined);
  // A rerun without force finds the earlier export back in place (and refuses to replace it) …
  await assert.rejects(
    exportEditedModel({ model, weights, outDir }),
    (e: Error) => e instanceof OutputError && /exists/.test(e.message),
  );
  assert.deepEqual(checksums(outDir), earlier, 'the earlier export is back, byte for byte');
  assert.deepEqual(
    readdirSync(dirname(outDir)).filter((n) => n.includes('.tmp-')),
    [],
    'the other leftovers removed',
  );
  // … and with force replaces it as asked.
  const result = await exportEditedModel({ model, weights, outDir, force: true });
  assert.ok(existsSync(result.manifestPath));
  assert.deepEqual(readdirSync(dirname(outDir)), ['edited']);
});
