/**
 * LeYOLO (specs/models-b.md §1; LilianHollard/LeYOLO, an ultralytics 8.1.4 fork): the layer table of
 * `leyolonano.yaml` / `leyolosmall.yaml`, `mn_conv`, the MobileNetV3-style inverted bottleneck, SPPF,
 * the FPAN and the DNiN Detect head, with the DFL decode inside the graph. Module paths are the
 * official ones (`model.3.layers.1.c.weight`), so the checkpoint maps one-to-one.
 */
import type { Value } from './graph/graph.js';
import { Graph } from './graph/graph.js';
import type { Params } from './graph/params.js';
import { torchDefault } from './graph/params.js';
import { concat, conv2d, convBn, maxPool2d, reshape, silu, slice, upsampleNearest } from './graph/nn.js';
import { float32 } from './graph/tensor.js';

export interface LeYoloConfig {
  readonly width: number;
  readonly maxChannels: number;
  /** Expansion of layer 22 (the first P3 block of the FPAN); `null` means c_mid = c1 (Small). */
  readonly e22: number | null;
  readonly numClasses: number;
}

export const variants = {
  nano: { width: 1.0, maxChannels: 576, e22: 96, numClasses: 80 },
  small: { width: 1.33, maxChannels: 576, e22: null, numClasses: 80 },
} satisfies Record<string, LeYoloConfig>;
export type LeYoloVariant = keyof typeof variants;

/** ultralytics 8.1.4 predict pre-processing: square letterbox, pad 114, RGB, /255, no mean/std. */
export const preprocess = { size: 640, letterbox: { pad: 114 }, scale: 1 / 255, rgb: true } as const;
export const STRIDES = [8, 16, 32] as const;
export const REG_MAX = 16;
/** ultralytics initialises every BatchNorm with eps 1e-3 (`initialize_weights`). */
export const BN_EPS = 1e-3;
/** Input sides must be multiples of the largest stride. */
export const SIZE_MULTIPLE = 32;

type Layer =
  | { from: number; m: 'mn_conv'; c2: number; k: number; s: number }
  | { from: number; m: 'ib'; c2: number; k: number; e: number | 'e22'; s: number; pw?: false }
  | { from: number; m: 'sppf'; c2: number; k: number }
  | { from: number; m: 'upsample' }
  | { from: readonly number[]; m: 'concat' };

const ib = (c2: number, k: number, e: number | 'e22', s: number, pw?: false): Layer => ({ from: -1, m: 'ib', c2, k, e, s, pw });

/** The YAML's layer list (unscaled channels), index = module index `model.N`. */
const LAYERS: readonly Layer[] = [
  { from: -1, m: 'mn_conv', c2: 16, k: 3, s: 2 },
  { from: -1, m: 'mn_conv', c2: 16, k: 1, s: 1 },
  ib(16, 3, 16, 2, false), ib(32, 3, 96, 2), ib(32, 3, 96, 1),
  ib(64, 5, 96, 2), ib(64, 5, 192, 1), ib(64, 5, 192, 1), ib(64, 5, 192, 1), ib(64, 5, 192, 1),
  ib(96, 5, 576, 2), ib(96, 5, 576, 1), ib(96, 5, 576, 1), ib(96, 5, 576, 1),
  { from: -1, m: 'sppf', c2: 96, k: 5 },
  { from: -1, m: 'upsample' }, { from: [-1, 9], m: 'concat' },
  ib(64, 5, 128, 1), ib(64, 5, 128, 1), ib(64, 5, 128, 1),
  { from: -1, m: 'upsample' }, { from: [-1, 4], m: 'concat' },
  ib(32, 3, 'e22', 1, false), ib(32, 3, 64, 1), ib(32, 3, 64, 1),
  { from: -1, m: 'mn_conv', c2: 64, k: 3, s: 2 }, { from: [-1, 19], m: 'concat' },
  ib(64, 5, 128, 1), ib(64, 5, 128, 1), ib(64, 5, 128, 1),
  { from: -1, m: 'mn_conv', c2: 96, k: 3, s: 2 }, { from: [-1, 14], m: 'concat' },
  ib(96, 5, 192, 1), ib(96, 5, 192, 1), ib(96, 5, 192, 1),
];
const DETECT_FROM = [24, 29, 34] as const;
const DETECT_INDEX = LAYERS.length; // model.35

export interface BuildOptions {
  /** Keep BatchNormalization nodes (the unfolded twin for tests). */
  unfoldedBn?: boolean;
  /** Also output `raw` [batch, 64 + nc, N], the head before DFL decode (tests check the decode against it). */
  rawOutput?: boolean;
}

/** parse_model's channel scaling: make_divisible(min(c, max_channels) · width, 8), rounding up. */
const scaleChannels = (c: number, cfg: LeYoloConfig) => Math.ceil((Math.min(c, cfg.maxChannels) * cfg.width) / 8) * 8;

const channelsOf = (x: Value) => x.shape[1] as number;

/** mn_conv: Conv2d with bias → BN → SiLU; padding 0 when k == s, else k//2. */
function mnConv(g: Graph, p: Params, x: Value, c2: number, k: number, s: number, o: BuildOptions, groups = 1): Value {
  const pad = k === s ? 0 : Math.floor(k / 2);
  return silu(g, convBn(g, p.scope('c'), p.scope('bn'), x, { cout: c2, k, stride: s, pad, groups, bias: true, eps: BN_EPS, unfolded: o.unfoldedBn }));
}

/** ultralytics `Conv`: Conv2d without bias → BN → SiLU, autopad k//2. */
function ultraConv(g: Graph, p: Params, x: Value, c2: number, k: number, o: BuildOptions, groups = 1): Value {
  return silu(g, convBn(g, p.scope('conv'), p.scope('bn'), x, { cout: c2, k, groups, bias: false, eps: BN_EPS, unfolded: o.unfoldedBn }));
}

/** MobileNetV3_BLOCK: [pw mn_conv] → dw mn_conv → 1×1 Conv2d (bias) → BN, no activation; residual iff c1 == c2 and stride 1. The `sa` flag is ignored, as in the official code. */
function invertedBottleneck(g: Graph, p: Params, x: Value, c2: number, k: number, cMid: number, s: number, pw: boolean, o: BuildOptions): Value {
  const c1 = channelsOf(x);
  let i = 0;
  let y = x;
  if (pw) y = mnConv(g, p.scope(`layers.${i++}`), y, cMid, 1, 1, o);
  y = mnConv(g, p.scope(`layers.${i++}`), y, cMid, k, s, o, cMid);
  y = convBn(g, p.scope(`layers.${i}`), p.scope(`layers.${i + 1}`), y, { cout: c2, k: 1, pad: 0, bias: true, eps: BN_EPS, unfolded: o.unfoldedBn });
  return c1 === c2 && s === 1 ? g.op1('Add', [x, y]) : y;
}

/** SPPF: cv1 (c1/2) → three chained 5×5 max-pools → concat of the four → cv2. */
function sppf(g: Graph, p: Params, x: Value, c2: number, k: number, o: BuildOptions): Value {
  const h = ultraConv(g, p.scope('cv1'), x, channelsOf(x) / 2, 1, o);
  const y1 = maxPool2d(g, h, k, 1, Math.floor(k / 2));
  const y2 = maxPool2d(g, y1, k, 1, Math.floor(k / 2));
  const y3 = maxPool2d(g, y2, k, 1, Math.floor(k / 2));
  return ultraConv(g, p.scope('cv2'), concat(g, [h, y1, y2, y3], 1), c2, 1, o);
}

/** One DNiN branch: pointwise Conv → two depthwise 3×3 Conv → pointwise Conv2d with bias. */
function dninBranch(g: Graph, p: Params, x: Value, c: number, cout: number, biasValue: number, o: BuildOptions): Value {
  let y = ultraConv(g, p.scope(0), x, c, 1, o);
  y = ultraConv(g, p.scope(1), y, c, 3, o, c);
  y = ultraConv(g, p.scope(2), y, c, 3, o, c);
  const last = p.scope(3);
  const weight = last.param('weight', [cout, c, 1, 1], torchDefault(c));
  // Seeded builds take ultralytics' Detect.bias_init values, so an untrained model predicts (almost) nothing.
  const bias = last.param('bias', [cout], { kind: 'const', value: biasValue });
  const W = g.initializer(`${last.prefix}.weight`, float32([cout, c, 1, 1], weight));
  const B = g.initializer(`${last.prefix}.bias`, float32([cout], bias));
  return g.op1('Conv', [y, W, B], { kernel_shape: [1, 1] });
}

/** Anchor centres (x+0.5, y+0.5) per level, row-major, and the stride of each anchor (make_anchors). */
export function anchorPoints(size: number): { points: Float32Array; strides: Float32Array; count: number } {
  const count = STRIDES.reduce((n, s) => n + (size / s) ** 2, 0);
  const points = new Float32Array(2 * count);
  const strides = new Float32Array(count);
  let a = 0;
  for (const s of STRIDES) {
    const n = size / s;
    for (let y = 0; y < n; y++)
      for (let x = 0; x < n; x++, a++) {
        points[a] = x + 0.5;
        points[count + a] = y + 0.5;
        strides[a] = s;
      }
  }
  return { points, strides, count };
}

/** Detect: per level cat(box 64, cls nc) → [B, 144, N]; DFL softmax-expectation; dist2bbox (xywh) × stride; sigmoid scores. */
function detect(g: Graph, p: Params, feats: readonly Value[], size: number, cfg: LeYoloConfig, o: BuildOptions): Value {
  const nc = cfg.numClasses;
  const c2 = Math.max(16, channelsOf(feats[0]) / 4, REG_MAX * 4);
  const c3 = Math.max(channelsOf(feats[0]), Math.min(nc, 100));
  const batch = feats[0].shape[0];
  const levels = feats.map((x, i) => {
    const box = dninBranch(g, p.scope(`cv2.${i}`), x, c2, 4 * REG_MAX, 1.0, o);
    const cls = dninBranch(g, p.scope(`cv3.${i}`), x, c3, nc, Math.log(5 / nc / (640 / STRIDES[i]) ** 2), o);
    const hw = (x.shape[2] as number) * (x.shape[3] as number);
    return reshape(g, concat(g, [box, cls], 1), [batch, 4 * REG_MAX + nc, hw]);
  });
  const xCat = concat(g, levels, 2);
  if (o.rawOutput) g.output(xCat, 'raw');
  const { points, strides, count } = anchorPoints(size);
  const box = slice(g, xCat, 1, 0, 4 * REG_MAX);
  const cls = slice(g, xCat, 1, 4 * REG_MAX, 4 * REG_MAX + nc);
  // DFL: softmax over the 16 bins of each side, then the expectation with the fixed arange weights (model.35.dfl.conv).
  const bins = g.op1('Softmax', [reshape(g, box, [batch, 4, REG_MAX, count])], { axis: 2 });
  const dflW = p.scope('dfl.conv').param('weight', [1, REG_MAX, 1, 1], { kind: 'values', values: (i) => i });
  const dist = g.op1('ReduceSum', [g.op1('Mul', [bins, g.initializer(`${p.prefix}.dfl.conv.weight`, float32([1, 1, REG_MAX, 1], dflW))]), g.constant({ dtype: 'int64', shape: [1], data: BigInt64Array.of(2n) }, 'axes')], { keepdims: 0 });
  const anchors = g.constant(float32([1, 2, count], points), 'anchors');
  const x1y1 = g.op1('Sub', [anchors, slice(g, dist, 1, 0, 2)]);
  const x2y2 = g.op1('Add', [anchors, slice(g, dist, 1, 2, 4)]);
  const cxy = g.op1('Div', [g.op1('Add', [x1y1, x2y2]), g.constant(float32([1], [2]), 'two')]);
  const wh = g.op1('Sub', [x2y2, x1y1]);
  const xywh = g.op1('Mul', [concat(g, [cxy, wh], 1), g.constant(float32([1, 1, count], strides), 'strides')]);
  return concat(g, [xywh, g.op1('Sigmoid', [cls])], 1);
}

/**
 * Builds the network into `g`: input `images` [batch, 3, size, size] (RGB, 0..1), output `output0`
 * [batch, 4 + nc, N] (xywh in input pixels, then sigmoid class scores).
 */
export function build(g: Graph, cfg: LeYoloConfig, p: Params, size: number, o: BuildOptions = {}): Value {
  if (!Number.isInteger(size) || size <= 0 || size % SIZE_MULTIPLE !== 0) throw new RangeError(`LeYOLO input side must be a positive multiple of ${SIZE_MULTIPLE}, got ${size}`);
  const outs: Value[] = [];
  let x = g.input('images', 'float32', ['batch', 3, size, size]);
  const at = (f: number) => (f === -1 ? x : outs[f]);
  LAYERS.forEach((l, i) => {
    const pl = p.scope(`model.${i}`);
    if (l.m === 'concat') x = concat(g, l.from.map(at), 1);
    else if (l.m === 'upsample') x = upsampleNearest(g, at(l.from), 2);
    else if (l.m === 'mn_conv') x = mnConv(g, pl, at(l.from), scaleChannels(l.c2, cfg), l.k, l.s, o);
    else if (l.m === 'sppf') x = sppf(g, pl, at(l.from), scaleChannels(l.c2, cfg), l.k, o);
    else {
      const input = at(l.from);
      const cMid = l.e === 'e22' ? (cfg.e22 === null ? channelsOf(input) : scaleChannels(cfg.e22, cfg)) : scaleChannels(l.e, cfg);
      x = invertedBottleneck(g, pl, input, scaleChannels(l.c2, cfg), l.k, cMid, l.s, l.pw !== false, o);
    }
    outs.push(x);
  });
  const y = detect(g, p.scope(`model.${DETECT_INDEX}`), DETECT_FROM.map((f) => outs[f]), size, cfg, o);
  return g.output(y, 'output0');
}

/** Keys an ultralytics state dict carries that are not weights. */
export const ignoredCheckpointKey = (key: string) => key.endsWith('num_batches_tracked');

export function buildLeYolo(variant: LeYoloVariant, size: number, p: Params, o: BuildOptions = {}): Graph {
  const g = new Graph(`leyolo-${variant}-${size}`);
  build(g, variants[variant], p, size, o);
  p.assertComplete(ignoredCheckpointKey);
  return g;
}
