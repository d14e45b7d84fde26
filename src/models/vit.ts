/**
 * Vision Transformer trunk in the DINOv2 form (specs/models-a.md §1 step 6; DINOv2's `layers/{block,
 * attention,mlp,layer_scale,patch_embed}.py` as LitingLin/LoRAT vendors them): Conv patch embedding,
 * pre-LN blocks `x += ls1·attn(norm1(x)); x += ls2·mlp(norm2(x))`, exact-erf GELU, and optional LoRA on
 * the Linear layers of every block — merged into the weights at build, or fed as graph inputs so that
 * one loaded session serves many adapters. Module paths are the official ones (`blocks.3.attn.qkv.q.lora.A`).
 * Shared by LoRAT, and later CLIP and DeiT.
 *
 * Two builds of one network (DESIGN "Fused ops" 1): the default emits ORT's contrib kernels
 * (com.microsoft MultiHeadAttention, SkipLayerNormalization, BiasGelu) with LayerScale folded into the
 * projection weights; `plain: true` uses standard ONNX ops only, and is the twin the tests compare with.
 * Linear weights are stored transposed, [in, out], for MatMul on [B, N, C].
 */
import { mergeLora } from './adapters.js';
import type { Value } from './graph/graph.js';
import { Graph, MS_DOMAIN } from './graph/graph.js';
import { concat, convWeights, reshape, slice, transpose } from './graph/nn.js';
import type { Init, Params } from './graph/params.js';
import { ones, zeros } from './graph/params.js';
import { ShapeError, assertStatic, registerShapeRule, type ShapeRule } from './graph/shapes.js';
import type { HostTensor } from './graph/tensor.js';
import { float32, int64, shapeString } from './graph/tensor.js';

export interface ViTConfig {
  readonly width: number;
  readonly depth: number;
  readonly heads: number;
  readonly patch: number;
  /** MLP hidden width = int(width · mlpRatio). */
  readonly mlpRatio: number;
  /** LayerScale `ls1.gamma` / `ls2.gamma` (DINOv2); off for DeiT and CLIP. */
  readonly layerScale: boolean;
  readonly lnEps: number;
  /** How qkv is stored when no adapter wraps it: one `attn.qkv` Linear [3C, C], or `attn.qkv.{q,k,v}` (LoRAT's split). */
  readonly qkv: 'fused' | 'split';
  readonly qkvBias: boolean;
}

/** DINOv2's ViT/14 family (`vit_small` / `vit_base` / `vit_large`, qkv bias on, LayerScale init 1e-5, LN eps 1e-6). */
export const dinov2 = {
  'ViT-S/14': { width: 384, depth: 12, heads: 6, patch: 14, mlpRatio: 4, layerScale: true, lnEps: 1e-6, qkv: 'fused', qkvBias: true },
  'ViT-B/14': { width: 768, depth: 12, heads: 12, patch: 14, mlpRatio: 4, layerScale: true, lnEps: 1e-6, qkv: 'fused', qkvBias: true },
  'ViT-L/14': { width: 1024, depth: 24, heads: 16, patch: 14, mlpRatio: 4, layerScale: true, lnEps: 1e-6, qkv: 'fused', qkvBias: true },
} satisfies Record<string, ViTConfig>;

/** The Linear layers of a block that LoRAT adapts: every nn.Linear, with qkv split into q, k and v. */
export const LORA_TARGETS = ['attn.qkv.q', 'attn.qkv.k', 'attn.qkv.v', 'attn.proj', 'mlp.fc1', 'mlp.fc2'] as const;
export type LoraTarget = (typeof LORA_TARGETS)[number];

export interface LoraOptions {
  /**
   * 'merged': W' = W + s·B·A at build (`mergeLora`), so the graph is a plain ViT. 'inputs': A [r, in] and
   * B [out, r] are graph inputs named `<module>.lora.A` / `.lora.B`, and y = xWᵀ + b + s·(xAᵀ)Bᵀ.
   */
  readonly mode: 'merged' | 'inputs';
  readonly rank: number;
  /** s: alpha/r (LoRAT: 64/64 = 1). */
  readonly scale: number;
  readonly targets?: readonly LoraTarget[];
}

export interface ViTBuildOptions {
  /** Standard ONNX ops only. */
  readonly plain?: boolean;
  /** Adapters on the block Linears; their presence switches the names to LoRAT's (`attn.qkv.q.linear.weight`, `...lora.A`). */
  readonly lora?: LoraOptions;
  /**
   * Residual add + LayerNorm as ORT's `SkipLayerNormalization` (fused builds). Off by default: on the
   * CPU its kernel measured slower than Add + LayerNormalization (bench/results/track-cpu.md, B-224
   * ~18 ms vs ~9 ms a frame); the contrib op is for CUDA hosts.
   */
  readonly skipLayerNorm?: boolean;
}

/**
 * Seeded stand-in for timm's trunc_normal_(std=.02): a uniform draw of the same std (bound .02·√3). Only the
 * scale matters for an untrained build, and uniform draws are 3× cheaper in JS (ViT-L has 300M weights).
 */
export const VIT_LINEAR_INIT: Init = { kind: 'uniform', bound: 0.02 * Math.sqrt(3) };
/** DINOv2 builder `init_values`. */
const LAYER_SCALE_INIT: Init = { kind: 'const', value: 1e-5 };

// ---------------------------------------------------------------------------------------------
// Contrib-op shape rules (MACs per batch item, like every rule in shapes.ts).

const lastDim = (shape: readonly (number | string)[], what: string): number => {
  const d = shape[shape.length - 1];
  if (typeof d !== 'number') throw new ShapeError(`${what}: the hidden dim must be static`);
  return d;
};

/** query [B,S,C], key [B,L,C], value [B,L,Cv], optional bias [2C+Cv] → [B,S,Cv]; 2 matmuls of S·L·(C or Cv). */
registerShapeRule('MultiHeadAttention', MS_DOMAIN, (ins, attrs) => {
  const [q, k, v, bias] = ins;
  if (!q || !k || !v) throw new ShapeError('MultiHeadAttention needs query, key and value (packed layouts are not used)');
  const heads = attrs.num_heads;
  if (typeof heads !== 'number' || heads < 1) throw new ShapeError('MultiHeadAttention needs num_heads');
  if (q.shape.length !== 3 || k.shape.length !== 3 || v.shape.length !== 3) throw new ShapeError('query, key and value must be [B, N, C]');
  const [c, ck, cv] = [lastDim(q.shape, 'query'), lastDim(k.shape, 'key'), lastDim(v.shape, 'value')];
  if (c !== ck || c % heads !== 0 || cv % heads !== 0) throw new ShapeError(`hidden sizes ${c}/${ck}/${cv} do not fit ${heads} heads`);
  if (k.shape[1] !== v.shape[1]) throw new ShapeError('key and value lengths differ');
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== 2 * c + cv)) throw new ShapeError(`bias ${shapeString(bias.shape)} must be [${2 * c + cv}]`);
  const [s, l] = [q.shape[1], k.shape[1]].map((d) => (typeof d === 'number' ? d : 1));
  return { outputs: [{ dtype: q.dtype, shape: [q.shape[0], q.shape[1], cv] }], macs: s * l * c + s * l * cv };
});

/**
 * norm(input + skip + bias) → output, mean, inv_std_var, input_skip_bias_sum: `SkipLayerNormalization`, and its
 * RMSNorm form `SkipSimplifiedLayerNormalization` (ViG's fused pre-norm residual; its mean output is unused).
 */
const skipNorm: ShapeRule = (ins) => {
  const [x, skip, gamma] = ins;
  if (!x || !skip || !gamma) throw new ShapeError('skip normalisation needs input, skip and gamma');
  const c = lastDim(x.shape, 'input');
  if (lastDim(skip.shape, 'skip') !== c || gamma.shape[0] !== c) throw new ShapeError(`skip ${shapeString(skip.shape)} / gamma ${shapeString(gamma.shape)} do not match input ${shapeString(x.shape)}`);
  const stat = { dtype: x.dtype, shape: [...x.shape.slice(0, -1), 1] };
  return { outputs: [{ dtype: x.dtype, shape: x.shape }, stat, stat, { dtype: x.dtype, shape: x.shape }], macs: 0 };
};
registerShapeRule('SkipLayerNormalization', MS_DOMAIN, skipNorm);
registerShapeRule('SkipSimplifiedLayerNormalization', MS_DOMAIN, skipNorm);

/** GELU(x + bias), exact erf. */
registerShapeRule('BiasGelu', MS_DOMAIN, (ins) => {
  const [x, b] = ins;
  if (!x || !b || b.shape.length !== 1 || b.shape[0] !== lastDim(x.shape, 'input')) throw new ShapeError('BiasGelu needs a bias over the last dim');
  return { outputs: [{ dtype: x.dtype, shape: x.shape }], macs: 0 };
});

// ---------------------------------------------------------------------------------------------
// Linear layers.

/** A Linear's weights as the graph will use them. */
interface LinearSite {
  /** Module path: the prefix of the graph's initializers. */
  readonly name: string;
  readonly dIn: number;
  readonly dOut: number;
  /** [dOut, dIn]; the adapter is already in it when merged. */
  readonly weight: Float32Array;
  readonly bias?: Float32Array;
  readonly adapter?: { readonly A: Value; readonly B: Value; readonly scale: number };
}

const adapted = (lora: LoraOptions | undefined, target: LoraTarget | undefined): lora is LoraOptions =>
  lora !== undefined && target !== undefined && (lora.targets ?? LORA_TARGETS).includes(target);

/** nn.Linear under `p`, or LoRAT's LinearWithLoRA (`linear.weight`, `lora.A`, `lora.B`) when `target` is adapted. */
function linearSite(g: Graph, p: Params, dIn: number, dOut: number, o: { bias: boolean; lora?: LoraOptions; target?: LoraTarget; init?: Init }): LinearSite {
  const init = o.init ?? VIT_LINEAR_INIT;
  if (!adapted(o.lora, o.target)) {
    return { name: p.prefix, dIn, dOut, weight: p.param('weight', [dOut, dIn], init), bias: o.bias ? p.param('bias', [dOut], zeros) : undefined };
  }
  const { rank: r, scale, mode } = o.lora;
  const base = p.scope('linear');
  const weight = base.param('weight', [dOut, dIn], init);
  const bias = o.bias ? base.param('bias', [dOut], zeros) : undefined;
  if (mode === 'inputs') {
    const A = g.input(`${p.prefix}.lora.A`, 'float32', [r, dIn]);
    const B = g.input(`${p.prefix}.lora.B`, 'float32', [dOut, r]);
    return { name: p.prefix, dIn, dOut, weight, bias, adapter: { A, B, scale } };
  }
  // LoRAT's LoRALayer 'bert' init: trunc_normal(std .02) on both factors.
  const A = p.scope('lora').param('A', [r, dIn], VIT_LINEAR_INIT);
  const B = p.scope('lora').param('B', [dOut, r], VIT_LINEAR_INIT);
  return { name: p.prefix, dIn, dOut, weight: mergeLora(weight, A, B, scale, { dOut, dIn, rank: r }), bias };
}

/** [rows, cols] → [cols, rows], each row first multiplied by rowScale[row] (a folded LayerScale); 32×32 tiles stay in cache. */
function transposed(w: Float32Array, rows: number, cols: number, rowScale?: Float32Array): Float32Array {
  const out = new Float32Array(w.length);
  const T = 32;
  for (let i0 = 0; i0 < rows; i0 += T)
    for (let j0 = 0; j0 < cols; j0 += T) {
      const i1 = Math.min(i0 + T, rows);
      const j1 = Math.min(j0 + T, cols);
      for (let i = i0; i < i1; i++) {
        const s = rowScale ? rowScale[i] : 1;
        for (let j = j0; j < j1; j++) out[j * rows + i] = w[i * cols + j] * s;
      }
    }
  return out;
}

/** x·Wᵀ (+ s·(x·Aᵀ)·Bᵀ for an adapter input), without the bias. */
function matmulSite(g: Graph, x: Value, site: LinearSite, rowScale?: Float32Array): Value {
  const W = g.initializer(`${site.name}.weight`, float32([site.dIn, site.dOut], transposed(site.weight, site.dOut, site.dIn, rowScale)));
  const y = g.op1('MatMul', [x, W]);
  return site.adapter ? g.op1('Add', [y, adapterDelta(g, x, site.adapter)]) : y;
}

function adapterDelta(g: Graph, x: Value, a: NonNullable<LinearSite['adapter']>): Value {
  const down = g.op1('MatMul', [x, transpose(g, a.A, [1, 0])]);
  const up = g.op1('MatMul', [down, transpose(g, a.B, [1, 0])]);
  return a.scale === 1 ? up : g.op1('Mul', [up, g.constant(float32([1], [a.scale]), 'lora_scale')]);
}

const vector = (g: Graph, name: string, v: Float32Array): Value => g.initializer(name, float32([v.length], v));

/** Exact GELU from standard ops, as PyTorch computes it: x·½·(1 + erf(x/√2)). */
export function geluErf(g: Graph, x: Value): Value {
  const erf = g.op1('Erf', [g.op1('Mul', [x, g.constant(float32([1], [Math.SQRT1_2]), 'sqrt1_2')])]);
  const half = g.op1('Mul', [x, g.constant(float32([1], [0.5]), 'half')]);
  return g.op1('Mul', [half, g.op1('Add', [erf, g.constant(float32([1], [1]), 'one')])]);
}

/** GELU(x + b): BiasGelu in the fused build. */
function biasGelu(g: Graph, x: Value, bias: Value, plain: boolean | undefined): Value {
  return plain ? geluErf(g, g.op1('Add', [x, bias])) : g.op1('BiasGelu', [x, bias], {}, { domain: MS_DOMAIN });
}

export interface LinearOptions {
  readonly gelu?: boolean;
  readonly plain?: boolean;
  readonly bias?: boolean;
  readonly init?: Init;
}

/**
 * One bias-free nn.Linear whose output is used in parts (ViG's qkv_proj → q, k, v; GLAMLP's gate_proj →
 * gate, y): one MatMul per part on the matching rows of the weight, so no Split copies the joint output.
 * The checkpoint key stays the one weight [Σ widths, dIn].
 */
export function linearParts(g: Graph, p: Params, x: Value, widths: readonly number[], init: Init = VIT_LINEAR_INIT): Value[] {
  const dIn = assertStatic(x.shape.slice(-1), 'Linear input')[0];
  const dOut = widths.reduce((a, b) => a + b, 0);
  const weight = p.param('weight', [dOut, dIn], init);
  let row = 0;
  return widths.map((w, i) => {
    const part = weight.subarray(row * dIn, (row + w) * dIn);
    row += w;
    return g.op1('MatMul', [x, g.initializer(`${p.prefix}.weight.${i}`, float32([dIn, w], transposed(part, w, dIn)))]);
  });
}

/** nn.Linear(dIn → dOut) on the last dim of x, optionally followed by exact GELU (heads and adapters-free layers). */
export function linear(g: Graph, p: Params, x: Value, dOut: number, o: LinearOptions = {}): Value {
  const dIn = assertStatic(x.shape.slice(-1), 'Linear input')[0];
  const site = linearSite(g, p, dIn, dOut, { bias: o.bias !== false, init: o.init });
  const y = matmulSite(g, x, site);
  if (!site.bias) return o.gelu ? geluErf(g, y) : y;
  const b = vector(g, `${site.name}.bias`, site.bias);
  return o.gelu ? biasGelu(g, y, b, o.plain) : g.op1('Add', [y, b]);
}

// ---------------------------------------------------------------------------------------------
// The residual stream.

/** A residual branch's output not yet added to the stream; fused builds leave its bias for the next SkipLayerNormalization. */
export interface Branch {
  readonly value: Value;
  readonly bias?: Value;
}

/** The stream between blocks: x, plus the last branch when its add is still pending (so it lands inside the next LayerNorm). */
export interface Residual {
  readonly x: Value;
  readonly branch?: Branch;
}

/** LayerScale's per-channel γ (`ls1.gamma`). */
export interface LayerScale {
  readonly name: string;
  readonly gamma: Float32Array;
}

/** The end of a residual branch: Linear, then LayerScale. Fused: γ folded into W and b, the bias deferred. */
function branchOutput(g: Graph, x: Value, site: LinearSite, ls: LayerScale | undefined, o: ViTBuildOptions): Branch {
  const gamma = ls?.gamma;
  const bias = site.bias ? Float32Array.from(site.bias, (b, i) => b * (gamma ? gamma[i] : 1)) : undefined;
  const scale = (y: Value) => (ls ? g.op1('Mul', [y, vector(g, ls.name, ls.gamma)]) : y);
  if (o.plain) {
    const y = matmulSite(g, x, site);
    return { value: scale(site.bias ? g.op1('Add', [y, vector(g, `${site.name}.bias`, site.bias)]) : y) };
  }
  // An adapter's delta cannot take γ (it is an input), so γ stays a Mul there.
  const value = site.adapter ? scale(matmulSite(g, x, site)) : matmulSite(g, x, site, gamma);
  return { value, bias: bias && vector(g, `${site.name}.bias`, bias) };
}

/** `norm(x + pending branch)`; returns the new stream value too. One SkipLayerNormalization when asked for. */
export function addNorm(g: Graph, p: Params, r: Residual, eps: number, o: ViTBuildOptions): { x: Value; normed: Value } {
  const c = assertStatic(r.x.shape.slice(-1), 'LayerNorm input')[0];
  const gamma = vector(g, `${p.prefix}.weight`, p.param('weight', [c], ones));
  const beta = vector(g, `${p.prefix}.bias`, p.param('bias', [c], zeros));
  const layerNorm = (x: Value) => g.op1('LayerNormalization', [x, gamma, beta], { axis: -1, epsilon: eps });
  const b = r.branch;
  if (!b) return { x: r.x, normed: layerNorm(r.x) };
  if (o.plain || !o.skipLayerNorm) {
    const x = g.op1('Add', [r.x, b.bias ? g.op1('Add', [b.value, b.bias]) : b.value]);
    return { x, normed: layerNorm(x) };
  }
  const ins = b.bias ? [r.x, b.value, gamma, beta, b.bias] : [r.x, b.value, gamma, beta];
  const [normed, , , x] = g.op('SkipLayerNormalization', ins, { epsilon: eps }, { domain: MS_DOMAIN, outputs: 4 });
  return { x, normed };
}

/** The stream's value with any pending branch added (for outputs that are not followed by a LayerNorm). */
export function settle(g: Graph, r: Residual): Value {
  const b = r.branch;
  if (!b) return r.x;
  return g.op1('Add', [r.x, b.bias ? g.op1('Add', [b.value, b.bias]) : b.value]);
}

// ---------------------------------------------------------------------------------------------
// Attention, MLP, block.

/** softmax(QKᵀ/√d)·V per head from standard ops; q, k, v are [B, N, C] with heads side by side in C. */
export function plainAttention(g: Graph, q: Value, k: Value, v: Value, heads: number): Value {
  const [b, n, c] = q.shape;
  const d = (c as number) / heads;
  const split = (x: Value, perm: number[]) => transpose(g, reshape(g, x, [b, x.shape[1], heads, d]), perm);
  const scores = g.op1('MatMul', [split(q, [0, 2, 1, 3]), split(k, [0, 2, 3, 1])]);
  const scaled = g.op1('Mul', [scores, g.constant(float32([1], [1 / Math.sqrt(d)]), 'attn_scale')]);
  const attn = g.op1('Softmax', [scaled], { axis: -1 });
  const out = g.op1('MatMul', [attn, split(v, [0, 2, 1, 3])]);
  return reshape(g, transpose(g, out, [0, 2, 1, 3]), [b, n, c]);
}

/** ORT's fused kernel; its default scale is 1/√head_dim, and `bias` [3C] is the q, k, v projection bias. */
export function fusedAttention(g: Graph, q: Value, k: Value, v: Value, heads: number, bias?: Value): Value {
  return g.op1('MultiHeadAttention', bias ? [q, k, v, bias] : [q, k, v], { num_heads: heads }, { domain: MS_DOMAIN });
}

/** Attention: qkv (one MatMul over the row-concatenated q, k, v weights) → heads → proj. Returns the branch after LayerScale. */
export function attention(g: Graph, p: Params, x: Value, cfg: ViTConfig, o: ViTBuildOptions, ls?: LayerScale): Branch {
  const c = cfg.width;
  const { lora } = o;
  const pq = p.scope('qkv');
  const parts =
    !lora && cfg.qkv === 'fused'
      ? [linearSite(g, pq, c, 3 * c, { bias: cfg.qkvBias })]
      : (['q', 'k', 'v'] as const).map((t) => linearSite(g, pq.scope(t), c, c, { bias: cfg.qkvBias, lora, target: `attn.qkv.${t}` }));
  const fusedSite: LinearSite = {
    name: pq.prefix,
    dIn: c,
    dOut: 3 * c,
    weight: parts.length === 1 ? parts[0].weight : concatRows(parts.map((s) => s.weight)),
    bias: cfg.qkvBias ? concatRows(parts.map((s) => s.bias as Float32Array)) : undefined,
  };
  let qkv = matmulSite(g, x, fusedSite);
  const bias = fusedSite.bias && vector(g, `${pq.prefix}.bias`, fusedSite.bias);
  if (o.plain && bias) qkv = g.op1('Add', [qkv, bias]);
  const qkvParts = g.op('Split', [qkv, g.constant(int64([c, c, c]), 'split')], { axis: -1 });
  const [q, k, v] = qkvParts.map((t, i) => {
    const a = parts[i]?.adapter;
    return parts.length === 3 && a ? g.op1('Add', [t, adapterDelta(g, x, a)]) : t;
  });
  const heads = o.plain ? plainAttention(g, q, k, v, cfg.heads) : fusedAttention(g, q, k, v, cfg.heads, bias);
  const proj = linearSite(g, p.scope('proj'), c, c, { bias: true, lora, target: 'attn.proj' });
  return branchOutput(g, heads, proj, ls, o);
}

function concatRows(parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of parts) {
    out.set(a, at);
    at += a.length;
  }
  return out;
}

/** fc1 → GELU (exact) → fc2, then LayerScale. */
export function mlp(g: Graph, p: Params, x: Value, cfg: ViTConfig, o: ViTBuildOptions, ls?: LayerScale): Branch {
  const c = cfg.width;
  const hidden = Math.floor(c * cfg.mlpRatio);
  const fc1 = linearSite(g, p.scope('fc1'), c, hidden, { bias: true, lora: o.lora, target: 'mlp.fc1' });
  const h = biasGelu(g, matmulSite(g, x, fc1), vector(g, `${fc1.name}.bias`, fc1.bias as Float32Array), o.plain);
  const fc2 = linearSite(g, p.scope('fc2'), hidden, c, { bias: true, lora: o.lora, target: 'mlp.fc2' });
  return branchOutput(g, h, fc2, ls, o);
}

/** DINOv2 Block (inference): x += ls1·attn(norm1(x)); x += ls2·mlp(norm2(x)). */
export function block(g: Graph, p: Params, r: Residual, cfg: ViTConfig, o: ViTBuildOptions): Residual {
  const layerScale = (name: string): LayerScale | undefined => {
    if (!cfg.layerScale) return undefined;
    const s = p.scope(name);
    return { name: `${s.prefix}.gamma`, gamma: s.param('gamma', [cfg.width], LAYER_SCALE_INIT) };
  };
  const n1 = addNorm(g, p.scope('norm1'), r, cfg.lnEps, o);
  const a = attention(g, p.scope('attn'), n1.normed, cfg, o, layerScale('ls1'));
  const n2 = addNorm(g, p.scope('norm2'), { x: n1.x, branch: a }, cfg.lnEps, o);
  return { x: n2.x, branch: mlp(g, p.scope('mlp'), n2.normed, cfg, o, layerScale('ls2')) };
}

/** `blocks.0 … blocks.{depth−1}` under the root scope `p`. */
export function blocks(g: Graph, p: Params, r: Residual, cfg: ViTConfig, o: ViTBuildOptions): Residual {
  if (o.lora && !(Number.isInteger(o.lora.rank) && o.lora.rank > 0)) throw new RangeError(`LoRA rank must be a positive integer, got ${o.lora.rank}`);
  let s = r;
  for (let i = 0; i < cfg.depth; i++) s = block(g, p.scope(`blocks.${i}`), s, cfg, o);
  return s;
}

/** PatchEmbed: Conv2d(3, C, k = s = patch), flatten, [B, N, C]. One set of weights, any number of images (template and search). */
export function patchEmbedding(g: Graph, p: Params, cfg: ViTConfig, inChannels = 3): (x: Value) => Value {
  const proj = p.scope('proj');
  const w = convWeights(proj, inChannels, { cout: cfg.width, k: cfg.patch, stride: cfg.patch, pad: 0 });
  const W = g.initializer(`${proj.prefix}.weight`, float32([...w.shape], w.weight));
  const B = w.bias ? g.initializer(`${proj.prefix}.bias`, float32([cfg.width], w.bias)) : null;
  return (x) => {
    const [h, wd] = assertStatic(x.shape.slice(2), 'image');
    if (h % cfg.patch || wd % cfg.patch) throw new RangeError(`image ${h}×${wd} is not a multiple of patch ${cfg.patch}`);
    const y = g.op1('Conv', B ? [x, W, B] : [x, W], { kernel_shape: [cfg.patch, cfg.patch], strides: [cfg.patch, cfg.patch], pads: [0, 0, 0, 0] });
    return transpose(g, reshape(g, y, [x.shape[0], cfg.width, (h / cfg.patch) * (wd / cfg.patch)]), [0, 2, 1]);
  };
}

// ---------------------------------------------------------------------------------------------
// A standalone ViT and its adapter inputs.

export interface ViTGraphOptions extends ViTBuildOptions {
  readonly imageSize: number;
  /** Prepend `cls_token` [1, 1, C] (then `pos_embed` has 1 + N rows). */
  readonly clsToken?: boolean;
}

/** images [batch, 3, S, S] → tokens [batch, (1 +) N, C] after the final `norm`. */
export function buildViT(cfg: ViTConfig, p: Params, o: ViTGraphOptions): Graph {
  const g = new Graph(`vit-${cfg.width}x${cfg.depth}`);
  const images = g.input('images', 'float32', ['batch', 3, o.imageSize, o.imageSize]);
  let x = patchEmbedding(g, p.scope('patch_embed'), cfg)(images);
  const n = (o.imageSize / cfg.patch) ** 2 + (o.clsToken ? 1 : 0);
  if (o.clsToken) {
    const cls = g.initializer('cls_token', float32([1, 1, cfg.width], p.param('cls_token', [1, 1, cfg.width], { kind: 'normal', std: 1e-6 })));
    // 0·(first patch token) + cls: the class token broadcast over the symbolic batch without Shape/Expand.
    const zero = g.op1('Mul', [slice(g, x, 1, 0, 1), g.constant(float32([1], [0]), 'zero')]);
    x = concat(g, [g.op1('Add', [zero, cls]), x], 1);
  }
  const pos = g.initializer('pos_embed', float32([1, n, cfg.width], p.param('pos_embed', [1, n, cfg.width], VIT_LINEAR_INIT)));
  const r = blocks(g, p, { x: g.op1('Add', [x, pos]) }, cfg, o);
  g.output(addNorm(g, p.scope('norm'), r, cfg.lnEps, o).normed, 'tokens');
  return g;
}

/** The adapter inputs of a graph built with `lora.mode = 'inputs'`. */
export function adapterInputs(g: Graph): Value[] {
  return g.inputValues.filter((v) => /\.lora\.[AB]$/.test(v.name));
}

// ---------------------------------------------------------------------------------------------
// Position tables.

/** Keys' cubic convolution weights, as PyTorch's `get_cubic_upsample_coefficients` (A = −0.75). */
function cubicWeights(t: number): [number, number, number, number] {
  const A = -0.75;
  const near = (x: number) => ((A + 2) * x - (A + 3)) * x * x + 1;
  const far = (x: number) => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return [far(t + 1), near(t), near(1 - t), far(2 - t)];
}

/** Per output index: the 4 source taps (border-replicated) and their weights, as PyTorch's HelperInterpCubic. */
function cubicTaps(inSize: number, outSize: number): { index: Int32Array; weight: Float64Array } {
  const f = Math.fround;
  const scale = f(inSize / outSize); // align_corners=False with `size=`: in/out, in float like the CPU kernel
  const index = new Int32Array(4 * outSize);
  const weight = new Float64Array(4 * outSize);
  for (let o = 0; o < outSize; o++) {
    const real = f(f(scale * f(o + 0.5)) - 0.5); // not clamped at 0 for cubic
    const i0 = Math.min(Math.floor(real), inSize - 1);
    const t = Math.min(Math.max(real - i0, 0), 1);
    const w = cubicWeights(t);
    for (let j = 0; j < 4; j++) {
      index[4 * o + j] = Math.min(Math.max(i0 - 1 + j, 0), inSize - 1);
      weight[4 * o + j] = f(w[j]);
    }
  }
  return { index, weight };
}

/**
 * `F.interpolate(mode='bicubic', align_corners=False, size=(outH, outW))` of a channels-last table
 * [inH·inW, C] → [outH·outW, C] (row-major grid). Sums run in float64; PyTorch's CPU kernel uses float,
 * so results agree to float rounding.
 */
export function bicubicResize(src: Float32Array, channels: number, inH: number, inW: number, outH: number, outW: number): Float32Array {
  if (src.length !== inH * inW * channels) throw new RangeError(`bicubicResize: ${src.length} values for ${inH}×${inW}×${channels}`);
  const ty = cubicTaps(inH, outH);
  const tx = cubicTaps(inW, outW);
  const out = new Float32Array(outH * outW * channels);
  const acc = new Float64Array(channels);
  for (let oy = 0; oy < outH; oy++)
    for (let ox = 0; ox < outW; ox++) {
      acc.fill(0);
      for (let a = 0; a < 4; a++) {
        const wy = ty.weight[4 * oy + a];
        const row = ty.index[4 * oy + a] * inW;
        for (let b = 0; b < 4; b++) {
          const w = wy * tx.weight[4 * ox + b];
          const base = (row + tx.index[4 * ox + b]) * channels;
          for (let c = 0; c < channels; c++) acc[c] += w * src[base + c];
        }
      }
      out.set(acc, (oy * outW + ox) * channels);
    }
  return out;
}

/**
 * A checkpoint's `pos_embed` [1, prefix + h·w, C] (square grid) → [1, outH·outW, C] without the prefix
 * rows (DINOv2's `interpolate_pos_encoding(..., num_prefix_tokens=0, interpolate_offset=0)` after
 * `[:, 1:]`). An unchanged grid is returned as is, like the original.
 */
export function resizePosEmbed(t: HostTensor, outH: number, outW: number, prefixTokens = 1): HostTensor {
  if (t.shape.length !== 3 || t.shape[0] !== 1 || !(t.data instanceof Float32Array)) throw new RangeError(`pos_embed must be float [1, N, C], got ${t.dtype} ${shapeString(t.shape)}`);
  const [, rows, c] = t.shape;
  const side = Math.round(Math.sqrt(rows - prefixTokens));
  if (side * side !== rows - prefixTokens) throw new RangeError(`pos_embed ${shapeString(t.shape)} minus ${prefixTokens} prefix rows is not a square grid`);
  const grid = t.data.subarray(prefixTokens * c);
  if (side === outH && side === outW) return float32([1, side * side, c], grid.slice());
  return float32([1, outH * outW, c], bicubicResize(grid, c, side, side, outH, outW));
}
