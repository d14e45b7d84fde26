/**
 * ViG (AAAI 2025, hustvl/ViG): a plain, isotropic trunk of bidirectional gated-linear-attention blocks
 * (specs/models-a.md §2; the official `classification/models/vig.py`, eval branch). The stages:
 *
 *   V2PatchEmbed  Conv(3→C/2, k9 s8 p1) → LayerNorm2d → SiLU → Conv(C/2→C, k3 s2 p1) → LayerNorm2d
 *   + pos_embed   [1, 14·14, C], resized bicubically (align_corners False) to other grids
 *   12 × GLABlock r = x + BiGLA(attn_norm(x)); x = r + GLAMLP(mlp_norm(r))   (fla's fused add+RMSNorm)
 *   norm          RMSNorm, mean over tokens, head Linear(C, 1000)
 *
 * BiGLA (`GatedLinearAttention`): a depthwise 3×3 conv (+SiLU for ViG-T) gives xs, which feeds q/k/v,
 * the rank-16 gates, the output gate and the locality branch. The gates' 2·dk channels are the forward
 * (first dk) and backward (last dk) log-decays, logsigmoid/16. The eval kernel averages the two
 * directions and the code halves again: o = (o_f + o_b)/4 (reproduced; g_norm makes it moot). Then
 * o = g_norm(o)·g + l_norm(xs)·(1 − g), g = sigmoid(g_proj(xs)), SiLU (ViG-T's `out_act`), o_proj.
 *
 * Parameter names are the official state-dict keys (`checkpoint['model']`), so a checkpoint maps
 * one-to-one: no renames (`mapCheckpoint` is the identity, kept for the registry's shape). Linear
 * weights are stored transposed, [in, out], for MatMul on [B, N, C] (as in vit.ts).
 */
import { glaChunkwise, glaFused, glaQuadratic, type GlaInputs } from './gla.js';
import type { Value } from './graph/graph.js';
import { Graph, MS_DOMAIN } from './graph/graph.js';
import { conv2d, reshape, silu, slice, transpose } from './graph/nn.js';
import type { Params, StateDict } from './graph/params.js';
import { ones, zeros } from './graph/params.js';
import { assertStatic } from './graph/shapes.js';
import { float32 } from './graph/tensor.js';
import { VIT_LINEAR_INIT, bicubicResize, linear, linearParts } from './vit.js';

export interface ViGConfig {
  readonly embedDim: number;
  readonly depth: number;
  readonly heads: number;
  /** key_dim = int(C·expandK), value_dim = int(C·expandV). */
  readonly expandK: number;
  readonly expandV: number;
  /** SiLU after the depthwise conv (`use_act_in_conv`). */
  readonly actInConv: boolean;
  /** SiLU before o_proj (`use_out_act`). */
  readonly outAct: boolean;
  readonly numClasses: number;
  /** The grid `pos_embed` was trained at: img_size / patch_size = 224/16. */
  readonly posGrid: number;
}

// GLAConfig.rms_norm_eps (passed to every RMSNorm, g_norm and l_norm included); nn.LayerNorm's default for LayerNorm2d.
const RMS_EPS = 1e-6;
const LN2D_EPS = 1e-5;
const GATE_LOW_RANK = 16; // gate_low_rank_dim
const GATE_LOGIT_NORMALIZER = 16;
/** The patch embedding's total stride (8 then 2); input sides must be multiples of it. */
export const PATCH = 16;

export const variants = {
  'ViG-T': { embedDim: 192, depth: 12, heads: 3, expandK: 0.5, expandV: 1.0, actInConv: true, outAct: true, numClasses: 1000, posGrid: 14 },
  'ViG-S': { embedDim: 384, depth: 12, heads: 6, expandK: 0.5, expandV: 1.0, actInConv: false, outAct: false, numClasses: 1000, posGrid: 14 },
  'ViG-B': { embedDim: 768, depth: 12, heads: 12, expandK: 0.5, expandV: 1.0, actInConv: false, outAct: false, numClasses: 1000, posGrid: 14 },
} satisfies Record<string, ViGConfig>;
export type ViGVariant = keyof typeof variants;

/** `classification/data/build.py` eval transform: Resize(256, bicubic) → CenterCrop(224), ImageNet mean/std. */
export const preprocess = { size: 224, resize: 256, interpolation: 'bicubic', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], rgb: true } as const;

/**
 * Which GLA form the blocks use (gla.ts): 'fused' is onnxruntime's LinearAttention kernel (the serving
 * path), 'chunkwise' the chunkwise-parallel graph, 'quadratic' the masked quadratic twin.
 */
export type GlaKernel = 'fused' | 'chunkwise' | 'quadratic';

export interface ViGBuildOptions {
  /** Input side, a multiple of 16 (224 → 14×14 tokens). */
  readonly imageSize: number;
  /** Default 'fused'. */
  readonly gla?: GlaKernel;
  /** Chunk size of the chunkwise form (default 64). */
  readonly chunk?: number;
  /** 'logits' [B, classes], or 'features': the pooled [B, C] after the final norm (forward_features). */
  readonly output: 'logits' | 'features';
}

/** GLAMLP's intermediate size: 256·ceil(int(C·4·2/3)/256). */
export const mlpHidden = (c: number): number => 256 * Math.ceil(Math.trunc((c * 4 * 2) / 3) / 256);

export const keyDim = (cfg: ViGConfig): number => Math.trunc(cfg.embedDim * cfg.expandK);
export const valueDim = (cfg: ViGConfig): number => Math.trunc(cfg.embedDim * cfg.expandV);

const scalar = (g: Graph, v: number) => g.constant(float32([1], [v]), 'vig_scalar');
const lastDim = (x: Value): number => assertStatic(x.shape.slice(-1), 'channels')[0];

/**
 * fla's RMSNorm over the last dim, x / sqrt(mean(x²) + eps) · weight (no bias), as onnxruntime's one-pass
 * `SimplifiedLayerNormalization` (the same formula; registered by onnxruntime in the default domain).
 */
function rmsNorm(g: Graph, p: Params, x: Value, eps = RMS_EPS): Value {
  const c = lastDim(x);
  const w = g.initializer(`${p.prefix}.weight`, float32([c], p.param('weight', [c], ones)));
  return g.op1('SimplifiedLayerNormalization', [x, w], { axis: -1, epsilon: eps });
}

/**
 * fla's fused pre-norm residual, `norm(x, residual)` → (RMSNorm(x + residual), x + residual), as
 * `com.microsoft.SkipSimplifiedLayerNormalization`: one pass reads both, writes the sum and its norm.
 */
function addRmsNorm(g: Graph, p: Params, x: Value, residual: Value): { normed: Value; sum: Value } {
  const c = lastDim(x);
  const w = g.initializer(`${p.prefix}.weight`, float32([c], p.param('weight', [c], ones)));
  const [normed, , , sum] = g.op('SkipSimplifiedLayerNormalization', [x, residual, w], { epsilon: RMS_EPS }, { domain: MS_DOMAIN });
  return { normed, sum };
}

/** LayerNorm2d on NCHW: LayerNormalization over C in channels-last, transposed back. */
function layerNorm2d(g: Graph, p: Params, x: Value): Value {
  const c = assertStatic(x.shape.slice(1, 2), 'channels')[0];
  const gamma = g.initializer(`${p.prefix}.weight`, float32([c], p.param('weight', [c], ones)));
  const beta = g.initializer(`${p.prefix}.bias`, float32([c], p.param('bias', [c], zeros)));
  const y = g.op1('LayerNormalization', [transpose(g, x, [0, 2, 3, 1]), gamma, beta], { axis: -1, epsilon: LN2D_EPS });
  return transpose(g, y, [0, 3, 1, 2]);
}

const linearNoBias = (g: Graph, p: Params, x: Value, dOut: number) => linear(g, p, x, dOut, { bias: false, init: VIT_LINEAR_INIT });

/** V2PatchEmbed (`patch_embed.proj` = Sequential(conv, LN2d, SiLU, conv, LN2d)): images → [B, H/16·W/16, C]. */
function patchEmbed(g: Graph, p: Params, x: Value, c: number): Value {
  let y = conv2d(g, p.scope(0), x, { cout: c / 2, k: 9, stride: 8, pad: 1 });
  y = silu(g, layerNorm2d(g, p.scope(1), y));
  y = layerNorm2d(g, p.scope(4), conv2d(g, p.scope(3), y, { cout: c, k: 3, stride: 2, pad: 1 }));
  const [h, w] = assertStatic(y.shape.slice(2), 'patch grid');
  return transpose(g, reshape(g, y, [x.shape[0], c, h * w]), [0, 2, 1]);
}

/** [B, N, H·d] → [B, H, N, d]. */
function toHeads(g: Graph, x: Value, heads: number): Value {
  const [n, c] = assertStatic(x.shape.slice(1), 'tokens');
  return transpose(g, reshape(g, x, [x.shape[0], n, heads, c / heads]), [0, 2, 1, 3]);
}

/**
 * logsigmoid(x)/16, the per-channel log-decay, as (min(x, 0) − log(1 + e^{−|x|}))/16: exact over the whole
 * float range (e^{−|x|} ≤ 1 never overflows) and about 4× faster than onnxruntime's scalar Softplus. Where
 * e^{−|x|} < 2⁻²⁴ the log term rounds to 0, an absolute error below 6e-8 in the log-decay.
 */
function logDecay(g: Graph, x: Value): Value {
  const softTail = g.op1('Log', [g.op1('Add', [g.op1('Exp', [g.op1('Neg', [g.op1('Abs', [x])])]), scalar(g, 1)])]);
  const logSigmoid = g.op1('Sub', [g.op1('Min', [x, scalar(g, 0)]), softTail]);
  return g.op1('Mul', [logSigmoid, scalar(g, 1 / GATE_LOGIT_NORMALIZER)]);
}

/** GatedLinearAttention, eval branch, on h [B, N, C] laid out as a grid×grid image. */
function biGla(g: Graph, p: Params, h: Value, cfg: ViGConfig, grid: readonly [number, number], o: ViGBuildOptions): Value {
  const [n, c] = assertStatic(h.shape.slice(1), 'tokens');
  const batch = h.shape[0];
  const [dk, dv, heads] = [keyDim(cfg), valueDim(cfg), cfg.heads];
  // in_proj: depthwise 3×3 (no bias), SiLU for ViG-T; its output xs feeds every branch below.
  const img = reshape(g, transpose(g, h, [0, 2, 1]), [batch, c, grid[0], grid[1]]);
  const local = conv2d(g, p.scope('in_proj.0'), img, { cout: c, k: 3, pad: 1, groups: c, bias: false });
  // SiLU (elementwise) after the transpose back to tokens: the projections then read a plain tensor, not a
  // Transpose that onnxruntime would fold into each of them as a slower transposed-A FusedMatMul.
  const tokens = transpose(g, reshape(g, local, [batch, c, n]), [0, 2, 1]);
  const xs = cfg.actInConv ? silu(g, tokens) : tokens; // [B, N, C]

  const [q, k, v] = linearParts(g, p.scope('qkv_proj'), xs, [dk, dk, dv]);
  const gk = linear(g, p.scope('gk_proj.1'), linearNoBias(g, p.scope('gk_proj.0'), xs, GATE_LOW_RANK), 2 * dk, { init: VIT_LINEAR_INIT });

  const kernel = o.gla ?? 'fused';
  // The kernel returns (f + b)/2 and the code divides by 2 again: o = (f + b)/4. The fused kernel takes the
  // ¼ in its output scale (one element-wise pass fewer); the graph twins multiply after the sum.
  const quarter = 0.25;
  // The fused kernel takes the packed [B, N, H·d] layout as it comes; the graph forms work per head.
  const perHeadQkv = kernel === 'fused' ? undefined : { q: toHeads(g, q, heads), k: toHeads(g, k, heads), v: toHeads(g, v, heads) };
  const run = (logAlpha: Value, direction: 'forward' | 'backward'): Value => {
    if (!perHeadQkv) return glaFused(g, { q, k, v, logAlpha, heads }, { direction, scale: quarter * (dk / heads) ** -0.5 });
    const x: GlaInputs = { ...perHeadQkv, logAlpha: toHeads(g, logAlpha, heads) };
    const out = kernel === 'quadratic' ? glaQuadratic(g, x, { direction }) : glaChunkwise(g, x, { chunk: o.chunk ?? 64, direction });
    return reshape(g, transpose(g, out, [0, 2, 1, 3]), [batch, n, dv]);
  };
  // One log-decay pass over both directions' gates, then split.
  const decay = logDecay(g, gk);
  const [fwGate, bwGate] = [slice(g, decay, 2, 0, dk), slice(g, decay, 2, dk, 2 * dk)];
  const sum = g.op1('Add', [run(fwGate, 'forward'), run(bwGate, 'backward')]);
  const both = kernel === 'fused' ? sum : g.op1('Mul', [sum, scalar(g, quarter)]);
  const attn = reshape(g, both, [batch, n, heads, dv / heads]);

  // 2D gating locality injection: o·g + l_norm(xs)·(1 − g) per head.
  const perHead = (t: Value) => reshape(g, t, [batch, n, heads, dv / heads]);
  const normed = rmsNorm(g, p.scope('g_norm'), attn);
  const loc = rmsNorm(g, p.scope('l_norm'), perHead(xs));
  const gate = perHead(g.op1('Sigmoid', [linear(g, p.scope('g_proj'), xs, dv, { init: VIT_LINEAR_INIT })]));
  let y = reshape(g, g.op1('Add', [loc, g.op1('Mul', [gate, g.op1('Sub', [normed, loc])])]), [batch, n, dv]);
  if (cfg.outAct) y = silu(g, y);
  return linearNoBias(g, p.scope('o_proj'), y, c);
}

/** GLAMLP: gate_proj → chunk(gate, y) → down_proj(silu(gate)·y). */
function glaMlp(g: Graph, p: Params, x: Value): Value {
  const c = lastDim(x);
  const hidden = mlpHidden(c);
  const [gate, y] = linearParts(g, p.scope('gate_proj'), x, [hidden, hidden]);
  const act = g.op1('Mul', [silu(g, gate), y]);
  return linearNoBias(g, p.scope('down_proj'), act, c);
}

/**
 * The residual stream between blocks: `normed` = the next norm's output, `sum` = the stream itself. fla's
 * prenorm fusion makes each norm also perform the residual add before it: mlp_norm(a, residual=x) returns
 * (norm(a + x), a + x), and the next block's attn_norm (or the final norm) adds the MLP branch likewise.
 */
interface Stream {
  readonly normed: Value;
  readonly sum: Value;
}

/** GLABlock: r = x + attn(attn_norm(x)); x' = r + mlp(mlp_norm(r)). Returns the MLP branch and r, still to be added. */
function glaBlock(g: Graph, p: Params, s: Stream, cfg: ViGConfig, grid: readonly [number, number], o: ViGBuildOptions): { branch: Value; residual: Value } {
  const mid = addRmsNorm(g, p.scope('mlp_norm'), biGla(g, p.scope('attn'), s.normed, cfg, grid, o), s.sum);
  return { branch: glaMlp(g, p.scope('mlp'), mid.normed), residual: mid.sum };
}

/** `pos_embed` [1, posGrid², C], resized bicubically to the token grid when it differs (`resize_pos_embed`). */
function positionTable(g: Graph, p: Params, cfg: ViGConfig, grid: readonly [number, number]): Value {
  const [s, c] = [cfg.posGrid, cfg.embedDim];
  const table = p.param('pos_embed', [1, s * s, c], VIT_LINEAR_INIT);
  const same = grid[0] === s && grid[1] === s;
  const resized = same ? table : bicubicResize(table, c, s, s, grid[0], grid[1]);
  return g.initializer('pos_embed', float32([1, grid[0] * grid[1], c], resized));
}

/** images [batch, 3, S, S] → logits [batch, classes] or pooled features [batch, C]. */
export function build(g: Graph, cfg: ViGConfig, p: Params, o: ViGBuildOptions): Value {
  const size = o.imageSize;
  if (!Number.isInteger(size) || size <= 0 || size % PATCH !== 0) throw new RangeError(`ViG input side must be a positive multiple of ${PATCH}, got ${size}`);
  if (cfg.embedDim % 2 || keyDim(cfg) % cfg.heads || valueDim(cfg) % cfg.heads || valueDim(cfg) !== cfg.embedDim)
    throw new RangeError(`ViG: embed ${cfg.embedDim} / heads ${cfg.heads} / expand ${cfg.expandK},${cfg.expandV} do not fit (l_norm needs value_dim = embed_dim)`);
  const images = g.input('images', 'float32', ['batch', 3, size, size]);
  let x = patchEmbed(g, p.scope('patch_embed.proj'), images, cfg.embedDim);
  const grid = [size / PATCH, size / PATCH] as const;
  x = g.op1('Add', [x, positionTable(g, p, cfg, grid)]);
  let stream: Stream = { normed: rmsNorm(g, p.scope('blocks.0.attn_norm'), x), sum: x };
  for (let i = 0; i < cfg.depth; i++) {
    const { branch, residual } = glaBlock(g, p.scope(`blocks.${i}`), stream, cfg, grid, o);
    // The next attn_norm, or the final norm after the last block, performs this block's MLP residual add.
    const next = i + 1 < cfg.depth ? p.scope(`blocks.${i + 1}.attn_norm`) : p.scope('norm');
    stream = addRmsNorm(g, next, branch, residual);
  }
  const pooled = g.op1('ReduceMean', [stream.normed], { axes: [1], keepdims: 0 });
  if (o.output === 'features') return pooled;
  return linear(g, p.scope('head'), pooled, cfg.numClasses, { init: VIT_LINEAR_INIT });
}

/** A complete graph, output `logits` or `features`; a checkpoint must fit exactly (less `head.*` for features). */
export function buildViG(cfg: ViGConfig, p: Params, o: ViGBuildOptions): Graph {
  const g = new Graph(`vig-${cfg.embedDim}-${o.imageSize}`);
  g.output(build(g, cfg, p, o), o.output);
  p.assertComplete((key) => o.output === 'features' && key.startsWith('head.'));
  return g;
}

/**
 * Official keys → builder keys. The builder asks for the official names (`blocks.3.attn.gk_proj.1.bias`,
 * `patch_embed.proj.4.weight`, …), so this is the identity; it exists to say so in one place.
 */
export function mapCheckpoint(sd: StateDict): StateDict {
  return sd;
}

