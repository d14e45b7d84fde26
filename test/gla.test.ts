import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { glaChunkwise, glaFused, glaQuadratic, glaRecurrent, type GlaDirection, type GlaHostInputs } from '../src/models/gla.js';
import { Graph, type Value } from '../src/models/graph/graph.js';
import { reshape, transpose } from '../src/models/graph/nn.js';
import { serializeModel } from '../src/models/graph/serialize.js';
import { ShapeError } from '../src/models/graph/shapes.js';
import type { Dim } from '../src/models/graph/tensor.js';
import { prng } from './support/random.js';

// ViG-T's head sizes (specs/models-a.md §2): 3 heads, dk 32, dv 64; batch 2.
const VIG_T = { batch: 2, heads: 3, dk: 32, dv: 64 } as const;

/**
 * How fast the gates forget. 'vig': logsigmoid(x)/16 as ViG's `gate_logit_normalizer` gives (α ≈ 0.96);
 * 'strong': logsigmoid(x) (α ≈ 0.45, a chunk of 64 sums to ≈ −50); 'extreme': logsigmoid(4x) with tails
 * past −10 a token, so that unmasked exponents overflow float32 many times over.
 */
type Gates = 'vig' | 'strong' | 'extreme';
const logSigmoid = (x: number) => (x >= 0 ? -Math.log1p(Math.exp(-x)) : x - Math.log1p(Math.exp(x)));

function randomCase(seed: number, length: number, gates: Gates): GlaHostInputs {
  const rnd = prng(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
  const { batch, heads, dk, dv } = VIG_T;
  const n = (d: number) => batch * heads * length * d;
  const draw = (m: number, f: () => number) => Float32Array.from({ length: m }, f);
  const gate = { vig: () => logSigmoid(normal()) / 16, strong: () => logSigmoid(normal()), extreme: () => logSigmoid(4 * normal()) }[gates];
  return { q: draw(n(dk), normal), k: draw(n(dk), normal), v: draw(n(dv), normal), logAlpha: draw(n(dk), gate), batch, heads, length, dk, dv };
}

type Form = { kind: 'chunkwise'; chunk: number } | { kind: 'quadratic' } | { kind: 'fused' };

function buildGla(form: Form, length: number, direction: GlaDirection, batch: Dim = VIG_T.batch): Graph {
  const { heads, dk, dv } = VIG_T;
  const g = new Graph(`gla_${form.kind}`);
  const x = {
    q: g.input('q', 'float32', [batch, heads, length, dk]),
    k: g.input('k', 'float32', [batch, heads, length, dk]),
    v: g.input('v', 'float32', [batch, heads, length, dv]),
    logAlpha: g.input('logAlpha', 'float32', [batch, heads, length, dk]),
  };
  if (form.kind === 'fused') {
    // The fused kernel reads the packed [B, L, H·d] layout: pack the per-head inputs, unpack the output.
    const pack = (t: Value, d: number) => reshape(g, transpose(g, t, [0, 2, 1, 3]), [batch, length, heads * d]);
    const o = glaFused(g, { q: pack(x.q, dk), k: pack(x.k, dk), v: pack(x.v, dv), logAlpha: pack(x.logAlpha, dk), heads }, { direction });
    g.output(transpose(g, reshape(g, o, [batch, length, heads, dv]), [0, 2, 1, 3]), 'o');
  } else g.output(form.kind === 'chunkwise' ? glaChunkwise(g, x, { chunk: form.chunk, direction }) : glaQuadratic(g, x, { direction }), 'o');
  return g;
}

async function runGla(g: Graph, c: GlaHostInputs): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(serializeModel(g.toModel()));
  const t = (data: Float32Array | Float64Array, d: number) => new ort.Tensor('float32', data as Float32Array, [c.batch, c.heads, c.length, d]);
  const out = await session.run({ q: t(c.q, c.dk), k: t(c.k, c.dk), v: t(c.v, c.dv), logAlpha: t(c.logAlpha, c.dk) });
  await session.release();
  return out.o.data as Float32Array;
}

/** max |a − ref| / max |ref|: the error relative to the output's scale (elementwise ratios blow up near zeros). */
function relativeError(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  expect(a.length).toBe(ref.length);
  let err = 0;
  let scale = 0;
  for (let i = 0; i < ref.length; i++) {
    if (!Number.isFinite(a[i])) return Infinity;
    err = Math.max(err, Math.abs(a[i] - ref[i]));
    scale = Math.max(scale, Math.abs(ref[i]));
  }
  return err / scale;
}

const DIRECTIONS: GlaDirection[] = ['forward', 'backward'];

describe('glaRecurrent (the float64 reference)', () => {
  it('applies the gate at token t to the state carried from t−1 (forward) or t+1 (backward), and includes token t', () => {
    // One head, dk = dv = 1, two tokens, scale 1: hand-computed.
    const [q, k, v, a] = [[2, 3], [5, 7], [11, 13], [Math.log(0.5), Math.log(0.25)]];
    const x = { q: Float64Array.from(q), k: Float64Array.from(k), v: Float64Array.from(v), logAlpha: Float64Array.from(a), batch: 1, heads: 1, length: 2, dk: 1, dv: 1 };
    const fw = glaRecurrent(x, { scale: 1 });
    expect(fw[0]).toBeCloseTo(2 * 5 * 11, 10);
    expect(fw[1]).toBeCloseTo(3 * (0.25 * 5 * 11 + 7 * 13), 10);
    const bw = glaRecurrent(x, { scale: 1, direction: 'backward' });
    expect(bw[1]).toBeCloseTo(3 * 7 * 13, 10);
    expect(bw[0]).toBeCloseTo(2 * (0.5 * 7 * 13 + 5 * 11), 10);
  });
});

describe('chunkwise-parallel GLA vs the quadratic form vs the recurrence (and the fused kernel)', () => {
  const cases: Array<{ length: number; chunk: number; gates: Gates }> = [
    { length: 64, chunk: 16, gates: 'vig' },
    { length: 196, chunk: 16, gates: 'vig' }, // ViG-T at 224: 196 tokens, not a multiple of 16 (padded)
    { length: 196, chunk: 64, gates: 'strong' },
    { length: 256, chunk: 64, gates: 'vig' },
    { length: 256, chunk: 16, gates: 'strong' },
    { length: 200, chunk: 64, gates: 'extreme' },
    { length: 48, chunk: 64, gates: 'strong' }, // one padded chunk, no carried state
  ];
  for (const { length, chunk, gates } of cases)
    for (const direction of DIRECTIONS)
      it(`agree to 1e-4 (L ${length}, chunk ${chunk}, ${gates} gates, ${direction})`, async () => {
        const seed = length * 1009 + chunk * 31 + gates.length + (direction === 'forward' ? 0 : 7);
        const c = randomCase(seed, length, gates);
        const reference = glaRecurrent(c, { direction });
        const chunked = await runGla(buildGla({ kind: 'chunkwise', chunk }, length, direction), c);
        const quadratic = await runGla(buildGla({ kind: 'quadratic' }, length, direction), c);
        expect(relativeError(chunked, reference), `chunkwise vs recurrence, seed ${seed}`).toBeLessThan(1e-4);
        expect(relativeError(quadratic, reference), `quadratic vs recurrence, seed ${seed}`).toBeLessThan(1e-4);
        expect(relativeError(chunked, quadratic), `chunkwise vs quadratic, seed ${seed}`).toBeLessThan(1e-4);
        const fused = await runGla(buildGla({ kind: 'fused' }, length, direction), c);
        expect(relativeError(fused, reference), `fused vs recurrence, seed ${seed}`).toBeLessThan(1e-4);
      });
});

describe('chunkwise-parallel GLA on long sequences (linear cost) matches the recurrence', () => {
  const cases: Array<{ length: number; chunk: number; gates: Gates; direction: GlaDirection }> = [
    { length: 1024, chunk: 16, gates: 'vig', direction: 'forward' },
    { length: 1024, chunk: 64, gates: 'strong', direction: 'backward' },
    { length: 1000, chunk: 64, gates: 'vig', direction: 'backward' },
    { length: 4096, chunk: 64, gates: 'vig', direction: 'forward' },
    { length: 4096, chunk: 64, gates: 'vig', direction: 'backward' },
    { length: 4096, chunk: 16, gates: 'strong', direction: 'forward' },
  ];
  for (const { length, chunk, gates, direction } of cases)
    it(`agrees to 1e-4 (L ${length}, chunk ${chunk}, ${gates} gates, ${direction})`, async () => {
      const seed = 7 * length + chunk + (direction === 'forward' ? 0 : 1);
      const c = randomCase(seed, length, gates);
      const reference = glaRecurrent(c, { direction });
      const chunked = await runGla(buildGla({ kind: 'chunkwise', chunk }, length, direction), c);
      expect(relativeError(chunked, reference), `chunkwise, seed ${seed}`).toBeLessThan(1e-4);
      const fused = await runGla(buildGla({ kind: 'fused' }, length, direction), c);
      expect(relativeError(fused, reference), `fused, seed ${seed}`).toBeLessThan(1e-4);
    });
});

describe('GLA graph building', () => {
  it('keeps a symbolic batch dim and checks shapes at build time', async () => {
    const g = buildGla({ kind: 'chunkwise', chunk: 16 }, 196, 'backward', 'batch');
    expect(g.outputValues[0].shape).toEqual(['batch', 3, 196, 64]);
    const seed = 4242;
    const c = randomCase(seed, 196, 'vig');
    expect(relativeError(await runGla(g, c), glaRecurrent(c, { direction: 'backward' })), `seed ${seed}`).toBeLessThan(1e-4);
    const bad = new Graph('bad');
    const x = {
      q: bad.input('q', 'float32', [1, 3, 64, 32]),
      k: bad.input('k', 'float32', [1, 3, 64, 32]),
      v: bad.input('v', 'float32', [1, 3, 63, 64]),
      logAlpha: bad.input('logAlpha', 'float32', [1, 3, 64, 32]),
    };
    expect(() => glaChunkwise(bad, x, { chunk: 16 })).toThrow(ShapeError);
    expect(() => glaQuadratic(bad, x)).toThrow(/v is \[1, 3, 63, 64\]/);
    const packed = new Graph('bad_packed');
    const p = (l: number, w: number) => packed.input(`x${l}_${w}_${Math.random()}`.replace('.', ''), 'float32', [1, l, w]);
    expect(() => glaFused(packed, { q: p(64, 96), k: p(64, 96), v: p(63, 192), logAlpha: p(64, 96), heads: 3 })).toThrow(/value \[1, 63, 192\]/);
    expect(() => glaFused(packed, { q: p(64, 96), k: p(64, 96), v: p(64, 192), logAlpha: p(64, 48), heads: 3 })).toThrow(/decay \[1, 64, 48\]/);
    expect(() => glaFused(packed, { q: p(64, 96), k: p(64, 96), v: p(64, 190), logAlpha: p(64, 96), heads: 3 })).toThrow(/do not split into 3 heads/);
  });

  it('costs L·(C·dk + C·dv + 2·dk·dv) MACs a head chunkwise and L²·(dk + dv) quadratically', () => {
    const { heads, dk, dv } = VIG_T;
    for (const length of [256, 1024, 4096]) {
      const chunk = 64;
      const n = length / chunk;
      const chunkwise = buildGla({ kind: 'chunkwise', chunk }, length, 'forward', 'batch').stats().totalMacs;
      // intra scores and values; the per-chunk state updates (all N); the carried state read by chunks 1..N−1.
      expect(chunkwise).toBe(heads * (length * chunk * (dk + dv) + n * chunk * dk * dv + (n - 1) * chunk * dk * dv));
      const quadratic = buildGla({ kind: 'quadratic' }, length, 'forward', 'batch').stats().totalMacs;
      expect(quadratic).toBe(heads * length * length * (dk + dv));
      // The recurrence: a k⊗v state update and a q·S read-out per token and head.
      expect(buildGla({ kind: 'fused' }, length, 'forward', 'batch').stats().macs['com.microsoft.LinearAttention']).toBe(2 * heads * length * dk * dv);
    }
  });
});
