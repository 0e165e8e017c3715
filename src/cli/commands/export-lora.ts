/**
 * `time-debias export-lora`: an edit file as a LoRA for a base model (kohya keys for A1111/ComfyUI,
 * or peft/diffusers keys). Parses and renders only; `exportLora` (src/edit/lora.ts) computes.
 *
 *   time-debias export-lora --edit edit.safetensors --model BASE --out lora.safetensors (--rank r | --error ε) [--format kohya|peft]
 */
import type { Argv, CommandModule } from 'yargs';
import type { LoraFormat, LoraResult } from '../../edit/lora.js';
import { textTable } from '../../report/text/index.js';
import { parseNumber } from './apply.js';

interface ExportLoraArgs {
  edit: string;
  model: string;
  out: string;
  rank?: string;
  error?: string;
  format: string;
  force: boolean;
  json: boolean;
  threads?: string;
}

export const exportLoraCommand: CommandModule<object, ExportLoraArgs> = {
  command: 'export-lora',
  describe: 'Export an edit file as a LoRA (ΔW = W·(M − I) per site, truncated SVD)',
  builder: (yargs: Argv) =>
    yargs
      .usage(
        '$0 export-lora --edit edit.safetensors --model BASE --out FILE.safetensors (--rank r | --error ε) [--format kohya|peft]',
      )
      .option('edit', { type: 'string', demandOption: true, describe: 'The edit file written by edit/debias' })
      .option('model', { type: 'string', demandOption: true, describe: 'The base model (any format apply reads)' })
      .option('out', { type: 'string', demandOption: true, describe: 'The LoRA file (.safetensors)' })
      .option('rank', { type: 'string', describe: 'Rank of every site' })
      .option('error', {
        type: 'string',
        describe: 'Largest relative Frobenius error ‖ΔW − ΔŴ‖/‖ΔW‖ per site; picks the smallest rank',
      })
      .option('format', { type: 'string', default: 'kohya', choices: ['kohya', 'peft'], describe: 'Key convention' })
      .option('force', {
        type: 'boolean',
        default: false,
        describe: 'Replace an existing file; export even if the text encoder differs',
      })
      .option('json', { type: 'boolean', default: false, describe: 'Print the result as JSON' })
      .option('threads', { type: 'string', describe: 'onnxruntime intra-op threads (default: one per core)' })
      .example(
        '$0 export-lora --edit edit.safetensors --model sd15.safetensors --out time-debias-lora.safetensors --error 0.01',
        'kohya LoRA',
      ) as unknown as Argv<ExportLoraArgs>,
  handler: async (args) => {
    const { exportLora } = await import('../../edit/lora.js');
    const result = await exportLora({
      editFile: args.edit,
      modelPath: args.model,
      outPath: args.out,
      ...(args.rank !== undefined ? { rank: parseNumber('--rank', args.rank) } : {}),
      ...(args.error !== undefined ? { error: parseNumber('--error', args.error) } : {}),
      format: args.format as LoraFormat,
      force: args.force,
      ...(args.threads !== undefined ? { threads: parseNumber('--threads', args.threads) } : {}),
    });
    process.stdout.write(args.json ? `${JSON.stringify(result, null, 2)}\n` : renderLoraResult(result));
  },
};

export function renderLoraResult(r: LoraResult): string {
  const lines = [
    `LoRA (${r.format}) written to ${r.outPath}: ${r.parameters.toLocaleString('en-US')} parameters, ${(r.bytes / 1e6).toFixed(2)} MB`,
    `  edit ${r.editFile}, base ${r.modelPath}; ${r.selection.kind === 'rank' ? `rank ${r.selection.rank}` : `error ≤ ${r.selection.error}`}`,
    ...r.notes.map((n) => `  note ${n}`),
    '',
  ];
  lines.push(
    ...textTable({
      header: ['site', 'rank', 'error', '‖ΔW‖/‖W‖'],
      rows: r.sites.map((s) => [s.name, String(s.rank), s.error.toExponential(3), s.relativeChange.toExponential(3)]),
    }),
    '',
  );
  lines.push(
    `max error ${r.maxError.toExponential(3)}${r.basisRank !== null ? `; factored in the rank-${r.basisRank} basis of M − I` : ''}; ${Math.round(r.timings.total)} ms`,
  );
  return `${lines.join('\n')}\n`;
}
