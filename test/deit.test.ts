/**
 * DeiT on the shared ViT trunk against a tiny float64 PyTorch reference written from timm's module tree
 * (scripts/make-deit-fixture.py): timm's keys one-to-one, the fused (contrib ops) and plain builds, at the
 * trained grid and at a larger input with timm's `resample_abs_pos_embed` (class row kept, antialiased bicubic).
 */
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { build, type DeiTConfig } from '../src/models/deit.js';
import { Graph } from '../src/models/graph/graph.js';
import { Params } from '../src/models/graph/params.js';
import { serializeModel } from '../src/models/graph/serialize.js';
import { float32, type HostTensor } from '../src/models/graph/tensor.js';

interface Fixture {
  config: { width: number; heads: number; depth: number; patch: number; pos_grid: number; classes: number };
  weights: Record<string, { shape: number[]; offset: number }>;
  runs: Array<{ size: number; images: number; features: number[]; logits: number[] }>;
}

const fx = JSON.parse(readFileSync(new URL('./fixtures/deit/tiny.json', import.meta.url), 'utf8')) as Fixture;
const bytes = readFileSync(new URL('./fixtures/deit/tiny.bin', import.meta.url));
const blob = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
const sd = new Map<string, HostTensor>(Object.entries(fx.weights).map(([k, { shape, offset }]) => [k, float32(shape, blob.subarray(offset, offset + shape.reduce((a, b) => a * b, 1)))]));
const c = fx.config;
const cfg: DeiTConfig = {
  vit: { width: c.width, depth: c.depth, heads: c.heads, patch: c.patch, mlpRatio: 4, layerScale: false, lnEps: 1e-6, qkv: 'fused', qkvBias: true },
  numClasses: c.classes,
  posGrid: c.pos_grid,
};

function relativeError(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  expect(a.length).toBe(ref.length);
  let [err, scale] = [0, 0];
  for (let i = 0; i < ref.length; i++) {
    err = Math.max(err, Math.abs(a[i] - ref[i]));
    scale = Math.max(scale, Math.abs(ref[i]));
  }
  return err / scale;
}

describe('DeiT against a plain PyTorch reference', () => {
  for (const r of fx.runs) {
    it(`at ${r.size} (grid ${r.size / c.patch}${r.size / c.patch === c.pos_grid ? ', as trained' : ', pos_embed resampled'}): fused and plain builds give the reference logits and features`, async () => {
      for (const plain of [false, true]) {
        const p = Params.fromStateDict(sd);
        const g = new Graph('deit');
        const { logits, features } = build(g, cfg, p, { imageSize: r.size, plain });
        g.output(logits, 'logits');
        g.output(features, 'features');
        p.assertComplete(); // every timm key used, none missing
        const session = await ort.InferenceSession.create(serializeModel(g.toModel()));
        const images = blob.slice(r.images, r.images + 2 * 3 * r.size * r.size);
        const out = await session.run({ images: new ort.Tensor('float32', images, [2, 3, r.size, r.size]) });
        await session.release();
        expect(relativeError(out.logits.data as Float32Array, r.logits), `plain ${plain}`).toBeLessThan(1e-4);
        expect(relativeError(out.features.data as Float32Array, r.features), `plain ${plain}`).toBeLessThan(1e-4);
      }
    });
  }
});
