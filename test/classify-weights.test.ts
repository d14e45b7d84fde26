/**
 * `--weights` for the classifiers: a timm-layout DeiT-T state dict (here a .safetensors of random
 * values under timm's keys) makes the model `trained: true` and its graph is built from those tensors;
 * a checkpoint that does not fit is refused at start, naming the keys.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { buildCare } from '../src/models/care.js';
import { build as buildDeiT, variants } from '../src/models/deit.js';
import { Graph } from '../src/models/graph/graph.js';
import { CheckpointMismatchError, Params } from '../src/models/graph/params.js';
import { serializeModel } from '../src/models/graph/serialize.js';
import { float32, int64, type HostTensor } from '../src/models/graph/tensor.js';
import { ModelRegistry } from '../src/models/registry.js';
import { prng } from './support/random.js';
import { writeSafetensors } from './support/safetensors.js';

const dir = mkdtempSync(join(tmpdir(), 'fovea-classify-weights-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));


/** Random DeiT-T tensors under timm's keys (the keys and shapes the builder asks for at 224). */
function timmStateDict(seed: number): Map<string, HostTensor> {
  const p = Params.seeded(0);
  buildDeiT(new Graph('deit'), variants['DeiT-T'], p, { imageSize: 224 });
  const r = prng(seed);
  return new Map(p.requested().map(({ key, shape }) => [key, float32(shape, Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (r() * 2 - 1) * 0.05))]));
}

describe('classifier weights', () => {
  it('a timm DeiT-T state dict makes deit-t trained, and its graph runs those tensors', async () => {
    const sd = timmStateDict(5);
    const path = join(dir, 'deit_tiny_patch16_224.safetensors');
    writeSafetensors(path, sd);
    const registry = new ModelRegistry({ cacheDir: join(dir, 'cache') });
    await registry.useWeights('deit-t', path);
    expect(registry.info('deit-t').trained).toBe(true);
    const built = await registry.buildClassifier('deit-t');
    // The same tensors built directly give the same logits.
    const g = new Graph('deit');
    const p = Params.fromStateDict(sd);
    const { logits } = buildDeiT(g, variants['DeiT-T'], p, { imageSize: 224 });
    g.output(logits, 'logits');
    const r = prng(9);
    const images = Float32Array.from({ length: 3 * 224 * 224 }, () => r() * 2 - 1);
    const run = async (s: ort.InferenceSession) => (await s.run({ images: new ort.Tensor('float32', images, [1, 3, 224, 224]) })).logits.data as Float32Array;
    const [served, direct] = [await ort.InferenceSession.create(built.path), await ort.InferenceSession.create(serializeModel(g.toModel()))];
    const [a, b] = [await run(served), await run(direct)];
    expect(Math.max(...a.map((v, i) => Math.abs(v - b[i])))).toBeLessThan(1e-5);
  });

  it("CARE-S0 as train.py saves it (DataParallel's `module.` prefix, BN counters) makes care-s0 trained, and its graph runs those tensors", async () => {
    const p = Params.seeded(0);
    buildCare('S0', p, { imageSize: 224, output: 'both' });
    const r = prng(11);
    const sd = new Map<string, HostTensor>();
    for (const { key, shape } of p.requested()) {
      const n = shape.reduce((a, b) => a * b, 1);
      // Running variances stay positive; everything else is a small random draw.
      const values = Float32Array.from({ length: n }, () => (key.endsWith('running_var') ? 0.5 + r() : (r() * 2 - 1) * 0.05));
      sd.set(`module.${key}`, float32(shape, values));
      if (key.endsWith('running_mean')) sd.set(`module.${key.replace(/running_mean$/, 'num_batches_tracked')}`, int64([100], []));
    }
    const path = join(dir, 'care_s0.safetensors');
    writeSafetensors(path, sd);
    const registry = new ModelRegistry({ cacheDir: join(dir, 'cache') });
    await registry.useWeights('care-s0', path);
    expect(registry.info('care-s0').trained).toBe(true);
    const built = await registry.buildClassifier('care-s0');
    const direct = new Map([...sd].filter(([k]) => !k.endsWith('num_batches_tracked')).map(([k, v]) => [k.slice('module.'.length), v]));
    const g = buildCare('S0', Params.fromStateDict(direct), { imageSize: 224, output: 'logits' });
    const images = Float32Array.from({ length: 3 * 224 * 224 }, () => r() * 2 - 1);
    const run = async (s: ort.InferenceSession) => (await s.run({ images: new ort.Tensor('float32', images, [1, 3, 224, 224]) })).logits.data as Float32Array;
    const [served, reference] = [await ort.InferenceSession.create(built.path), await ort.InferenceSession.create(serializeModel(g.toModel()))];
    const [a, b] = [await run(served), await run(reference)];
    expect(a.length).toBe(1000);
    expect(Math.max(...a.map((v, i) => Math.abs(v - b[i])))).toBeLessThan(1e-4);
  });

  it('a checkpoint that does not fit is refused at start, naming the missing key', async () => {
    const sd = timmStateDict(6);
    sd.delete('blocks.3.attn.qkv.bias');
    const path = join(dir, 'partial.safetensors');
    writeSafetensors(path, sd);
    const registry = new ModelRegistry({ cacheDir: join(dir, 'cache') });
    await expect(registry.useWeights('deit-t', path)).rejects.toThrow(CheckpointMismatchError);
    await expect(new ModelRegistry({ cacheDir: join(dir, 'cache') }).useWeights('vig-t', path)).rejects.toThrow(/missing keys: .*patch_embed\.proj\.0\.weight/);
  });
});
