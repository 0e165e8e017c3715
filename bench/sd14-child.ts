/**
 * One real-scale measurement in a fresh process (bench/sd14.ts spawns it, so that each figure's
 * peak RSS is its own): `node --import tsx bench/sd14-child.ts '<json spec>'` prints one JSON line.
 *
 *   raw       onnxruntime session on unet/model.onnx alone: create, 1 warm-up run, `runs` timed runs
 *             of one guided step (batch 2, 4 × 64 × 64 latents, 77 × 768 text)
 *   pipeline  StableDiffusionPipeline.create + generate one 512 × 512 image (`steps` PNDM steps,
 *             guidance 7.5, VAE decode): per-step times from the progress events (the first step,
 *             which carries onnxruntime's first-run work, reported apart), the UNet time inside them
 */
import { join } from 'node:path';
import { StableDiffusionPipeline } from '../src/generate/pipeline.js';
import { noise } from '../src/generate/rng.js';
import { Session, type SessionTuning, tensor } from '../src/runtime/ort.js';

interface Spec {
  mode: 'raw' | 'pipeline';
  dir: string;
  threads: number;
  tuning: SessionTuning;
  runs?: number;
  steps?: number;
}

const spec = JSON.parse(process.argv[2] as string) as Spec;
const mb = (kb: number) => Math.round(kb / 1024);
const rssMb = () => Math.round(process.memoryUsage().rss / 2 ** 20);
/** CPU time of the whole process (all onnxruntime threads), ms. */
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const note = (what: string) =>
  process.stderr.write(
    `sd14-child ${spec.mode}: ${what} (rss ${rssMb()} MB, peak ${mb(process.resourceUsage().maxRSS)} MB)\n`,
  );

async function raw(): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  const s = await Session.create(join(spec.dir, 'unet', 'model.onnx'), {
    ...spec.tuning,
    threads: spec.threads,
    label: 'sd14 unet',
  });
  const createMs = performance.now() - t0;
  const afterCreateMb = rssMb();
  const feeds = {
    sample: tensor('float32', noise(1, [2, 4, 64, 64]), [2, 4, 64, 64]),
    timestep: tensor('float32', new Float32Array(2).fill(961), [2]),
    encoder_hidden_states: tensor('float32', noise(2, [2, 77, 768]), [2, 77, 768]),
  };
  note(`session created in ${Math.round(createMs)} ms`);
  const runMs: number[] = [];
  const runCpuMs: number[] = [];
  for (let i = 0; i <= (spec.runs ?? 2); i++) {
    const t = performance.now();
    const c = cpuMs();
    const out = await s.run(feeds);
    runMs.push(performance.now() - t);
    runCpuMs.push(cpuMs() - c);
    note(`run ${i}: ${Math.round(runMs.at(-1) as number)} ms, cpu ${Math.round(runCpuMs.at(-1) as number)} ms`);
    const y = out.out_sample?.data as Float32Array;
    if (!y.every(Number.isFinite)) throw new Error('sd14 unet produced non-finite values');
  }
  await s.dispose();
  return {
    createMs,
    afterCreateMb,
    firstRunMs: runMs[0],
    runMs: runMs.slice(1),
    firstRunCpuMs: runCpuMs[0],
    runCpuMs: runCpuMs.slice(1),
  };
}

async function pipeline(): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  const p = await StableDiffusionPipeline.create(spec.dir, { threads: spec.threads, tuning: spec.tuning });
  const createMs = performance.now() - t0;
  const afterCreateMb = rssMb();
  note(`pipeline created in ${Math.round(createMs)} ms`);
  const stepMs: number[] = [];
  const stepCpuMs: number[] = [];
  const rssAfterStepMb: number[] = [];
  let last = performance.now();
  let lastCpu = cpuMs();
  const r = await p.generate({
    prompt: 'a photo of a doctor',
    seeds: [0],
    steps: spec.steps ?? 3,
    height: 512,
    width: 512,
    onProgress: (e) => {
      if (e.kind !== 'step') return;
      const now = performance.now();
      const cpu = cpuMs();
      stepMs.push(now - last);
      stepCpuMs.push(cpu - lastCpu);
      rssAfterStepMb.push(rssMb());
      note(`step ${e.step}: ${Math.round(now - last)} ms, cpu ${Math.round(cpu - lastCpu)} ms`);
      last = now;
      lastCpu = cpu;
    },
  });
  const image = r.images[0];
  if (image?.width !== 512 || image.rgb.length !== 512 * 512 * 3) throw new Error('no 512 × 512 image');
  await p.dispose();
  return {
    createMs,
    afterCreateMb,
    firstStepMs: stepMs[0],
    stepMs: stepMs.slice(1),
    firstStepCpuMs: stepCpuMs[0],
    stepCpuMs: stepCpuMs.slice(1),
    unetMsPerCall: r.timing.unetMs / r.timing.unetCalls,
    loopMs: r.timing.loopMs,
    unetMs: r.timing.unetMs,
    decodeMs: r.timing.decodeMs,
    textMs: r.timing.textMs,
    rssAfterStepMb,
  };
}

const result = spec.mode === 'raw' ? await raw() : await pipeline();
process.stdout.write(`${JSON.stringify({ ...result, peakRssMb: mb(process.resourceUsage().maxRSS) })}\n`);
