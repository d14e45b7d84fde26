/**
 * The few layer-level building blocks every model file shares (a tiny `torch.nn`): each takes its
 * weights from a `Params` scope under the official names and emits plain ONNX ops.
 */
import type { Value } from './graph.js';
import { Graph } from './graph.js';
import type { Params } from './params.js';
import { ones, torchDefault, zeros } from './params.js';
import { assertStatic } from './shapes.js';
import type { Dim } from './tensor.js';
import { float32, int64 } from './tensor.js';

export interface Conv2dOptions {
  cout: number;
  k: number;
  stride?: number;
  /** Symmetric padding; default k//2 (same-size for odd k at stride 1). */
  pad?: number;
  groups?: number;
  bias?: boolean;
}

export interface BatchNorm {
  readonly weight: Float32Array;
  readonly bias: Float32Array;
  readonly mean: Float32Array;
  readonly variance: Float32Array;
  readonly eps: number;
}

export interface ConvWeights {
  readonly weight: Float32Array;
  readonly bias?: Float32Array;
  readonly shape: readonly [number, number, number, number];
}

const channels = (x: Value): number => assertStatic(x.shape.slice(1, 2), 'channel dim')[0];

/** nn.Conv2d's parameters: `weight` [cout, cin/groups, k, k] and `bias` [cout]. */
export function convWeights(p: Params, cin: number, o: Conv2dOptions): ConvWeights {
  const groups = o.groups ?? 1;
  const fanIn = (cin / groups) * o.k * o.k;
  const shape = [o.cout, cin / groups, o.k, o.k] as const;
  const weight = p.param('weight', shape, torchDefault(fanIn));
  const bias = o.bias === false ? undefined : p.param('bias', [o.cout], torchDefault(fanIn));
  return { weight, bias, shape };
}

/** nn.BatchNorm2d's parameters and running statistics. */
export function batchNorm(p: Params, c: number, eps: number): BatchNorm {
  return {
    weight: p.param('weight', [c], ones),
    bias: p.param('bias', [c], zeros),
    mean: p.buffer('running_mean', [c], zeros),
    variance: p.buffer('running_var', [c], ones),
    eps,
  };
}

/** Folds an inference-mode BatchNorm into the preceding convolution: w·γ/σ and (b − μ)·γ/σ + β. */
export function foldBatchNorm(w: ConvWeights, bn: BatchNorm): ConvWeights {
  const [cout] = w.shape;
  const per = w.weight.length / cout;
  const weight = new Float32Array(w.weight.length);
  const bias = new Float32Array(cout);
  for (let o = 0; o < cout; o++) {
    const s = bn.weight[o] / Math.sqrt(bn.variance[o] + bn.eps);
    for (let i = 0; i < per; i++) weight[o * per + i] = w.weight[o * per + i] * s;
    bias[o] = ((w.bias?.[o] ?? 0) - bn.mean[o]) * s + bn.bias[o];
  }
  return { weight, bias, shape: w.shape };
}

/** Emits a Conv node from weights already fetched (and possibly folded). */
export function emitConv(g: Graph, x: Value, w: ConvWeights, name: string, o: { stride?: number; pad?: number; groups?: number }): Value {
  const k = w.shape[2];
  const pad = o.pad ?? Math.floor(k / 2);
  const W = g.initializer(`${name}.weight`, float32([...w.shape], w.weight));
  const B = w.bias ? g.initializer(`${name}.bias`, float32([w.shape[0]], w.bias)) : null;
  const stride = o.stride ?? 1;
  return g.op1('Conv', B ? [x, W, B] : [x, W], { kernel_shape: [k, k], strides: [stride, stride], pads: [pad, pad, pad, pad], group: o.groups ?? 1 });
}

export function conv2d(g: Graph, p: Params, x: Value, o: Conv2dOptions): Value {
  return emitConv(g, x, convWeights(p, channels(x), o), p.prefix, o);
}

export interface ConvBnOptions extends Conv2dOptions {
  eps: number;
  /** Keep the BatchNormalization node instead of folding it (the unfused twin used by tests). */
  unfolded?: boolean;
}

/** Conv2d then BatchNorm2d, the two under their own official scopes; folded into one Conv unless asked not to. */
export function convBn(g: Graph, pConv: Params, pBn: Params, x: Value, o: ConvBnOptions): Value {
  const w = convWeights(pConv, channels(x), o);
  const bn = batchNorm(pBn, o.cout, o.eps);
  if (!o.unfolded) return emitConv(g, x, foldBatchNorm(w, bn), pConv.prefix, o);
  const y = emitConv(g, x, w, pConv.prefix, o);
  const t = (name: string, v: Float32Array) => g.initializer(`${pBn.prefix}.${name}`, float32([o.cout], v));
  return g.op1('BatchNormalization', [y, t('weight', bn.weight), t('bias', bn.bias), t('running_mean', bn.mean), t('running_var', bn.variance)], { epsilon: bn.eps });
}

export const silu = (g: Graph, x: Value): Value => g.op1('Mul', [x, g.op1('Sigmoid', [x])]);

export function maxPool2d(g: Graph, x: Value, k: number, stride: number, pad: number): Value {
  return g.op1('MaxPool', [x], { kernel_shape: [k, k], strides: [stride, stride], pads: [pad, pad, pad, pad] });
}

/** nn.Upsample(scale_factor, mode='nearest') as torch exports it: asymmetric coordinates, floor. */
export function upsampleNearest(g: Graph, x: Value, factor: number): Value {
  const scales = g.constant(float32([4], [1, 1, factor, factor]), 'scales');
  return g.op1('Resize', [x, null, scales], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
}

export const concat = (g: Graph, xs: readonly Value[], axis: number): Value => g.op1('Concat', xs, { axis });

/** Target dims: numbers, or the input's own symbolic dim at the same index (written as 0, "copy"). */
export function reshape(g: Graph, x: Value, shape: readonly Dim[]): Value {
  const target = shape.map((d, i) => {
    if (typeof d === 'number') return d;
    if (x.shape[i] !== d) throw new Error(`reshape: symbolic dim ${d} must keep its position ${i}`);
    return 0;
  });
  return g.op1('Reshape', [x, g.constant(int64(target), 'shape')]);
}

export const transpose = (g: Graph, x: Value, perm: readonly number[]): Value => g.op1('Transpose', [x], { perm });

export function slice(g: Graph, x: Value, axis: number, start: number, end: number): Value {
  const c = (v: number) => g.constant(int64([v]), 'slice');
  return g.op1('Slice', [x, c(start), c(end), c(axis)]);
}
