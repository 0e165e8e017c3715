/**
 * `time-debias apply`: apply a portable edit file (edit.safetensors, from `edit` or `debias`) to an
 * ONNX folder, a diffusers safetensors folder, or a single-file CompVis .safetensors checkpoint.
 * Parses and renders only; `applyEditFile` (src/edit/portable.ts) checks, computes and writes, entered
 * through src/edit/apply-early.ts (a single file's copy starts while the rest loads).
 *
 *   time-debias apply --edit edit.safetensors --model IN --out OUT [--scale α] [--revert] [--force] [--json]
 */
import type { Argv, CommandModule } from 'yargs';
import type { ApplyFileResult } from '../../edit/portable.js';
import { textTable } from '../../report/text/index.js';
import { show, UsageError } from '../../util/errors.js';

interface ApplyArgs {
  edit: string;
  model: string;
  out: string;
  scale?: string;
  revert: boolean;
  force: boolean;
  json: boolean;
  threads?: string;
}

export const applyCommand: CommandModule<object, ApplyArgs> = {
  command: 'apply',
  describe: 'Apply an edit file (edit.safetensors) to an ONNX, diffusers or single-file safetensors model',
  builder: (yargs: Argv) =>
    yargs
      .usage(
        '$0 apply --edit edit.safetensors --model IN --out OUT [--scale α] [--revert] [--force]\n\n' +
          "Every edited site becomes W' = W·M (M: the edit's d×d matrix); everything else is copied byte for byte.",
      )
      .option('edit', { type: 'string', demandOption: true, describe: 'The edit file written by edit/debias' })
      .option('model', {
        type: 'string',
        demandOption: true,
        describe:
          'ONNX model folder, diffusers folder (unet/diffusion_pytorch_model.safetensors or sharded), or a single-file *.safetensors (CompVis keys)',
      })
      .option('out', {
        type: 'string',
        demandOption: true,
        describe: 'Output folder (folders) or .safetensors file (single files); must not exist unless --force',
      })
      .option('scale', {
        type: 'string',
        describe: 'Apply W·(I + α(M − I)): α < 1 weaker, α > 1 stronger',
        defaultDescription: '1',
      })
      .option('revert', {
        type: 'boolean',
        default: false,
        describe: 'Apply M⁻¹: undo this edit on a model it was applied to',
      })
      .option('force', {
        type: 'boolean',
        default: false,
        describe: 'Replace an existing output; apply even if the text encoder differs from the edit file’s',
      })
      .option('json', { type: 'boolean', default: false, describe: 'Print the result as JSON' })
      .option('threads', { type: 'string', describe: 'onnxruntime intra-op threads (default: one per core)' })
      .example(
        '$0 apply --edit run/model/edit.safetensors --model sd15.safetensors --out sd15-debiased.safetensors',
        'A1111/ComfyUI single file',
      )
      .example(
        '$0 apply --edit edit.safetensors --model stable-diffusion-v1-5 --out sd15-debiased',
        'diffusers folder',
      ) as unknown as Argv<ApplyArgs>,
  handler: async (args) => {
    // apply-early.ts: a single file starts copying before the rest of apply is loaded.
    const { applyEditFileEarly } = await import('../../edit/apply-early.js');
    const result = await applyEditFileEarly({
      editFile: args.edit,
      modelPath: args.model,
      outPath: args.out,
      ...(args.scale !== undefined ? { scale: parseNumber('--scale', args.scale) } : {}),
      revert: args.revert,
      force: args.force,
      ...(args.threads !== undefined ? { threads: parseNumber('--threads', args.threads) } : {}),
    });
    process.stdout.write(args.json ? `${JSON.stringify(result, null, 2)}\n` : renderApplyResult(result));
  },
};

export function parseNumber(name: string, text: string | number): number {
  const s = String(text).trim();
  const value = s === '' ? Number.NaN : Number(s);
  if (!Number.isFinite(value)) throw new UsageError(`${name}: ${show(String(text))} is not a finite number`);
  return value;
}

export function renderApplyResult(r: ApplyFileResult): string {
  const lines = [
    `Edited ${r.modelKind === 'single-file' ? 'checkpoint' : 'model'} written to ${r.outPath}`,
    `  source         ${r.modelPath} (${r.modelKind}${r.keyMap ? `, ${r.keyMap} keys` : ''}, d = ${r.d})`,
    `  edit           ${r.editFile}${r.scale !== 1 ? `, α = ${r.scale}` : ''}${r.revert ? ', reverted (M⁻¹)' : ''}`,
    `  text encoder   ${r.textEncoder}; UNet ${r.unet}`,
    ...r.notes.map((n) => `  note           ${n}`),
    `  manifest       ${r.manifestPath}`,
    '',
  ];
  lines.push(
    ...textTable({
      header: ['site', 'key', 'dtype', '‖ΔW‖/‖W‖'],
      rows: r.sites.map((s) => [s.name, s.key, s.dtype, s.relativeChange.toExponential(3)]),
      align: ['left', 'left', 'left', 'right'],
    }),
    '',
  );
  lines.push(
    `${r.sites.length} sites edited; timings (ms): check ${Math.round(r.timings.check)}, write ${Math.round(r.timings.write)}, total ${Math.round(r.timings.total)}`,
  );
  return `${lines.join('\n')}\n`;
}
