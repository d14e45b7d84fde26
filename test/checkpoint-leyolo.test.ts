/**
 * The official LeYOLO-Nano checkpoint (ultralytics 8.1.4, FP16 storages) read without Python.
 * Expected values come from PyTorch itself: scripts/make-checkpoint-fixtures.py wrote
 * test/fixtures/checkpoints/leyolo-nano-expected.json from `model.state_dict()`.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import type { StateDict } from '../src/models/graph/params.js';
import type { Checkpoint } from '../src/models/io/index.js';
import { PyObject, TorchTensor, batchNormEps, parameterCount, pyGet, readCheckpoint, stateDict } from '../src/models/io/index.js';

const WEIGHTS = fileURLToPath(new URL('../../shared/fixtures/weights/LeYOLONano.pt', import.meta.url));

interface Expected {
  keys: [string, number[], string][];
  picks: Record<string, { first: number[]; sum: number }>;
  float_sum: number;
  float_abs_sum: number;
  parameters: number;
  stride: number[];
  stride_dtype: string;
  bn_eps: number[];
  batchnorms: number;
}
const expected = JSON.parse(readFileSync(new URL('./fixtures/checkpoints/leyolo-nano-expected.json', import.meta.url), 'utf8')) as Expected;

function sum(t: TorchTensor, f: (x: number) => number = (x) => x): number {
  let s = 0;
  for (const x of t.data as Float32Array) s += f(x);
  return s;
}

describe('LeYOLO-Nano official checkpoint', () => {
  let ckpt: Checkpoint;
  let sd: StateDict;
  let readMs = 0;

  beforeAll(async () => {
    const t0 = performance.now();
    ckpt = await readCheckpoint(WEIGHTS);
    sd = stateDict(pyGet(ckpt.root, 'model') ?? null);
    readMs = performance.now() - t0;
  });

  it('reads in well under a second', () => {
    console.log(`LeYOLONano.pt: read and flattened in ${readMs.toFixed(0)} ms (${sd.size} tensors)`);
    expect(readMs).toBeLessThan(5000);
  });

  it('is a pickled ultralytics DetectionModel inside the usual training dict', () => {
    expect(ckpt.format).toBe('torch-zip');
    const model = pyGet(ckpt.root, 'model');
    expect(model).toBeInstanceOf(PyObject);
    expect((model as PyObject).__class__).toBe('ultralytics.nn.tasks.DetectionModel');
    expect(pyGet(ckpt.root, 'version')).toBe('8.1.4');
    expect(pyGet(ckpt.root, 'epoch')).toBe(-1);
    expect(pyGet(ckpt.root, 'ema')).toBeNull();
    expect(pyGet(ckpt.root, 'train_args', 'imgsz')).toBe(640);
  });

  it('flattens the module tree into exactly the keys, order and shapes of model.state_dict()', () => {
    expect([...sd.keys()]).toEqual(expected.keys.map(([k]) => k));
    for (const [key, shape, dtype] of expected.keys) {
      const t = sd.get(key) as TorchTensor;
      expect(t.shape, key).toEqual(shape);
      expect(t.storageDtype, key).toBe(dtype);
    }
  });

  it('has the official key names of models-b.md §1', () => {
    for (const key of [
      'model.0.c.weight',
      'model.0.bn.weight',
      'model.0.bn.bias',
      'model.0.bn.running_mean',
      'model.0.bn.running_var',
      'model.3.layers.0.c.weight',
      'model.3.layers.1.c.weight',
      'model.3.layers.2.weight',
      'model.3.layers.2.bias',
      'model.3.layers.3.weight',
      'model.14.cv1.conv.weight',
      'model.35.cv2.0.3.bias',
      'model.35.cv3.2.3.weight',
      'model.35.dfl.conv.weight',
    ]) {
      expect(sd.has(key), key).toBe(true);
    }
  });

  it('counts 1,120,480 parameters, running statistics and num_batches_tracked excluded', () => {
    expect(parameterCount(sd)).toBe(1_120_480);
    expect(expected.parameters).toBe(1_120_480);
    let byName = 0;
    for (const [k, t] of sd) if (!/running_(mean|var)$|num_batches_tracked$/.test(k)) byName += (t as TorchTensor).numel;
    expect(byName).toBe(1_120_480);
  });

  it('widens the FP16 storages to exactly the float32 values PyTorch reads', () => {
    for (const [key, { first, sum: s }] of Object.entries(expected.picks)) {
      const t = sd.get(key) as TorchTensor;
      expect(t.storageDtype).toBe('float16');
      expect(t.dtype).toBe('float32');
      expect(t.data).toBeInstanceOf(Float32Array);
      expect(Array.from(t.data.subarray(0, first.length) as Float32Array), key).toEqual(first);
      expect(sum(t), key).toBeCloseTo(s, 6);
    }
    let total = 0;
    let abs = 0;
    for (const t of sd.values()) {
      if (t.dtype !== 'float32') continue;
      total += sum(t as TorchTensor);
      abs += sum(t as TorchTensor, Math.abs);
    }
    expect(total).toBeCloseTo(expected.float_sum, 4);
    expect(abs).toBeCloseTo(expected.float_abs_sum, 4);
  });

  it('holds the DFL projection as the fixed arange(16)', () => {
    const dfl = sd.get('model.35.dfl.conv.weight') as TorchTensor;
    expect(dfl.shape).toEqual([1, 16, 1, 1]);
    expect(Array.from(dfl.data as Float32Array)).toEqual(Array.from({ length: 16 }, (_, i) => i));
  });

  it('reads model.stride [8, 16, 32] (FP32) from the module record, outside the state dict', () => {
    const stride = pyGet(ckpt.root, 'model', 'stride');
    expect(stride).toBeInstanceOf(TorchTensor);
    expect((stride as TorchTensor).storageDtype).toBe(expected.stride_dtype);
    expect(Array.from((stride as TorchTensor).data as Float32Array)).toEqual(expected.stride);
    expect(sd.has('model.stride')).toBe(false);
  });

  it('reads BatchNorm eps 1e-3 for every BatchNorm from the module records', () => {
    const eps = batchNormEps(ckpt.root);
    expect(eps.size).toBe(expected.batchnorms);
    expect(new Set(eps.values())).toEqual(new Set(expected.bn_eps));
    expect(eps.get('model.0.bn')).toBe(0.001);
    for (const path of eps.keys()) expect(sd.has(`${path}.running_var`), path).toBe(true);
  });

  it('keeps int64 buffers as BigInt64Array (num_batches_tracked)', () => {
    const t = sd.get('model.0.bn.num_batches_tracked') as TorchTensor;
    expect(t.dtype).toBe('int64');
    expect(t.shape).toEqual([]);
    expect(t.data).toBeInstanceOf(BigInt64Array);
  });
});
