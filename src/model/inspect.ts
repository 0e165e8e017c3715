/**
 * `inspect`: what a model folder is and what TIME would edit in it, as a plain JSON-serializable
 * result (the CLI renders it as a table or prints it as JSON).
 */
import { relative } from 'node:path';
import type { GraphIo } from '../onnx/io.js';
import { openSdModel, type SdModel, type SdModelFormat, type SdPrecision } from './folder.js';
import { type EditSite, locateSites } from './sites.js';

export interface InspectedSite {
  name: string;
  projection: EditSite['projection'];
  /** torch layout [out, d] */
  shape: [number, number];
  layout: EditSite['layout'];
  dtype: string;
  nodeName: string;
  initializer: string;
}

export interface ModelInspection {
  kind: 'model-inspection';
  dir: string;
  format: SdModelFormat;
  formatEvidence: string;
  pipelineClass: string | null;
  precision: SdPrecision;
  /** Text width. */
  d: number;
  /** input_ids element type of the text encoder. */
  idsType: string;
  /** Component folders, relative to dir. */
  components: Record<string, string>;
  tokenizerLayout: SdModel['tokenizerLayout'];
  unetInputs: GraphIo[];
  unetOutputs: GraphIo[];
  sites: InspectedSite[];
  /** Distinct cross-attention modules the sites belong to (16 in SD 1.x). */
  crossAttentionLayers: number;
  /** Σ out × d over the sites. */
  editableParameters: number;
  /** Floating-point parameters of the UNet. */
  unetParameters: number;
  /** editableParameters / unetParameters. */
  editableShare: number;
  /** The UNet's external data file(s): path relative to dir and size in bytes. */
  externalData: { file: string; bytes: number }[];
}

export function inspectModel(dir: string): ModelInspection {
  return describeModel(openSdModel(dir));
}

/** The inspection of an already opened model. */
export function describeModel(model: SdModel): ModelInspection {
  const sites = locateSites(model);
  const editableParameters = sites.reduce((s, x) => s + x.out * x.d, 0);
  const unetParameters = Object.values(model.unetParameterDtypes).reduce((a, b) => a + b, 0);
  const components: Record<string, string> = {};
  for (const [k, v] of Object.entries(model.components)) if (v) components[k] = relative(model.dir, v);
  return {
    kind: 'model-inspection',
    dir: model.dir,
    format: model.format,
    formatEvidence: model.formatEvidence,
    pipelineClass: model.pipelineClass,
    precision: model.precision,
    d: model.d,
    idsType: model.idsType,
    components,
    tokenizerLayout: model.tokenizerLayout,
    unetInputs: model.unetIo.inputs,
    unetOutputs: model.unetIo.outputs,
    sites: sites.map((s) => ({
      name: s.name,
      projection: s.projection,
      shape: [s.out, s.d],
      layout: s.layout,
      dtype: s.dtype,
      nodeName: s.nodeName,
      initializer: s.initializer,
    })),
    crossAttentionLayers: new Set(sites.map((s) => s.name.replace(/\.(to_k|to_v)$/, ''))).size,
    editableParameters,
    unetParameters,
    editableShare: unetParameters > 0 ? editableParameters / unetParameters : 0,
    externalData: model.unetExternalData.map((f) => ({ file: relative(model.dir, f.path), bytes: f.size })),
  };
}
