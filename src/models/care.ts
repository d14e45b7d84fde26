/**
 * CARE Transformer (CVPR 2025; specs/models-a.md §3; zhouyuan888888/CARETrans `models/CARETrans.py`):
 * a 4×4 stem, four stages of CAREBlocks (asymmetric channel split [mem | att | conv1 | conv2], strip
 * convolutions or ELU+1 linear attention on `att`, two interaction modules, per-channel γ), and two
 * heads averaged at eval. Module paths are the official ones (`stages.2.blocks.0.token_mixer.qk.weight`,
 * `dist_head.fc.bias`), so `checkpoint['model']` maps one-to-one.
 *
 * Every module is built once into a `Layer` (weights fetched and emitted once) and then applied, so the
 * siamese change detector `care-cd` runs both images through the same trunk.
 */
import { fcnHead, lgfu } from './fsgnet.js';
import type { Value } from './graph/graph.js';
import { Graph } from './graph/graph.js';
import type { BatchNorm, ConvWeights } from './graph/nn.js';
import { batchNorm, concat, foldBatchNorm, reshape, transpose } from './graph/nn.js';
import type { Params, StateDict } from './graph/params.js';
import { ones, torchDefault, zeros } from './graph/params.js';
import type { HostTensor } from './graph/tensor.js';
import { float32, int64 } from './graph/tensor.js';
import { VIT_LINEAR_INIT, geluErf, linear } from './vit.js';

export interface CareConfig {
  readonly depths: readonly [number, number, number, number];
  /** `feat_dims`: the 3·gc channels that are mixed; the stage width is feat + mem = 4·gc. */
  readonly featDims: readonly [number, number, number, number];
  /** `mem_dims` = gc, the width of each of the four channel groups. */
  readonly memDims: readonly [number, number, number, number];
  /** `ratios`: (r1, r2) expansions of Inter1 and Inter2 per stage. */
  readonly ratios: readonly (readonly [number, number])[];
  /** `att_head_dim`: heads = gc / att_head_dim in the attention stages. */
  readonly attHeadDims: readonly [number, number, number, number];
  /** `cls_dim` = r2 · d of the last stage (the last block has no Inter2 projection back). */
  readonly clsDim: number;
  readonly numClasses: number;
}

const ATT_HEAD_DIMS = [1, 1, 16, 32] as const;
export const variants = {
  S0: { depths: [2, 4, 8, 4], featDims: [24, 48, 96, 192], memDims: [8, 16, 32, 64], ratios: [[2, 2], [2, 4], [4, 4], [4, 4]], attHeadDims: ATT_HEAD_DIMS, clsDim: 1024, numClasses: 1000 },
  S1: { depths: [3, 6, 10, 6], featDims: [24, 48, 96, 192], memDims: [8, 16, 32, 64], ratios: [[2, 4], [2, 4], [4, 4], [4, 4]], attHeadDims: ATT_HEAD_DIMS, clsDim: 1024, numClasses: 1000 },
  S2: { depths: [3, 6, 10, 6], featDims: [24, 48, 144, 288], memDims: [8, 16, 48, 96], ratios: [[4, 4], [4, 4], [4, 4], [4, 4]], attHeadDims: ATT_HEAD_DIMS, clsDim: 1536, numClasses: 1000 },
} satisfies Record<string, CareConfig>;
export type CareVariant = keyof typeof variants;

/** No default_cfg in the repo, so timm's defaults (UNCONFIRMED, §3): resize 256 bicubic → crop 224, ImageNet mean/std. */
export const preprocess = { size: 224, resize: 256, interpolation: 'bicubic', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], rgb: true } as const;
/** torch BatchNorm2d default (`norm_layer=nn.BatchNorm2d`); the heads' LayerNorm is `partial(nn.LayerNorm, eps=1e-6)`. */
export const BN_EPS = 1e-5;
export const LN_EPS = 1e-6;
/** `att_layer = 2`: stages 2 and 3 use linear attention. */
const ATT_FROM_STAGE = 2;
/** `ls_init_value`. */
const GAMMA_INIT = 1e-6;
/** The stem (4) and three 2× downsamples: classifier sides are multiples of 32; care-cd stops at 1/16. */
export const SIZE_MULTIPLE = 32;
export const CD_SIZE_MULTIPLE = 16;

export interface BuildOptions {
  imageSize: number;
  /** `logits` (mean of head and dist_head), `features` (the pooled r2·d vector both heads read, before their GELU), or both. */
  output: 'logits' | 'features' | 'both';
  /** Keep BatchNormalization nodes (the unfolded twin for tests). */
  unfoldedBn?: boolean;
  /** Take images in [0, 1] and apply ImageNet mean/std inside the graph (folded exactly into the padding-free stem conv). */
  normalizeInGraph?: boolean;
}

export type Layer = (x: Value) => Value;
interface Mixed {
  mem: Value;
  feats: Value;
}

const stageDim = (cfg: CareConfig, s: number) => cfg.featDims[s] + cfg.memDims[s];
const channelsOf = (x: Value) => x.shape[1] as number;

// ---------------------------------------------------------------------------------------------- conv helpers

/** nn.Conv2d weights with a (kh, kw) kernel; bias always (every CARE conv has one). */
function convParams(p: Params, cin: number, cout: number, kh: number, kw = kh, groups = 1): ConvWeights {
  const fanIn = (cin / groups) * kh * kw;
  return { weight: p.param('weight', [cout, cin / groups, kh, kw], torchDefault(fanIn)), bias: p.param('bias', [cout], torchDefault(fanIn)), shape: [cout, cin / groups, kh, kw] };
}

/** A Conv node whose initializers are emitted once; padding (kh//2, kw//2) unless `pad0`. */
function convLayer(g: Graph, name: string, w: ConvWeights, o: { stride?: number; groups?: number; pad0?: boolean } = {}): Layer {
  const [, , kh, kw] = w.shape;
  const W = g.initializer(`${name}.weight`, float32([...w.shape], w.weight));
  const B = w.bias ? g.initializer(`${name}.bias`, float32([w.shape[0]], w.bias)) : null;
  const [ph, pw] = o.pad0 ? [0, 0] : [Math.floor(kh / 2), Math.floor(kw / 2)];
  const s = o.stride ?? 1;
  const attrs = { kernel_shape: [kh, kw], strides: [s, s], pads: [ph, pw, ph, pw], group: o.groups ?? 1 };
  return (x) => g.op1('Conv', B ? [x, W, B] : [x, W], attrs);
}

function bnLayer(g: Graph, name: string, bn: BatchNorm): Layer {
  const t = (n: string, v: Float32Array) => g.initializer(`${name}.${n}`, float32([v.length], v));
  const stats = [t('weight', bn.weight), t('bias', bn.bias), t('running_mean', bn.mean), t('running_var', bn.variance)];
  return (x) => g.op1('BatchNormalization', [x, ...stats], { epsilon: bn.eps });
}

/**
 * Folds a per-input-channel affine x·s + t that comes *before* a padding-free conv into it:
 * W'[o,i] = W[o,i]·s_i, b'_o = b_o + Σ_{i,k} W[o,i,k]·t_i. (Exact only without padding: zero pads would become t.)
 */
export function foldInputAffine(w: ConvWeights, scale: Float32Array, shift: Float32Array): ConvWeights {
  const [cout, cin, kh, kw] = w.shape;
  const kk = kh * kw;
  const weight = new Float32Array(w.weight.length);
  const bias = Float32Array.from({ length: cout }, (_, o) => w.bias?.[o] ?? 0);
  for (let o = 0; o < cout; o++)
    for (let i = 0; i < cin; i++)
      for (let k = 0; k < kk; k++) {
        const at = (o * cin + i) * kk + k;
        weight[at] = w.weight[at] * scale[i];
        bias[o] += w.weight[at] * shift[i];
      }
  return { weight, bias, shape: w.shape };
}

/** BatchNorm2d as x·s + t per channel. */
function bnAffine(bn: BatchNorm): { scale: Float32Array; shift: Float32Array } {
  const scale = bn.weight.map((gm, i) => gm / Math.sqrt(bn.variance[i] + bn.eps));
  return { scale, shift: bn.bias.map((b, i) => b - bn.mean[i] * scale[i]) };
}

/** BatchNorm2d (pBn) → padding-free Conv2d (pConv): folded into the conv unless `unfoldedBn` (§3 "BN can be folded"). */
function bnConvLayer(g: Graph, pBn: Params, pConv: Params, cin: number, cout: number, k: number, o: { unfoldedBn?: boolean }): Layer {
  const bn = batchNorm(pBn, cin, BN_EPS);
  const w = convParams(pConv, cin, cout, k);
  const opts = { stride: k, pad0: true };
  if (!o.unfoldedBn) {
    const { scale, shift } = bnAffine(bn);
    return convLayer(g, pConv.prefix, foldInputAffine(w, scale, shift), opts);
  }
  const norm = bnLayer(g, pBn.prefix, bn);
  const conv = convLayer(g, pConv.prefix, w, opts);
  return (x) => conv(norm(x));
}

// ---------------------------------------------------------------------------------------------- token mixer

/**
 * Linear attention (TokenMixer, `if_att`): qk = Conv1×1(gc→2gc)(f), v = f, φ = ELU+1, per head
 * z = 1/(q·mean_N(k) + 1e-6), kv = kᵀv/N, out = (q@kv)·z. Kept channel-major ([B, h, hd, N]), so
 * outᵀ = (vᵀ-major V·Kᵀ)·Q needs one transpose (of k) and reshapes straight back to [B, gc, H, W].
 */
export function linearAttention(g: Graph, p: Params, gc: number, headDim: number): Layer {
  const heads = gc / headDim;
  const qk = convLayer(g, p.scope('qk').prefix, convParams(p.scope('qk'), gc, 2 * gc, 1));
  const one = g.constant(float32([1], [1]), 'one');
  const phi = (x: Value) => g.op1('Add', [g.op1('Elu', [x], { alpha: 1 }), one]);
  return (f) => {
    const [batch, , h, w] = f.shape as [string | number, number, number, number];
    const n = h * w;
    const [q, k] = g.op('Split', [reshape(g, qk(f), [batch, 2 * heads, headDim, n]), g.constant(int64([heads, heads]), 'split')], { axis: 1 }).map(phi);
    const v = reshape(g, f, [batch, heads, headDim, n]);
    const kT = transpose(g, k, [0, 1, 3, 2]);
    const kMean = g.op1('ReduceMean', [k], { axes: [3], keepdims: 1 });
    const z = g.op1('Reciprocal', [g.op1('Add', [g.op1('MatMul', [transpose(g, kMean, [0, 1, 3, 2]), q]), g.constant(float32([1], [1e-6]), 'z_eps')])]);
    const vk = g.op1('Mul', [g.op1('MatMul', [v, kT]), g.constant(float32([1], [1 / n]), 'inv_n')]);
    return reshape(g, g.op1('Mul', [g.op1('MatMul', [vk, q]), z]), [batch, gc, h, w]);
  };
}

/** TokenMixer: split [mem | att | conv1 | conv2]; att → strips (11×1 + 1×11) or linear attention; DW3×3, DW7×7; returns mem and cat[att, conv1, conv2]. */
export function tokenMixer(g: Graph, p: Params, d: number, gc: number, headDim: number, attention: boolean): (x: Value) => Mixed {
  const dw = (name: string, kh: number, kw = kh) => convLayer(g, p.scope(name).prefix, convParams(p.scope(name), gc, gc, kh, kw, gc), { groups: gc });
  let att: Layer;
  if (attention) att = linearAttention(g, p, gc, headDim);
  else {
    const [s1, s2] = [dw('dwconvatt_1', 11, 1), dw('dwconvatt_2', 1, 11)];
    att = (f) => g.op1('Add', [s1(f), s2(f)]);
  }
  const [conv1, conv2] = [dw('dwconv1', 3), dw('dwconv2', 7)];
  return (x) => {
    const [mem, fa, f1, f2] = g.op('Split', [x, g.constant(int64([d - 3 * gc, gc, gc, gc]), 'split')], { axis: 1 });
    return { mem, feats: concat(g, [att(fa), conv1(f1), conv2(f2)], 1) };
  };
}

// ---------------------------------------------------------------------------------------------- interaction

/** norm → fc1 (×ratio) → GELU → DW3×3 → [fc2]: one interaction branch; `project` false drops fc2 (the last block's Inter2). */
function interBranch(g: Graph, p: Params, name: string, c: number, ratio: number, project: boolean, o: { unfoldedBn?: boolean }): Layer {
  const h = ratio * c;
  const fc1 = bnConvLayer(g, p.scope(`${name}_norm`), p.scope(`${name}_fc1`), c, h, 1, o);
  const dw = convLayer(g, p.scope(`${name}_conv`).prefix, convParams(p.scope(`${name}_conv`), h, h, 3, 3, h), { groups: h });
  const fc2 = project ? convLayer(g, p.scope(`${name}_fc2`).prefix, convParams(p.scope(`${name}_fc2`), h, c, 1)) : null;
  return (x) => {
    const y = dw(geluErf(g, fc1(x)));
    return fc2 ? g.op1('Add', [fc2(y), x]) : y;
  };
}

/** InterModule: Inter1 on feats (3gc) with residual; Inter2 on cat[mem, feats] (d), residual unless `last`. */
function interModule(g: Graph, p: Params, d: number, gc: number, [r1, r2]: readonly [number, number], last: boolean, o: { unfoldedBn?: boolean }): (m: Mixed) => Value {
  const inter1 = interBranch(g, p, 'inter1', 3 * gc, r1, true, o);
  const inter2 = interBranch(g, p, 'inter2', d, r2, !last, o);
  return ({ mem, feats }) => inter2(concat(g, [mem, inter1(feats)], 1));
}

/** CAREBlock: y = InterModule(TokenMixer(x)); x + γ⊙y, or y alone for the globally last block (r2·d channels). */
export function careBlock(g: Graph, p: Params, d: number, gc: number, headDim: number, ratio: readonly [number, number], attention: boolean, last: boolean, o: { unfoldedBn?: boolean }): Layer {
  const mixer = tokenMixer(g, p.scope('token_mixer'), d, gc, headDim, attention);
  const inter = interModule(g, p.scope('inter_layer'), d, gc, ratio, last, o);
  if (last) return (x) => inter(mixer(x));
  const gamma = g.initializer(`${p.prefix}.gamma`, float32([1, d, 1, 1], p.param('gamma', [d], { kind: 'const', value: GAMMA_INIT })));
  return (x) => g.op1('Add', [x, g.op1('Mul', [inter(mixer(x)), gamma])]);
}

// ---------------------------------------------------------------------------------------------- trunk and heads

/** stem: Conv(3→d0, k4, s4) → BN, folded; ImageNet mean/std folded in front when asked (exact: no padding). */
function stem(g: Graph, p: Params, d0: number, o: Omit<BuildOptions, 'imageSize' | 'output'>): Layer {
  let w = convParams(p.scope(0), 3, d0, 4);
  if (o.normalizeInGraph) {
    const std = Float32Array.from(preprocess.std);
    w = foldInputAffine(w, std.map((s) => 1 / s), Float32Array.from(preprocess.mean, (m, i) => -m / std[i]));
  }
  const bn = batchNorm(p.scope(1), d0, BN_EPS);
  if (!o.unfoldedBn) return convLayer(g, p.scope(0).prefix, foldBatchNorm(w, bn), { stride: 4, pad0: true });
  const conv = convLayer(g, p.scope(0).prefix, w, { stride: 4, pad0: true });
  const norm = bnLayer(g, p.scope(1).prefix, bn);
  return (x) => norm(conv(x));
}

/** stem + the first `stageCount` CAREStages; returns every stage output (stage s at 1/(4·2^s)). */
export function careTrunk(g: Graph, cfg: CareConfig, p: Params, stageCount: number, o: Omit<BuildOptions, 'imageSize' | 'output'> = {}): (x: Value) => Value[] {
  const stemLayer = stem(g, p.scope('stem'), stageDim(cfg, 0), o);
  const stages: Layer[] = [];
  for (let s = 0; s < stageCount; s++) {
    const ps = p.scope(`stages.${s}`);
    const d = stageDim(cfg, s);
    const layers: Layer[] = s > 0 ? [bnConvLayer(g, ps.scope('downsample.0'), ps.scope('downsample.1'), stageDim(cfg, s - 1), d, 2, o)] : [];
    for (let b = 0; b < cfg.depths[s]; b++) {
      const last = s === 3 && b === cfg.depths[s] - 1;
      layers.push(careBlock(g, ps.scope(`blocks.${b}`), d, cfg.memDims[s], cfg.attHeadDims[s], cfg.ratios[s], s >= ATT_FROM_STAGE, last, o));
    }
    stages.push((x) => layers.reduce((y, layer) => layer(y), x));
  }
  return (x) => {
    let y = stemLayer(x);
    return stages.map((stage) => (y = stage(y)));
  };
}

/** Head: GELU(pooled) → LayerNorm(eps 1e-6) → Linear; the GELU'd vector is shared by both heads. */
function head(g: Graph, p: Params, act: Value, c: number, classes: number): Value {
  const t = (n: string, v: Float32Array) => g.initializer(`${p.prefix}.norm.${n}`, float32([c], v));
  const normed = g.op1('LayerNormalization', [act, t('weight', p.param('norm.weight', [c], ones)), t('bias', p.param('norm.bias', [c], zeros))], { axis: -1, epsilon: LN_EPS });
  return linear(g, p.scope('fc'), normed, classes, { init: VIT_LINEAR_INIT });
}

/**
 * Builds the classifier into `g`: input `images` [batch, 3, S, S] (normalised, or 0..1 with
 * `normalizeInGraph`), outputs `logits` [batch, 1000] = (head + dist_head)/2 and/or `features` [batch, clsDim].
 */
export function build(g: Graph, cfg: CareConfig, p: Params, o: BuildOptions): { logits?: Value; features?: Value } {
  const size = o.imageSize;
  if (!Number.isInteger(size) || size <= 0 || size % SIZE_MULTIPLE !== 0) throw new RangeError(`CARE input side must be a positive multiple of ${SIZE_MULTIPLE}, got ${size}`);
  const x = g.input('images', 'float32', ['batch', 3, size, size]);
  const last = careTrunk(g, cfg, p, 4, o)(x)[3];
  const pooled = reshape(g, g.op1('GlobalAveragePool', [last]), [x.shape[0], cfg.clsDim]);
  const out: { logits?: Value; features?: Value } = {};
  if (o.output !== 'features') {
    const act = geluErf(g, pooled);
    const sum = g.op1('Add', [head(g, p.scope('head'), act, cfg.clsDim, cfg.numClasses), head(g, p.scope('dist_head'), act, cfg.clsDim, cfg.numClasses)]);
    out.logits = g.output(g.op1('Mul', [sum, g.constant(float32([1], [0.5]), 'half')]), 'logits');
  }
  if (o.output !== 'logits') out.features = g.output(pooled, 'features');
  return out;
}

/** BN counters are not weights; a features-only build does not read the heads. */
export const ignoredCheckpointKey = (output: BuildOptions['output']) => (key: string) =>
  key.endsWith('num_batches_tracked') || (output === 'features' && (key.startsWith('head.') || key.startsWith('dist_head.')));

/** `checkpoint['model']` as saved by train.py; strips DataParallel's `module.` if present. */
export function mapCheckpoint(sd: StateDict): StateDict {
  const out = new Map<string, HostTensor>();
  for (const [k, v] of sd) out.set(k.startsWith('module.') ? k.slice(7) : k, v);
  return out;
}

export function buildCare(variant: CareVariant | CareConfig, p: Params, o: BuildOptions): Graph {
  const cfg = typeof variant === 'string' ? variants[variant] : variant;
  const g = new Graph(`care-${typeof variant === 'string' ? variant.toLowerCase() : 'custom'}-${o.imageSize}`);
  build(g, cfg, p, o);
  p.assertComplete(ignoredCheckpointKey(o.output));
  return g;
}

// ---------------------------------------------------------------------------------------------- care-cd

export interface CareCdOptions {
  imageSize: number;
  unfoldedBn?: boolean;
}

/** care-cd's trunk lives under `backbone.` (official CARE names, stages 0–2); fusion under `fusion.` (FSG-Net LGFU names), the FCN head under `head.`. */
export const CD_SCOPES = { backbone: 'backbone', fusion: 'fusion', head: 'head' } as const;

/**
 * care-cd: a siamese CARE trunk (shared weights) to stages 1 and 2 (1/8, 1/16) for `before` and
 * `after` ([batch, 3, S, S], RGB 0..1; ImageNet mean/std folded into the stem), |f_a − f_b| per scale,
 * FSG-Net's LGFU (1/16 → 1/8) and FCN head, bilinear (half-pixel, torch's align_corners=False) to S×S:
 * `logits` [batch, 2, S, S], channel 1 = change.
 */
export function buildCareCdGraph(g: Graph, cfg: CareConfig, p: Params, o: CareCdOptions): Value {
  const size = o.imageSize;
  if (!Number.isInteger(size) || size <= 0 || size % CD_SIZE_MULTIPLE !== 0) throw new RangeError(`care-cd input side must be a positive multiple of ${CD_SIZE_MULTIPLE}, got ${size}`);
  const before = g.input('before', 'float32', ['batch', 3, size, size]);
  const after = g.input('after', 'float32', ['batch', 3, size, size]);
  const trunk = careTrunk(g, cfg, p.scope(CD_SCOPES.backbone), 3, { unfoldedBn: o.unfoldedBn, normalizeInGraph: true });
  const [fa, fb] = [trunk(before), trunk(after)];
  const [d8, d16] = [1, 2].map((s) => g.op1('Abs', [g.op1('Sub', [fa[s], fb[s]])]));
  const fused = lgfu(g, p.scope(CD_SCOPES.fusion), stageDim(cfg, 2), stageDim(cfg, 1), o)(d16, d8);
  const logits = fcnHead(g, p.scope(CD_SCOPES.head), stageDim(cfg, 1), 2, o)(fused);
  const scales = g.constant(float32([4], [1, 1, 8, 8]), 'scales');
  return g.output(g.op1('Resize', [logits, null, scales], { mode: 'linear', coordinate_transformation_mode: 'half_pixel' }), 'logits');
}

export function buildCareCd(variant: CareVariant, p: Params, o: CareCdOptions): Graph {
  const g = new Graph(`care-cd-${variant.toLowerCase()}-${o.imageSize}`);
  buildCareCdGraph(g, variants[variant], p, o);
  p.assertComplete((k) => k.endsWith('num_batches_tracked'));
  return g;
}

/** An ImageNet CARE checkpoint as care-cd's backbone: stem and stages 0–2 under `backbone.`; stage 3 and the heads dropped. */
export function backboneFromClassifier(sd: StateDict): StateDict {
  const out = new Map<string, HostTensor>();
  for (const [k, v] of mapCheckpoint(sd)) if (/^(stem\.|stages\.[012]\.)/.test(k)) out.set(`${CD_SCOPES.backbone}.${k}`, v);
  return out;
}

/** Unfolded parameter count (torch's `numel` sum) of a CARE classifier with both heads, from the config alone. */
export function parameterCount(cfg: CareConfig): number {
  const d = [0, 1, 2, 3].map((s) => stageDim(cfg, s));
  let n = 3 * d[0] * 16 + d[0] + 2 * d[0];
  for (let s = 0; s < 4; s++) {
    const [gc, [r1, r2]] = [cfg.memDims[s], cfg.ratios[s]];
    if (s > 0) n += 2 * d[s - 1] + d[s - 1] * d[s] * 4 + d[s];
    const mixer = (s >= ATT_FROM_STAGE ? 2 * gc * gc + 2 * gc : 24 * gc) + 60 * gc;
    const [e, h1, h2] = [3 * gc, 3 * gc * r1, d[s] * r2];
    const inter1 = 2 * e + (e * h1 + h1) + 10 * h1 + (h1 * e + e);
    for (let b = 0; b < cfg.depths[s]; b++) {
      const last = s === 3 && b === cfg.depths[s] - 1;
      n += mixer + inter1 + 2 * d[s] + (d[s] * h2 + h2) + 10 * h2 + (last ? 0 : h2 * d[s] + d[s] + d[s]);
    }
  }
  return n + 2 * (2 * cfg.clsDim + cfg.clsDim * cfg.numClasses + cfg.numClasses);
}
