/**
 * FSG-Net change detection (specs/models-b.md §3; zxXie-Air/FSG-Net commit 0b0e224): a Siamese timm
 * ResNet-18 encoder to 1/16 (layer4 is computed by the official model but never used, so it is left
 * out), per scale a DAWIM (Haar wavelet interaction) and an STSAM (cross-attention + CoordAtt), |diff|,
 * two LGFUs and the FCN head. Module paths are the official state-dict keys
 * (`neck.dawim_s1.conv3d_ll.weight`, `backbone.extract.layer1.0.conv1.weight`, `head1.classifier.bias`).
 *
 * Both time steps go through the same modules, so a module here is built once into a `Layer`
 * (weights fetched and emitted as initializers once) and then applied to each input.
 */
import type { Value } from './graph/graph.js';
import { Graph } from './graph/graph.js';
import type { ConvWeights } from './graph/nn.js';
import { batchNorm, concat, convWeights, foldBatchNorm, reshape, transpose } from './graph/nn.js';
import type { Params, StateDict } from './graph/params.js';
import { torchDefault, zeros } from './graph/params.js';
import type { HostTensor } from './graph/tensor.js';
import { float32, int64 } from './graph/tensor.js';

export interface FsgNetConfig {
  /** `inplanes`: channels at 1/4; the three scales have width·[1, 2, 4] (ResNet-18: 64/128/256). */
  readonly width: number;
  readonly numClasses: number;
}

export const variants = {
  r18: { width: 64, numClasses: 2 },
} satisfies Record<string, FsgNetConfig>;
export type FsgNetVariant = keyof typeof variants;

/** `utils/transforms.py`: RGB /255, no mean/std; trained and evaluated at 256×256. */
export const preprocess = { size: 256, scale: 1 / 255, rgb: true, mean: null, std: null } as const;
/** torch BatchNorm2d default eps (timm ResNet and every FSG-Net block keep it). */
export const BN_EPS = 1e-5;
/** The DWT at 1/16 halves once more: sides must be multiples of 32. */
export const SIZE_MULTIPLE = 32;
/** SEWeightModule reduction; CoordAtt reduction (mip = max(8, C/32)); STSAM Q/K compression C/8. */
const SE_REDUCTION = 16;
const COORD_REDUCTION = 32;
const QK_REDUCTION = 8;

/**
 * Haar analysis kernels, rows = y (pywt `dec_lo[::-1]`, `dec_hi[::-1]` outer products as in
 * `torch_wavelets.DWT_2D`); the synthesis filters of `IDWT_2D` (pywt `rec_*`) are the same four.
 */
export const HAAR_BANDS = {
  w_ll: [0.5, 0.5, 0.5, 0.5],
  w_lh: [0.5, 0.5, -0.5, -0.5],
  w_hl: [0.5, -0.5, 0.5, -0.5],
  w_hh: [0.5, -0.5, -0.5, 0.5],
} as const;
const BAND_NAMES = ['w_ll', 'w_lh', 'w_hl', 'w_hh'] as const;

export interface BuildOptions {
  /** Keep BatchNormalization nodes (the unfolded twin for tests). */
  unfoldedBn?: boolean;
}

/** A module built once and applied to any number of inputs (both time steps share it). */
export type Layer = (x: Value) => Value;
type PairLayer = (a: Value, b: Value) => [Value, Value];

const channelsOf = (x: Value) => x.shape[1] as number;
const relu = (g: Graph, x: Value) => g.op1('Relu', [x]);

/** A Conv whose weight (and bias) initializers are emitted once. */
function sharedConv(g: Graph, name: string, w: ConvWeights, o: { stride?: number; pad?: number; groups?: number } = {}): Layer {
  const [, , kh, kw] = w.shape;
  const W = g.initializer(`${name}.weight`, float32([...w.shape], w.weight));
  const B = w.bias ? g.initializer(`${name}.bias`, float32([w.shape[0]], w.bias)) : null;
  const s = o.stride ?? 1;
  const pad = o.pad ?? Math.floor(kh / 2);
  const attrs = { kernel_shape: [kh, kw], strides: [s, s], pads: [pad, pad, pad, pad], group: o.groups ?? 1 };
  return (x) => g.op1('Conv', B ? [x, W, B] : [x, W], attrs);
}

interface ConvSpec {
  cout: number;
  k: number;
  stride?: number;
  pad?: number;
  bias: boolean;
  relu?: boolean;
}

/** Conv2d (pConv) → BatchNorm2d (pBn, folded unless `unfoldedBn`) → optional ReLU, shared across calls. */
function convBnLayer(g: Graph, pConv: Params, pBn: Params, cin: number, c: ConvSpec, o: BuildOptions): Layer {
  const w = convWeights(pConv, cin, c);
  const bn = batchNorm(pBn, c.cout, BN_EPS);
  let layer: Layer;
  if (!o.unfoldedBn) layer = sharedConv(g, pConv.prefix, foldBatchNorm(w, bn), c);
  else {
    const conv = sharedConv(g, pConv.prefix, w, c);
    const t = (n: string, v: Float32Array) => g.initializer(`${pBn.prefix}.${n}`, float32([c.cout], v));
    const stats = [t('weight', bn.weight), t('bias', bn.bias), t('running_mean', bn.mean), t('running_var', bn.variance)];
    layer = (x) => g.op1('BatchNormalization', [conv(x), ...stats], { epsilon: bn.eps });
  }
  return c.relu ? (x) => relu(g, layer(x)) : layer;
}

/** `Base.Conv1Relu` / `Conv3Relu`: `extract` = Sequential(Conv2d no bias, BN, ReLU). */
function convRelu(g: Graph, p: Params, cin: number, cout: number, k: 1 | 3, o: BuildOptions): Layer {
  return convBnLayer(g, p.scope('extract.0'), p.scope('extract.1'), cin, { cout, k, bias: false, relu: true }, o);
}

/** Plain nn.Conv2d with bias (torch default init), shared. */
function conv2dLayer(g: Graph, p: Params, cin: number, cout: number, k: number, bias = true): Layer {
  return sharedConv(g, p.prefix, convWeights(p, cin, { cout, k, bias }));
}

// ---------------------------------------------------------------------------------------------- encoder

/** timm BasicBlock: conv1 (3×3, stride) → bn1 → ReLU → conv2 → bn2, + identity or downsample.0/1 (1×1 stride conv, BN), ReLU. */
function basicBlock(g: Graph, p: Params, cin: number, cout: number, stride: number, o: BuildOptions): Layer {
  const conv1 = convBnLayer(g, p.scope('conv1'), p.scope('bn1'), cin, { cout, k: 3, stride, bias: false, relu: true }, o);
  const conv2 = convBnLayer(g, p.scope('conv2'), p.scope('bn2'), cout, { cout, k: 3, bias: false }, o);
  const down = stride !== 1 || cin !== cout ? convBnLayer(g, p.scope('downsample.0'), p.scope('downsample.1'), cin, { cout, k: 1, stride, pad: 0, bias: false }, o) : null;
  return (x) => relu(g, g.op1('Add', [conv2(conv1(x)), down ? down(x) : x]));
}

/** timm resnet18 `features_only` up to layer3: returns the 1/4, 1/8 and 1/16 features. */
function resnetEncoder(g: Graph, p: Params, width: number, o: BuildOptions): (x: Value) => Value[] {
  const stem = convBnLayer(g, p.scope('conv1'), p.scope('bn1'), 3, { cout: width, k: 7, stride: 2, pad: 3, bias: false, relu: true }, o);
  const stages: Layer[] = [];
  let cin = width;
  for (let s = 0; s < 3; s++) {
    const cout = width << s;
    const b0 = basicBlock(g, p.scope(`layer${s + 1}.0`), cin, cout, s === 0 ? 1 : 2, o);
    const b1 = basicBlock(g, p.scope(`layer${s + 1}.1`), cout, cout, 1, o);
    stages.push((x) => b1(b0(x)));
    cin = cout;
  }
  return (x) => {
    let y = g.op1('MaxPool', [stem(x)], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] });
    return stages.map((stage) => (y = stage(y)));
  };
}

// ---------------------------------------------------------------------------------------------- DAWIM

/** The DWT_2D buffers (`dwt.w_ll` …, [1,1,2,2]) and IDWT_2D's `idwt.filters` [4,1,2,2]: fixed, but in the state dict. */
function haarBuffers(p: Params): { analysis: Float32Array[]; synthesis: Float32Array } {
  const values = (v: readonly number[]) => ({ kind: 'values', values: (i: number) => v[i] }) as const;
  const analysis = BAND_NAMES.map((b) => p.scope('dwt').buffer(b, [1, 1, 2, 2], values(HAAR_BANDS[b])));
  const synthesis = p.scope('idwt').buffer('filters', [4, 1, 2, 2], values(BAND_NAMES.flatMap((b) => HAAR_BANDS[b])));
  return { analysis, synthesis };
}

const tile = (kernel: Float32Array, times: number) => {
  const out = new Float32Array(kernel.length * times);
  for (let i = 0; i < times; i++) out.set(kernel, i * kernel.length);
  return out;
};

const DEFAULT_ANALYSIS = BAND_NAMES.map((b) => Float32Array.from(HAAR_BANDS[b]));
const DEFAULT_SYNTHESIS = Float32Array.from(BAND_NAMES.flatMap((b) => HAAR_BANDS[b]));

/** Haar DWT on C channels: one fixed depthwise 2×2 stride-2 Conv per band; gives [LL, LH, HL, HH] (the band-major chunks). */
export function haarDwt(g: Graph, c: number, name = 'dwt', kernels: readonly Float32Array[] = DEFAULT_ANALYSIS): (x: Value) => Value[] {
  const W = kernels.map((k, i) => g.initializer(`${name}.${BAND_NAMES[i]}`, float32([c, 1, 2, 2], tile(k, c))));
  return (x) => W.map((w) => g.op1('Conv', [x, w], { kernel_shape: [2, 2], strides: [2, 2], pads: [0, 0, 0, 0], group: c }));
}

/** Haar IDWT on C channels: bands interleaved per channel ([c·4 + band]), one grouped ConvTranspose, stride 2 (the exact inverse). */
export function haarIdwt(g: Graph, c: number, name = 'idwt', filters: Float32Array = DEFAULT_SYNTHESIS): (bands: readonly Value[]) => Value {
  const W = g.initializer(`${name}.filters`, float32([4 * c, 1, 2, 2], tile(filters, c)));
  return (bands) => {
    const [batch, , h, w] = bands[0].shape as [string | number, number, number, number];
    const stacked = concat(g, bands.map((b) => reshape(g, b, [batch, c, 1, h, w])), 2);
    const interleaved = reshape(g, stacked, [batch, 4 * c, h, w]);
    return g.op1('ConvTranspose', [interleaved, W], { kernel_shape: [2, 2], strides: [2, 2], group: c });
  };
}

/** Conv3d weight [cout, cin, 2, k, k] over stack([x1, x2], dim=2) ≡ Conv2d weight [cout, 2·cin, k, k] over cat([x1, x2]). */
export function conv3dAsConv2d(w: Float32Array, cout: number, cin: number, k: number): Float32Array {
  const out = new Float32Array(w.length);
  const kk = k * k;
  for (let o = 0; o < cout; o++)
    for (let i = 0; i < cin; i++)
      for (let t = 0; t < 2; t++)
        for (let s = 0; s < kk; s++) out[((o * 2 * cin + t * cin + i) * kk) + s] = w[(((o * cin + i) * 2 + t) * kk) + s];
  return out;
}

/** Conv3d(C, C, (2, k, k), padding (0, k//2, k//2), bias=False) applied to a time pair, as one Conv2d. */
function temporalConv(g: Graph, p: Params, c: number, k: number): (a: Value, b: Value) => Value {
  const w = p.param('weight', [c, c, 2, k, k], torchDefault(c * 2 * k * k));
  const conv = sharedConv(g, p.prefix, { weight: conv3dAsConv2d(w, c, c, k), shape: [c, 2 * c, k, k] });
  return (a, b) => conv(concat(g, [a, b], 1));
}

/** SEWeightModule: σ(fc.2(ReLU(fc.0([GAP, GMP])))), bias-free Linears run as 1×1 convs on [B, 2C, 1, 1]. */
function seWeight(g: Graph, p: Params, c: number): Layer {
  const r = Math.floor(c / SE_REDUCTION);
  const fc0 = sharedConv(g, `${p.prefix}.fc.0`, { weight: p.param('fc.0.weight', [r, 2 * c], torchDefault(2 * c)), shape: [r, 2 * c, 1, 1] });
  const fc2 = sharedConv(g, `${p.prefix}.fc.2`, { weight: p.param('fc.2.weight', [c, r], torchDefault(r)), shape: [c, r, 1, 1] });
  return (x) => {
    const pooled = concat(g, [g.op1('GlobalAveragePool', [x]), g.op1('GlobalMaxPool', [x])], 1);
    return g.op1('Sigmoid', [fc2(relu(g, fc0(pooled)))]);
  };
}

/** DAWIM: DWT both steps, per-band interaction, four SE weights, X·w + X on both steps, IDWT. */
export function dawim(g: Graph, p: Params, c: number, o: BuildOptions = {}): PairLayer {
  const { analysis, synthesis } = haarBuffers(p);
  const dwt = haarDwt(g, c, `${p.prefix}.dwt`, analysis);
  const idwt = haarIdwt(g, c, `${p.prefix}.idwt`, synthesis);
  const ll = temporalConv(g, p.scope('conv3d_ll'), c, 3);
  const lhHl = temporalConv(g, p.scope('conv3d_lh_hl'), c, 1);
  const hh = convBnLayer(g, p.scope('conv2d_hh.0'), p.scope('conv2d_hh.1'), c, { cout: c, k: 1, bias: false, relu: true }, o);
  const se = ['se_ll', 'se_lh', 'se_hl', 'se_hh'].map((n) => seWeight(g, p.scope(n), c));
  return (fa, fb) => {
    const a = dwt(fa);
    const b = dwt(fb);
    const interacted = [ll(a[0], b[0]), lhHl(a[1], b[1]), lhHl(a[2], b[2]), hh(g.op1('Abs', [g.op1('Sub', [a[3], b[3]])]))];
    const weights = interacted.map((x, i) => se[i](x));
    const reweight = (bands: Value[]) => bands.map((x, i) => g.op1('Add', [g.op1('Mul', [x, weights[i]]), x]));
    return [idwt(reweight(a)), idwt(reweight(b))];
  };
}

// ---------------------------------------------------------------------------------------------- STSAM

/** CrossAttentionWithTemporalEmbedding (`branch1`): Q₂ᵀK₁ softmax (no 1/√d), out₁ = V₁A₂₁ᵀ, γ·out + f (un-embedded). */
export function crossAttention(g: Graph, p: Params, c: number): PairLayer {
  const cq = Math.floor(c / QK_REDUCTION);
  const emb = (n: string) => g.initializer(`${p.prefix}.${n}`, float32([1, c, 1, 1], p.param(n, [1, c, 1, 1], { kind: 'normal', std: 1 })));
  const [t1, t2] = [emb('t_embedding1'), emb('t_embedding2')];
  const q = conv2dLayer(g, p.scope('query_conv'), c, cq, 1);
  const k = conv2dLayer(g, p.scope('key_conv'), c, cq, 1);
  const v = conv2dLayer(g, p.scope('value_conv'), c, c, 1);
  const gamma = g.initializer(`${p.prefix}.gamma`, float32([1], p.param('gamma', [1], zeros)));
  return (f1, f2) => {
    const [batch, , h, w] = f1.shape as [string | number, number, number, number];
    const n = h * w;
    const flat = (x: Value, ch: number) => reshape(g, x, [batch, ch, n]);
    const [e1, e2] = [g.op1('Add', [f1, t1]), g.op1('Add', [f2, t2])];
    const side = (e: Value) => ({ qT: transpose(g, flat(q(e), cq), [0, 2, 1]), k: flat(k(e), cq), vT: transpose(g, flat(v(e), c), [0, 2, 1]) });
    const [s1, s2] = [side(e1), side(e2)];
    // out = V·Aᵀ computed as (A·Vᵀ)ᵀ, so the N×N matrix is never transposed.
    const attend = (qT: Value, kk: Value, vT: Value, f: Value) => {
      const attn = g.op1('Softmax', [g.op1('MatMul', [qT, kk])], { axis: -1 });
      const out = reshape(g, transpose(g, g.op1('MatMul', [attn, vT]), [0, 2, 1]), [batch, c, h, w]);
      return g.op1('Add', [g.op1('Mul', [out, gamma]), f]);
    };
    return [attend(s2.qT, s1.k, s1.vT, f1), attend(s1.qT, s2.k, s2.vT, f2)];
  };
}

/** CoordAtt (`branch2`): mean over W and over H, conv1 → bn1 → ReLU, split, conv_h / conv_w → σ, x·a_w·a_h. */
function coordAtt(g: Graph, p: Params, c: number, o: BuildOptions): Layer {
  const mip = Math.max(8, Math.floor(c / COORD_REDUCTION));
  const conv1 = convBnLayer(g, p.scope('conv1'), p.scope('bn1'), c, { cout: mip, k: 1, bias: true, relu: true }, o);
  const convH = conv2dLayer(g, p.scope('conv_h'), mip, c, 1);
  const convW = conv2dLayer(g, p.scope('conv_w'), mip, c, 1);
  return (x) => {
    const [, , h, w] = x.shape as [string | number, number, number, number];
    const xh = g.op1('ReduceMean', [x], { axes: [3], keepdims: 1 });
    const xw = transpose(g, g.op1('ReduceMean', [x], { axes: [2], keepdims: 1 }), [0, 1, 3, 2]);
    const y = conv1(concat(g, [xh, xw], 2));
    const [yh, yw] = g.op('Split', [y, g.constant(int64([h, w]), 'split')], { axis: 2 });
    const ah = g.op1('Sigmoid', [convH(yh)]);
    const aw = g.op1('Sigmoid', [convW(transpose(g, yw, [0, 1, 3, 2]))]);
    return g.op1('Mul', [g.op1('Mul', [x, aw]), ah]);
  };
}

/** STSAM: cross-attention and CoordAtt in parallel, fused per step by ReLU(BN(Conv1×1 2C→C)). */
export function stsam(g: Graph, p: Params, c: number, o: BuildOptions = {}): PairLayer {
  const cross = crossAttention(g, p.scope('branch1'), c);
  const coord = coordAtt(g, p.scope('branch2'), c, o);
  const fusion = convBnLayer(g, p.scope('fusion_conv.0'), p.scope('fusion_conv.1'), 2 * c, { cout: c, k: 1, bias: false, relu: true }, o);
  return (f1, f2) => {
    const [c1, c2] = cross(f1, f2);
    return [fusion(concat(g, [c1, coord(f1)], 1)), fusion(concat(g, [c2, coord(f2)], 1))];
  };
}

// ---------------------------------------------------------------------------------------------- decoder

/** Bilinear ×factor; align_corners False ↔ half_pixel, True ↔ align_corners. */
function upsampleBilinear(g: Graph, x: Value, factor: number, alignCorners: boolean): Value {
  const scales = g.constant(float32([4], [1, 1, factor, factor]), 'scales');
  return g.op1('Resize', [x, null, scales], { mode: 'linear', coordinate_transformation_mode: alignCorners ? 'align_corners' : 'half_pixel' });
}

/** LGFU: D' = Conv1Relu(up(D)); G = σ(gate_unit.1(Conv3Relu([D', S]))); F = D' + G ⊙ S. */
export function lgfu(g: Graph, p: Params, cDeep: number, cShallow: number, o: BuildOptions): (deep: Value, shallow: Value) => Value {
  const align = convRelu(g, p.scope('conv1x1_align'), cDeep, cShallow, 1, o);
  const gate3 = convRelu(g, p.scope('gate_unit.0'), 2 * cShallow, cShallow, 3, o);
  const gate1 = conv2dLayer(g, p.scope('gate_unit.1'), cShallow, 1, 1);
  return (deep, shallow) => {
    const factor = (shallow.shape[2] as number) / (deep.shape[2] as number);
    const d = align(upsampleBilinear(g, deep, factor, false));
    const gate = g.op1('Sigmoid', [gate1(gate3(concat(g, [d, shallow], 1)))]);
    return g.op1('Add', [d, g.op1('Mul', [gate, shallow])]);
  };
}

/** FCNHead: refine.0/1 = Conv3Relu(C, C), Conv3Relu(C, max(C/2, classes)), Dropout2d (eval no-op), classifier 1×1 with bias. */
export function fcnHead(g: Graph, p: Params, c: number, classes: number, o: BuildOptions): Layer {
  const inter = Math.max(Math.floor(c / 2), classes);
  const r0 = convRelu(g, p.scope('refine.0'), c, c, 3, o);
  const r1 = convRelu(g, p.scope('refine.1'), c, inter, 3, o);
  const cls = conv2dLayer(g, p.scope('classifier'), inter, classes, 1);
  return (x) => cls(r1(r0(x)));
}

/**
 * Builds the network into `g`: inputs `before`, `after` [batch, 3, size, size] (RGB, 0..1), output
 * `logits` [batch, classes, size, size]; argmax over channels gives the change mask (channel 1 = change).
 */
export function build(g: Graph, cfg: FsgNetConfig, p: Params, size: number, o: BuildOptions = {}): Value {
  if (!Number.isInteger(size) || size <= 0 || size % SIZE_MULTIPLE !== 0) throw new RangeError(`FSG-Net input side must be a positive multiple of ${SIZE_MULTIPLE}, got ${size}`);
  const xa = g.input('before', 'float32', ['batch', 3, size, size]);
  const xb = g.input('after', 'float32', ['batch', 3, size, size]);
  const encoder = resnetEncoder(g, p.scope('backbone.extract'), cfg.width, o);
  const fa = encoder(xa);
  const fb = encoder(xb);
  const diffs = [0, 1, 2].map((s) => {
    const c = cfg.width << s;
    const pn = p.scope('neck');
    const [da, db] = dawim(g, pn.scope(`dawim_s${s + 1}`), c, o)(fa[s], fb[s]);
    const [sa, sb] = stsam(g, pn.scope(`stsam_s${s + 1}`), c, o)(da, db);
    return g.op1('Abs', [g.op1('Sub', [sa, sb])]);
  });
  const w = cfg.width;
  const fused2 = lgfu(g, p.scope('lgfu_3_to_2'), 4 * w, 2 * w, o)(diffs[2], diffs[1]);
  const cmap = lgfu(g, p.scope('lgfu_2_to_1'), 2 * w, w, o)(fused2, diffs[0]);
  const logits = upsampleBilinear(g, fcnHead(g, p.scope('head1'), w, cfg.numClasses, o)(cmap), size / (cmap.shape[2] as number), true);
  return g.output(logits, 'logits');
}

/**
 * Keys a strict official state dict carries that this graph does not use: BN counters, thop's
 * `total_ops`/`total_params`, and layer4 (computed by `features_only` but never read).
 */
export const ignoredCheckpointKey = (key: string) =>
  key.endsWith('num_batches_tracked') || key.endsWith('total_ops') || key.endsWith('total_params') || key.startsWith('backbone.extract.layer4.');

/** `eval.py`'s clean-up: unwrap `model_state_dict`-style wrappers beforehand; strip DataParallel's `module.`; drop thop keys. */
export function mapCheckpoint(sd: StateDict): StateDict {
  const out = new Map<string, HostTensor>();
  for (const [k, v] of sd) {
    if (k.includes('total_ops') || k.includes('total_params')) continue;
    out.set(k.startsWith('module.') ? k.slice(7) : k, v);
  }
  return out;
}

export function buildFsgNet(variant: FsgNetVariant | FsgNetConfig, size: number, p: Params, o: BuildOptions = {}): Graph {
  const cfg = typeof variant === 'string' ? variants[variant] : variant;
  const g = new Graph(`fsgnet-${typeof variant === 'string' ? variant : `w${cfg.width}`}-${size}`);
  build(g, cfg, p, size, o);
  p.assertComplete(ignoredCheckpointKey);
  return g;
}

/** `eval.py`'s decision: argmax over the two logits per pixel (ties → 0, like torch.argmax); 1 = change. */
export function changeMask(logits: Float32Array, height: number, width: number): Uint8Array {
  const n = height * width;
  if (logits.length !== 2 * n) throw new RangeError(`changeMask: expected 2×${height}×${width} logits, got ${logits.length}`);
  const mask = new Uint8Array(n);
  for (let i = 0; i < n; i++) mask[i] = logits[n + i] > logits[i] ? 1 : 0;
  return mask;
}
