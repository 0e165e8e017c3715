/**
 * The audit's render service on the queue (src/queue): each request becomes a render-and-classify
 * task naming the model and classifier by content digest, and the text transform M (if any) by
 * the digest of its bytes, stored once in Redis (the service's M, or a request's own: evaluate's
 * per-row edits). Workers run the same generate + classify code as
 * `pipelineSource` + the in-process classifier, with the same chunks, so the results are the same.
 *
 * The identity is `pipelineSource`'s (src/audit/source.ts `generatorIdentity`: model path and
 * digest, no UNet edit, the transform's hash, the fixed generation settings, the device), built
 * without opening a pipeline: the coordinator needs none. The default image size is read as the
 * pipeline reads it: the UNet's sample_size × 8, else its static sample shape, else 512.
 */
import { resolve } from 'node:path';
import type { ClipClassifier } from '../classify/clip.js';
import { readModelGeometry } from '../generate/model-geometry.js';
import { openSdModel, type SdModel } from '../model/folder.js';
import { folderDigest } from '../model/folder-digest.js';
import type { RenderQueue } from '../queue/producer.js';
import type { RenderTask } from '../queue/task.js';
import { TASK_VERSION } from '../queue/task.js';
import { QueueError } from '../util/errors.js';
import type { RenderedImage, RenderRequest, RenderService } from './run.js';
import { type GenerationSettings, generatorIdentity } from './source.js';

export interface QueueSourceOptions {
  queue: RenderQueue;
  modelDir: string;
  /** The model folder already opened (skips opening it again). */
  model?: SdModel;
  /** The classifier (opened by the coordinator for its identity and logit scale; workers open their copy). */
  classifier: ClipClassifier;
  generation?: GenerationSettings;
  device?: string;
}

/** What the coordinator has received: tasks, and the workers' own time on them (render + classify, ms). */
export interface QueueCounters {
  tasks: number;
  workerMs: number;
}

export async function queueSource(o: QueueSourceOptions): Promise<RenderService & { counters: QueueCounters }> {
  const model = o.model && o.model.dir === resolve(o.modelDir) ? o.model : openSdModel(o.modelDir);
  const settings = o.generation ?? {};
  const modelDigest = folderDigest(model.dir);
  const { fixed, identity } = generatorIdentity(
    { dir: model.dir, digest: modelDigest },
    await readModelGeometry(model),
    settings,
    o.device ?? 'cpu',
  );
  const m = settings.textTransform;
  const transform = m ? await o.queue.putTransform(m, model.d) : null;
  // A request's own M (evaluate's per-row edits) is stored once per array.
  const stored = new Map<Float32Array, { digest: string; d: number }>();
  const transformOf = async (r: RenderRequest) => {
    if (!r.transform) return transform;
    let ref = stored.get(r.transform);
    if (!ref) {
      ref = await o.queue.putTransform(r.transform, model.d);
      stored.set(r.transform, ref);
    }
    return ref;
  };
  const classifierRef = {
    digest: folderDigest(o.classifier.folder.dir),
    hint: o.classifier.folder.dir,
    logitScale: o.classifier.logitScale,
    preprocess: o.classifier.preprocessing,
  };
  const counters: QueueCounters = { tasks: 0, workerMs: 0 };
  return {
    kind: 'renderer',
    identity,
    counters,
    async render(requests, onResult, onTick) {
      const transforms: RenderTask['transform'][] = [];
      for (const r of requests) transforms.push(await transformOf(r));
      const tasks: RenderTask[] = requests.map((r, i) => ({
        version: TASK_VERSION,
        model: { digest: modelDigest, hint: model.dir },
        classifier: classifierRef,
        transform: transforms[i] ?? null,
        generation: fixed,
        prompt: r.prompt,
        seeds: [...r.seeds],
        profession: r.profession,
        attribute: r.attribute,
        threshold: r.threshold,
        images: [...r.keep],
      }));
      await o.queue.run(
        tasks,
        async (i, result) => {
          counters.tasks++;
          counters.workerMs += result.ms;
          const images: RenderedImage[] = result.images.map((img) => {
            const probabilities = img.probabilities;
            return {
              seed: img.seed,
              classification: img.unclear
                ? {
                    kind: 'unclear',
                    label: img.label,
                    probabilities,
                    threshold: (tasks[i] as RenderTask).threshold ?? 0,
                  }
                : { kind: 'label', label: img.label, probabilities },
              png: img.png ? new Uint8Array(Buffer.from(img.png, 'base64')) : null,
              digest: img.digest,
            };
          });
          if (images.some((img, j) => (tasks[i] as RenderTask).images[j] && !img.png))
            throw new QueueError(`worker ${result.worker} returned no PNG for an image the task asked for`);
          await onResult(i, images);
        },
        onTick ? (t) => onTick({ workers: t.workers, seen: t.seen }) : undefined,
      );
    },
  };
}
