import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Graph } from '../src/models/graph/graph.js';
import { Params } from '../src/models/graph/params.js';
import { serializeModel } from '../src/models/graph/serialize.js';
import type { HostTensor } from '../src/models/graph/tensor.js';
import { float32 } from '../src/models/graph/tensor.js';
import { build, buildViG, keyDim, mlpHidden, valueDim, variants, type ViGBuildOptions, type ViGConfig } from '../src/models/vig.js';
import { prng } from './support/random.js';

/**
 * ViG's parameter count by hand, module by module (vig.py's module tree), at the trained 14×14 grid:
 * patch embed v2, pos_embed, per block {attn_norm, in_proj dwconv, qkv_proj, gk_proj (rank 16), o_proj,
 * g_norm, l_norm, g_proj, mlp_norm, gate_proj, down_proj}, norm, head.
 */
function handCount(cfg: ViGConfig): number {
  const c = cfg.embedDim;
  const [dk, dv, hv, h] = [keyDim(cfg), valueDim(cfg), valueDim(cfg) / cfg.heads, mlpHidden(c)];
  const patch = (3 * (c / 2) * 81 + c / 2) + 2 * (c / 2) + ((c / 2) * c * 9 + c) + 2 * c;
  const pos = cfg.posGrid ** 2 * c;
  const attn = c * 9 + c * (2 * dk + dv) + (c * 16 + 16 * 2 * dk + 2 * dk) + dv * c + 2 * hv + (c * dv + dv);
  const block = c + attn + c + c * 2 * h + h * c;
  return patch + pos + cfg.depth * block + c + (c * cfg.numClasses + cfg.numClasses);
}

function countOf(cfg: ViGConfig, o: ViGBuildOptions): { params: number; graph: Graph } {
  const p = Params.seeded(0);
  const graph = new Graph('vig');
  graph.output(build(graph, cfg, p, o), o.output);
  return { params: p.parameterCount(), graph };
}

async function run(g: Graph, images: Float32Array, size: number, batch: number): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(serializeModel(g.toModel()));
  const out = await session.run({ images: new ort.Tensor('float32', images, [batch, 3, size, size]) });
  await session.release();
  return out[g.outputValues[0].name].data as Float32Array;
}

/** max |a − ref| / max |ref|. */
function relativeError(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  expect(a.length).toBe(ref.length);
  let [err, scale] = [0, 0];
  for (let i = 0; i < ref.length; i++) {
    if (!Number.isFinite(a[i])) return Infinity;
    err = Math.max(err, Math.abs(a[i] - ref[i]));
    scale = Math.max(scale, Math.abs(ref[i]));
  }
  return err / scale;
}

const randomImages = (seed: number, n: number) => {
  const r = prng(seed);
  return Float32Array.from({ length: n }, () => 2 * r() - 1);
};

describe('ViG variants', () => {
  it('ViG-T has the hand-counted 5,834,536 parameters (spec: 5.83M computed)', () => {
    const cfg = variants['ViG-T'];
    const { params } = countOf(cfg, { imageSize: 224, chunk: 64, output: 'logits' });
    expect(params).toBe(handCount(cfg));
    expect(params).toBe(5_834_536);
  });

  it('ViG-S has 22,615,144 and ViG-B 89,022,184 parameters (hand count; README: 23M, 89M), build only', () => {
    for (const [name, exact, published] of [['ViG-S', 22_615_144, 23e6], ['ViG-B', 89_022_184, 89e6]] as const) {
      const cfg = variants[name];
      const { params } = countOf(cfg, { imageSize: 224, chunk: 64, output: 'logits' });
      expect(params, name).toBe(handCount(cfg));
      expect(params, name).toBe(exact);
      expect(Math.abs(params - published) / published, name).toBeLessThan(0.02);
    }
  });

  it('MLP intermediate size is 256·ceil(int(8C/3)/256): 512, 1024, 2048', () => {
    expect([192, 384, 768].map(mlpHidden)).toEqual([512, 1024, 2048]);
  });

  it('rejects an input side that is not a multiple of 16', () => {
    expect(() => countOf(variants['ViG-T'], { imageSize: 200, chunk: 64, output: 'logits' })).toThrow(RangeError);
  });

  it('ViG-T gives [B, 1000] logits at 224 and at 512 (pos table resized 14×14 → 32×32), and [B, 192] features', async () => {
    const cfg = variants['ViG-T'];
    for (const size of [224, 512]) {
      const { graph } = countOf(cfg, { imageSize: size, chunk: 64, output: 'logits' });
      expect(graph.outputValues[0].shape).toEqual(['batch', 1000]);
      if (size === 224) {
        const out = await run(graph, randomImages(7, 3 * size * size), size, 1);
        expect(out.length).toBe(1000);
        expect(out.every(Number.isFinite)).toBe(true);
      }
    }
    const { graph } = countOf(cfg, { imageSize: 512, chunk: 64, output: 'features' });
    expect(graph.outputValues[0].shape).toEqual(['batch', 192]);
    const out = await run(graph, randomImages(8, 3 * 512 * 512), 512, 1);
    expect(out.length).toBe(192);
    expect(out.every(Number.isFinite)).toBe(true);
  }, 60_000);
});

// ---- against the tiny PyTorch reference (scripts/make-vig-fixture.py) ----------------------------

interface Fixture {
  config: { embed: number; heads: number; depth: number; act_in_conv: boolean; out_act: boolean; pos_grid: number; classes: number };
  weights: Record<string, { shape: number[]; offset: number }>;
  runs: Array<{ size: number; images: number; features: number[]; logits: number[] }>;
}

function loadFixture(name: string): { cfg: ViGConfig; sd: Map<string, HostTensor>; fx: Fixture; blob: Float32Array } {
  const fx = JSON.parse(readFileSync(new URL(`./fixtures/vig/${name}.json`, import.meta.url), 'utf8')) as Fixture;
  const bytes = readFileSync(new URL(`./fixtures/vig/${name}.bin`, import.meta.url));
  const blob = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const sd = new Map<string, HostTensor>();
  for (const [key, { shape, offset }] of Object.entries(fx.weights)) {
    sd.set(key, float32(shape, blob.subarray(offset, offset + shape.reduce((a, b) => a * b, 1))));
  }
  const c = fx.config;
  const cfg: ViGConfig = { embedDim: c.embed, depth: c.depth, heads: c.heads, expandK: 0.5, expandV: 1, actInConv: c.act_in_conv, outAct: c.out_act, numClasses: c.classes, posGrid: c.pos_grid };
  return { cfg, sd, fx, blob };
}

describe('ViG forward against a plain PyTorch reference (float64, token-by-token GLA recurrence)', () => {
  for (const name of ['tiny-t', 'tiny-s']) {
    it(`${name}: fused, chunkwise and quadratic builds all match the reference logits and features within 1e-4, official keys one-to-one`, async () => {
      const { cfg, sd, fx, blob } = loadFixture(name);
      for (const r of fx.runs) {
        const images = blob.subarray(r.images, r.images + 2 * 3 * r.size * r.size);
        for (const form of [{ gla: 'fused' }, { gla: 'chunkwise', chunk: 4 }, { gla: 'chunkwise', chunk: 16 }, { gla: 'quadratic' }] as const) {
          for (const output of ['logits', 'features'] as const) {
            const g = buildViG(cfg, Params.fromStateDict(sd), { imageSize: r.size, output, ...form }); // assertComplete: every key used, none missing
            const out = await run(g, images.slice(), r.size, 2);
            const err = relativeError(out, output === 'logits' ? r.logits : r.features);
            expect(err, `${name} size ${r.size} ${JSON.stringify(form)} ${output}`).toBeLessThan(1e-4);
          }
        }
      }
    }, 60_000);
  }

  it('a checkpoint missing a key is rejected, naming it', () => {
    const { cfg, sd } = loadFixture('tiny-s');
    const partial = new Map(sd);
    partial.delete('blocks.0.attn.l_norm.weight');
    expect(() => buildViG(cfg, Params.fromStateDict(partial), { imageSize: 64, chunk: 4, output: 'logits' })).toThrow(/blocks\.0\.attn\.l_norm\.weight/);
  });
});

describe('ViG fused vs chunkwise vs quadratic GLA', () => {
  it('a tiny seeded ViG gives the same logits with all three GLA forms (within 1e-4), L not a multiple of the chunk', async () => {
    const cfg: ViGConfig = { ...variants['ViG-T'], embedDim: 48, depth: 2, heads: 2, numClasses: 10, posGrid: 6 };
    const size = 112; // 7×7 = 49 tokens, chunk 16 pads to 64
    const images = randomImages(3, 2 * 3 * size * size);
    const [fused, chunkwise, quadratic] = await Promise.all(
      (['fused', 'chunkwise', 'quadratic'] as const).map((gla) => run(buildViG(cfg, Params.seeded(5), { imageSize: size, chunk: 16, gla, output: 'logits' }), images, size, 2)),
    );
    expect(relativeError(chunkwise, quadratic)).toBeLessThan(1e-4);
    expect(relativeError(fused, quadratic)).toBeLessThan(1e-4);
  });
});
