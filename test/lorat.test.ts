import * as ort from 'onnxruntime-node';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Graph } from '../src/models/graph/graph.js';
import { CheckpointMismatchError, Params, type StateDict } from '../src/models/graph/params.js';
import { serializeModel } from '../src/models/graph/serialize.js';
import { float32, type HostTensor } from '../src/models/graph/tensor.js';
import { readStateDict } from '../src/models/io/index.js';
import { buildLoRAT, loadLoRATWeights, loraFeeds, loraInputShapes, loratStateDict, parameterCount, referencePoints, variants, type LoRATConfig } from '../src/models/lorat.js';
import { adapterInputs } from '../src/models/vit.js';

const FIXTURES = new URL('./fixtures/lorat/', import.meta.url);

/** scripts/make-lorat-fixture.py's model: DINOv2-style width 32, depth 2, 2 heads, LoRA r 4 / alpha 8. */
const tiny: LoRATConfig = {
  vit: { width: 32, depth: 2, heads: 2, patch: 14, mlpRatio: 4, layerScale: true, lnEps: 1e-6, qkv: 'fused', qkvBias: true },
  templateSize: 112,
  searchSize: 224,
  lora: { rank: 4, alpha: 8 },
};
const BATCH = 2;

/**
 * Parameters by hand (spec §1): patch embed, pos_embed 16², token types; per block norm1, qkv, proj, ls1, norm2,
 * fc1, fc2, ls2; final norm; head 2 × (Linear(C,C)·2 + Linear(C,out)); LoRA r·(in + out) on q, k, v, proj, fc1, fc2.
 */
function handCount(c: number, depth: number, r: number) {
  const h = 4 * c;
  const patchEmbed = 3 * 14 * 14 * c + c;
  const embeddings = 16 * 16 * c + 3 * c;
  const block = 2 * c + (3 * c * c + 3 * c) + (c * c + c) + c + 2 * c + (h * c + h) + (c * h + c) + c;
  const backbone = patchEmbed + embeddings + depth * block + 2 * c;
  const head = 2 * 2 * (c * c + c) + (c + 1) + (4 * c + 4);
  const lora = depth * r * (4 * (c + c) + (c + h) + (h + c));
  return { backbone, head, lora, total: backbone + head + lora };
}

const pattern = (n: number, mul: number, mod: number) => Float32Array.from({ length: n }, (_, i) => ((i * mul) % mod) / (mod / 2) - 1);

describe('LoRAT architecture', () => {
  it('B-224 has 98,708,741 parameters unmerged: LoRA 10,616,832 + head 2,366,213 + backbone and embeddings (hand formula), ~30 GMACs', () => {
    const p = Params.seeded(0);
    const g = buildLoRAT('B-224', p);
    const count = handCount(768, 12, 64);
    expect(count.lora).toBe(10_616_832);
    expect(count.head).toBe(2_366_213);
    expect(count.total).toBe(98_708_741);
    expect(p.parameterCount()).toBe(count.total);
    expect(parameterCount(variants['B-224'])).toBe(count.total);
    expect(parameterCount(variants['S-224'])).toBe(handCount(384, 12, 64).total);
    expect(parameterCount(variants['L-224'])).toBe(handCount(1024, 24, 64).total);
    expect(g.outputValues.map((v) => [v.name, v.shape])).toEqual([
      ['score_map', ['batch', 16, 16]],
      ['boxes', ['batch', 16, 16, 4]],
    ]);
    // spec §1 "Speed and weights": 30 GMACs (2nd-hand); the merged graph's count, per batch item.
    expect(g.stats().totalMacs / 1e9).toBeCloseTo(29.8, 1);
  });

  it('L-224 has the hand-formula 335,744,005 parameters, counting the adapters fed as graph inputs', () => {
    const p = Params.seeded(0);
    const g = buildLoRAT('L-224', p, { lora: 'inputs' });
    const adapters = adapterInputs(g).reduce((n, v) => n + (v.shape as number[]).reduce((a, b) => a * b, 1), 0);
    const count = handCount(1024, 24, 64);
    expect(adapters).toBe(count.lora);
    expect(p.parameterCount() + adapters).toBe(count.total);
    expect(count.total).toBe(335_744_005);
    expect(adapterInputs(g)).toHaveLength(24 * 12);
    // The registry checks adapter files against this list, without building the graph.
    expect(loraInputShapes('L-224')).toEqual(adapterInputs(g).map((v) => ({ name: v.name, shape: v.shape })));
    expect(g.outputValues.map((v) => v.shape)).toEqual([
      ['batch', 16, 16],
      ['batch', 16, 16, 4],
    ]);
  });

  it('S-224 (hand formula) runs in ORT on a batch of two: score_map [2, 16, 16] logits, boxes [2, 16, 16, 4]', async () => {
    const p = Params.seeded(0);
    const g = buildLoRAT('S-224', p);
    expect(p.parameterCount()).toBe(handCount(384, 12, 64).total);
    expect(g.inputValues.map((v) => [v.name, v.dtype, v.shape])).toEqual([
      ['z', 'float32', ['batch', 3, 112, 112]],
      ['x', 'float32', ['batch', 3, 224, 224]],
      ['z_feat_mask', 'int64', ['batch', 8, 8]],
    ]);
    const s = await ort.InferenceSession.create(serializeModel(g.toModel()));
    const out = await s.run({
      z: new ort.Tensor('float32', pattern(2 * 3 * 112 * 112, 7919, 2003), [2, 3, 112, 112]),
      x: new ort.Tensor('float32', pattern(2 * 3 * 224 * 224, 104729, 3001), [2, 3, 224, 224]),
      z_feat_mask: new ort.Tensor('int64', new BigInt64Array(2 * 64).fill(1n), [2, 8, 8]),
    });
    expect(out.score_map.dims).toEqual([2, 16, 16]);
    expect(out.boxes.dims).toEqual([2, 16, 16, 4]);
    expect((out.boxes.data as Float32Array).every(Number.isFinite)).toBe(true);
  });

  it('asks for the official module paths', () => {
    const p = Params.seeded(0);
    buildLoRAT(tiny, p);
    const keys = new Set(p.requested().map((r) => r.key));
    for (const k of ['patch_embed.proj.weight', 'pos_embed', 'token_type_embed', 'blocks.0.norm1.weight', 'blocks.0.attn.qkv.q.linear.weight', 'blocks.0.attn.qkv.v.linear.bias', 'blocks.0.attn.qkv.k.lora.A', 'blocks.1.attn.proj.lora.B', 'blocks.1.mlp.fc1.linear.weight', 'blocks.1.mlp.fc2.lora.A', 'blocks.0.ls1.gamma', 'blocks.1.ls2.gamma', 'norm.bias', 'head.cls_mlp.layers.0.weight', 'head.reg_mlp.layers.2.bias', 'lora_alpha'])
      expect(keys, k).toContain(k);
    expect(p.requested().find((r) => r.key === 'head.cls_mlp.layers.2.weight')?.shape).toEqual([1, 32]);
  });

  it("'none' is the un-adapted model under DINOv2's fused qkv names, with the merged build's node count", () => {
    const none = Params.seeded(0);
    const nodes = (g: Graph) => g.toModel().graph.nodes.length;
    const plainModel = buildLoRAT(tiny, none, { lora: 'none' });
    expect(none.requested().map((r) => r.key)).toContain('blocks.0.attn.qkv.weight');
    expect(nodes(buildLoRAT(tiny, Params.seeded(0), { lora: 'merged' }))).toBe(nodes(plainModel));
  });

  it('refuses a template larger than the search region or off the patch grid', () => {
    expect(() => buildLoRAT({ ...tiny, templateSize: 100 }, Params.seeded(0))).toThrow(/multiples of patch 14/);
    expect(() => buildLoRAT({ ...tiny, templateSize: 252 }, Params.seeded(0))).toThrow(/template ≤ search/);
  });
});

describe('LoRAT numerics against the PyTorch reference (tiny fixture)', () => {
  let dinov2: StateDict;
  let lorat: StateDict;
  let expected: StateDict;
  let feeds: Record<string, ort.Tensor>;
  beforeAll(async () => {
    dinov2 = await readStateDict(new URL('dinov2-tiny.pth', FIXTURES));
    lorat = await readStateDict(new URL('lorat-tiny.bin', FIXTURES));
    expected = await readStateDict(new URL('expected.safetensors', FIXTURES));
    feeds = {
      z: new ort.Tensor('float32', pattern(BATCH * 3 * 112 * 112, 7919, 2003), [BATCH, 3, 112, 112]),
      x: new ort.Tensor('float32', pattern(BATCH * 3 * 224 * 224, 104729, 3001), [BATCH, 3, 224, 224]),
      z_feat_mask: new ort.Tensor('int64', expected.get('z_feat_mask')!.data as BigInt64Array, [BATCH, 8, 8]),
    };
  });

  const adapterFeeds = (adapter: StateDict, g: Graph) =>
    Object.fromEntries([...loraFeeds(adapter, g)].map(([k, t]) => [k, new ort.Tensor('float32', t.data as Float32Array, [...t.shape])]));

  async function run(g: Graph, extra: Record<string, ort.Tensor> = {}): Promise<Record<string, Float32Array>> {
    const s = await ort.InferenceSession.create(serializeModel(g.toModel()));
    const out = await s.run({ ...feeds, ...extra });
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
  }

  const worst = (a: Float32Array, b: Float32Array) => {
    expect(a.length).toBe(b.length);
    return a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
  };

  it.each([
    ['merged', 'fused', false],
    ['merged', 'plain', true],
    ['inputs', 'fused', false],
    ['inputs', 'plain', true],
  ] as const)('LoRA %s, %s ops: score_map, boxes and raw head equal the PyTorch forward within 1e-5', async (lora, _, plain) => {
    const g = buildLoRAT(tiny, loadLoRATWeights({ lorat, dinov2 }, tiny), { lora, plain, rawOutput: true });
    const out = await run(g, lora === 'inputs' ? adapterFeeds(lorat, g) : {});
    for (const k of ['score_map', 'boxes', 'raw']) expect(worst(out[k], expected.get(k)!.data as Float32Array), k).toBeLessThan(1e-5);
  });

  it('merged and unmerged (adapter inputs) builds agree', async () => {
    const merged = await run(buildLoRAT(tiny, loadLoRATWeights({ lorat, dinov2 }, tiny)));
    const g = buildLoRAT(tiny, loadLoRATWeights({ lorat, dinov2 }, tiny), { lora: 'inputs' });
    const unmerged = await run(g, adapterFeeds(lorat, g));
    expect(worst(merged.score_map, unmerged.score_map)).toBeLessThan(1e-5);
    expect(worst(merged.boxes, unmerged.boxes)).toBeLessThan(1e-5);
  });

  it('the in-graph box decode equals a plain loop over the raw head: ref ∓ sigmoid(l, t | r, b) around ((j+.5)/16, (i+.5)/16)', async () => {
    const out = await run(buildLoRAT(tiny, loadLoRATWeights({ lorat, dinov2 }, tiny), { rawOutput: true }));
    const sig = (v: number) => 1 / (1 + Math.exp(-v));
    let w = 0;
    for (let b = 0; b < BATCH; b++)
      for (let i = 0; i < 16; i++)
        for (let j = 0; j < 16; j++) {
          const cell = b * 256 + i * 16 + j;
          const [l, t, r, bt] = [0, 1, 2, 3].map((k) => sig(out.raw[cell * 4 + k]));
          const [cx, cy] = [(j + 0.5) / 16, (i + 0.5) / 16];
          [cx - l, cy - t, cx + r, cy + bt].forEach((v, k) => (w = Math.max(w, Math.abs(out.boxes[cell * 4 + k] - v))));
        }
    expect(w).toBeLessThan(1e-6);
    expect(Array.from(referencePoints(16).slice(0, 4))).toEqual([0.5 / 16, 0.5 / 16, 1.5 / 16, 0.5 / 16]);
  });

  it('one base session serves two adapters: each feed gives what a merged build of that adapter gives', async () => {
    // A second adapter: other factors and alpha 2 (scaling 0.5), so the per-adapter scale folding is exercised.
    const second = new Map<string, HostTensor>();
    for (const [k, t] of lorat) if (/\.lora\.[AB]$/.test(k)) second.set(k, float32([...t.shape], Float32Array.from(t.data as Float32Array, (v, i) => v * (1 + 0.5 * Math.sin(i)))));
    second.set('lora_alpha', float32([], [2]));
    const withAdapter = (a: StateDict) => new Map([...lorat, ...a]);
    const g = buildLoRAT(tiny, loadLoRATWeights({ lorat, dinov2 }, tiny), { lora: 'inputs' });
    const s = await ort.InferenceSession.create(serializeModel(g.toModel()));
    for (const adapter of [lorat, second]) {
      const shared = (await s.run({ ...feeds, ...adapterFeeds(adapter, g) })).score_map.data as Float32Array;
      const merged = await run(buildLoRAT(tiny, loadLoRATWeights({ lorat: withAdapter(adapter), dinov2 }, tiny)));
      expect(worst(shared, merged.score_map)).toBeLessThan(1e-5);
    }
    const first = (await s.run({ ...feeds, ...adapterFeeds(lorat, g) })).score_map.data as Float32Array;
    const other = (await s.run({ ...feeds, ...adapterFeeds(second, g) })).score_map.data as Float32Array;
    expect(worst(first, other)).toBeGreaterThan(1e-2);
  });
});

describe('LoRAT checkpoints', () => {
  let dinov2: StateDict;
  let lorat: StateDict;
  let expected: StateDict;
  beforeAll(async () => {
    dinov2 = await readStateDict(new URL('dinov2-tiny.pth', FIXTURES));
    lorat = await readStateDict(new URL('lorat-tiny.bin', FIXTURES));
    expected = await readStateDict(new URL('expected.safetensors', FIXTURES));
  });
  const c = tiny.vit.width;
  const data = (t: HostTensor | undefined) => Array.from(t!.data as Float32Array);

  it("DINOv2's fused qkv splits into q, k, v rows and the block Linears move under `.linear`", () => {
    const sd = loratStateDict({ lorat, dinov2 }, tiny);
    const qkv = data(dinov2.get('blocks.1.attn.qkv.weight'));
    ['q', 'k', 'v'].forEach((t, i) => {
      expect(sd.get(`blocks.1.attn.qkv.${t}.linear.weight`)!.shape).toEqual([c, c]);
      expect(data(sd.get(`blocks.1.attn.qkv.${t}.linear.weight`))).toEqual(qkv.slice(i * c * c, (i + 1) * c * c));
      expect(data(sd.get(`blocks.1.attn.qkv.${t}.linear.bias`))).toEqual(data(dinov2.get('blocks.1.attn.qkv.bias')).slice(i * c, (i + 1) * c));
    });
    expect(data(sd.get('blocks.0.mlp.fc2.linear.weight'))).toEqual(data(dinov2.get('blocks.0.mlp.fc2.weight')));
    expect(sd.has('blocks.0.attn.qkv.weight') || sd.has('cls_token') || sd.has('mask_token')).toBe(false);
  });

  it("pos_embed is DINOv2's table without the class row, bicubic-resized to 16×16 as PyTorch does it", () => {
    const pos = loratStateDict({ lorat, dinov2 }, tiny).get('pos_embed')!;
    expect(pos.shape).toEqual([1, 256, c]);
    const want = expected.get('pos_embed')!.data as Float32Array;
    expect((pos.data as Float32Array).reduce((m, v, i) => Math.max(m, Math.abs(v - want[i])), 0)).toBeLessThan(1e-5);
  });

  it('lora_alpha and use_rslora (int64 / bool in the file) become float scalars; without them the scaling is 1, as the official hook does', () => {
    const sd = loratStateDict({ lorat, dinov2 }, tiny);
    expect(data(sd.get('lora_alpha'))).toEqual([8]);
    expect(data(sd.get('use_rslora'))).toEqual([0]);
    const bare = new Map([...lorat].filter(([k]) => k !== 'lora_alpha' && k !== 'use_rslora'));
    expect(data(loratStateDict({ lorat: bare, dinov2 }, tiny).get('lora_alpha'))).toEqual([tiny.lora.rank]);
  });

  it('a whole-model LoRAT checkpoint (backbone, pos_embed and adapters inside) loads without DINOv2 and gives the reference outputs', async () => {
    const whole = loratStateDict({ lorat, dinov2 }, tiny);
    const g = buildLoRAT(tiny, loadLoRATWeights({ lorat: whole }, tiny));
    const s = await ort.InferenceSession.create(serializeModel(g.toModel()));
    const out = await s.run({
      z: new ort.Tensor('float32', pattern(BATCH * 3 * 112 * 112, 7919, 2003), [BATCH, 3, 112, 112]),
      x: new ort.Tensor('float32', pattern(BATCH * 3 * 224 * 224, 104729, 3001), [BATCH, 3, 224, 224]),
      z_feat_mask: new ort.Tensor('int64', expected.get('z_feat_mask')!.data as BigInt64Array, [BATCH, 8, 8]),
    });
    const want = expected.get('score_map')!.data as Float32Array;
    expect((out.score_map.data as Float32Array).reduce((m, v, i) => Math.max(m, Math.abs(v - want[i])), 0)).toBeLessThan(1e-5);
  });

  it('an adapters-only LoRAT file without the DINOv2 state dict is refused, saying what to pass', () => {
    expect(() => loadLoRATWeights({ lorat }, tiny)).toThrow(/no backbone.*DINOv2 state dict/);
  });

  it('missing, unexpected and mis-shaped keys are named', () => {
    const without = new Map([...lorat].filter(([k]) => k !== 'head.cls_mlp.layers.2.bias'));
    expect(() => buildLoRAT(tiny, loadLoRATWeights({ lorat: without, dinov2 }, tiny))).toThrow(/missing keys: head\.cls_mlp\.layers\.2\.bias/);
    const extra = new Map([...lorat, ['blocks.0.attn.qkv.q.lora.C', float32([1], [0])]]);
    expect(() => buildLoRAT(tiny, loadLoRATWeights({ lorat: extra, dinov2 }, tiny))).toThrow(/unexpected keys: blocks\.0\.attn\.qkv\.q\.lora\.C/);
    const wide = new Map([...dinov2, ['norm.weight', float32([c + 1])]]);
    expect(() => buildLoRAT(tiny, loadLoRATWeights({ lorat, dinov2: wide }, tiny))).toThrow(CheckpointMismatchError);
    expect(() => buildLoRAT(tiny, loadLoRATWeights({ lorat, dinov2: wide }, tiny))).toThrow(/shape mismatches: norm\.weight: checkpoint \[33\], model \[32\]/);
    const deeper = new Map([...dinov2, ['blocks.2.norm1.weight', float32([c])]]);
    expect(() => buildLoRAT(tiny, loadLoRATWeights({ lorat, dinov2: deeper }, tiny))).toThrow(/unexpected keys: blocks\.2\.norm1\.weight/);
  });

  it("DINOv2's cls_token, mask_token and register_tokens are ignored", () => {
    const withRegisters = new Map([...dinov2, ['register_tokens', float32([1, 4, c])]]);
    expect(() => buildLoRAT(tiny, loadLoRATWeights({ lorat, dinov2: withRegisters }, tiny))).not.toThrow();
  });

  it('adapter feeds name missing and foreign keys', () => {
    const g = buildLoRAT(tiny, loadLoRATWeights({ lorat, dinov2 }, tiny), { lora: 'inputs' });
    const missing = new Map([...lorat].filter(([k]) => k !== 'blocks.1.mlp.fc2.lora.B'));
    expect(() => loraFeeds(missing, g)).toThrow(/missing blocks\.1\.mlp\.fc2\.lora\.B/);
    const foreign = new Map([...lorat, ['blocks.7.attn.proj.lora.A', float32([4, c])]]);
    expect(() => loraFeeds(foreign, g)).toThrow(/unexpected blocks\.7\.attn\.proj\.lora\.A/);
    expect(loraInputShapes(tiny)).toEqual(adapterInputs(g).map((v) => ({ name: v.name, shape: v.shape })));
    expect(() => loraFeeds(foreign, loraInputShapes(tiny))).toThrow(/unexpected blocks\.7\.attn\.proj\.lora\.A/);
  });

  it('the variant table is the spec’s: ViT-S/B/L /14, template 112, search 224, r 64, alpha 64', () => {
    expect(Object.entries(variants).map(([k, v]) => [k, v.vit.width, v.vit.depth, v.vit.heads, v.vit.patch, v.templateSize, v.searchSize, v.lora.rank, v.lora.alpha])).toEqual([
      ['S-224', 384, 12, 6, 14, 112, 224, 64, 64],
      ['B-224', 768, 12, 12, 14, 112, 224, 64, 64],
      ['L-224', 1024, 24, 16, 14, 112, 224, 64, 64],
    ]);
  });
});
