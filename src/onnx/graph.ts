/**
 * Graph tracing over a decoded GraphProto: who produces a value, who consumes it, and walks through
 * the ops that carry a tensor along without mixing its rows (Cast, Identity, Reshape, ...).
 */
import type { AttributeProto, GraphProto, NodeProto } from './proto.js';
import { toNumber } from './proto.js';

export interface GraphIndex {
  graph: GraphProto;
  /** value name → the node that outputs it */
  producers: Map<string, NodeProto>;
  /** value name → nodes that take it as an input (in node order) */
  consumers: Map<string, NodeProto[]>;
  /** names of the graph's initializers */
  initializers: Set<string>;
  /** names of the graph's inputs that are not initializers */
  inputs: Set<string>;
}

export function indexGraph(graph: GraphProto): GraphIndex {
  const producers = new Map<string, NodeProto>();
  const consumers = new Map<string, NodeProto[]>();
  for (const node of graph.node ?? []) {
    for (const out of node.output ?? []) if (out) producers.set(out, node);
    for (const inp of node.input ?? []) {
      if (!inp) continue;
      const list = consumers.get(inp);
      if (list) {
        if (!list.includes(node)) list.push(node);
      } else consumers.set(inp, [node]);
    }
  }
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name ?? ''));
  const inputs = new Set((graph.input ?? []).map((v) => v.name ?? '').filter((n) => n && !initializers.has(n)));
  return { graph, producers, consumers, initializers, inputs };
}

export function getAttribute(node: NodeProto, name: string): AttributeProto | undefined {
  return (node.attribute ?? []).find((a) => a.name === name);
}

export function intAttribute(node: NodeProto, name: string, fallback: number): number {
  const a = getAttribute(node, name);
  return a && a.i !== undefined && a.i !== null ? toNumber(a.i) : fallback;
}

export function intsAttribute(node: NodeProto, name: string): number[] | undefined {
  const a = getAttribute(node, name);
  return a?.ints ? a.ints.map((v) => toNumber(v)) : undefined;
}

/** Ops whose output is their first input with rows kept intact (values, dtype or shape bookkeeping only). */
export const ROW_PRESERVING_OPS: ReadonlySet<string> = new Set([
  'Cast',
  'Identity',
  'Reshape',
  'Flatten',
  'Squeeze',
  'Unsqueeze',
  'Transpose',
]);

/**
 * True when `node` carries its first input to its output with the last axis (the feature axis)
 * kept as the last axis. Transpose must leave the last axis in place.
 */
export function keepsFeatureAxis(node: NodeProto): boolean {
  const op = node.opType ?? '';
  if (!ROW_PRESERVING_OPS.has(op)) return false;
  if (op === 'Transpose') {
    const perm = intsAttribute(node, 'perm');
    // no perm = reverse all axes: only a 1-D tensor keeps its last axis, not our case
    return perm !== undefined && perm.length > 0 && perm[perm.length - 1] === perm.length - 1;
  }
  return true;
}

/**
 * Every value derived from `start` through `follow` nodes (start included). `follow(node)` decides
 * whether a consumer passes the value on through its first output; only edges into input 0 count.
 */
export function forwardClosure(index: GraphIndex, start: string, follow: (node: NodeProto) => boolean): Set<string> {
  const seen = new Set<string>([start]);
  const queue = [start];
  while (queue.length) {
    const value = queue.shift() as string;
    for (const node of index.consumers.get(value) ?? []) {
      if ((node.input ?? [])[0] !== value || !follow(node)) continue;
      const out = (node.output ?? [])[0];
      if (out && !seen.has(out)) {
        seen.add(out);
        queue.push(out);
      }
    }
  }
  return seen;
}

/**
 * Walk backwards from `value` through nodes accepted by `through` (following input 0) and return
 * the first value that is not produced by such a node: an initializer, graph input or other output.
 */
export function traceBack(index: GraphIndex, value: string, through: (node: NodeProto) => boolean): string {
  let current = value;
  const seen = new Set<string>();
  while (!seen.has(current)) {
    seen.add(current);
    const node = index.producers.get(current);
    if (!node || !through(node)) return current;
    const first = (node.input ?? [])[0];
    if (!first) return current;
    current = first;
  }
  return current;
}
