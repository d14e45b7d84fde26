import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Params, type StateDict } from '../src/models/graph/params.js';
import { serializeModel } from '../src/models/graph/serialize.js';
import { float32, type HostTensor } from '../src/models/graph/tensor.js';
import { REG_MAX, STRIDES, anchorPoints, buildLeYolo } from '../src/models/leyolo.js';

/** A seeded random state dict with every key the model asks for: non-trivial BN statistics, so folding is really exercised. */
function randomStateDict(variant: 'nano' | 'small', seed: number): StateDict {
  const probe = Params.seeded(0);
  buildLeYolo(variant, 64, probe);
  let s = seed >>> 0;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const sd = new Map<string, HostTensor>();
  for (const { key, shape } of probe.requested()) {
    const n = shape.reduce((a, b) => a * b, 1);
    const fanIn = shape.length === 4 ? shape[1] * shape[2] * shape[3] : 1;
    const gen = key.endsWith('running_var') ? () => 0.5 + rnd() : key.endsWith('running_mean') ? () => rnd() - 0.5 : key.endsWith('dfl.conv.weight') ? null : key.includes('bn.weight') || /layers\.\d\.weight$/.test(key) && shape.length === 1 ? () => 0.8 + 0.4 * rnd() : () => (2 * rnd() - 1) * Math.sqrt(3 / fanIn);
    sd.set(key, float32([...shape], gen ? Float32Array.from({ length: n }, gen) : Float32Array.from({ length: n }, (_, i) => i)));
  }
  return sd;
}

function imageLike(n: number, size: number): Float32Array {
  return Float32Array.from({ length: n * 3 * size * size }, (_, i) => 0.5 + 0.5 * Math.sin(i * 0.001 + (i % 7)));
}

describe('LeYOLO architecture', () => {
  it('Nano has the official checkpoint’s 1,120,480 unfolded parameters', () => {
    const p = Params.seeded(0);
    buildLeYolo('nano', 640, p);
    expect(p.parameterCount()).toBe(1_120_480);
  });

  it('Small has the 1,917,440 parameters its layer table gives (spec: computed 1.917M)', () => {
    const p = Params.seeded(0);
    buildLeYolo('small', 640, p);
    expect(p.parameterCount()).toBe(1_917_440);
  });

  it('uses the official module paths', () => {
    const p = Params.seeded(0);
    buildLeYolo('nano', 320, p);
    const keys = new Set(p.requested().map((r) => r.key));
    for (const k of ['model.0.c.weight', 'model.0.bn.running_var', 'model.3.layers.0.c.weight', 'model.3.layers.1.c.weight', 'model.3.layers.2.weight', 'model.3.layers.3.running_mean', 'model.2.layers.1.weight', 'model.14.cv1.conv.weight', 'model.14.cv2.bn.bias', 'model.35.cv2.0.3.bias', 'model.35.cv3.2.1.conv.weight', 'model.35.dfl.conv.weight'])
      expect(keys, k).toContain(k);
  });

  it('conv MACs match the spec’s conv-only FLOPs for Small (2.40 G at 480, 4.26 G at 640) and the published 2.641 GFLOPs of Nano within ultralytics’ ~7 % extra', () => {
    const macs = (v: 'nano' | 'small', s: number) => buildLeYolo(v, s, Params.seeded(0)).stats().macs.Conv;
    expect((2 * macs('small', 480)) / 1e9).toBeCloseTo(2.4, 1);
    expect((2 * macs('small', 640)) / 1e9).toBeCloseTo(4.26, 1);
    const nano = (2 * macs('nano', 640)) / 1e9;
    expect(nano).toBeGreaterThan(2.641 * 0.9);
    expect(nano).toBeLessThan(2.641);
  });

  it.each([
    [320, 2100],
    [480, 4725],
    [640, 8400],
  ])('at %i the output is [batch, 84, %i]', (size, n) => {
    const g = buildLeYolo('nano', size, Params.seeded(0));
    expect(g.outputValues[0].shape).toEqual(['batch', 84, n]);
    expect(anchorPoints(size).count).toBe(n);
  });

  it('refuses input sides that are not multiples of 32', () => {
    expect(() => buildLeYolo('nano', 333, Params.seeded(0))).toThrow(/multiple of 32/);
  });
});

describe('LeYOLO graph numerics', () => {
  const size = 128;
  const sd = randomStateDict('nano', 42);

  it('the BatchNorm-folded graph equals the unfolded graph', async () => {
    const x = new ort.Tensor('float32', imageLike(1, size), [1, 3, size, size]);
    const folded = await ort.InferenceSession.create(serializeModel(buildLeYolo('nano', size, Params.fromStateDict(sd)).toModel()));
    const plain = await ort.InferenceSession.create(serializeModel(buildLeYolo('nano', size, Params.fromStateDict(sd), { unfoldedBn: true }).toModel()));
    const a = (await folded.run({ images: x })).output0.data as Float32Array;
    const b = (await plain.run({ images: x })).output0.data as Float32Array;
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (1e-3 + Math.abs(b[i])));
    expect(worst).toBeLessThan(1e-3);
  });

  it('the in-graph DFL decode equals a plain loop over the raw head output', async () => {
    const g = buildLeYolo('nano', size, Params.fromStateDict(sd), { rawOutput: true });
    const s = await ort.InferenceSession.create(serializeModel(g.toModel()));
    const out = await s.run({ images: new ort.Tensor('float32', imageLike(1, size), [1, 3, size, size]) });
    const raw = out.raw.data as Float32Array;
    const y = out.output0.data as Float32Array;
    const { count: n } = anchorPoints(size);
    const nc = 80;
    // Plain reference: anchors per level, softmax over 16 bins per side, expectation, xywh × stride, sigmoid scores.
    let a = 0;
    let worst = 0;
    for (const stride of STRIDES) {
      const w = size / stride;
      for (let gy = 0; gy < w; gy++)
        for (let gx = 0; gx < w; gx++, a++) {
          const d = [0, 1, 2, 3].map((side) => {
            const logits = Array.from({ length: REG_MAX }, (_, k) => raw[(side * REG_MAX + k) * n + a]);
            const m = Math.max(...logits);
            const e = logits.map((v) => Math.exp(v - m));
            const z = e.reduce((p, q) => p + q, 0);
            return e.reduce((acc, v, k) => acc + (k * v) / z, 0);
          });
          const [ax, ay] = [gx + 0.5, gy + 0.5];
          const expected = [(ax - d[0] + ax + d[2]) / 2, (ay - d[1] + ay + d[3]) / 2, d[0] + d[2], d[1] + d[3]].map((v) => v * stride);
          for (let j = 0; j < 4; j++) worst = Math.max(worst, Math.abs(y[j * n + a] - expected[j]));
          for (let c = 0; c < nc; c += 13) worst = Math.max(worst, Math.abs(y[(4 + c) * n + a] - 1 / (1 + Math.exp(-raw[(4 * REG_MAX + c) * n + a]))));
        }
    }
    expect(a).toBe(n);
    expect(worst).toBeLessThan(1e-3);
  });

  it('a batch of two gives each image the answer it gets alone', async () => {
    const s = await ort.InferenceSession.create(serializeModel(buildLeYolo('nano', size, Params.fromStateDict(sd)).toModel()));
    const both = imageLike(2, size);
    const per = 3 * size * size;
    const batched = (await s.run({ images: new ort.Tensor('float32', both, [2, 3, size, size]) })).output0.data as Float32Array;
    for (let b = 0; b < 2; b++) {
      const single = (await s.run({ images: new ort.Tensor('float32', both.slice(b * per, (b + 1) * per), [1, 3, size, size]) })).output0.data as Float32Array;
      const part = batched.subarray(b * single.length, (b + 1) * single.length);
      let worst = 0;
      for (let i = 0; i < single.length; i++) worst = Math.max(worst, Math.abs(part[i] - single[i]));
      expect(worst).toBeLessThan(1e-3);
    }
  });
});
