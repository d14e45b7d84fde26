/**
 * DeiT (Touvron et al. 2021) as timm writes it (`deit_tiny_patch16_224`, `deit_small_patch16_224`): a
 * plain ViT/16 with a class token, LN eps 1e-6, fused qkv with bias, no LayerScale, final `norm`, and
 * `head` on the class token. It runs on the shared ViT trunk (vit.ts); the parameter names are timm's
 * state-dict keys, so a timm checkpoint maps one-to-one.
 *
 *   patch_embed.proj  Conv(3→C, k = s = 16)
 *   cls_token         [1, 1, C], prepended
 *   pos_embed         [1, 1 + 14·14, C]; other grids: the 14×14 part resized, the class row kept (timm
 *                     `resample_abs_pos_embed`: F.interpolate bicubic, align_corners False, antialias True —
 *                     PyTorch's antialiased kernel is Pillow's, a = −0.5, also when upsampling)
 *   blocks.N          x += attn(norm1(x)); x += mlp(norm2(x))
 *   norm, head        LayerNorm, then Linear(C, 1000) on token 0
 */
import type { Value } from './graph/graph.js';
import { Graph } from './graph/graph.js';
import { concat, reshape, slice } from './graph/nn.js';
import type { Params, StateDict } from './graph/params.js';
import { float32 } from './graph/tensor.js';
import { VIT_LINEAR_INIT, addNorm, blocks, linear, patchEmbedding, type ViTConfig } from './vit.js';

export interface DeiTConfig {
  readonly vit: ViTConfig;
  readonly numClasses: number;
  /** The grid `pos_embed` was trained at: 224/16. */
  readonly posGrid: number;
}

const vit = (width: number, heads: number): ViTConfig => ({ width, depth: 12, heads, patch: 16, mlpRatio: 4, layerScale: false, lnEps: 1e-6, qkv: 'fused', qkvBias: true });

export const variants = {
  'DeiT-T': { vit: vit(192, 3), numClasses: 1000, posGrid: 14 },
  'DeiT-S': { vit: vit(384, 6), numClasses: 1000, posGrid: 14 },
} satisfies Record<string, DeiTConfig>;
export type DeiTVariant = keyof typeof variants;

/** timm's pretrained cfg for both: 224, crop_pct 0.875, bicubic, ImageNet mean/std. */
export const preprocess = { size: 224, resize: 256, interpolation: 'bicubic', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], rgb: true } as const;

export interface DeiTBuildOptions {
  /** Input side, a multiple of 16. */
  readonly imageSize: number;
  /** Standard ONNX ops only (the twin of the contrib-op build). */
  readonly plain?: boolean;
}

/** timm's count: embeddings, 12 blocks of 12C² + 13C, norm, head. */
export function parameterCount(cfg: DeiTConfig): number {
  const { width: c, depth, patch } = cfg.vit;
  const embeddings = 3 * patch * patch * c + c + c + (1 + cfg.posGrid ** 2) * c;
  const block = 12 * c * c + 13 * c;
  return embeddings + depth * block + 2 * c + c * cfg.numClasses + cfg.numClasses;
}

/** PyTorch's antialiased cubic filter (`HelperInterpCubic::aa_filter`, Pillow's): a = −0.5. */
function aaCubic(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/** Per output index: first tap, taps, normalised weights (`compute_indices_weights_aa`, align_corners False). */
function aaTaps(inSize: number, outSize: number): { first: Int32Array; weights: Float64Array[] } {
  const scale = inSize / outSize;
  const support = 2 * Math.max(scale, 1);
  const inv = scale >= 1 ? 1 / scale : 1;
  const first = new Int32Array(outSize);
  const weights: Float64Array[] = [];
  for (let o = 0; o < outSize; o++) {
    const center = scale * (o + 0.5);
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const n = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const w = Float64Array.from({ length: n }, (_, j) => aaCubic((j + xmin - center + 0.5) * inv));
    const total = w.reduce((s, v) => s + v, 0);
    if (total !== 0) for (let j = 0; j < n; j++) w[j] /= total;
    first[o] = xmin;
    weights.push(w);
  }
  return { first, weights };
}

/** `F.interpolate(bicubic, align_corners=False, antialias=True)` of a channels-last grid [inH·inW, C] → [outH·outW, C]. */
export function antialiasedBicubicResize(src: Float32Array, channels: number, inH: number, inW: number, outH: number, outW: number): Float32Array {
  if (src.length !== inH * inW * channels) throw new RangeError(`antialiasedBicubicResize: ${src.length} values for ${inH}×${inW}×${channels}`);
  const ty = aaTaps(inH, outH);
  const tx = aaTaps(inW, outW);
  const out = new Float32Array(outH * outW * channels);
  const acc = new Float64Array(channels);
  for (let oy = 0; oy < outH; oy++)
    for (let ox = 0; ox < outW; ox++) {
      acc.fill(0);
      ty.weights[oy].forEach((wy, a) => {
        tx.weights[ox].forEach((wx, b) => {
          const base = ((ty.first[oy] + a) * inW + tx.first[ox] + b) * channels;
          for (let c = 0; c < channels; c++) acc[c] += wy * wx * src[base + c];
        });
      });
      out.set(acc, (oy * outW + ox) * channels);
    }
  return out;
}

/** `pos_embed` [1, 1 + s², C], its grid part resized to the token grid when that differs. */
function positionTable(g: Graph, p: Params, cfg: DeiTConfig, grid: number): Value {
  const [s, c] = [cfg.posGrid, cfg.vit.width];
  const table = p.param('pos_embed', [1, 1 + s * s, c], VIT_LINEAR_INIT);
  if (grid === s) return g.initializer('pos_embed', float32([1, 1 + s * s, c], table));
  const out = new Float32Array((1 + grid * grid) * c);
  out.set(table.subarray(0, c));
  out.set(antialiasedBicubicResize(table.subarray(c), c, s, s, grid, grid), c);
  return g.initializer('pos_embed', float32([1, 1 + grid * grid, c], out));
}

/** images [batch, 3, S, S] → { logits [batch, classes], features: the normed class token [batch, C] }. */
export function build(g: Graph, cfg: DeiTConfig, p: Params, o: DeiTBuildOptions): { logits: Value; features: Value } {
  const { imageSize: size } = o;
  const { width: c, patch } = cfg.vit;
  if (!Number.isInteger(size) || size <= 0 || size % patch !== 0) throw new RangeError(`DeiT input side must be a positive multiple of ${patch}, got ${size}`);
  const images = g.input('images', 'float32', ['batch', 3, size, size]);
  const tokens = patchEmbedding(g, p.scope('patch_embed'), cfg.vit)(images);
  const cls = g.initializer('cls_token', float32([1, 1, c], p.param('cls_token', [1, 1, c], { kind: 'normal', std: 1e-6 })));
  // 0·(first patch token) + cls: the class token broadcast over the symbolic batch (as buildViT does).
  const zero = g.op1('Mul', [slice(g, tokens, 1, 0, 1), g.constant(float32([1], [0]), 'zero')]);
  const x = concat(g, [g.op1('Add', [zero, cls]), tokens], 1);
  const r = blocks(g, p, { x: g.op1('Add', [x, positionTable(g, p, cfg, size / patch)]) }, cfg.vit, o);
  const normed = addNorm(g, p.scope('norm'), r, cfg.vit.lnEps, o).normed;
  const features = reshape(g, slice(g, normed, 1, 0, 1), [normed.shape[0], c]);
  return { features, logits: linear(g, p.scope('head'), features, cfg.numClasses, { init: VIT_LINEAR_INIT }) };
}

/** timm's key names are the builder's: the identity, kept to say so in one place. */
export function mapCheckpoint(sd: StateDict): StateDict {
  return sd;
}
