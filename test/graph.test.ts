import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { Graph, MS_DOMAIN, type Value } from '../src/models/graph/graph.js';
import { concat, conv2d, convBn, maxPool2d, reshape, slice, transpose, upsampleNearest } from '../src/models/graph/nn.js';
import { CheckpointMismatchError, Params } from '../src/models/graph/params.js';
import { saveModel, serializeModel } from '../src/models/graph/serialize.js';
import { ShapeError, registerShapeRule } from '../src/models/graph/shapes.js';
import { float32, type HostTensor } from '../src/models/graph/tensor.js';

const tmp = mkdtempSync(join(tmpdir(), 'fovea-graph-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function run(g: Graph, feeds: Record<string, { data: Float32Array; dims: number[] }>): Promise<Record<string, Float32Array>> {
  const s = await ort.InferenceSession.create(serializeModel(g.toModel()));
  const out = await s.run(Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, new ort.Tensor('float32', v.data, v.dims)])));
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
}

const t = (shape: number[], values: number[]): HostTensor => float32(shape, values);

describe('graph builder: ops on small hand-computed cases', () => {
  it('Conv with weights and bias gives the hand-computed 2×2 result', async () => {
    const g = new Graph('conv');
    const x = g.input('x', 'float32', [1, 1, 3, 3]);
    const w = g.initializer('w', t([1, 1, 2, 2], [1, 0, 0, -1]));
    const b = g.initializer('b', t([1], [10]));
    g.output(g.op1('Conv', [x, w, b], { kernel_shape: [2, 2] }), 'y');
    const { y } = await run(g, { x: { data: Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9]), dims: [1, 1, 3, 3] } });
    // y[i,j] = x[i,j] − x[i+1,j+1] + 10 = −4 + 10 everywhere.
    expect(Array.from(y)).toEqual([6, 6, 6, 6]);
  });

  it('MaxPool, nearest upsample, concat, slice, reshape and transpose agree with hand results', async () => {
    const g = new Graph('misc');
    const x = g.input('x', 'float32', [1, 1, 2, 2]);
    const up = upsampleNearest(g, x, 2); // [1,1,4,4]
    const pooled = maxPool2d(g, up, 3, 1, 1);
    const cat = concat(g, [up, pooled], 1); // [1,2,4,4]
    const row = slice(g, cat, 2, 1, 2); // second row of both channels: [1,2,1,4]
    const flat = reshape(g, row, [2, 4]);
    g.output(transpose(g, flat, [1, 0]), 'y');
    const { y } = await run(g, { x: { data: Float32Array.from([1, 2, 3, 4]), dims: [1, 1, 2, 2] } });
    // up row 1 = [1,1,2,2]; pooled row 1 (3×3 max over rows 0..2) = [3,4,4,4]; transposed to 4×2.
    expect(Array.from(y)).toEqual([1, 3, 1, 4, 2, 4, 2, 4]);
  });

  it('Softmax over an axis and MatMul match plain arithmetic', async () => {
    const g = new Graph('sm');
    const x = g.input('x', 'float32', [2, 3]);
    const sm = g.op1('Softmax', [x], { axis: 1 });
    g.output(g.op1('MatMul', [sm, g.initializer('w', t([3, 1], [0, 1, 2]))]), 'y');
    const xs = [0.1, -2, 3, 1, 1, 1];
    const { y } = await run(g, { x: { data: Float32Array.from(xs), dims: [2, 3] } });
    const expected = [0, 1].map((r) => {
      const e = xs.slice(3 * r, 3 * r + 3).map(Math.exp);
      const z = e.reduce((a, b) => a + b, 0);
      return (e[1] + 2 * e[2]) / z;
    });
    expect(y[0]).toBeCloseTo(expected[0], 5);
    expect(y[1]).toBeCloseTo(expected[1], 5);
  });

  it('a symbolic batch dimension runs with batch 1 and batch 3', async () => {
    const g = new Graph('batch');
    const x = g.input('x', 'float32', ['batch', 2, 2]);
    g.output(reshape(g, g.op1('Mul', [x, g.constant(t([1], [2]))]), ['batch', 4]), 'y');
    expect(g.outputValues[0].shape).toEqual(['batch', 4]);
    const s = await ort.InferenceSession.create(serializeModel(g.toModel()));
    for (const n of [1, 3]) {
      const data = Float32Array.from({ length: 4 * n }, (_, i) => i);
      const out = await s.run({ x: new ort.Tensor('float32', data, [n, 2, 2]) });
      expect(out.y.dims).toEqual([n, 4]);
      expect(Array.from(out.y.data as Float32Array)).toEqual(Array.from(data, (v) => 2 * v));
    }
  });
});

describe('graph builder: com.microsoft contrib ops', () => {
  it('a com.microsoft Gelu node gets its opset import and computes the exact-erf GELU', async () => {
    registerShapeRule('Gelu', MS_DOMAIN, (ins) => ({ outputs: [{ dtype: ins[0]!.dtype, shape: ins[0]!.shape }], macs: 0 }));
    const g = new Graph('ms');
    const x = g.input('x', 'float32', [1, 5]);
    g.output(g.op1('Gelu', [x], {}, { domain: MS_DOMAIN }), 'y');
    expect(g.toModel().opsets).toEqual([{ domain: '', version: 17 }, { domain: MS_DOMAIN, version: 1 }]);
    const xs = [-3, -1, 0, 0.5, 2];
    const { y } = await run(g, { x: { data: Float32Array.from(xs), dims: [1, 5] } });
    // erf by its Abramowitz–Stegun 7.1.26 expansion (|error| < 1.5e-7), written out plainly.
    const erf = (v: number) => {
      const t = 1 / (1 + 0.3275911 * Math.abs(v));
      const p = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
      return Math.sign(v) * (1 - p * Math.exp(-v * v));
    };
    xs.forEach((v, i) => expect(y[i]).toBeCloseTo(0.5 * v * (1 + erf(v / Math.SQRT2)), 5));
  });
});

describe('graph builder: shapes are checked at build time', () => {
  const g = new Graph('bad');
  const x = g.input('x', 'float32', [1, 3, 8, 8]);
  it('a reshape that changes the element count fails, naming the op', () => {
    expect(() => reshape(g, x, [1, 3, 60])).toThrow(/Reshape_\d+.*changes the element count/);
  });
  it('a concat of mismatched spatial sizes fails', () => {
    const y = g.input('y', 'float32', [1, 3, 4, 4]);
    expect(() => concat(g, [x, y], 1)).toThrow(ShapeError);
  });
  it('a conv whose weight does not fit the input channels fails', () => {
    const w = g.initializer('w5', t([4, 5, 1, 1], new Array(20).fill(0)));
    expect(() => g.op1('Conv', [x, w], { kernel_shape: [1, 1] })).toThrow(/input has 3 channels/);
  });
  it('an op without a shape rule is refused', () => {
    expect(() => g.op1('NoSuchOp', [x])).toThrow(/no shape rule/);
  });
  it('a stride-2 conv gives the PyTorch output size and its MACs are counted', () => {
    const h = new Graph('macs');
    const xi = h.input('x', 'float32', [1, 16, 15, 15]);
    const y = conv2d(h, Params.seeded(1).scope('c'), xi, { cout: 32, k: 3, stride: 2, pad: 1 });
    expect(y.shape).toEqual([1, 32, 8, 8]);
    const s = h.stats();
    expect(s.macs.Conv).toBe(32 * 8 * 8 * 16 * 9);
    expect(s.params.Conv).toBe(32 * 16 * 9 + 32);
  });
});

describe('graph builder: deterministic seeded initialisation and serialisation', () => {
  const buildSmall = (seed: number): Uint8Array => {
    const g = new Graph('seeded');
    const p = Params.seeded(seed);
    const x = g.input('x', 'float32', [1, 3, 8, 8]);
    const y = convBn(g, p.scope('conv'), p.scope('bn'), x, { cout: 4, k: 3, eps: 1e-3 });
    g.output(y, 'y');
    return serializeModel(g.toModel());
  };

  it('the same seed gives the same bytes; another seed gives other weights', () => {
    expect(Buffer.compare(buildSmall(7), buildSmall(7))).toBe(0);
    expect(Buffer.compare(buildSmall(7), buildSmall(8))).not.toBe(0);
  });

  it('seeded conv weights follow PyTorch default bounds (±1/√fan_in)', () => {
    const p = Params.seeded(3);
    const w = p.param('w', [8, 4, 3, 3], { kind: 'uniform', bound: 1 / 6 });
    const max = w.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    expect(max).toBeLessThanOrEqual(1 / 6);
    expect(max).toBeGreaterThan(0.9 / 6);
  });

  it('initializers moved to external data load from the file path and give the same output', async () => {
    const g = new Graph('ext');
    const x = g.input('x', 'float32', [1, 3, 8, 8]);
    g.output(conv2d(g, Params.seeded(5).scope('c'), x, { cout: 8, k: 3 }), 'y');
    const model = g.toModel();
    const path = join(tmp, 'ext.onnx');
    const r = saveModel(model, path, { externalThreshold: 64 });
    expect(r.external).toBe(true);
    expect(existsSync(`${path}.data`)).toBe(true);
    expect(statSync(path).size).toBeLessThan(1024);
    const data = Float32Array.from({ length: 192 }, (_, i) => Math.sin(i));
    const feeds = { x: new ort.Tensor('float32', data, [1, 3, 8, 8]) };
    const a = await (await ort.InferenceSession.create(path)).run(feeds);
    const b = await (await ort.InferenceSession.create(serializeModel(model))).run(feeds);
    expect(Array.from(a.y.data as Float32Array)).toEqual(Array.from(b.y.data as Float32Array));
    expect(readFileSync(`${path}.data`).length).toBeGreaterThanOrEqual(8 * 3 * 9 * 4);
  });
});

describe('graph builder: BatchNorm folding and checkpoint parameters', () => {
  function stateDict(): Map<string, HostTensor> {
    const rand = (n: number, lo: number, hi: number) => Float32Array.from({ length: n }, (_, i) => lo + (hi - lo) * ((Math.sin(i * 12.9898 + n) * 43758.5453) % 1 + 1) % 1);
    return new Map<string, HostTensor>([
      ['c.weight', float32([4, 3, 3, 3], rand(108, -0.5, 0.5))],
      ['c.bias', float32([4], rand(4, -1, 1))],
      ['bn.weight', float32([4], rand(4, 0.5, 1.5))],
      ['bn.bias', float32([4], rand(4, -1, 1))],
      ['bn.running_mean', float32([4], rand(4, -1, 1))],
      ['bn.running_var', float32([4], rand(4, 0.2, 2))],
    ]);
  }

  const build = (unfolded: boolean, sd = stateDict()): { g: Graph; p: Params } => {
    const g = new Graph('fold');
    const p = Params.fromStateDict(sd);
    const x: Value = g.input('x', 'float32', [1, 3, 6, 6]);
    g.output(convBn(g, p.scope('c'), p.scope('bn'), x, { cout: 4, k: 3, bias: true, eps: 1e-3, unfolded }), 'y');
    return { g, p };
  };

  it('the folded conv equals Conv followed by BatchNormalization', async () => {
    const data = Float32Array.from({ length: 108 }, (_, i) => Math.cos(i * 0.37));
    const feeds = { x: { data, dims: [1, 3, 6, 6] } };
    const folded = (await run(build(false).g, feeds)).y;
    const plain = (await run(build(true).g, feeds)).y;
    for (let i = 0; i < folded.length; i++) expect(folded[i]).toBeCloseTo(plain[i], 4);
    expect(build(false).g.stats().params.BatchNormalization).toBeUndefined();
    expect(build(true).g.stats().params.BatchNormalization).toBe(16);
  });

  it('a checkpoint with a missing, an unexpected and a mis-shaped key is refused with all three named', () => {
    const sd = stateDict();
    sd.delete('bn.bias');
    sd.set('bn.extra', float32([1], [0]));
    sd.set('c.weight', float32([4, 3, 1, 1], new Array(12).fill(0)));
    const { p } = build(false, sd);
    expect(() => p.assertComplete()).toThrow(CheckpointMismatchError);
    expect(() => p.assertComplete()).toThrow(/missing keys: bn\.bias.*unexpected keys: bn\.extra.*shape mismatches: c\.weight: checkpoint \[4, 3, 1, 1\], model \[4, 3, 3, 3\]/);
  });

  it('a complete checkpoint passes and its values are used', () => {
    const { p } = build(false);
    expect(() => p.assertComplete()).not.toThrow();
    expect(p.parameterCount()).toBe(108 + 4 + 4 + 4);
  });
});
