/**
 * Export benchmark (issue 2 Acceptance): edit + export of an SD 1.4-sized UNet next to a plain copy
 * of the same folder, and the peak RSS of the edit + export.
 *
 * The fixture (written to a temporary folder, removed at the end):
 *   - a complete model folder from the tiny builder with d = 768 (text encoder, VAE, tokenizer,
 *     scheduler, model_index.json), whose UNet is replaced by
 *   - an SD 1.4-geometry UNet: the 16 attn2 sites of SD 1.4 (down_blocks 0–2 × 2, mid_block × 1,
 *     up_blocks 1–3 × 3; widths 320/640/1280) as exporter-style MatMul nodes reading
 *     `encoder_hidden_states` through anonymous transposed [768, out] weights (real random data),
 *     plus filler initializers so the UNet has SD 1.4's 859,520,964 float32 parameters
 *     (3.44 GB of `weights.pb`, written quickly from a repeated random block). The graph only holds
 *     what the edit reads (it is not a runnable UNet; nothing here runs it).
 *
 * Measured, medians of 3 rounds (copy, then edit + export with a fresh source-hash cache, then
 * again with the hash known), each step started after `sync` (no dirty pages of the step before):
 *   copy         `cp -r --reflink=auto SRC DST` (the same clone semantics as the export: reflink
 *                where the filesystem allows, a full copy otherwise); also reported with a `sync`
 *                after it (a durable copy), since the export fsyncs what it writes
 *   edit+export  `editModel` (open, encode one pair with augmentations, solve, apply to all 32
 *                projections, export: clone every file, hash the edited sources, patch, fsync,
 *                rename) in a child process, timed inside it (Node/tsx start-up excluded and
 *                reported apart); the child's peak RSS (maxRSS) is the memory figure.
 * Targets: edit+export ≤ 1.3 × copy, peak RSS ≤ 1.5 GB. Free disk is checked first (3 copies).
 * The source-hash cache lives in the benchmark's temporary folder (never the user's ~/.cache).
 */
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, statfsSync, writeFileSync, writeSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildTinySdModel } from '../src/demo/sd-model.js';
import { DataType, encodeModel } from '../src/onnx/proto.js';
import { type Benchmark, type BenchResult, round, summarize } from './harness.js';

/** SD 1.4's UNet: parameters (float32) and its text cross-attention layout. */
export const SD14_UNET_PARAMETERS = 859_520_964;
export const SD14_D = 768;
export const SD14_SITES: readonly { module: string; width: number }[] = Object.freeze(
  [
    ...[0, 1, 2].flatMap((b) =>
      [0, 1].map((a) => ({ block: `down_blocks.${b}/attentions.${a}`, width: 320 * 2 ** b })),
    ),
    { block: 'mid_block/attentions.0', width: 1280 },
    ...[1, 2, 3].flatMap((b) =>
      [0, 1, 2].map((a) => ({ block: `up_blocks.${b}/attentions.${a}`, width: 1280 / 2 ** (b - 1) })),
    ),
  ].map(({ block, width }) => ({ module: `/${block}/transformer_blocks.0/attn2`, width })),
);

interface ChildRun {
  /** edit + export inside the child (editModel call) */
  ms: number;
  maxRssMb: number;
  timings: Record<string, number>;
  /** the child process from spawn to exit (Node + tsx start-up included) */
  wallMs: number;
}

const FILLERS_PER_SITE = 40;
const RUNS = 3;

/** Deterministic normal-ish values (sum of uniforms), scaled like trained projection weights. */
function siteWeights(count: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    let s = 0;
    for (let k = 0; k < 3; k++) {
      a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
      s += a / 4294967296 - 0.5;
    }
    out[i] = s * 0.05;
  }
  return out;
}

/** Write the SD 1.4-sized UNet (model.onnx + weights.pb) into `unetDir`. Returns the data size. */
export function writeSd14Unet(unetDir: string): number {
  const siteParams = SD14_SITES.reduce((s, x) => s + 2 * SD14_D * x.width, 0);
  const fillerParams = SD14_UNET_PARAMETERS - siteParams;
  const fillerCount = SD14_SITES.length * FILLERS_PER_SITE;
  const perFiller = Math.floor(fillerParams / fillerCount);
  const fd = openSync(join(unetDir, 'weights.pb'), 'w');
  const block = randomFillSync(Buffer.alloc(16 << 20));
  let offset = 0;
  const initializers: object[] = [];
  const nodes: object[] = [];
  const outputs: object[] = [];
  const external = (name: string, dims: number[], bytes: number) => {
    initializers.push({
      name,
      dims,
      dataType: DataType.FLOAT,
      dataLocation: 1,
      externalData: [
        { key: 'location', value: 'weights.pb' },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(bytes) },
      ],
    });
    offset += bytes;
  };
  const writeFiller = (bytes: number) => {
    let left = bytes;
    while (left > 0) {
      const n = Math.min(left, block.length);
      block.writeUInt32LE((offset + bytes - left) % 2 ** 32, 0); // no two blocks alike
      writeSync(fd, block, 0, n);
      left -= n;
    }
  };
  let anon = 1000;
  try {
    SD14_SITES.forEach((site, i) => {
      for (let f = 0; f < FILLERS_PER_SITE; f++) {
        const params =
          i === SD14_SITES.length - 1 && f === FILLERS_PER_SITE - 1
            ? fillerParams - perFiller * (fillerCount - 1)
            : perFiller;
        external(`filler.${i}.${f}.weight`, [params], params * 4);
        writeFiller(params * 4);
      }
      for (const proj of ['to_k', 'to_v']) {
        const name = `onnx::MatMul_${anon++}`;
        const W = siteWeights(SD14_D * site.width, anon);
        external(name, [SD14_D, site.width], W.byteLength);
        writeSync(fd, new Uint8Array(W.buffer));
        const out = `${site.module}/${proj}/MatMul_output_0`;
        nodes.push({
          name: `${site.module}/${proj}/MatMul`,
          opType: 'MatMul',
          input: ['encoder_hidden_states', name],
          output: [out],
        });
        outputs.push({
          name: out,
          type: {
            tensorType: {
              elemType: DataType.FLOAT,
              shape: { dim: [{ dimParam: 'batch' }, { dimParam: 'sequence' }, { dimValue: site.width }] },
            },
          },
        });
      }
    });
  } finally {
    closeSync(fd);
  }
  const tensorType = (shape: (number | string)[]) => ({
    tensorType: {
      elemType: DataType.FLOAT,
      shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
    },
  });
  writeFileSync(
    join(unetDir, 'model.onnx'),
    encodeModel({
      irVersion: 8,
      producerName: 'pytorch',
      opsetImport: [{ domain: '', version: 14 }],
      graph: {
        name: 'main_graph',
        node: nodes,
        input: [
          { name: 'sample', type: tensorType(['batch', 4, 'height', 'width']) },
          { name: 'timestep', type: tensorType(['batch']) },
          { name: 'encoder_hidden_states', type: tensorType(['batch', 'sequence', SD14_D]) },
        ],
        output: outputs,
        initializer: initializers,
      },
    }),
  );
  return offset;
}

function folderBytes(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}

/** Child mode: edit + export once, print {ms, maxRssMb, timings} as JSON. */
async function child(src: string, out: string): Promise<void> {
  const { editModel } = await import('../src/edit/api.js');
  const t0 = performance.now();
  const result = await editModel({
    modelDir: src,
    pairs: [{ source: 'a photo of a nurse', destination: 'a photo of a male nurse' }],
    augment: true,
    outDir: out,
  });
  const ms = performance.now() - t0;
  process.stdout.write(
    `${JSON.stringify({ ms, maxRssMb: process.resourceUsage().maxRSS / 1024, timings: result.timings, sites: result.sites.length })}\n`,
  );
}

async function run(): Promise<BenchResult[]> {
  const base = process.env.TIME_DEBIAS_BENCH_DIR ?? tmpdir();
  const need = 3 * SD14_UNET_PARAMETERS * 4 + 2 ** 30;
  const fs = statfsSync(base);
  const free = fs.bavail * fs.bsize;
  if (free < need) {
    throw new Error(
      `export bench: ${base} has ${folderBytes(free)} free; it needs ${folderBytes(need)} (source + copy + export). Set TIME_DEBIAS_BENCH_DIR to a roomier folder.`,
    );
  }
  const root = mkdtempSync(join(base, 'td-bench-export-'));
  try {
    const src = join(root, 'sd14');
    buildTinySdModel(src, { d: SD14_D, sites: 1 });
    rmSync(join(src, 'unet'), { recursive: true });
    mkdirSync(join(src, 'unet'));
    const tWrite = performance.now();
    const dataBytes = writeSd14Unet(join(src, 'unet'));
    const writeMs = performance.now() - tWrite;

    const load0 = loadavg()[0] as number; // other work on the machine: these timings are I/O and CPU bound
    const sync = () => spawnSync('sync');
    const self = fileURLToPath(import.meta.url);
    const copyMs: number[] = [];
    const durableCopyMs: number[] = [];
    const cold: ChildRun[] = [];
    const warm: ChildRun[] = [];
    /** One edit + export in a child process, with the source-hash cache in `cacheDir`. */
    const editOnce = (out: string, cacheDir: string): ChildRun => {
      sync(); // start each timed step with no dirty pages of the step before
      const t = performance.now();
      const r = spawnSync(process.execPath, ['--import', 'tsx', self, '--child', src, out], {
        encoding: 'utf8',
        maxBuffer: 1 << 20,
        env: { ...process.env, TIME_DEBIAS_CACHE_DIR: cacheDir, TIME_DEBIAS_HASH_CACHE: '1' },
      });
      const wall = performance.now() - t;
      if (r.status !== 0) throw new Error(`export child failed (${r.status}): ${r.stderr}`);
      rmSync(out, { recursive: true, force: true });
      const line = JSON.parse(r.stdout.trim().split('\n').pop() as string) as Omit<ChildRun, 'wallMs'>;
      return { ...line, wallMs: wall };
    };
    for (let i = 0; i < RUNS; i++) {
      const copyDst = join(root, `copy-${i}`);
      sync();
      const t0 = performance.now();
      const cp = spawnSync('cp', ['-r', '--reflink=auto', src, copyDst], { encoding: 'utf8' });
      copyMs.push(performance.now() - t0);
      if (cp.status !== 0) throw new Error(`cp failed: ${cp.stderr}`);
      sync(); // the export fsyncs what it writes: the copy made durable, for context
      durableCopyMs.push(performance.now() - t0);
      rmSync(copyDst, { recursive: true, force: true });
      // first export of this source (fresh hash cache: sha256 of the 3.44 GB computed), then again
      const cacheDir = join(root, `hash-cache-${i}`);
      cold.push(editOnce(join(root, `edited-cold-${i}`), cacheDir));
      warm.push(editOnce(join(root, `edited-warm-${i}`), cacheDir));
    }
    const copy = summarize('export: plain copy of the SD 1.4-sized folder (cp -r --reflink=auto)', 'ms', copyMs, {
      details: {
        loadAverageAtStart: round(load0, 3),
        loadAverageAtEnd: round(loadavg()[0] as number, 3),
        durableCopyMsMedian: summarize('', 'ms', durableCopyMs).median,
        weightsBytes: dataBytes,
        fixtureWriteMs: round(writeMs),
      },
    });
    const editResult = (label: string, runs: ChildRun[]): BenchResult[] => {
      const ms = runs.map((r) => r.ms);
      const median = summarize('', 'ms', ms).median;
      const last = runs[runs.length - 1] as ChildRun;
      return [
        summarize(`export: edit + export of the SD 1.4-sized UNet, ${label}`, 'ms', ms, {
          reference: { name: copy.name, median: copy.median, unit: 'ms' },
          target: '<= 1.3 x the copy',
          meetsTarget: median <= 1.3 * copy.median,
          details: {
            ratioToCopyMedian: round(median / copy.median),
            childWallMsMedian: summarize(
              '',
              'ms',
              runs.map((r) => r.wallMs),
            ).median,
            ...Object.fromEntries(Object.entries(last.timings).map(([k, v]) => [`lastRun_${k}Ms`, round(v)])),
          },
        }),
        summarize(
          `export: peak RSS of edit + export, ${label} (child maxRSS)`,
          'MB',
          runs.map((r) => r.maxRssMb),
          {
            target: '<= 1536 MB',
            meetsTarget: Math.max(...runs.map((r) => r.maxRssMb)) <= 1536,
          },
        ),
      ];
    };
    return [
      copy,
      ...editResult('first export of the source (sha256 of 3.44 GB computed)', cold),
      ...editResult('source hash known (cached per file identity)', warm),
    ];
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

export const benchmarks: Benchmark[] = [
  {
    name: 'export-sd14',
    skip: () => (process.platform === 'win32' ? 'needs cp -r --reflink=auto (GNU coreutils)' : undefined),
    run,
  },
];

if (process.argv[2] === '--child' && import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await child(process.argv[3] as string, process.argv[4] as string);
}
