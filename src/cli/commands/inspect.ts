/**
 * `time-debias inspect MODEL_DIR [--json]`: the model's format, precision, text width, the
 * cross-attention K/V sites TIME edits with their shapes, and how much of the UNet they are.
 * Parses, calls `inspectModel`, renders; nothing else.
 */

import type { Argv, CommandModule } from 'yargs';
import { inspectModel, type ModelInspection } from '../../model/inspect.js';
import { pct, textTable } from '../../report/text/index.js';

interface InspectArgs {
  model: string;
  json: boolean;
}

export const inspectCommand: CommandModule<object, InspectArgs> = {
  command: 'inspect <model>',
  describe: 'Show a Stable Diffusion ONNX model folder: format, precision, text width, the K/V sites TIME edits',
  builder: (yargs: Argv) =>
    yargs
      .positional('model', {
        type: 'string',
        demandOption: true,
        describe: 'Model folder (diffusers or Optimum ONNX export)',
      })
      .option('json', { type: 'boolean', default: false, describe: 'Print the result as JSON' })
      .example('$0 inspect ./stable-diffusion-v1-4-onnx', 'a table of the model and its edit sites')
      .example('$0 inspect ./sd-onnx --json', 'the same as JSON') as unknown as Argv<InspectArgs>,
  handler: (args) => {
    const result = inspectModel(args.model);
    process.stdout.write(args.json ? `${JSON.stringify(result, null, 2)}\n` : renderInspection(result));
  },
};

function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

function table(header: string[], rows: string[][], alignRight: boolean[]): string {
  return textTable({ header, rows, align: alignRight.map((r) => (r ? 'right' : 'left')) }).join('\n');
}

/** The human rendering of an inspection. */
export function renderInspection(r: ModelInspection): string {
  const io = (list: ModelInspection['unetInputs']) =>
    list.map((i) => `${i.name} ${i.dtype}[${i.shape.join(',')}]`).join(', ');
  const ext = r.externalData.length
    ? r.externalData.map((e) => `${e.file} (${formatBytes(e.bytes)})`).join(', ')
    : 'none (inline)';
  const summary = [
    `Model         ${r.dir}`,
    `Format        ${r.format} (${r.formatEvidence})`,
    `Precision     ${r.precision}`,
    `Text width d  ${r.d}`,
    `input_ids     ${r.idsType}`,
    `Components    ${Object.keys(r.components).join(', ')}`,
    `UNet inputs   ${io(r.unetInputs)}`,
    `UNet outputs  ${io(r.unetOutputs)}`,
    `External data ${ext}`,
    '',
    `Edit sites: ${r.sites.length} key/value projections in ${r.crossAttentionLayers} text cross-attention layers`,
  ];
  const rows = r.sites.map((s) => [
    s.name,
    s.projection,
    `${s.shape[0]} × ${s.shape[1]}`,
    s.layout,
    s.dtype,
    s.initializer,
  ]);
  return `${summary.join('\n')}\n${table(['site', 'proj', 'shape [out × d]', 'stored', 'dtype', 'initializer'], rows, [false, false, true, false, false, false])}\n\nEditable parameters: ${r.editableParameters.toLocaleString('en-US')} of ${r.unetParameters.toLocaleString('en-US')} UNet parameters (${pct(r.editableShare, 2)})\n`;
}
