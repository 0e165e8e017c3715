/**
 * `time-debias edit`: one TIME edit (or many pairs in one joint solve) of a Stable Diffusion model
 * folder, written out as a new model folder (issue 2 item 7). The command parses and renders only;
 * `editModel` (src/edit/api.ts) validates, computes and writes.
 *
 *   time-debias edit --model DIR --source "a pack of roses" --destination "a pack of blue roses" --out DIR
 *   time-debias edit --model DIR --pairs pairs.tsv --out DIR [--lambda 0.1] [--augment] [--no-keys]
 *                    [--layers up_blocks.3 ...] [--preserve "a photo of a dog" ...] [--preserve-weight μ]
 *                    [--force] [--json]
 */

import type { Argv, CommandModule } from 'yargs';
import type { EditFileResult, EditProgress, EditRequest, EditResult } from '../../edit/api.js';
import { readPairsFile } from '../../edit/pairs-file.js';
import { textTable } from '../../report/text/index.js';
import { show, UsageError } from '../../util/errors.js';
import { flagOf, relabelForUser } from '../fields.js';

interface EditArgs {
  model: string;
  source?: string;
  destination?: string;
  pairs?: string;
  lambda?: string;
  augment: boolean;
  keys: boolean;
  layers?: string[];
  preserve?: string[];
  'preserve-weight'?: string;
  out: string;
  force: boolean;
  'edit-only'?: boolean;
  json: boolean;
  device: string;
  threads?: string;
}

export const editCommand: CommandModule<object, EditArgs> = {
  command: 'edit',
  describe: 'Edit the text cross-attention K/V projections with TIME and write a new model folder',
  builder: (yargs: Argv) =>
    yargs
      .usage(
        '$0 edit --model DIR (--source TEXT --destination TEXT | --pairs FILE) --out DIR [options]\n\n' +
          "TIME (arXiv 2303.08084): W' = (λW + Σ v*cᵀ)(λI + Σ ccᵀ)⁻¹ for every to_k/to_v of every text " +
          "cross-attention; c = the source prompt's 77 token embeddings, v* = W c* of the aligned destination tokens.",
      )
      .option('model', {
        type: 'string',
        demandOption: true,
        describe: 'Stable Diffusion ONNX model folder (diffusers or Optimum export)',
      })
      .option('source', { type: 'string', describe: 'Source prompt, e.g. "a pack of roses"' })
      .option('destination', { type: 'string', describe: 'Destination prompt, e.g. "a pack of blue roses"' })
      .option('pairs', {
        type: 'string',
        describe: 'CSV/TSV of many pairs for one joint solve: columns source, destination[, weight] (or TIMED old,new)',
      })
      .option('lambda', {
        type: 'string',
        describe: "Regularization λ > 0 (smaller = stronger edit); a pair's weight column w gives it λ/w",
        defaultDescription: '0.1',
      })
      .option('augment', {
        type: 'boolean',
        default: false,
        describe: 'Add the paper\'s augmentations: "A photo of" / "An image of" / "A picture of" + prompt',
      })
      .option('keys', { type: 'boolean', default: true, describe: 'Edit to_k as well as to_v (--no-keys: to_v only)' })
      .option('layers', {
        type: 'string',
        array: true,
        describe: 'Edit only sites whose module name starts with one of these prefixes (e.g. up_blocks.3)',
      })
      .option('preserve', {
        type: 'string',
        array: true,
        describe: 'Prompts whose embeddings must keep their keys/values',
      })
      .option('preserve-weight', {
        type: 'string',
        describe: "Weight μ of the preserved prompts' rows",
        defaultDescription: '1',
      })
      .option('out', {
        type: 'string',
        demandOption: true,
        describe: 'Output model folder (must not exist unless --force)',
      })
      .option('edit-only', {
        type: 'boolean',
        default: false,
        describe: 'Write only the portable edit file (M, d×d) to --out FILE.safetensors; no model copy',
      })
      .option('force', { type: 'boolean', default: false, describe: 'Replace an existing output folder' })
      .option('json', { type: 'boolean', default: false, describe: 'Print the result as JSON' })
      .option('device', { type: 'string', default: 'cpu', describe: 'onnxruntime device: cpu or cuda' })
      .option('threads', { type: 'string', describe: 'onnxruntime intra-op threads (default: one per core)' })
      .example(
        '$0 edit --model sd14 --source "a pack of roses" --destination "a pack of blue roses" --out sd14-blue-roses',
        'one edit',
      )
      .example(
        '$0 edit --model sd14 --pairs professions.tsv --augment --out sd14-debiased',
        'many pairs, one joint solve',
      ) as unknown as Argv<EditArgs>,
  handler: async (args) => {
    const request = requestFromArgs(args);
    // The library is loaded only when it is needed (tokenizer and runtime are heavy to import).
    const { editModel } = await import('../../edit/api.js');
    const onProgress = args.json
      ? undefined
      : (event: EditProgress) => process.stderr.write(`${progressLine(event)}\n`);
    const relabel = (error: unknown) => {
      throw relabelForUser(error, (field) => flagOfEditField(field, request.pairsFile));
    };
    if (request.editOnly) {
      const result = await editModel({ ...request, editOnly: true, onProgress }).catch(relabel);
      process.stdout.write(args.json ? `${JSON.stringify(result, null, 2)}\n` : renderEditFileResult(result));
      return;
    }
    const result = await editModel({ ...request, onProgress }).catch(relabel);
    process.stdout.write(args.json ? `${JSON.stringify(result, null, 2)}\n` : renderEditResult(result));
  },
};

/** Turn parsed arguments into an EditRequest; conflicting or malformed options are UsageErrors. */
export function requestFromArgs(args: EditArgs): EditRequest {
  const single = args.source !== undefined || args.destination !== undefined;
  if (args.pairs !== undefined && single) {
    throw new UsageError(
      `--pairs ${show(args.pairs)} cannot be combined with --source/--destination; give either one pair (--source and --destination) or a pairs file (--pairs)`,
    );
  }
  let pairs: EditRequest['pairs'];
  let pairsFile: string | undefined;
  if (args.pairs !== undefined) {
    try {
      pairs = readPairsFile(args.pairs);
    } catch (error) {
      throw relabelForUser(error, flagOf);
    }
    pairsFile = args.pairs;
  } else if (single) {
    if (args.source === undefined) throw new UsageError('--source is missing: --destination needs a --source prompt');
    if (args.destination === undefined) {
      throw new UsageError('--destination is missing: --source needs a --destination prompt');
    }
    pairs = [{ source: args.source, destination: args.destination }];
  } else {
    throw new UsageError('no edit given: pass --source TEXT --destination TEXT, or --pairs FILE');
  }
  if (args['preserve-weight'] !== undefined && (args.preserve === undefined || args.preserve.length === 0)) {
    throw new UsageError(
      `--preserve-weight ${show(args['preserve-weight'])} was given without --preserve; name the prompts to preserve`,
    );
  }
  const request: EditRequest = {
    modelDir: args.model,
    pairs,
    augment: args.augment,
    projections: args.keys ? ['to_k', 'to_v'] : ['to_v'],
    outDir: args.out,
    force: args.force,
    device: args.device as EditRequest['device'],
  };
  if (args['edit-only']) request.editOnly = true;
  if (pairsFile !== undefined) request.pairsFile = pairsFile;
  if (args.lambda !== undefined) request.lambda = parseNumber('--lambda', args.lambda);
  if (args.layers !== undefined) request.layers = args.layers.map(String);
  if (args.preserve !== undefined) {
    request.preserve = { prompts: args.preserve.map(String) };
    if (args['preserve-weight'] !== undefined) {
      request.preserve.weight = parseNumber('--preserve-weight', args['preserve-weight']);
    }
  }
  if (args.threads !== undefined) request.threads = parseNumber('--threads', args.threads);
  return request;
}

/**
 * The flag of an edit request field: a pair's fields are `--source`/`--destination` for the one pair
 * of the command line, or the pairs file's row (`--pairs FILE pair 3 source`); the rest as any flag.
 */
export function flagOfEditField(field: string, pairsFile: string | undefined): string {
  const m = /^pairs\[(\d+)\](?:\.(\w+))?$/.exec(field);
  if (!m) return flagOf(field);
  const [, index, key] = m as unknown as [string, string, string | undefined];
  if (pairsFile === undefined)
    return key === 'source' || key === 'destination' ? `--${key}` : `pairs[0]${key ? ` ${key}` : ''}`;
  return `--pairs ${pairsFile} pair ${Number(index) + 1}${key ? ` ${key}` : ''}`;
}

/** A number option as the user typed it; the library checks its range. */
function parseNumber(name: string, text: string | number): number {
  const s = String(text).trim();
  const value = s === '' ? Number.NaN : Number(s);
  if (!Number.isFinite(value)) throw new UsageError(`${name}: ${show(String(text))} is not a finite number`);
  return value;
}

function progressLine(event: EditProgress): string {
  switch (event.stage) {
    case 'open':
      return `edit: model ${event.modelDir} (${event.format}, ${event.precision}, d = ${event.d}), ${event.sites} sites selected`;
    case 'encode':
      return `edit: encoding ${event.prompts} prompts`;
    case 'solve':
      return `edit: solving for M (${event.rows} rows, d = ${event.d})`;
    case 'apply':
      return `edit: computing W' for ${event.sites} sites`;
    case 'export':
      return `edit: writing ${event.outDir}`;
  }
}

/** The human summary: what was edited, how, and a table of the sites with ‖ΔW‖/‖W‖. */
/** The human summary of --edit-only. */
export function renderEditFileResult(r: EditFileResult): string {
  const lines = [
    `Edit file written to ${r.editFile}`,
    `  source model   ${r.modelDir} (d = ${r.d})`,
    `  edit           ${r.pairs.length} pair${r.pairs.length === 1 ? '' : 's'}, λ = ${r.lambda}${r.augment ? ', with augmentations' : ''}; ${r.rows.total} rows; ${r.method} solve`,
    `  applies to     ${r.sites.length} sites (${r.projections.join(', ')}${r.layers ? `; layers ${r.layers.join(', ')}` : ''})`,
    ...r.warnings.map((w) => `  warning        ${w}`),
    `  next           time-debias apply --edit ${r.editFile} --model MODEL --out OUT   (or export-lora)`,
    `timings (ms): ${Object.entries(r.timings)
      .map(([k, v]) => `${k} ${Math.round(v)}`)
      .join(', ')}`,
  ];
  return `${lines.join('\n')}\n`;
}

export function renderEditResult(r: EditResult): string {
  const lines: string[] = [];
  lines.push(`Edited model written to ${r.outDir} (portable edit: ${r.editFile})`);
  lines.push(`  source model   ${r.modelDir} (${r.format}, ${r.precision}, d = ${r.d})`);
  lines.push(
    `  edit           ${r.pairs.length} pair${r.pairs.length === 1 ? '' : 's'}, λ = ${r.lambda}${r.augment ? ', with augmentations' : ''}; ${r.rows.total} rows; ${r.method} solve`,
  );
  for (const p of r.pairs.slice(0, 10)) {
    lines.push(`    ${show(p.source)} → ${show(p.destination)}  (λ_p = ${fmt(p.lambda)}, ${p.rows} rows)`);
  }
  if (r.pairs.length > 10) lines.push(`    … and ${r.pairs.length - 10} more (see time-edit.json)`);
  if (r.preserve) {
    const count = r.preserve.prompts.length;
    lines.push(
      `  preserved      ${count} prompt${count === 1 ? '' : 's'}, μ = ${fmt(r.preserve.weight)}, ${r.preserve.rows} rows`,
    );
  }
  const selection = [
    r.projections.length === 1 ? `${r.projections[0]} only` : null,
    r.layers ? `layers ${r.layers.join(', ')}` : null,
  ].filter(Boolean);
  lines.push(
    `  sites          ${r.sites.length} of ${r.sitesInModel}${selection.length ? ` (${selection.join('; ')})` : ''}`,
  );
  for (const w of r.warnings) lines.push(`  warning        ${w}`);
  lines.push('');
  const header = ['site', 'shape [out, d]', 'dtype', '‖ΔW‖/‖W‖'];
  const rows = r.sites.map((s) => [s.name, `[${s.out}, ${s.d}]`, s.dtype, s.relativeChange.toExponential(3)]);
  lines.push(...textTable({ header, rows, align: header.map(() => 'left') }));
  lines.push('');
  lines.push(
    `${r.sites.length} sites, ${r.parameters.toLocaleString('en-US')} parameters edited; ` +
      `timings (ms): ${Object.entries(r.timings)
        .map(([k, v]) => `${k} ${Math.round(v)}`)
        .join(', ')}`,
  );
  return `${lines.join('\n')}\n`;
}

function fmt(x: number): string {
  return Number.isInteger(x) || (Math.abs(x) >= 1e-3 && Math.abs(x) < 1e4)
    ? String(Number(x.toPrecision(6)))
    : x.toExponential(3);
}
