import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { backboneFromClassifier, buildCare, buildCareCd, linearAttention, parameterCount, variants, type CareConfig, type CareVariant } from '../src/models/care.js';
import { Graph } from '../src/models/graph/graph.js';
import { CheckpointMismatchError, Params } from '../src/models/graph/params.js';
import { serializeModel } from '../src/models/graph/serialize.js';
import { float32, type HostTensor } from '../src/models/graph/tensor.js';
import { prng } from './support/random.js';

const session = (g: Graph) => ort.InferenceSession.create(serializeModel(g.toModel()));
const randoms = (n: number, seed: number, scale = 1) => {
  const r = prng(seed);
  return Float32Array.from({ length: n }, () => scale * (2 * r() - 1));
};
const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
};
const maxAbs = (a: ArrayLike<number>) => maxAbsDiff(a, new Float32Array(a.length));

/**
 * The torch module tree of CARETrans.py counted by hand, module by module (weights + biases; BN affine
 * only), independently of the builder and of `parameterCount`.
 */
function handCount(cfg: CareConfig): number {
  const conv = (cin: number, cout: number, kh: number, kw = kh, groups = 1) => cout * (cin / groups) * kh * kw + cout;
  const bn = (c: number) => 2 * c;
  const dims = cfg.featDims.map((f, i) => f + cfg.memDims[i]);
  let total = conv(3, dims[0], 4) + bn(dims[0]);
  dims.forEach((d, s) => {
    const gc = cfg.memDims[s];
    const [r1, r2] = cfg.ratios[s];
    if (s > 0) total += bn(dims[s - 1]) + conv(dims[s - 1], d, 2);
    for (let b = 0; b < cfg.depths[s]; b++) {
      const last = s === 3 && b === cfg.depths[s] - 1;
      const att = s >= 2 ? conv(gc, 2 * gc, 1) : conv(gc, gc, 11, 1, gc) + conv(gc, gc, 1, 11, gc);
      const mixer = att + conv(gc, gc, 3, 3, gc) + conv(gc, gc, 7, 7, gc);
      const e = 3 * gc;
      const inter1 = bn(e) + conv(e, r1 * e, 1) + conv(r1 * e, r1 * e, 3, 3, r1 * e) + conv(r1 * e, e, 1);
      const inter2 = bn(d) + conv(d, r2 * d, 1) + conv(r2 * d, r2 * d, 3, 3, r2 * d) + (last ? 0 : conv(r2 * d, d, 1));
      total += mixer + inter1 + inter2 + (last ? 0 : d);
    }
  });
  const head = cfg.clsDim * 2 + cfg.clsDim * cfg.numClasses + cfg.numClasses;
  return total + 2 * head;
}

/** Every key a build asks for, with random values: non-trivial BN statistics and γ = 0.5 so every block reaches the output. */
function randomStateDict(build: (p: Params) => void, seed: number): Map<string, HostTensor> {
  const probe = Params.seeded(0);
  build(probe);
  const requested = probe.requested();
  const bnScopes = new Set(requested.filter((r) => r.key.endsWith('running_mean')).map((r) => r.key.slice(0, -'.running_mean'.length)));
  const rnd = prng(seed);
  const sd = new Map<string, HostTensor>();
  for (const { key, shape } of requested) {
    const n = shape.reduce((a, b) => a * b, 1);
    const scope = key.slice(0, key.lastIndexOf('.'));
    const fanIn = shape.length >= 2 ? n / shape[0] : 1;
    let gen: () => number;
    if (key.endsWith('running_var')) gen = () => 0.5 + rnd();
    else if (key.endsWith('running_mean')) gen = () => 0.2 * (rnd() - 0.5);
    else if (bnScopes.has(scope) && key.endsWith('.weight')) gen = () => 0.8 + 0.4 * rnd();
    else if (bnScopes.has(scope) && key.endsWith('.bias')) gen = () => 0.1 * (rnd() - 0.5);
    else if (key.endsWith('gamma')) gen = () => 0.5;
    else if (key.includes('norm.weight')) gen = () => 1 + 0.1 * (rnd() - 0.5);
    else gen = () => (2 * rnd() - 1) * Math.sqrt(3 / fanIn);
    sd.set(key, float32([...shape], Float32Array.from({ length: n }, gen)));
  }
  return sd;
}

/** The official TokenMixer attention branch, literally: loops over heads, tokens and head dims. */
function linearAttentionReference(f: Float32Array, w: Float32Array, bias: Float32Array, gc: number, hd: number, n: number): Float32Array {
  const heads = gc / hd;
  const elu1 = (x: number) => (x > 0 ? x : Math.expm1(x)) + 1;
  const qk = (c: number, t: number) => {
    let s = bias[c];
    for (let i = 0; i < gc; i++) s += w[c * gc + i] * f[i * n + t];
    return s;
  };
  const out = new Float32Array(gc * n);
  for (let h = 0; h < heads; h++) {
    const q = (t: number, a: number) => elu1(qk(h * hd + a, t));
    const k = (t: number, a: number) => elu1(qk(gc + h * hd + a, t));
    const v = (t: number, a: number) => f[(h * hd + a) * n + t];
    const kMean = Array.from({ length: hd }, (_, a) => Array.from({ length: n }, (_, t) => k(t, a)).reduce((s, x) => s + x, 0) / n);
    const kv = Array.from({ length: hd }, (_, a) => Array.from({ length: hd }, (_, b) => {
      let s = 0;
      for (let t = 0; t < n; t++) s += k(t, a) * v(t, b);
      return s / n;
    }));
    for (let t = 0; t < n; t++) {
      let dot = 0;
      for (let a = 0; a < hd; a++) dot += q(t, a) * kMean[a];
      const z = 1 / (dot + 1e-6);
      for (let b = 0; b < hd; b++) {
        let s = 0;
        for (let a = 0; a < hd; a++) s += q(t, a) * kv[a][b];
        out[(h * hd + b) * n + t] = s * z;
      }
    }
  }
  return out;
}

async function latencyMs(g: Graph, feeds: Record<string, ort.Tensor>, runs = 10): Promise<number> {
  const s = await session(g);
  await s.run(feeds);
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await s.run(feeds);
    times.push(performance.now() - t0);
  }
  return times.sort((a, b) => a - b)[Math.floor(runs / 2)];
}

describe('CARE Transformer (classifier)', () => {
  it.each([
    ['S0', 7.34],
    ['S1', 9.6],
    ['S2', 19.48],
  ] as const)('CARE-%s with both heads has the hand-counted parameters (%sM, the spec figure)', (variant, millions) => {
    const cfg = variants[variant as CareVariant];
    const p = Params.seeded(0);
    buildCare(variant, p, { imageSize: 32, output: 'logits' });
    const n = handCount(cfg);
    expect(p.parameterCount()).toBe(n);
    expect(parameterCount(cfg)).toBe(n);
    expect(Math.round(n / 1e4) / 100).toBe(millions);
  });

  it('CARE-S0 at 224 counts ≈ 0.7 GMACs (the README figure)', () => {
    const g = buildCare('S0', Params.seeded(0), { imageSize: 224, output: 'logits' });
    const { totalMacs, macs } = g.stats();
    console.log(`CARE-S0 @224: ${(totalMacs / 1e9).toFixed(3)} GMACs`, Object.fromEntries(Object.entries(macs).filter(([, m]) => m > 0).map(([k, m]) => [k, (m / 1e6).toFixed(1) + 'M'])));
    expect(totalMacs).toBeGreaterThan(0.6e9);
    expect(totalMacs).toBeLessThan(0.8e9);
  });

  it('gives logits [B, 1000] and 1024-d features at 224; prints the ORT CPU latency', async () => {
    const g = buildCare('S0', Params.seeded(0), { imageSize: 224, output: 'both' });
    const images = new ort.Tensor('float32', randoms(2 * 3 * 224 * 224, 3), [2, 3, 224, 224]);
    const s = await session(g);
    const out = await s.run({ images });
    expect(out.logits.dims).toEqual([2, 1000]);
    expect(out.features.dims).toEqual([2, 1024]);
    expect([...(out.logits.data as Float32Array)].every(Number.isFinite)).toBe(true);
    const features = buildCare('S0', Params.seeded(0), { imageSize: 224, output: 'features' });
    expect(features.outputValues.map((v) => [v.name, v.shape])).toEqual([['features', ['batch', 1024]]]);
    const one = new ort.Tensor('float32', randoms(3 * 224 * 224, 4), [1, 3, 224, 224]);
    console.log(`CARE-S0 @224 ORT CPU latency (batch 1, median of 10): ${(await latencyMs(g, { images: one })).toFixed(2)} ms`);
  });

  it('linear attention matches the official formula computed with plain loops (2 heads, batch 2)', async () => {
    const [gc, hd, h, w] = [8, 4, 3, 5];
    const n = h * w;
    const wq = randoms(2 * gc * gc, 21, 0.6);
    const bq = randoms(2 * gc, 22, 0.3);
    const p = Params.fromStateDict(new Map([['qk.weight', float32([2 * gc, gc, 1, 1], wq)], ['qk.bias', float32([2 * gc], bq)]]));
    const g = new Graph('linear-attention');
    const x = g.input('x', 'float32', ['batch', gc, h, w]);
    g.output(linearAttention(g, p, gc, hd)(x), 'y');
    p.assertComplete();
    const data = randoms(2 * gc * n, 23, 1.5);
    const y = (await (await session(g)).run({ x: new ort.Tensor('float32', data, [2, gc, h, w]) })).y;
    expect(y.dims).toEqual([2, gc, h, w]);
    for (let b = 0; b < 2; b++) {
      const want = linearAttentionReference(data.subarray(b * gc * n, (b + 1) * gc * n), wq, bq, gc, hd, n);
      const got = (y.data as Float32Array).subarray(b * gc * n, (b + 1) * gc * n);
      expect(maxAbsDiff(got, want) / maxAbs(want), `batch item ${b}`).toBeLessThan(1e-5);
    }
  });

  it('folding BN (stem, downsamples, Inter norms) leaves logits and features unchanged', async () => {
    const opts = { imageSize: 64, output: 'both' } as const;
    const sd = randomStateDict((p) => buildCare('S0', p, opts), 5);
    const folded = buildCare('S0', Params.fromStateDict(sd), opts);
    const unfolded = buildCare('S0', Params.fromStateDict(sd), { ...opts, unfoldedBn: true });
    expect(folded.toModel().graph.nodes.some((nd) => nd.opType === 'BatchNormalization')).toBe(false);
    const images = new ort.Tensor('float32', randoms(2 * 3 * 64 * 64, 6), [2, 3, 64, 64]);
    const [a, b] = await Promise.all([folded, unfolded].map(async (g) => (await session(g)).run({ images })));
    for (const name of ['logits', 'features']) {
      const want = b[name].data as Float32Array;
      expect(maxAbsDiff(a[name].data as Float32Array, want) / maxAbs(want), name).toBeLessThan(1e-4);
    }
  });

  it('refuses a checkpoint with a missing key, naming it', () => {
    const opts = { imageSize: 32, output: 'logits' } as const;
    const sd = randomStateDict((p) => buildCare('S0', p, opts), 7);
    const key = 'stages.2.blocks.0.token_mixer.qk.weight';
    expect(sd.has(key)).toBe(true);
    sd.delete(key);
    expect(() => buildCare('S0', Params.fromStateDict(sd), opts)).toThrow(CheckpointMismatchError);
    expect(() => buildCare('S0', Params.fromStateDict(sd), opts)).toThrow(key);
  });
});

describe('care-cd (siamese CARE change detector)', () => {
  it('builds at 256, runs in ORT and gives [1, 2, 256, 256]; prints the ORT CPU latency', async () => {
    const p = Params.seeded(0);
    const g = buildCareCd('S0', p, { imageSize: 256 });
    expect(p.requested().some((r) => r.key.startsWith('backbone.stages.3'))).toBe(false);
    expect(p.requested().some((r) => r.key === 'fusion.gate_unit.1.weight')).toBe(true);
    expect(p.requested().some((r) => r.key === 'head.classifier.weight')).toBe(true);
    const img = (seed: number) => new ort.Tensor('float32', randoms(3 * 256 * 256, seed).map((v) => 0.5 + 0.5 * v), [1, 3, 256, 256]);
    const feeds = { before: img(8), after: img(9) };
    const out = (await (await session(g)).run(feeds)).logits;
    expect(out.dims).toEqual([1, 2, 256, 256]);
    expect([...(out.data as Float32Array)].every(Number.isFinite)).toBe(true);
    console.log(`care-cd S0 @256: ${(g.stats().totalMacs / 1e9).toFixed(3)} GMACs, ${(p.parameterCount() / 1e6).toFixed(3)}M params, ORT CPU latency (median of 10): ${(await latencyMs(g, feeds)).toFixed(2)} ms`);
  });

  it('identical images give identical per-pixel logits whatever the image (|diff| = 0)', async () => {
    const g = buildCareCd('S0', Params.seeded(1), { imageSize: 64 });
    const s = await session(g);
    const run = async (seed: number) => {
      const t = new ort.Tensor('float32', randoms(3 * 64 * 64, seed).map((v) => 0.5 + 0.5 * v), [1, 3, 64, 64]);
      return (await s.run({ before: t, after: t })).logits.data as Float32Array;
    };
    expect(maxAbsDiff(await run(10), await run(11))).toBeLessThan(1e-5);
  });

  it('takes an ImageNet CARE checkpoint as its backbone (stem, stages 0–2 under backbone.; stage 3 and heads dropped)', () => {
    const classifier = randomStateDict((p) => buildCare('S0', p, { imageSize: 32, output: 'logits' }), 15);
    const cd = randomStateDict((p) => buildCareCd('S0', p, { imageSize: 64 }), 16);
    const merged = new Map([...cd].filter(([k]) => !k.startsWith('backbone.')));
    for (const [k, v] of backboneFromClassifier(classifier)) merged.set(k, v);
    expect(merged.get('backbone.stem.0.weight')).toBe(classifier.get('stem.0.weight'));
    expect([...merged.keys()].some((k) => k.startsWith('backbone.stages.3') || k.includes('head.fc'))).toBe(false);
    expect(() => buildCareCd('S0', Params.fromStateDict(merged), { imageSize: 64 })).not.toThrow();
  });

  it('folding BN leaves care-cd logits unchanged', async () => {
    const sd = randomStateDict((p) => buildCareCd('S0', p, { imageSize: 64 }), 12);
    const folded = buildCareCd('S0', Params.fromStateDict(sd), { imageSize: 64 });
    const unfolded = buildCareCd('S0', Params.fromStateDict(sd), { imageSize: 64, unfoldedBn: true });
    const img = (seed: number) => new ort.Tensor('float32', randoms(3 * 64 * 64, seed).map((v) => 0.5 + 0.5 * v), [1, 3, 64, 64]);
    const feeds = { before: img(13), after: img(14) };
    const [a, b] = await Promise.all([folded, unfolded].map(async (g) => (await (await session(g)).run(feeds)).logits.data as Float32Array));
    expect(maxAbsDiff(a, b) / maxAbs(b)).toBeLessThan(1e-4);
  });
});
