/**
 * Read a model's graph inputs and outputs (names, element types, shapes) without loading the file:
 * the ModelProto and GraphProto are walked at wire level with positioned reads, every other field
 * (nodes, initializers — hundreds of MB in an inline text encoder) is skipped by its length.
 */
import { closeSync, fstatSync, openSync } from 'node:fs';
import { resolve } from 'node:path';
import { ModelFormatError, show } from '../util/errors.js';
import { FileCursor } from './file-cursor.js';
import type { ValueInfoProto } from './proto.js';
import { DATA_TYPE_NAMES, onnx, toNumber } from './proto.js';
import { GRAPH_INITIALIZER_FIELD, MODEL_GRAPH_FIELD, WIRE } from './wire.js';

/** One graph input or output: dtype like 'float32', shape with symbolic dims as strings (or '?' when unnamed). */
export interface GraphIo {
  name: string;
  dtype: string;
  shape: (number | string)[];
}

export interface ModelIo {
  path: string;
  inputs: GraphIo[];
  outputs: GraphIo[];
  /** Opset of the default domain, when declared. */
  opset?: number;
  irVersion: number;
}

const GRAPH_INPUT_FIELD = 11;
const GRAPH_OUTPUT_FIELD = 12;
const MODEL_IR_VERSION_FIELD = 1;
const MODEL_OPSET_FIELD = 8;

function ioOf(v: ValueInfoProto): GraphIo {
  const t = v.type?.tensorType;
  const dtype = DATA_TYPE_NAMES[t?.elemType ?? 0] ?? `type${t?.elemType ?? '?'}`;
  const shape = (t?.shape?.dim ?? []).map((d): number | string => {
    if (d.dimParam) return d.dimParam;
    // decoded messages carry set fields as own properties (defaults live on the prototype)
    if (Object.hasOwn(d, 'dimValue')) return toNumber(d.dimValue);
    return '?';
  });
  return { name: v.name ?? '', dtype, shape };
}

/** Inputs (initializers excluded) and outputs of the model at `path`. ModelFormatError when unreadable. */
export function readModelIo(path: string): ModelIo {
  const abs = resolve(path);
  let fd: number;
  try {
    fd = openSync(abs, 'r');
  } catch (cause) {
    throw new ModelFormatError(`ONNX model file ${show(abs)} does not exist or cannot be opened`, { cause });
  }
  try {
    const size = fstatSync(fd).size;
    if (size === 0) throw new ModelFormatError(`${show(abs)} is empty; it is not an ONNX model`);
    const c = new FileCursor(fd, size);
    const inputs: ValueInfoProto[] = [];
    const outputs: ValueInfoProto[] = [];
    const initializerNames = new Set<string>();
    let irVersion = 0;
    let opset: number | undefined;
    let graphs = 0;
    try {
      while (c.pos < size) {
        const tag = c.varint();
        const field = Math.floor(tag / 8);
        const wireType = tag % 8;
        if (field === 0) throw new RangeError(`invalid field number 0 at byte ${c.pos}`);
        if (field === MODEL_IR_VERSION_FIELD && wireType === WIRE.VARINT) irVersion = c.varint();
        else if (field === MODEL_OPSET_FIELD && wireType === WIRE.BYTES) {
          const op = onnx.OperatorSetIdProto.decode(c.read(c.varint()));
          if (!op.domain || op.domain === 'ai.onnx') opset = toNumber(op.version);
        } else if (field === MODEL_GRAPH_FIELD && wireType === WIRE.BYTES) {
          graphs++;
          const length = c.varint();
          const end = c.pos + length;
          if (end > size) throw new RangeError(`graph of ${length} bytes runs past the end of the file`);
          while (c.pos < end) {
            const gtag = c.varint();
            const gfield = Math.floor(gtag / 8);
            const gwire = gtag % 8;
            if (gfield === 0) throw new RangeError(`invalid field number 0 at byte ${c.pos}`);
            if ((gfield === GRAPH_INPUT_FIELD || gfield === GRAPH_OUTPUT_FIELD) && gwire === WIRE.BYTES) {
              const v = onnx.ValueInfoProto.decode(c.read(c.varint()));
              (gfield === GRAPH_INPUT_FIELD ? inputs : outputs).push(v);
            } else if (gfield === GRAPH_INITIALIZER_FIELD && gwire === WIRE.BYTES) {
              // only the name is needed (older IR lists initializers among the inputs)
              const tlen = c.varint();
              const tend = c.pos + tlen;
              while (c.pos < tend) {
                const ttag = c.varint();
                if (Math.floor(ttag / 8) === 8 && ttag % 8 === WIRE.BYTES) {
                  initializerNames.add(new TextDecoder().decode(c.read(c.varint())));
                } else c.skip(ttag % 8, tend);
              }
              c.pos = tend;
            } else c.skip(gwire, end);
          }
        } else c.skip(wireType, size);
      }
    } catch (cause) {
      throw new ModelFormatError(
        `${show(abs)} is not an ONNX model (protobuf decoding failed: ${(cause as Error).message})`,
        {
          cause,
        },
      );
    }
    if (graphs === 0 || (inputs.length === 0 && outputs.length === 0)) {
      throw new ModelFormatError(`${show(abs)} is not an ONNX model (no graph with inputs or outputs)`);
    }
    return {
      path: abs,
      inputs: inputs.filter((v) => !initializerNames.has(v.name ?? '')).map(ioOf),
      outputs: outputs.map(ioOf),
      ...(opset !== undefined ? { opset } : {}),
      irVersion,
    };
  } finally {
    closeSync(fd);
  }
}

/** Graph inputs/outputs of an already decoded graph, in the same shape. */
export function graphIo(graph: {
  input?: ValueInfoProto[] | null;
  output?: ValueInfoProto[] | null;
  initializer?: { name?: string | null }[] | null;
}): {
  inputs: GraphIo[];
  outputs: GraphIo[];
} {
  const inits = new Set((graph.initializer ?? []).map((t) => t.name ?? ''));
  return {
    inputs: (graph.input ?? []).filter((v) => !inits.has(v.name ?? '')).map(ioOf),
    outputs: (graph.output ?? []).map(ioOf),
  };
}
