import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { HAAR_BANDS, buildFsgNet, changeMask, conv3dAsConv2d, crossAttention, haarDwt, haarIdwt, ignoredCheckpointKey, mapCheckpoint } from '../src/models/fsgnet.js';
import { Graph } from '../src/models/graph/graph.js';
import { concat } from '../src/models/graph/nn.js';
import { CheckpointMismatchError, Params, type StateDict } from '../src/models/graph/params.js';
import { serializeModel } from '../src/models/graph/serialize.js';
import { float32, int64, type HostTensor } from '../src/models/graph/tensor.js';
import { prng } from './support/random.js';

const session = (g: Graph) => ort.InferenceSession.create(serializeModel(g.toModel()));
const randoms = (n: number, seed: number) => {
  const r = prng(seed);
  return Float32Array.from({ length: n }, () => 2 * r() - 1);
};
const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
};

/**
 * A seeded random state dict with every key FSG-Net asks for: non-trivial BN statistics (so folding is
 * really exercised), γ = 0.7 (so the cross-attention reaches the output) and the Haar buffers as they are.
 */
function randomStateDict(width: number, seed: number, size = 64): Map<string, HostTensor> {
  const probe = Params.seeded(0);
  buildFsgNet({ width, numClasses: 2 }, size, probe);
  const requested = probe.requested();
  const bnScopes = new Set(requested.filter((r) => r.key.endsWith('running_mean')).map((r) => r.key.slice(0, -'.running_mean'.length)));
  const rnd = prng(seed);
  const sd = new Map<string, HostTensor>();
  for (const { key, shape } of requested) {
    const n = shape.reduce((a, b) => a * b, 1);
    const scope = key.slice(0, key.lastIndexOf('.'));
    const fanIn = shape.length >= 2 ? n / shape[0] : 1;
    let gen: (i: number) => number;
    if (key.endsWith('idwt.filters')) gen = (i) => Object.values(HAAR_BANDS)[i >> 2][i & 3];
    else if (key.includes('.dwt.')) gen = (i) => HAAR_BANDS[key.slice(-4) as keyof typeof HAAR_BANDS][i];
    else if (key.endsWith('running_var')) gen = () => 0.5 + rnd();
    else if (key.endsWith('running_mean')) gen = () => 0.2 * (rnd() - 0.5);
    else if (bnScopes.has(scope) && key.endsWith('.weight')) gen = () => 0.8 + 0.4 * rnd();
    else if (bnScopes.has(scope) && key.endsWith('.bias')) gen = () => 0.1 * (rnd() - 0.5);
    else if (key.endsWith('gamma')) gen = () => 0.7;
    else if (key.includes('t_embedding')) gen = () => 0.5 * (2 * rnd() - 1);
    else gen = () => (2 * rnd() - 1) * Math.sqrt(3 / fanIn);
    sd.set(key, float32([...shape], Float32Array.from({ length: n }, (_, i) => gen(i))));
  }
  return sd;
}

function imageLike(size: number, phase: number): Float32Array {
  return Float32Array.from({ length: 3 * size * size }, (_, i) => 0.5 + 0.5 * Math.sin(i * 0.003 + phase + (i % 5)));
}

describe('Haar wavelet transform (DAWIM)', () => {
  it('DWT then IDWT reconstructs random tensors (max error < 1e-5), batch symbolic', async () => {
    for (const [c, h, w, seed] of [[5, 8, 12, 11], [64, 16, 16, 12]]) {
      const g = new Graph('dwt-idwt');
      const x = g.input('x', 'float32', ['batch', c, h, w]);
      g.output(haarIdwt(g, c)(haarDwt(g, c)(x)), 'y');
      const data = randoms(2 * c * h * w, seed);
      const y = (await (await session(g)).run({ x: new ort.Tensor('float32', data, [2, c, h, w]) })).y;
      expect(y.dims).toEqual([2, c, h, w]);
      expect(maxAbsDiff(y.data as Float32Array, data), `seed ${seed}`).toBeLessThan(1e-5);
    }
  });

  it('DWT bands are band-major [LL, LH, HL, HH] and match a plain loop over 2×2 blocks', async () => {
    const [c, h, w] = [3, 4, 6];
    const g = new Graph('dwt');
    const x = g.input('x', 'float32', [1, c, h, w]);
    g.output(concat(g, haarDwt(g, c)(x), 1), 'bands');
    const data = randoms(c * h * w, 7);
    const got = (await (await session(g)).run({ x: new ort.Tensor('float32', data, [1, c, h, w]) })).bands.data as Float32Array;
    const [oh, ow] = [h / 2, w / 2];
    const want = new Float32Array(4 * c * oh * ow);
    for (let ch = 0; ch < c; ch++)
      for (let y = 0; y < oh; y++)
        for (let xx = 0; xx < ow; xx++) {
          const at = (dy: number, dx: number) => data[(ch * h + 2 * y + dy) * w + 2 * xx + dx];
          const [a, b, cc, d] = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
          // pywt Haar, rows = y: LL average, LH top − bottom, HL left − right, HH diagonal.
          const bands = [(a + b + cc + d) / 2, (a + b - cc - d) / 2, (a - b + cc - d) / 2, (a - b - cc + d) / 2];
          bands.forEach((v, band) => (want[((band * c + ch) * oh + y) * ow + xx] = v));
        }
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-6);
  });
});

describe('DAWIM temporal Conv3d', () => {
  it('Conv3d k(2,3,3) over stack([x1, x2], dim=2) equals the rearranged Conv2d over cat([x1, x2]) (ORT Conv3d as reference)', async () => {
    const [c, h, w] = [6, 5, 7];
    const w3 = randoms(c * c * 2 * 9, 31);
    const g = new Graph('conv3d');
    const a = g.input('a', 'float32', [1, c, h, w]);
    const b = g.input('b', 'float32', [1, c, h, w]);
    const axis = g.constant(int64([2]), 'axis');
    const stacked = concat(g, [g.op1('Unsqueeze', [a, axis]), g.op1('Unsqueeze', [b, axis])], 2);
    const y3 = g.op1('Conv', [stacked, g.constant(float32([c, c, 2, 3, 3], w3), 'w3')], { kernel_shape: [2, 3, 3], pads: [0, 1, 1, 0, 1, 1] });
    g.output(g.op1('Squeeze', [y3, g.constant(int64([2]), 'axis')]), 'y3');
    const y2 = g.op1('Conv', [concat(g, [a, b], 1), g.constant(float32([c, 2 * c, 3, 3], conv3dAsConv2d(w3, c, c, 3)), 'w2')], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] });
    g.output(y2, 'y2');
    const out = await (await session(g)).run({ a: new ort.Tensor('float32', randoms(c * h * w, 32), [1, c, h, w]), b: new ort.Tensor('float32', randoms(c * h * w, 33), [1, c, h, w]) });
    expect(maxAbsDiff(out.y2.data as Float32Array, out.y3.data as Float32Array)).toBeLessThan(1e-5);
  });
});

describe('FSG-Net architecture', () => {
  /** Hand formula, unfolded (BN affine counted, running stats not), per module of the official code. */
  function handCount(w: number): { withoutLayer4: number; layer4: number } {
    const bn = (c: number) => 2 * c;
    const block = (cin: number, cout: number, down: boolean) => 9 * cin * cout + bn(cout) + 9 * cout * cout + bn(cout) + (down ? cin * cout + bn(cout) : 0);
    const stage = (cin: number, cout: number) => block(cin, cout, cin !== cout) + block(cout, cout, false);
    const backbone = 3 * w * 49 + bn(w) + stage(w, w) + stage(w, 2 * w) + stage(2 * w, 4 * w);
    const dawim = (c: number) => 18 * c * c + 2 * c * c + (c * c + bn(c)) + 4 * (2 * c * (c / 16) + (c / 16) * c);
    const stsam = (c: number) => {
      const mip = Math.max(8, Math.floor(c / 32));
      const cross = 2 * c + 2 * (c * (c / 8) + c / 8) + (c * c + c) + 1;
      const coord = c * mip + mip + bn(mip) + 2 * (mip * c + c);
      return cross + coord + 2 * c * c + bn(c);
    };
    const lgfu = (cd: number, cs: number) => cd * cs + bn(cs) + 9 * 2 * cs * cs + bn(cs) + cs + 1;
    const head = 9 * w * w + bn(w) + 9 * w * (w / 2) + bn(w / 2) + (w / 2) * 2 + 2;
    const scales = [w, 2 * w, 4 * w];
    const total = backbone + scales.reduce((s, c) => s + dawim(c) + stsam(c), 0) + lgfu(4 * w, 2 * w) + lgfu(2 * w, w) + head;
    return { withoutLayer4: total, layer4: stage(4 * w, 8 * w) };
  }

  it('FSG-Net-R18 has 5,414,271 parameters without layer4 (13,807,999 ≈ the spec’s 13.8M with it)', () => {
    const p = Params.seeded(0);
    buildFsgNet('r18', 256, p);
    const { withoutLayer4, layer4 } = handCount(64);
    expect(p.parameterCount()).toBe(withoutLayer4);
    expect(withoutLayer4).toBe(5_414_271);
    expect(layer4).toBe(8_393_728);
    expect(withoutLayer4 + layer4).toBe(13_807_999);
  });

  it('uses the official state-dict keys, Haar buffers included', () => {
    const p = Params.seeded(0);
    buildFsgNet('r18', 256, p);
    const keys = new Set(p.requested().map((r) => r.key));
    for (const k of [
      'backbone.extract.conv1.weight', 'backbone.extract.bn1.running_var', 'backbone.extract.layer1.0.conv1.weight', 'backbone.extract.layer2.0.downsample.0.weight',
      'backbone.extract.layer3.1.bn2.bias', 'neck.dawim_s1.dwt.w_ll', 'neck.dawim_s1.idwt.filters', 'neck.dawim_s2.conv3d_ll.weight', 'neck.dawim_s2.conv3d_lh_hl.weight',
      'neck.dawim_s3.conv2d_hh.1.running_mean', 'neck.dawim_s3.se_hh.fc.2.weight', 'neck.stsam_s1.branch1.t_embedding2', 'neck.stsam_s1.branch1.gamma',
      'neck.stsam_s2.branch1.query_conv.bias', 'neck.stsam_s2.branch2.conv_w.weight', 'neck.stsam_s3.branch2.bn1.weight', 'neck.stsam_s3.fusion_conv.1.bias',
      'lgfu_3_to_2.conv1x1_align.extract.0.weight', 'lgfu_2_to_1.gate_unit.0.extract.1.running_var', 'lgfu_2_to_1.gate_unit.1.bias',
      'head1.refine.0.extract.0.weight', 'head1.refine.1.extract.1.weight', 'head1.classifier.bias',
    ])
      expect(keys, k).toContain(k);
    expect([...keys].some((k) => k.includes('layer4'))).toBe(false);
    expect(p.requested().find((r) => r.key === 'neck.dawim_s2.conv3d_ll.weight')?.shape).toEqual([128, 128, 2, 3, 3]);
  });

  it('accepts a strict official checkpoint (layer4, counters, DataParallel prefix, thop keys) and names a missing key', () => {
    const sd = randomStateDict(16, 3);
    const official = new Map<string, HostTensor>([...sd].map(([k, v]) => [`module.${k}`, v]));
    official.set('module.backbone.extract.layer4.0.conv1.weight', float32([1], [0]));
    official.set('module.backbone.extract.bn1.num_batches_tracked', float32([1], [0]));
    official.set('module.total_ops', float32([1], [0]));
    expect(() => buildFsgNet({ width: 16, numClasses: 2 }, 64, Params.fromStateDict(mapCheckpoint(official)))).not.toThrow();
    expect(ignoredCheckpointKey('backbone.extract.layer4.1.bn2.weight')).toBe(true);
    const broken = new Map(sd);
    broken.delete('neck.stsam_s2.branch1.gamma');
    expect(() => buildFsgNet({ width: 16, numClasses: 2 }, 64, Params.fromStateDict(broken))).toThrow(CheckpointMismatchError);
    expect(() => buildFsgNet({ width: 16, numClasses: 2 }, 64, Params.fromStateDict(broken))).toThrow(/neck\.stsam_s2\.branch1\.gamma/);
  });

  it.each([256, 512])('the whole graph builds at %i with a symbolic batch', (size) => {
    const g = buildFsgNet('r18', size, Params.seeded(0));
    expect(g.inputValues.map((v) => [v.name, v.shape])).toEqual([
      ['before', ['batch', 3, size, size]],
      ['after', ['batch', 3, size, size]],
    ]);
    expect(g.outputValues[0].name).toBe('logits');
    expect(g.outputValues[0].shape).toEqual(['batch', 2, size, size]);
  });

  it('refuses input sides that are not multiples of 32', () => {
    expect(() => buildFsgNet('r18', 240, Params.seeded(0))).toThrow(/multiple of 32/);
  });
});

describe('FSG-Net numerics', () => {
  it('cross-attention (STSAM branch1) matches a plain loop: softmax(Q₂ᵀK₁) without scaling, γ·V₁Aᵀ + f₁', async () => {
    const [c, h, w] = [16, 3, 4];
    const n = h * w;
    const cq = c / 8;
    const r = prng(5);
    const t = (shape: number[], scale: number) => float32(shape, Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => scale * (2 * r() - 1)));
    const sd: StateDict = new Map([
      ['t_embedding1', t([1, c, 1, 1], 0.5)], ['t_embedding2', t([1, c, 1, 1], 0.5)],
      ['query_conv.weight', t([cq, c, 1, 1], 0.5)], ['query_conv.bias', t([cq], 0.2)],
      ['key_conv.weight', t([cq, c, 1, 1], 0.5)], ['key_conv.bias', t([cq], 0.2)],
      ['value_conv.weight', t([c, c, 1, 1], 0.3)], ['value_conv.bias', t([c], 0.2)],
      ['gamma', float32([1], [0.7])],
    ]);
    const g = new Graph('cross-attention');
    const f1 = g.input('f1', 'float32', [1, c, h, w]);
    const f2 = g.input('f2', 'float32', [1, c, h, w]);
    const [o1, o2] = crossAttention(g, Params.fromStateDict(sd), c)(f1, f2);
    g.output(o1, 'c1');
    g.output(o2, 'c2');
    const [x1, x2] = [randoms(c * n, 21), randoms(c * n, 22)];
    const out = await (await session(g)).run({ f1: new ort.Tensor('float32', x1, [1, c, h, w]), f2: new ort.Tensor('float32', x2, [1, c, h, w]) });

    const get = (k: string) => sd.get(k)!.data as Float32Array;
    /** 1×1 conv with bias on (x + emb), [cout][n]. */
    const conv = (x: Float32Array, emb: Float32Array, wt: Float32Array, b: Float32Array, cout: number) =>
      Array.from({ length: cout }, (_, o) => Array.from({ length: n }, (_, j) => b[o] + Array.from({ length: c }, (_, i) => wt[o * c + i] * (x[i * n + j] + emb[i])).reduce((s, v) => s + v, 0)));
    const side = (x: Float32Array, emb: Float32Array) => ({
      q: conv(x, emb, get('query_conv.weight'), get('query_conv.bias'), cq),
      k: conv(x, emb, get('key_conv.weight'), get('key_conv.bias'), cq),
      v: conv(x, emb, get('value_conv.weight'), get('value_conv.bias'), c),
    });
    const [s1, s2] = [side(x1, get('t_embedding1')), side(x2, get('t_embedding2'))];
    const attend = (qs: typeof s1, kv: typeof s1, f: Float32Array) => {
      const y = new Float32Array(c * n);
      for (let i = 0; i < n; i++) {
        const e = Array.from({ length: n }, (_, j) => qs.q.reduce((s, row, d) => s + row[i] * kv.k[d][j], 0));
        const m = Math.max(...e);
        const z = e.reduce((s, v) => s + Math.exp(v - m), 0);
        const a = e.map((v) => Math.exp(v - m) / z);
        for (let ch = 0; ch < c; ch++) y[ch * n + i] = 0.7 * a.reduce((s, v, j) => s + v * kv.v[ch][j], 0) + f[ch * n + i];
      }
      return y;
    };
    expect(maxAbsDiff(out.c1.data as Float32Array, attend(s2, s1, x1))).toBeLessThan(1e-4);
    expect(maxAbsDiff(out.c2.data as Float32Array, attend(s1, s2, x2))).toBeLessThan(1e-4);
  });

  const sd = randomStateDict(64, 42, 256);
  const inputs = () => ({
    before: new ort.Tensor('float32', imageLike(256, 0), [1, 3, 256, 256]),
    after: new ort.Tensor('float32', imageLike(256, 1.3), [1, 3, 256, 256]),
  });

  it('FSG-Net-R18 at 256 gives logits [1, 2, 256, 256] whose argmax is the change mask', async () => {
    const s = await session(buildFsgNet('r18', 256, Params.fromStateDict(sd)));
    const logits = (await s.run(inputs())).logits;
    expect(logits.dims).toEqual([1, 2, 256, 256]);
    const data = logits.data as Float32Array;
    expect(data.every(Number.isFinite)).toBe(true);
    const mask = changeMask(data, 256, 256);
    expect(mask.length).toBe(256 * 256);
    for (let i = 0; i < mask.length; i += 97) expect(mask[i]).toBe(data[256 * 256 + i] > data[i] ? 1 : 0);
    expect([...changeMask(Float32Array.of(0, 1, 2, 1, 0, 2), 1, 3)]).toEqual([1, 0, 0]);
  });

  it('the BatchNorm-folded graph equals the unfolded graph at 256', async () => {
    const folded = await session(buildFsgNet('r18', 256, Params.fromStateDict(sd)));
    const plain = await session(buildFsgNet('r18', 256, Params.fromStateDict(sd), { unfoldedBn: true }));
    const a = (await folded.run(inputs())).logits.data as Float32Array;
    const b = (await plain.run(inputs())).logits.data as Float32Array;
    let worst = 0;
    let scale = 0;
    for (let i = 0; i < a.length; i++) {
      worst = Math.max(worst, Math.abs(a[i] - b[i]));
      scale = Math.max(scale, Math.abs(b[i]));
    }
    expect(scale).toBeGreaterThan(0);
    expect(worst / scale).toBeLessThan(1e-4);
  });

  it('a batch of two gives each pair the answer it gets alone', async () => {
    const size = 64;
    const small = randomStateDict(16, 9, size);
    const s = await session(buildFsgNet({ width: 16, numClasses: 2 }, size, Params.fromStateDict(small)));
    const per = 3 * size * size;
    const [a0, a1, b0, b1] = [imageLike(size, 0), imageLike(size, 2), imageLike(size, 1), imageLike(size, 3)];
    const cat = (x: Float32Array, y: Float32Array) => Float32Array.from([...x, ...y]);
    const batched = (await s.run({ before: new ort.Tensor('float32', cat(a0, a1), [2, 3, size, size]), after: new ort.Tensor('float32', cat(b0, b1), [2, 3, size, size]) })).logits.data as Float32Array;
    for (const [i, [a, b]] of [[a0, b0], [a1, b1]].entries()) {
      const single = (await s.run({ before: new ort.Tensor('float32', a, [1, 3, size, size]), after: new ort.Tensor('float32', b, [1, 3, size, size]) })).logits.data as Float32Array;
      expect(maxAbsDiff(batched.subarray(i * single.length, (i + 1) * single.length), single)).toBeLessThan(1e-4);
    }
    expect(per).toBe(a0.length);
  });
});
