/**
 * The edit sites of TIME (mission.md §1, §3): the key and value projections of every text
 * cross-attention, found by STRUCTURE, never by class or node names (the reference code's pitfall:
 * a renamed class made it silently edit nothing). A site is a MatMul or Gemm
 *
 *   - whose activation operand derives from the UNet input `encoder_hidden_states` through ops that
 *     keep the token rows and the feature axis (Cast, Identity, Reshape, Flatten, (Un)Squeeze,
 *     Transpose that keeps the last axis), and
 *   - whose weight is a 2-D initializer with one dimension equal to the text width d.
 *
 * Layouts (torch stores W as [out, d]; y = W c):
 *   'transposed'  MatMul(c, Wᵀ) with the initializer [d, out] (the exporters), or Gemm transB = 0
 *   'direct'      Gemm(c, W, transB = 1) with the initializer [out, d]
 *
 * Names come from the node name when it carries the diffusers module path
 * (`/down_blocks.1/attentions.0/transformer_blocks.0/attn2/to_k/MatMul` →
 * `down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k`), else from the initializer. Whether
 * a site is the key or the value projection comes from the name, else from the graph: the value
 * projection meets the attention probabilities (a Softmax output) at its MatMul, the key does not.
 *
 * Refused: no site at all (the message says what was searched), weights next to
 * encoder_hidden_states whose dims do not contain d, and K/V packed into one weight as
 * onnxruntime/Olive optimizers do (a projection that feeds a Split/Slice or a fused attention op,
 * or one site per attention module with twice the query width).
 */

import {
  forwardClosure,
  type GraphIndex,
  indexGraph,
  intAttribute,
  keepsFeatureAxis,
  traceBack,
} from '../onnx/graph.js';
import { float32ToBytes, type OnnxModelFile, readTensorFloat32 } from '../onnx/model-file.js';
import type { NodeProto } from '../onnx/proto.js';
import { EditError, ModelFormatError, show } from '../util/errors.js';

export type SiteProjection = 'to_k' | 'to_v';
export type SiteLayout = 'transposed' | 'direct';

export interface EditSite {
  /** diffusers module path, e.g. "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k" (or the initializer's name). */
  name: string;
  projection: SiteProjection;
  /** The MatMul/Gemm node. */
  nodeName: string;
  opType: 'MatMul' | 'Gemm';
  /** The weight initializer. */
  initializer: string;
  layout: SiteLayout;
  /** Text width (columns of W in torch layout). */
  d: number;
  /** Output width (rows of W in torch layout). */
  out: number;
  /** Stored element type: 'float32' | 'float16' | 'bfloat16' | 'float64'. */
  dtype: string;
  /** ONNX data type number of the stored weight. */
  dataType: number;
  /** Stored dims: [d, out] ('transposed') or [out, d] ('direct'). */
  storedDims: [number, number];
}

/** What locateSites needs: the opened UNet and the text width. An SdModel fits. */
export interface SiteModel {
  unet: OnnxModelFile;
  d: number;
}

const EHS = 'encoder_hidden_states';
const FLOAT_TYPES = new Set(['float32', 'float16', 'bfloat16', 'float64']);

/** Ops the K/V output may pass through on its way to the attention product (reshapes, scaling, bias). */
const CARRY_OPS = new Set(['Reshape', 'Transpose', 'Cast', 'Identity', 'Mul', 'Div', 'Add', 'Unsqueeze', 'Squeeze']);
/** Ops that only move data around (for tracing the other operand of the attention MatMul back). */
const MOVE_OPS = new Set(['Reshape', 'Transpose', 'Cast', 'Identity', 'Unsqueeze', 'Squeeze', 'Dropout']);

interface Candidate {
  node: NodeProto;
  opType: 'MatMul' | 'Gemm';
  initializer: string;
  dims: [number, number];
}

/** Locate every text cross-attention key/value projection of the UNet. */
export function locateSites(model: SiteModel): EditSite[] {
  const { unet, d } = model;
  const index = indexGraph(unet.graph);
  if (!index.inputs.has(EHS)) {
    throw new ModelFormatError(
      `${show(unet.path)}: the UNet has no graph input named "${EHS}"; cannot locate the cross-attention sites`,
    );
  }
  const derived = forwardClosure(index, EHS, keepsFeatureAxis);
  const candidates: Candidate[] = [];
  const offWidth: string[] = [];
  for (const value of derived) {
    for (const node of index.consumers.get(value) ?? []) {
      const op = node.opType;
      if (op !== 'MatMul' && op !== 'Gemm') continue;
      const inputs = node.input ?? [];
      if (inputs[0] !== value) continue; // activation must be the left operand
      if (op === 'Gemm' && intAttribute(node, 'transA', 0) !== 0) continue;
      const weightName = traceBack(index, inputs[1] ?? '', (n) => n.opType === 'Identity');
      const init = unet.initializerByName.get(weightName);
      if (init?.dims.length !== 2 || !FLOAT_TYPES.has(init.dtype)) continue;
      const dims = init.dims as [number, number];
      if (!dims.includes(d)) {
        offWidth.push(`${node.name || '(unnamed node)'} weight ${show(weightName)} [${dims}]`);
        continue;
      }
      if (candidates.some((c) => c.node === node)) continue;
      candidates.push({ node, opType: op, initializer: weightName, dims });
    }
  }
  if (candidates.length === 0) {
    if (offWidth.length) {
      throw new ModelFormatError(
        `${show(unet.path)}: text width mismatch: the projections of ${EHS} have weights ${offWidth.slice(0, 4).join('; ')}${offWidth.length > 4 ? ` (+${offWidth.length - 4} more)` : ''}, none with a dimension equal to the text width d = ${d}`,
      );
    }
    throw new ModelFormatError(
      `${show(unet.path)}: no cross-attention sites found: searched for MatMul/Gemm nodes whose activation derives from the input "${EHS}" (through Cast, Identity, Reshape, Flatten, Squeeze, Unsqueeze, Transpose keeping the last axis) and whose weight is a 2-D float initializer with a dimension equal to d = ${d}; ${derived.size} values derive from ${EHS}, none feeds such a node`,
    );
  }

  rejectPackedCandidates(unet, index, candidates);
  const sites = candidates.map((c) => describeSite(unet, index, c, d));
  rejectPackedModules(unet, index, sites);
  const seen = new Map<string, EditSite>();
  for (const s of sites) {
    const other = seen.get(s.name);
    if (other) {
      throw new ModelFormatError(
        `${show(unet.path)}: two sites would be named ${show(s.name)} (nodes ${show(other.nodeName)} and ${show(s.nodeName)}); the graph's node names are ambiguous`,
      );
    }
    seen.set(s.name, s);
  }
  return sites;
}

function describeSite(unet: OnnxModelFile, index: GraphIndex, c: Candidate, d: number): EditSite {
  const init = unet.initializerByName.get(c.initializer);
  if (!init) throw new ModelFormatError(`${show(unet.path)}: no initializer ${show(c.initializer)}`);
  let layout: SiteLayout;
  if (c.opType === 'Gemm') layout = intAttribute(c.node, 'transB', 0) === 1 ? 'direct' : 'transposed';
  else layout = 'transposed';
  // The activation's width is d: for [d, out] (transposed) the first dim must be d; for [out, d] the second.
  const [a, b] = c.dims;
  if ((layout === 'transposed' && a !== d) || (layout === 'direct' && b !== d)) {
    throw new ModelFormatError(
      `${show(unet.path)}: text width mismatch at ${show(c.node.name ?? '')}: weight ${show(c.initializer)} is [${c.dims}] (${layout}), so it takes inputs of width ${layout === 'transposed' ? a : b}, not d = ${d}`,
    );
  }
  const out = layout === 'transposed' ? b : a;
  const nodeName = c.node.name ?? '';
  const fromName = moduleFromNodeName(nodeName);
  const projection = fromName?.projection ?? projectionFromGraph(index, c.node);
  if (!projection) {
    throw new ModelFormatError(
      `${show(unet.path)}: cannot tell whether ${show(nodeName || c.initializer)} is a key or a value projection: its node name has no to_k/to_v and its output does not reach an attention product`,
    );
  }
  const name = fromName?.module ?? `${c.initializer.replace(/[^A-Za-z0-9_.]+/g, '_')}.${projection}`;
  return {
    name,
    projection,
    nodeName,
    opType: c.opType,
    initializer: c.initializer,
    layout,
    d,
    out,
    dtype: init.dtype,
    dataType: init.dataType,
    storedDims: [a, b],
  };
}

/**
 * `/down_blocks.1/attentions.0/transformer_blocks.0/attn2/to_k/MatMul` →
 * { module: 'down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k', projection: 'to_k' }.
 * Undefined when the name does not end in `/to_k/<op>` or `/to_v/<op>`.
 */
export function moduleFromNodeName(nodeName: string): { module: string; projection: SiteProjection } | undefined {
  const parts = nodeName.split('/').filter(Boolean);
  if (parts.length < 2) return undefined;
  const projection = parts[parts.length - 2];
  if (projection !== 'to_k' && projection !== 'to_v') return undefined;
  return { module: parts.slice(0, -1).join('.'), projection };
}

/** Key or value, from the graph: does the projection meet softmax probabilities at its MatMul? */
function projectionFromGraph(index: GraphIndex, node: NodeProto): SiteProjection | undefined {
  let frontier = [(node.output ?? [])[0] ?? ''];
  const seen = new Set(frontier);
  for (let step = 0; step < 8 && frontier.length; step++) {
    const next: string[] = [];
    for (const value of frontier) {
      for (const consumer of index.consumers.get(value) ?? []) {
        const op = consumer.opType ?? '';
        if (op === 'MatMul' || op === 'Einsum') {
          const other = (consumer.input ?? []).find((v) => v !== value) ?? '';
          const origin = traceBack(index, other, (n) => MOVE_OPS.has(n.opType ?? ''));
          return index.producers.get(origin)?.opType === 'Softmax' ? 'to_v' : 'to_k';
        }
        if (!CARRY_OPS.has(op)) continue;
        const out = (consumer.output ?? [])[0];
        if (out && !seen.has(out)) {
          seen.add(out);
          next.push(out);
        }
      }
    }
    frontier = next;
  }
  return undefined;
}

function packedMessage(unet: OnnxModelFile, what: string): string {
  return `${show(unet.path)}: ${what}: this graph packs the key and value projections into one weight, as onnxruntime/Olive graph optimizers do; TIME edits W_K and W_V separately, so use the plain exporter's model (diffusers or Optimum export without optimization)`;
}

/** Refuse K/V packed into one weight (onnxruntime/Olive fused attention): names, Split/Slice, fused attention ops. */
function rejectPackedCandidates(unet: OnnxModelFile, index: GraphIndex, candidates: Candidate[]): void {
  for (const c of candidates) {
    const label = show(c.node.name || c.initializer);
    // (1) names saying K and V are packed
    if (/(^|[/_.])(to_kv|kv_proj|to_qkv|qkv_proj)([/_.]|$)/i.test(c.node.name ?? '')) {
      throw new ModelFormatError(packedMessage(unet, `node ${label} is a packed projection`));
    }
    // (2) the projection's output is split, or fed to a fused attention op as packed K/V (no separate value)
    let frontier = [(c.node.output ?? [])[0] ?? ''];
    const seen = new Set(frontier);
    for (let step = 0; step < 4 && frontier.length; step++) {
      const next: string[] = [];
      for (const value of frontier) {
        for (const consumer of index.consumers.get(value) ?? []) {
          const op = consumer.opType ?? '';
          const inputs = consumer.input ?? [];
          if (op === 'Split' || op === 'Slice') {
            throw new ModelFormatError(
              packedMessage(unet, `${label} (weight [${c.dims}]) feeds a ${op} node ${show(consumer.name ?? '')}`),
            );
          }
          if (/Attention/.test(op) && inputs.indexOf(value) === 1 && !inputs[2]) {
            throw new ModelFormatError(
              packedMessage(
                unet,
                `${label} (weight [${c.dims}]) feeds ${op} ${show(consumer.name ?? '')} as packed key/value`,
              ),
            );
          }
          if (!['Reshape', 'Transpose', 'Add', 'Cast', 'Identity'].includes(op)) continue;
          const out = (consumer.output ?? [])[0];
          if (out && !seen.has(out)) {
            seen.add(out);
            next.push(out);
          }
        }
      }
      frontier = next;
    }
  }
}

/** Refuse one site per attention module whose width is twice the module's query width. */
function rejectPackedModules(unet: OnnxModelFile, index: GraphIndex, sites: EditSite[]): void {
  const byModule = new Map<string, EditSite[]>();
  for (const s of sites) {
    const parts = s.nodeName.split('/').filter(Boolean);
    if (parts.length < 3) continue;
    const module = parts.slice(0, -2).join('/');
    byModule.set(module, [...(byModule.get(module) ?? []), s]);
  }
  for (const [module, list] of byModule) {
    if (list.length !== 1) continue;
    const s = list[0] as EditSite;
    const q = (unet.graph.node ?? []).find(
      (n) => n.name === `/${module}/to_q/MatMul` || n.name === `/${module}/to_q/Gemm`,
    );
    const qWeight = q
      ? unet.initializerByName.get(traceBack(index, (q.input ?? [])[1] ?? '', (n) => n.opType === 'Identity'))
      : undefined;
    const qOut =
      qWeight?.dims.length === 2
        ? q?.opType === 'Gemm' && intAttribute(q, 'transB', 0) === 1
          ? qWeight.dims[0]
          : qWeight.dims[1]
        : undefined;
    if (qOut !== undefined && s.out === 2 * qOut) {
      throw new ModelFormatError(
        packedMessage(
          unet,
          `${show(s.nodeName)} is the only projection of ${show(module)} and its width ${s.out} is twice the query width ${qOut}`,
        ),
      );
    }
  }
}

/** The site's weight in TORCH layout [out, d] (row-major), as float32. Reads only that tensor. */
export function readSiteWeight(model: SiteModel, site: EditSite): Float32Array {
  const { W, transposed } = readSiteWeightStored(model, site);
  return transposed ? transpose(W, site.d, site.out) : W; // [d, out] → [out, d]
}

/**
 * The site's weight as stored (no transpose): Wᵀ [d, out] for the exporter's MatMul layout
 * (`transposed: true`), W [out, d] for a Gemm with transB. Feeds applyEdit without copying it twice.
 */
export function readSiteWeightStored(model: SiteModel, site: EditSite): { W: Float32Array; transposed: boolean } {
  const init = model.unet.initializerByName.get(site.initializer);
  if (!init)
    throw new ModelFormatError(
      `${show(model.unet.path)} has no initializer ${show(site.initializer)} (site ${show(site.name)})`,
    );
  return { W: readTensorFloat32(model.unet, init), transposed: site.layout !== 'direct' };
}

/**
 * Store W back in the site's layout and dtype: W in torch layout [out, d] (float32), or already in
 * the stored layout when `stored` (e.g. from readSiteWeightStored + applyEdit).
 */
export function toStoredBytes(site: EditSite, W: Float32Array, stored = false): Uint8Array {
  if (W.length !== site.out * site.d) {
    throw new EditError(
      `weights for site ${show(site.name)}: ${W.length} values given, expected out × d = ${site.out} × ${site.d} = ${site.out * site.d} (torch layout [out, d])`,
    );
  }
  const data = stored || site.layout === 'direct' ? W : transpose(W, site.out, site.d); // [out, d] → [d, out]
  return float32ToBytes(data, site.dataType, `site ${show(site.name)}`);
}

/** Row-major [rows, cols] → [cols, rows], in 32 × 32 tiles (stays in cache for the widths of SD). */
function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  const T = 32;
  for (let r0 = 0; r0 < rows; r0 += T) {
    const r1 = Math.min(r0 + T, rows);
    for (let c0 = 0; c0 < cols; c0 += T) {
      const c1 = Math.min(c0 + T, cols);
      for (let r = r0; r < r1; r++) {
        const base = r * cols;
        for (let c = c0; c < c1; c++) out[c * rows + r] = a[base + c] as number;
      }
    }
  }
  return out;
}
