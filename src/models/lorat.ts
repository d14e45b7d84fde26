/**
 * LoRAT (specs/models-a.md §1; LitingLin/LoRAT `trackit/models/methods/LoRAT/lorat.py`, ECCV 2024): one
 * DINOv2 ViT over [template 8×8 ; search 16×16] tokens, a position table shared by both (the template
 * takes its top-left crop), a 3-way token-type embedding driven by the template foreground mask, LoRA on
 * every Linear of every block, and the MLP anchor-free head with its box decode in the graph.
 *
 * Checkpoints: the LoRAT layout (`blocks.N.attn.qkv.q.linear.weight`, `...q.lora.A`, `head.cls_mlp.layers.0.weight`,
 * `token_type_embed`, `pos_embed`), completed from the DINOv2 backbone file when the LoRAT file holds only
 * what was trained (adapters, head, token types) — `loadLoRATWeights`.
 */
import type { Value } from './graph/graph.js';
import { Graph } from './graph/graph.js';
import { concat, reshape, slice } from './graph/nn.js';
import type { StateDict } from './graph/params.js';
import { CheckpointMismatchError, Params } from './graph/params.js';
import type { HostTensor } from './graph/tensor.js';
import { float32, int64, shapeString } from './graph/tensor.js';
import type { LoraOptions, Residual, ViTConfig } from './vit.js';
import { LORA_TARGETS, VIT_LINEAR_INIT, addNorm, adapterInputs, blocks, dinov2, linear, patchEmbedding, resizePosEmbed } from './vit.js';

export interface LoRATConfig {
  readonly vit: ViTConfig;
  readonly templateSize: number;
  readonly searchSize: number;
  /** `model.lora` of the config: scaling alpha/r unless the checkpoint says otherwise (`lora_alpha`). */
  readonly lora: { readonly rank: number; readonly alpha: number };
}

/** config/LoRAT/B-224/config.yaml (+ _mixin/small.yaml, large.yaml): r 64, alpha 64, template 112, search 224. */
const LORA = { rank: 64, alpha: 64 } as const;
export const variants = {
  'S-224': { vit: dinov2['ViT-S/14'], templateSize: 112, searchSize: 224, lora: LORA },
  'B-224': { vit: dinov2['ViT-B/14'], templateSize: 112, searchSize: 224, lora: LORA },
  'L-224': { vit: dinov2['ViT-L/14'], templateSize: 112, searchSize: 224, lora: LORA },
} satisfies Record<string, LoRATConfig>;
export type LoRATVariant = keyof typeof variants;

/** Crops are normalised with timm's ImageNet mean/std on pixels/255 (trackit `dataset_norm_stats.py`); run.yaml's factors. */
export const preprocess = {
  template: { size: 112, areaFactor: 2 },
  search: { size: 224, areaFactor: 4 },
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225],
  interpolation: 'bilinear',
} as const;

/** Token types (spec §1 step 5). */
export const TOKEN_TYPE = { templateBackground: 0, templateForeground: 1, search: 2 } as const;

export interface BuildOptions {
  /** Standard ONNX ops only (the unfused twin). */
  readonly plain?: boolean;
  /**
   * 'merged' (default): adapters merged at build, a plain ViT in the graph. 'inputs': adapter factors are graph
   * inputs (`blocks.3.attn.qkv.q.lora.A` [r, in], `.lora.B` [out, r]; see `loraFeeds`). 'none': the un-adapted
   * model under DINOv2's names (fused `attn.qkv`), as the official code builds it with LoRA disabled.
   */
  readonly lora?: 'merged' | 'inputs' | 'none';
  /** Also output `raw` [batch, 256, 4], reg_mlp's logits before the sigmoid and decode. */
  readonly rawOutput?: boolean;
}

export interface LoRATOutputs {
  readonly scoreMap: Value;
  readonly boxes: Value;
}

export const featureSizes = (cfg: LoRATConfig) => ({ template: cfg.templateSize / cfg.vit.patch, search: cfg.searchSize / cfg.vit.patch });

/** `get_anchor_free_reference_points`: cell centres ((j+0.5)/W, (i+0.5)/H), [H, W, 2]. */
export function referencePoints(size: number): Float32Array {
  const ref = new Float32Array(size * size * 2);
  for (let i = 0; i < size; i++)
    for (let j = 0; j < size; j++) {
      ref[2 * (i * size + j)] = (j + 0.5) / size;
      ref[2 * (i * size + j) + 1] = (i + 0.5) / size;
    }
  return ref;
}

/** The adapter settings the ViT builder gets: scale from `lora_alpha` / `use_rslora` (buffers, so a checkpoint can set them). */
function loraOptions(p: Params, cfg: LoRATConfig, mode: BuildOptions['lora']): LoraOptions | undefined {
  const r = cfg.lora.rank;
  if (mode === 'none') return undefined;
  if (mode === 'inputs') return { mode, rank: r, scale: 1 }; // the adapter's own scale is folded into B by loraFeeds
  const alpha = p.buffer('lora_alpha', [], { kind: 'const', value: cfg.lora.alpha })[0];
  const rs = p.buffer('use_rslora', [], { kind: 'const', value: 0 })[0] !== 0;
  return { mode: 'merged', rank: r, scale: alpha / (rs ? Math.sqrt(r) : r) };
}

/** `MlpAnchorFreeHead`: cls_mlp and reg_mlp (Linear-GELU-Linear-GELU-Linear); boxes = ref ∓ sigmoid(l,t | r,b). */
function head(g: Graph, p: Params, x: Value, size: number, o: BuildOptions): LoRATOutputs {
  const c = x.shape[2] as number;
  const mlp3 = (q: Params, out: number) => {
    const h0 = linear(g, q.scope('layers.0'), x, c, { gelu: true, plain: o.plain, init: VIT_LINEAR_INIT });
    const h1 = linear(g, q.scope('layers.1'), h0, c, { gelu: true, plain: o.plain, init: VIT_LINEAR_INIT });
    return linear(g, q.scope('layers.2'), h1, out, { init: VIT_LINEAR_INIT });
  };
  const batch = x.shape[0];
  const scoreMap = reshape(g, mlp3(p.scope('cls_mlp'), 1), [batch, size, size]);
  const raw = mlp3(p.scope('reg_mlp'), 4);
  if (o.rawOutput) g.output(raw, 'raw');
  const ltrb = g.op1('Sigmoid', [reshape(g, raw, [batch, size, size, 4])]);
  const ref = g.constant(float32([size, size, 2], referencePoints(size)), 'bbox_offset');
  const x1y1 = g.op1('Sub', [ref, slice(g, ltrb, 3, 0, 2)]);
  const x2y2 = g.op1('Add', [ref, slice(g, ltrb, 3, 2, 4)]);
  return { scoreMap, boxes: concat(g, [x1y1, x2y2], 3) };
}

/**
 * Builds the tracker into `g`. Inputs: `z` [batch, 3, 112, 112] and `x` [batch, 3, 224, 224] (normalised crops),
 * `z_feat_mask` [batch, 8, 8] int64 (1 on the target). Outputs: `score_map` [batch, 16, 16] (logits) and
 * `boxes` [batch, 16, 16, 4] (x1, y1, x2, y2 in [0, 1] of the search crop).
 */
export function build(g: Graph, cfg: LoRATConfig, p: Params, o: BuildOptions = {}): LoRATOutputs {
  const { width: c, patch } = cfg.vit;
  const { template: fz, search: fx } = featureSizes(cfg);
  if (!Number.isInteger(fz) || !Number.isInteger(fx) || fz > fx) throw new RangeError(`template ${cfg.templateSize} / search ${cfg.searchSize} must be multiples of patch ${patch}, template ≤ search`);
  const mode = o.lora ?? 'merged';
  const vitCfg: ViTConfig = { ...cfg.vit, qkv: mode === 'none' ? 'fused' : 'split' };
  const vo = { plain: o.plain, lora: loraOptions(p, cfg, mode) };
  const z = g.input('z', 'float32', ['batch', 3, cfg.templateSize, cfg.templateSize]);
  const x = g.input('x', 'float32', ['batch', 3, cfg.searchSize, cfg.searchSize]);
  const mask = g.input('z_feat_mask', 'int64', ['batch', fz, fz]);

  const embed = patchEmbedding(g, p.scope('patch_embed'), vitCfg);
  const pos = g.initializer('pos_embed', float32([1, fx * fx, c], p.param('pos_embed', [1, fx * fx, c], VIT_LINEAR_INIT)));
  const types = g.initializer('token_type_embed', float32([3, c], p.param('token_type_embed', [3, c], VIT_LINEAR_INIT)));
  // Template: the top-left fz×fz crop of the search table, plus token type 0/1 from the mask.
  const posZ = reshape(g, slice(g, slice(g, reshape(g, pos, [1, fx, fx, c]), 1, 0, fz), 2, 0, fz), [1, fz * fz, c]);
  const typeZ = reshape(g, g.op1('Gather', [types, mask], { axis: 0 }), ['batch', fz * fz, c]);
  const zTokens = g.op1('Add', [g.op1('Add', [embed(z), posZ]), typeZ]);
  const typeX = g.op1('Gather', [types, g.constant(int64([TOKEN_TYPE.search], []), 'search_type')], { axis: 0 });
  const xTokens = g.op1('Add', [g.op1('Add', [embed(x), pos]), typeX]);

  const r: Residual = blocks(g, p, { x: concat(g, [zTokens, xTokens], 1) }, vitCfg, vo);
  const feat = addNorm(g, p.scope('norm'), r, vitCfg.lnEps, vo).normed;
  const out = head(g, p.scope('head'), slice(g, feat, 1, fz * fz, fz * fz + fx * fx), fx, o);
  g.output(out.scoreMap, 'score_map');
  g.output(out.boxes, 'boxes');
  return out;
}

/** Keys a (completed) LoRAT state dict may hold that a build does not take. */
export function ignoredCheckpointKey(mode: BuildOptions['lora'] = 'merged'): (key: string) => boolean {
  return (key) => mode === 'inputs' && (/\.lora\.[AB]$/.test(key) || key === 'lora_alpha' || key === 'use_rslora');
}

const configOf = (v: LoRATVariant | LoRATConfig): LoRATConfig => (typeof v === 'string' ? variants[v] : v);

export function buildLoRAT(variant: LoRATVariant | LoRATConfig, p: Params, o: BuildOptions = {}): Graph {
  const name = typeof variant === 'string' ? variant : `${variant.vit.width}x${variant.vit.depth}`;
  const g = new Graph(`lorat-${name}${o.lora === 'inputs' ? '-adapter-inputs' : ''}`);
  build(g, configOf(variant), p, o);
  p.assertComplete(ignoredCheckpointKey(o.lora));
  return g;
}

// ---------------------------------------------------------------------------------------------
// Checkpoints.

/** DINOv2 keys LoRAT has no use for: it has no class or register tokens, and mask_token is iBOT's (training). */
export const DINOV2_UNUSED_KEYS = ['cls_token', 'mask_token', 'register_tokens'] as const;

const FUSED_QKV = /^(blocks\.\d+\.attn\.qkv)\.(weight|bias)$/;
const SPLIT_QKV = /^(blocks\.\d+\.attn\.qkv\.[qkv])\.(weight|bias)$/;
const PLAIN_LINEAR = /^(blocks\.\d+\.(?:attn\.proj|mlp\.fc1|mlp\.fc2))\.(weight|bias)$/;

function floatData(key: string, t: HostTensor): Float32Array {
  if (!(t.data instanceof Float32Array)) throw new CheckpointMismatchError(`${key}: expected float data, got ${t.dtype}`);
  return t.data;
}

function scalar(key: string, t: HostTensor): number {
  if (t.data.length !== 1) throw new CheckpointMismatchError(`${key}: expected a scalar, got ${shapeString(t.shape)}`);
  const v = t.data[0];
  return typeof v === 'bigint' ? Number(v) : v;
}

/** Puts a backbone tensor under LoRAT's module path: fused qkv split into q, k, v rows; plain Linears under `.linear`. */
function putBackbone(out: Map<string, HostTensor>, key: string, t: HostTensor): void {
  const fused = FUSED_QKV.exec(key);
  if (fused) {
    const data = floatData(key, t);
    const rows = t.shape[0];
    if (rows % 3 !== 0) throw new CheckpointMismatchError(`${key}: ${shapeString(t.shape)} does not split into q, k, v`);
    const part = data.length / 3;
    ['q', 'k', 'v'].forEach((name, i) =>
      out.set(`${fused[1]}.${name}.linear.${fused[2]}`, float32([rows / 3, ...t.shape.slice(1)], data.subarray(i * part, (i + 1) * part))),
    );
    return;
  }
  const plain = SPLIT_QKV.exec(key) ?? PLAIN_LINEAR.exec(key);
  out.set(plain ? `${plain[1]}.linear.${plain[2]}` : key, t);
}

export interface LoRATWeights {
  /** The LoRAT file: trained parts only (adapters, head, token types), or a whole model. */
  readonly lorat: StateDict;
  /** DINOv2's `dinov2_vit?14_pretrain.pth`, for what the LoRAT file lacks. */
  readonly dinov2?: StateDict;
}

/**
 * One state dict in the LoRAT layout from the LoRAT file and, under it, the DINOv2 backbone — what the official
 * code gets by loading DINOv2 into the model, then the LoRAT file through its `vit_lora_utils.Hooker`:
 * - DINOv2 `blocks.N.attn.qkv.weight` [3C, C] → `blocks.N.attn.qkv.{q,k,v}.linear.weight` (rows 0..C, C..2C, 2C..3C);
 *   `attn.proj`, `mlp.fc1`, `mlp.fc2` → `<module>.linear.*`; the same renames apply to a LoRAT file saved merged.
 * - DINOv2 `pos_embed` [1, 1 + 37², C]: class row dropped, bicubic-resized to the search grid (`resizePosEmbed`).
 *   A `pos_embed` in the LoRAT file wins (a whole-model save holds the resized table).
 * - `cls_token`, `mask_token`, `register_tokens` are dropped (unused by LoRAT). Any other key passes through, so
 *   `assertComplete` names it.
 * - `lora_alpha` / `use_rslora` become float scalars; absent (the frozen-excluded save drops them), they are set so
 *   that the scaling is 1, as the Hooker does (its alpha defaults to None → scaling 1).
 */
export function loratStateDict(w: LoRATWeights, variant: LoRATVariant | LoRATConfig): StateDict {
  const cfg = configOf(variant);
  const fx = featureSizes(cfg).search;
  const out = new Map<string, HostTensor>();
  const hasBackbone = (sd: StateDict) => [...sd.keys()].some((k) => /^blocks\.\d+\.norm1\.weight$/.test(k));
  if (!w.dinov2 && !hasBackbone(w.lorat))
    throw new CheckpointMismatchError('the LoRAT checkpoint holds no backbone (no blocks.N.norm1.weight): pass the DINOv2 state dict (dinov2_vit?14_pretrain.pth) as `dinov2`');
  for (const [key, t] of w.dinov2 ?? []) {
    if ((DINOV2_UNUSED_KEYS as readonly string[]).includes(key)) continue;
    if (key === 'pos_embed') out.set(key, resizePosEmbed(t, fx, fx, 1));
    else putBackbone(out, key, t);
  }
  let rank: number | undefined;
  for (const [key, t] of w.lorat) {
    if (key === 'lora_alpha' || key === 'use_rslora') out.set(key, float32([], [scalar(key, t)]));
    else putBackbone(out, key, t);
    if (key.endsWith('.lora.A')) rank ??= t.shape[0];
  }
  if (rank !== undefined && !w.lorat.has('lora_alpha')) {
    out.set('lora_alpha', float32([], [rank]));
    out.set('use_rslora', float32([], [0]));
  }
  return out;
}

/** Params for `buildLoRAT` from a LoRAT checkpoint (+ DINOv2); build with `lora: 'merged'` or `'inputs'`. */
export function loadLoRATWeights(w: LoRATWeights, variant: LoRATVariant | LoRATConfig, seed = 0): Params {
  return Params.fromStateDict(loratStateDict(w, variant), seed);
}

/** The scaling an adapter file asks for: lora_alpha/r (or /√r with use_rslora); 1 when it does not say (the Hooker's default). */
export function adapterScale(adapter: StateDict, rank: number): number {
  const alpha = adapter.get('lora_alpha');
  if (!alpha) return 1;
  const rs = adapter.get('use_rslora');
  return scalar('lora_alpha', alpha) / (rs && scalar('use_rslora', rs) !== 0 ? Math.sqrt(rank) : rank);
}

/** An adapter input of a `lora: 'inputs'` graph: its name and shape. */
export interface AdapterInput {
  readonly name: string;
  readonly shape: readonly (number | string)[];
}

/**
 * The adapter inputs a `lora: 'inputs'` build of `variant` declares, in the graph's order, without building it
 * (the registry checks adapter files against a cached graph): per block, q, k, v, proj, fc1, fc2 (A [r, in], B [out, r]).
 * Checked against `adapterInputs` of real builds in test/lorat.test.ts.
 */
export function loraInputShapes(variant: LoRATVariant | LoRATConfig): AdapterInput[] {
  const { vit, lora } = configOf(variant);
  const c = vit.width;
  const hidden = Math.floor(c * vit.mlpRatio);
  const dims: Record<(typeof LORA_TARGETS)[number], [number, number]> = {
    'attn.qkv.q': [c, c],
    'attn.qkv.k': [c, c],
    'attn.qkv.v': [c, c],
    'attn.proj': [c, c],
    'mlp.fc1': [c, hidden],
    'mlp.fc2': [hidden, c],
  };
  const out: AdapterInput[] = [];
  for (let i = 0; i < vit.depth; i++)
    for (const t of LORA_TARGETS) {
      const [dIn, dOut] = dims[t];
      out.push({ name: `blocks.${i}.${t}.lora.A`, shape: [lora.rank, dIn] }, { name: `blocks.${i}.${t}.lora.B`, shape: [dOut, lora.rank] });
    }
  return out;
}

/**
 * Feeds for a graph built with `lora: 'inputs'` from a named adapter's state dict (LoRAT keys `...lora.A` / `...lora.B`).
 * The adapter's scaling is folded into B (the graph computes `+ (xAᵀ)Bᵀ`), so adapters with any alpha share one session.
 * `g` is the graph, or its adapter inputs (`loraInputShapes`).
 * Throws, naming the keys, when the adapter lacks one, has one the graph does not, or a shape differs.
 */
export function loraFeeds(adapter: StateDict, g: Graph | readonly AdapterInput[]): Map<string, HostTensor> {
  const inputs: readonly AdapterInput[] = g instanceof Graph ? adapterInputs(g) : g;
  const feeds = new Map<string, HostTensor>();
  const problems: string[] = [];
  for (const v of inputs) {
    const t = adapter.get(v.name);
    if (!t) problems.push(`missing ${v.name}`);
    else if (t.shape.join() !== v.shape.join()) problems.push(`${v.name}: adapter ${shapeString(t.shape)}, graph ${shapeString(v.shape)}`);
    else {
      const data = floatData(v.name, t);
      const s = v.name.endsWith('.B') ? adapterScale(adapter, t.shape[1]) : 1;
      feeds.set(v.name, float32([...t.shape], s === 1 ? data : Float32Array.from(data, (x) => x * s)));
    }
  }
  const known = new Set(inputs.map((v) => v.name));
  for (const k of adapter.keys()) if (/\.lora\.[AB]$/.test(k) && !known.has(k)) problems.push(`unexpected ${k}`);
  if (problems.length) throw new CheckpointMismatchError(`adapter does not fit the graph — ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? `; … (${problems.length} in all)` : ''}`);
  return feeds;
}

/**
 * Parameters of a LoRAT model as its checkpoint counts them (LoRA factors unmerged), by formula: the
 * registry lists models without building them. Checked against real builds in test/lorat.test.ts.
 */
export function parameterCount(cfg: LoRATConfig): number {
  const { width: c, depth, patch } = cfg.vit;
  const r = cfg.lora.rank;
  const tokens = (cfg.searchSize / patch) ** 2;
  const embeddings = 3 * patch * patch * c + c + tokens * c + 3 * c;
  const block = 12 * c * c + 15 * c + 18 * r * c;
  const head = 4 * c * c + 9 * c + 5;
  return embeddings + depth * block + 2 * c + head;
}
