import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Graph } from '../src/models/graph/graph.js';
import { Params, type StateDict } from '../src/models/graph/params.js';
import { serializeModel } from '../src/models/graph/serialize.js';
import { float32, type HostTensor } from '../src/models/graph/tensor.js';
import { readStateDict } from '../src/models/io/index.js';
import { adapterInputs, bicubicResize, block, buildViT, resizePosEmbed, settle, type LoraOptions, type ViTConfig } from '../src/models/vit.js';

const FIXTURES = new URL('./fixtures/lorat/', import.meta.url);
const small: ViTConfig = { width: 32, depth: 2, heads: 4, patch: 8, mlpRatio: 4, layerScale: true, lnEps: 1e-6, qkv: 'fused', qkvBias: true };

/** Seeded values for every key a build asks for, with non-trivial norms, LayerScale and biases (seed printed on failure). */
function randomStateDict(p: Params, seed: number): StateDict {
  let s = seed >>> 0;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const sd = new Map<string, HostTensor>();
  for (const { key, shape } of p.requested()) {
    const n = shape.reduce((a, b) => a * b, 1);
    const fanIn = shape.length >= 2 ? shape.slice(1).reduce((a, b) => a * b, 1) : 1;
    const gen = key.endsWith('.gamma')
      ? () => 0.5 + rnd()
      : /norm\d?\.weight$/.test(key)
        ? () => 0.8 + 0.4 * rnd()
        : key.endsWith('bias')
          ? () => 0.2 * (rnd() - 0.5)
          : /lora\.[AB]$/.test(key)
            ? () => 0.6 * (rnd() - 0.5)
            : shape.length >= 2 && !key.endsWith('embed') && !key.endsWith('token')
              ? () => (2 * rnd() - 1) * Math.sqrt(3 / fanIn)
              : () => rnd() - 0.5;
    sd.set(key, float32([...shape], Float32Array.from({ length: n }, gen)));
  }
  return sd;
}

/** The keys a build requests, and a random state dict over them. */
function stateDictFor(buildFn: (p: Params) => void, seed: number): StateDict {
  const probe = Params.seeded(0);
  buildFn(probe);
  return randomStateDict(probe, seed);
}

async function run(g: Graph, feeds: Record<string, HostTensor>): Promise<Record<string, Float32Array>> {
  const s = await ort.InferenceSession.create(serializeModel(g.toModel()));
  const ortFeeds = Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, new ort.Tensor('float32', t.data as Float32Array, [...t.shape])]));
  const out = await s.run(ortFeeds);
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
}

const maxAbsDiff = (a: Float32Array, b: Float32Array) => {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
};

const images = (n: number, size: number) => float32([n, 3, size, size], Float32Array.from({ length: n * 3 * size * size }, (_, i) => Math.sin(i * 0.37) + 0.3 * Math.cos(i * 0.011)));

// ---- a slow, obviously right block -------------------------------------------------------

/** erf by its Maclaurin series (float64; |x| ≥ 6 is ±1 to 1e-17). */
function erf(x: number): number {
  if (Math.abs(x) >= 6) return Math.sign(x);
  let term = x;
  let sum = x;
  for (let n = 1; Math.abs(term) > 1e-17 * Math.abs(sum) || n < 3; n++) {
    term *= (-x * x) / n;
    sum += term / (2 * n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

function referenceBlock(sd: StateDict, x: Float32Array, batch: number, n: number, cfg: ViTConfig): Float64Array {
  const c = cfg.width;
  const hid = c * cfg.mlpRatio;
  const d = c / cfg.heads;
  const w = (k: string) => sd.get(`blocks.0.${k}`)!.data as Float32Array;
  const layerNorm = (v: Float64Array, name: string) => {
    const out = new Float64Array(v.length);
    for (let t = 0; t < v.length / c; t++) {
      let mean = 0;
      for (let i = 0; i < c; i++) mean += v[t * c + i] / c;
      let vr = 0;
      for (let i = 0; i < c; i++) vr += (v[t * c + i] - mean) ** 2 / c;
      for (let i = 0; i < c; i++) out[t * c + i] = ((v[t * c + i] - mean) / Math.sqrt(vr + cfg.lnEps)) * w(`${name}.weight`)[i] + w(`${name}.bias`)[i];
    }
    return out;
  };
  const lin = (v: Float64Array, name: string, dIn: number, dOut: number) => {
    const out = new Float64Array((v.length / dIn) * dOut);
    for (let t = 0; t < v.length / dIn; t++)
      for (let o = 0; o < dOut; o++) {
        let acc = w(`${name}.bias`)[o];
        for (let i = 0; i < dIn; i++) acc += v[t * dIn + i] * w(`${name}.weight`)[o * dIn + i];
        out[t * dOut + o] = acc;
      }
    return out;
  };
  const h = Float64Array.from(x);
  const qkv = lin(layerNorm(h, 'norm1'), 'attn.qkv', c, 3 * c);
  const att = new Float64Array(batch * n * c);
  for (let b = 0; b < batch; b++)
    for (let head = 0; head < cfg.heads; head++)
      for (let i = 0; i < n; i++) {
        const at = (tok: number, part: number, k: number) => qkv[(b * n + tok) * 3 * c + part * c + head * d + k];
        const scores = Array.from({ length: n }, (_, j) => {
          let dot = 0;
          for (let k = 0; k < d; k++) dot += at(i, 0, k) * at(j, 1, k);
          return dot / Math.sqrt(d);
        });
        const m = Math.max(...scores);
        const e = scores.map((v) => Math.exp(v - m));
        const z = e.reduce((a, v) => a + v, 0);
        for (let k = 0; k < d; k++) att[(b * n + i) * c + head * d + k] = e.reduce((acc, v, j) => acc + (v / z) * at(j, 2, k), 0);
      }
  const proj = lin(att, 'attn.proj', c, c);
  for (let t = 0; t < h.length; t++) h[t] += w('ls1.gamma')[t % c] * proj[t];
  const fc1 = lin(layerNorm(h, 'norm2'), 'mlp.fc1', c, hid).map((v) => 0.5 * v * (1 + erf(v / Math.SQRT2)));
  const fc2 = lin(fc1, 'mlp.fc2', hid, c);
  for (let t = 0; t < h.length; t++) h[t] += w('ls2.gamma')[t % c] * fc2[t];
  return h;
}

describe('ViT block', () => {
  const cfg: ViTConfig = { ...small, width: 16, heads: 2 };
  const [batch, n] = [2, 5];
  const blockGraph = (p: Params, plain: boolean, skipLayerNorm = false) => {
    const g = new Graph('block');
    const x = g.input('tokens', 'float32', ['batch', n, cfg.width]);
    g.output(settle(g, block(g, p.scope('blocks.0'), { x }, cfg, { plain, skipLayerNorm })), 'y');
    return g;
  };

  it.each([
    ['plain ONNX ops', true, false],
    ['fused contrib ops', false, false],
    ['fused contrib ops and SkipLayerNormalization', false, true],
  ])('with %s equals softmax(QKᵀ/√d)·V and the MLP written as loops (seed 11)', async (_, plain, skip) => {
    const sd = stateDictFor((p) => blockGraph(p, true), 11);
    const tokens = float32([batch, n, cfg.width], Float32Array.from({ length: batch * n * cfg.width }, (_, i) => Math.sin(1.7 * i) * 1.5));
    const g = blockGraph(Params.fromStateDict(sd), plain as boolean, skip as boolean);
    expect(g.toModel().graph.nodes.some((nd) => nd.opType === 'SkipLayerNormalization')).toBe(skip);
    const { y } = await run(g, { tokens });
    const expected = referenceBlock(sd, tokens.data as Float32Array, batch, n, cfg);
    expect(maxAbsDiff(y, Float32Array.from(expected)), 'seed 11').toBeLessThan(1e-5);
  });
});

describe('ViT: fused and plain builds', () => {
  const size = 32;
  const build = (p: Params, plain: boolean, lora?: LoraOptions) => buildViT(small, p, { imageSize: size, clsToken: true, plain, lora });

  it.each([
    ['without adapters', undefined],
    ['with adapters fed as graph inputs', { mode: 'inputs', rank: 4, scale: 2 } as const],
  ])('the MultiHeadAttention build agrees with the plain build within 1e-4 on a small ViT %s (seed 5)', async (_, lora) => {
    const sd = stateDictFor((p) => build(p, true, lora && { ...lora, mode: 'merged' }), 5);
    const feeds: Record<string, HostTensor> = { images: images(2, size) };
    const fused = build(Params.fromStateDict(sd), false, lora);
    for (const v of adapterInputs(fused)) feeds[v.name] = sd.get(v.name)!;
    const a = await run(fused, feeds);
    const b = await run(build(Params.fromStateDict(sd), true, lora), feeds);
    expect(fused.toModel().graph.nodes.some((nd) => nd.opType === 'MultiHeadAttention')).toBe(true);
    expect(maxAbsDiff(a.tokens, b.tokens), 'seed 5').toBeLessThan(1e-4);
  });

  it('MultiHeadAttention is counted as the two attention matmuls of the plain build: same total MACs', () => {
    const fused = build(Params.seeded(0), false).stats();
    const plain = build(Params.seeded(0), true).stats();
    const tokens = (size / small.patch) ** 2 + 1;
    expect(fused.macs['com.microsoft.MultiHeadAttention']).toBe(small.depth * 2 * tokens * tokens * small.width);
    expect(fused.totalMacs).toBe(plain.totalMacs);
  });

  it('the MultiHeadAttention shape rule refuses a width that does not split into the heads', () => {
    expect(() => buildViT({ ...small, heads: 5 }, Params.seeded(0), { imageSize: size })).toThrow(/do not fit 5 heads/);
  });
});

describe('ViT: LoRA merged at build or fed as inputs', () => {
  const size = 32;
  const cases: Array<[string, LoraOptions['targets']]> = [
    ['on every Linear (LoRAT)', undefined],
    ['on q and v only', ['attn.qkv.q', 'attn.qkv.v']],
  ];

  it.each(cases)('merged and graph-input adapters give the same tokens, %s (seed 7)', async (_, targets) => {
    const lora = (mode: 'merged' | 'inputs'): LoraOptions => ({ mode, rank: 4, scale: 2, targets });
    const sd = stateDictFor((p) => buildViT(small, p, { imageSize: size, lora: lora('merged') }), 7);
    const merged = buildViT(small, Params.fromStateDict(sd), { imageSize: size, lora: lora('merged') });
    const inputs = buildViT(small, Params.fromStateDict(sd), { imageSize: size, lora: lora('inputs') });
    const feeds: Record<string, HostTensor> = { images: images(2, size) };
    for (const v of adapterInputs(inputs)) feeds[v.name] = sd.get(v.name)!;
    expect(adapterInputs(inputs)).toHaveLength(small.depth * 2 * (targets?.length ?? 6));
    const a = await run(merged, feeds);
    const b = await run(inputs, { ...feeds });
    expect(maxAbsDiff(a.tokens, b.tokens), 'seed 7').toBeLessThan(1e-4);
  });

  it('a merged-adapter ViT has exactly the nodes and initializer sizes of the un-adapted ViT (zero added latency)', () => {
    const shape = (g: Graph) => {
      const m = g.toModel();
      return { nodes: m.graph.nodes.map((nd) => nd.opType), inits: m.graph.initializers.map((t) => t.dims.join('x')) };
    };
    const plainVit = buildViT(small, Params.seeded(0), { imageSize: size });
    const merged = buildViT(small, Params.seeded(0), { imageSize: size, lora: { mode: 'merged', rank: 4, scale: 1 } });
    expect(shape(merged)).toEqual(shape(plainVit));
  });

  it('graph-input adapters carry the official module paths, A [r, in] and B [out, r]', () => {
    const g = buildViT(small, Params.seeded(0), { imageSize: size, lora: { mode: 'inputs', rank: 4, scale: 1 } });
    const c = small.width;
    const block0 = adapterInputs(g)
      .filter((v) => v.name.startsWith('blocks.0.'))
      .map((v) => `${v.name} ${v.shape.join('x')}`);
    expect(block0).toEqual([
      `blocks.0.attn.qkv.q.lora.A 4x${c}`, `blocks.0.attn.qkv.q.lora.B ${c}x4`,
      `blocks.0.attn.qkv.k.lora.A 4x${c}`, `blocks.0.attn.qkv.k.lora.B ${c}x4`,
      `blocks.0.attn.qkv.v.lora.A 4x${c}`, `blocks.0.attn.qkv.v.lora.B ${c}x4`,
      `blocks.0.attn.proj.lora.A 4x${c}`, `blocks.0.attn.proj.lora.B ${c}x4`,
      `blocks.0.mlp.fc1.lora.A 4x${c}`, `blocks.0.mlp.fc1.lora.B ${4 * c}x4`,
      `blocks.0.mlp.fc2.lora.A 4x${4 * c}`, `blocks.0.mlp.fc2.lora.B ${c}x4`,
    ]);
  });

  it('with adapters the base weights are asked for under LoRAT names; without, under the fused DINOv2 names', () => {
    const keys = (lora?: LoraOptions) => {
      const p = Params.seeded(0);
      buildViT(small, p, { imageSize: size, lora });
      return p.requested().map((r) => r.key).filter((k) => k.startsWith('blocks.0.attn.'));
    };
    expect(keys()).toEqual(['blocks.0.attn.qkv.weight', 'blocks.0.attn.qkv.bias', 'blocks.0.attn.proj.weight', 'blocks.0.attn.proj.bias']);
    expect(keys({ mode: 'merged', rank: 2, scale: 1, targets: ['attn.qkv.v'] })).toEqual([
      'blocks.0.attn.qkv.q.weight', 'blocks.0.attn.qkv.q.bias',
      'blocks.0.attn.qkv.k.weight', 'blocks.0.attn.qkv.k.bias',
      'blocks.0.attn.qkv.v.linear.weight', 'blocks.0.attn.qkv.v.linear.bias', 'blocks.0.attn.qkv.v.lora.A', 'blocks.0.attn.qkv.v.lora.B',
      'blocks.0.attn.proj.weight', 'blocks.0.attn.proj.bias',
    ]);
  });
});

describe('position tables', () => {
  it.each([
    ['9x4', 9, 4],
    ['3x11', 3, 11],
    ['16x16', 16, 16],
  ])('bicubic resize of a 5×7 table to %s equals PyTorch F.interpolate(bicubic, align_corners=False)', async (name, h, w) => {
    const expected = await readStateDict(new URL('expected.safetensors', FIXTURES));
    const src = expected.get('bicubic.src')!.data as Float32Array;
    expect(maxAbsDiff(bicubicResize(src, 3, 5, 7, h, w), expected.get(`bicubic.${name}`)!.data as Float32Array)).toBeLessThan(1e-5);
  });

  it("DINOv2's 1 + 37×37 pos_embed, class row dropped, resizes to PyTorch's 16×16 table", async () => {
    const dinov2 = await readStateDict(new URL('dinov2-tiny.pth', FIXTURES));
    const expected = await readStateDict(new URL('expected.safetensors', FIXTURES));
    const resized = resizePosEmbed(dinov2.get('pos_embed')!, 16, 16, 1);
    expect(resized.shape).toEqual([1, 256, 32]);
    expect(maxAbsDiff(resized.data as Float32Array, expected.get('pos_embed')!.data as Float32Array)).toBeLessThan(1e-5);
  });

  it('a table already on the target grid is kept as it is, and a non-square one is refused', () => {
    const t = float32([1, 5, 2], [9, 9, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(Array.from(resizePosEmbed(t, 2, 2, 1).data as Float32Array)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(() => resizePosEmbed(float32([1, 6, 2]), 2, 2, 1)).toThrow(/not a square grid/);
  });
});
