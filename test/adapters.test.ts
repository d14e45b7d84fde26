import { describe, expect, it } from 'vitest';
import { adapterScratchBytes, loraScale, mergeBlockLora, mergeDora, mergeLora, type BlockPartition, type LoraDims } from '../src/models/adapters.js';
import { prng } from './support/random.js';


const uniform = (rand: () => number, n: number, scale = 1): Float32Array => Float32Array.from({ length: n }, () => (2 * rand() - 1) * scale);

// ---- The plain float64 references: materialise B·A, add, take row norms. ----

/** ΔW = B·A as a dense float64 dOut×dIn matrix. */
function denseProduct(B: ArrayLike<number>, A: ArrayLike<number>, dOut: number, rank: number, dIn: number): Float64Array {
  const out = new Float64Array(dOut * dIn);
  for (let i = 0; i < dOut; i++)
    for (let j = 0; j < dIn; j++) {
      let sum = 0;
      for (let k = 0; k < rank; k++) sum += B[i * rank + k] * A[k * dIn + j];
      out[i * dIn + j] = sum;
    }
  return out;
}

function plus(W: Float32Array, s: number, delta: Float64Array): Float64Array {
  return Float64Array.from(W, (w, i) => w + s * delta[i]);
}

function rowNorm(X: Float64Array, i: number, dIn: number): number {
  let scale = 0;
  for (let j = 0; j < dIn; j++) scale = Math.max(scale, Math.abs(X[i * dIn + j]));
  if (scale === 0) return 0;
  let sum = 0;
  for (let j = 0; j < dIn; j++) sum += (X[i * dIn + j] / scale) ** 2;
  return scale * Math.sqrt(sum); // hypot-style: scaled so nothing under- or overflows
}

function referenceLora(W: Float32Array, A: Float32Array, B: Float32Array, s: number, d: LoraDims): Float64Array {
  return plus(W, s, denseProduct(B, A, d.dOut, d.rank, d.dIn));
}

function referenceDora(W: Float32Array, A: Float32Array, B: Float32Array, m: Float32Array, s: number, d: LoraDims): Float64Array {
  const merged = referenceLora(W, A, B, s, d);
  for (let i = 0; i < d.dOut; i++) {
    const norm = rowNorm(merged, i, d.dIn);
    for (let j = 0; j < d.dIn; j++) merged[i * d.dIn + j] = norm === 0 ? 0 : (m[i] * merged[i * d.dIn + j]) / norm;
  }
  return merged;
}

/** Block-LoRA written out literally: build each B_k·A_s (or the tiled A) densely and add them up. */
function referenceBlockLora(W: Float32Array, A: Float32Array, B: Float32Array, s: number, d: LoraDims, blocks: number, partition: BlockPartition): Float64Array {
  const { dOut, dIn, rank } = d;
  const delta = new Float64Array(dOut * dIn);
  if (partition === 'rank') {
    for (let b = 0; b < blocks; b++) {
      const Bk = Float64Array.from({ length: dOut * rank }, (_, x) => B[Math.floor(x / rank) * blocks * rank + b * rank + (x % rank)]);
      const part = denseProduct(Bk, A, dOut, rank, dIn);
      for (let x = 0; x < delta.length; x++) delta[x] += part[x];
    }
  } else {
    const width = dIn / blocks;
    const tiled = Float64Array.from({ length: rank * dIn }, (_, x) => A[Math.floor(x / dIn) * width + ((x % dIn) % width)]);
    delta.set(denseProduct(B, tiled, dOut, rank, dIn));
  }
  return plus(W, s, delta);
}

/** The largest per-row relative error ‖out_i − ref_i‖ / ‖ref_i‖ (absolute where the reference row is zero). */
function worstRowError(out: Float32Array, ref: Float64Array, dOut: number, dIn: number): number {
  let worst = 0;
  for (let i = 0; i < dOut; i++) {
    const diff = Float64Array.from({ length: dIn }, (_, j) => out[i * dIn + j] - ref[i * dIn + j]);
    const norm = rowNorm(ref, i, dIn);
    const err = rowNorm(diff, 0, dIn);
    worst = Math.max(worst, norm === 0 ? err : err / norm);
  }
  return worst;
}

interface Case {
  seed: number;
  dims: LoraDims;
  W: Float32Array;
  A: Float32Array;
  B: Float32Array;
  m: Float32Array;
  s: number;
}

function randomCase(seed: number, dims: LoraDims): Case {
  const rand = prng(seed);
  const { dOut, dIn, rank } = dims;
  const W = uniform(rand, dOut * dIn, 1 / Math.sqrt(dIn));
  const A = uniform(rand, rank * dIn, 1 / Math.sqrt(dIn));
  const B = uniform(rand, dOut * rank, 0.5);
  const m = Float32Array.from({ length: dOut }, () => 0.5 + rand());
  return { seed, dims, W, A, B, m, s: loraScale(8 + Math.floor(rand() * 24), rank) };
}

const where = (c: Case) => `seed ${c.seed} (dOut ${c.dims.dOut}, dIn ${c.dims.dIn}, rank ${c.dims.rank}, s ${c.s})`;

/** Shapes: r = 1, r > dIn, dOut = 1, and sizes off the kernels' 3- and 4-row steps, the 60-row block, the 48-row Gram band and the 1024-column tile. */
const shapes: LoraDims[] = [
  { dOut: 8, dIn: 16, rank: 1 },
  { dOut: 7, dIn: 5, rank: 9 },
  { dOut: 1, dIn: 33, rank: 4 },
  { dOut: 1, dIn: 3, rank: 6 },
  { dOut: 13, dIn: 29, rank: 3 },
  { dOut: 70, dIn: 40, rank: 8 },
  { dOut: 6, dIn: 1100, rank: 5 },
  { dOut: 33, dIn: 64, rank: 17 },
  { dOut: 5, dIn: 20, rank: 50 },
];

describe('LoRA merge: W + s·B·A without a dense B·A', () => {
  it('matches the dense float64 reference to 1e-5 relative, row by row, on seeded random shapes', () => {
    shapes.forEach((dims, n) => {
      const c = randomCase(100 + n, dims);
      const out = mergeLora(c.W, c.A, c.B, c.s, dims);
      expect(worstRowError(out, referenceLora(c.W, c.A, c.B, c.s, dims), dims.dOut, dims.dIn), where(c)).toBeLessThan(1e-5);
    });
  });

  it('merging in place returns W itself, bit-identical to the out-of-place result', () => {
    const c = randomCase(7, { dOut: 70, dIn: 1100, rank: 6 });
    const W = c.W.slice();
    const copy = mergeLora(c.W, c.A, c.B, c.s, c.dims);
    const inPlace = mergeLora(W, c.A, c.B, c.s, c.dims, { inPlace: true });
    expect(inPlace, where(c)).toBe(W);
    expect(Array.from(inPlace), where(c)).toEqual(Array.from(copy));
    expect(copy, 'out of place leaves W alone').not.toBe(c.W);
  });

  it('scales by alpha/r, or alpha/√r for rsLoRA', () => {
    expect(loraScale(16, 8)).toBe(2);
    expect(loraScale(1, 4, 'rslora')).toBe(0.5);
  });
});

describe('DoRA merge: m ⊙ (W + sBA) / ‖W + sBA‖_row with factored row norms', () => {
  for (const norm of ['factored', 'direct'] as const) {
    it(`matches the dense float64 reference to 1e-5 relative (${norm} norm)`, () => {
      shapes.forEach((dims, n) => {
        const c = randomCase(200 + n, dims);
        const out = mergeDora(c.W, c.A, c.B, c.m, c.s, dims, { norm });
        expect(worstRowError(out, referenceDora(c.W, c.A, c.B, c.m, c.s, dims), dims.dOut, dims.dIn), where(c)).toBeLessThan(1e-5);
      });
    });
  }

  it('with m = ‖W + sBA‖_row (magnitude factor ≈ 1) reproduces W + sBA to float32 precision, bit for bit the LoRA merge', () => {
    for (const [n, dims] of shapes.entries()) {
      const c = randomCase(300 + n, dims);
      const merged = referenceLora(c.W, c.A, c.B, c.s, dims);
      const m = Float32Array.from({ length: dims.dOut }, (_, i) => rowNorm(merged, i, dims.dIn));
      const out = mergeDora(c.W, c.A, c.B, m, c.s, dims);
      expect(worstRowError(out, merged, dims.dOut, dims.dIn), where(c)).toBeLessThan(2 ** -22);
      expect(Array.from(out), where(c)).toEqual(Array.from(mergeLora(c.W, c.A, c.B, c.s, dims)));
    }
  });

  it('stays accurate where s·BA nearly cancels W (relative residues 1e-2 down to 1e-6)', () => {
    const seed = 400;
    const dims = { dOut: 12, dIn: 300, rank: 7 };
    const c = randomCase(seed, dims);
    const delta = denseProduct(c.B, c.A, dims.dOut, dims.rank, dims.dIn);
    const residues = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6];
    const rand = prng(seed + 1);
    // Rows 0..4: W_i = −s(BA)_i + residue·noise. Rows 5..: untouched, so one block mixes both kinds of row.
    residues.forEach((r, i) => {
      for (let j = 0; j < dims.dIn; j++) c.W[i * dims.dIn + j] = -c.s * delta[i * dims.dIn + j] + r * (2 * rand() - 1) / Math.sqrt(dims.dIn);
    });
    for (const norm of ['factored', 'direct'] as const) {
      const out = mergeDora(c.W, c.A, c.B, c.m, c.s, dims, { norm });
      expect(worstRowError(out, referenceDora(c.W, c.A, c.B, c.m, c.s, dims), dims.dOut, dims.dIn), `${where(c)}, ${norm}`).toBeLessThan(1e-5);
    }
  });

  it('leaves a row that cancels exactly at zero (PEFT would divide 0 by 0)', () => {
    const dims = { dOut: 2, dIn: 4, rank: 1 };
    const W = Float32Array.from([1, -2, 3, -4, 0.5, 0.25, 1, 2]);
    const A = Float32Array.from([-1, 2, -3, 4]);
    const B = Float32Array.from([1, 0]);
    for (const norm of ['factored', 'direct'] as const) {
      const out = mergeDora(W, A, B, Float32Array.from([2, 3]), 1, dims, { norm });
      expect(Array.from(out.subarray(0, 4)), norm).toEqual([0, 0, 0, 0]);
      const second = Array.from(out.subarray(4));
      expect(Math.hypot(...second), norm).toBeCloseTo(3, 6);
    }
  });

  it('merging in place agrees with out of place', () => {
    const c = randomCase(9, { dOut: 70, dIn: 1100, rank: 6 });
    const W = c.W.slice();
    const inPlace = mergeDora(W, c.A, c.B, c.m, c.s, c.dims, { inPlace: true });
    expect(inPlace).toBe(W);
    expect(Array.from(inPlace), where(c)).toEqual(Array.from(mergeDora(c.W, c.A, c.B, c.m, c.s, c.dims)));
  });

  it('needs under a tenth of a dense B·A in scratch at d = 8192, r = 384', () => {
    const dims = { dOut: 8192, dIn: 8192, rank: 384 };
    expect(adapterScratchBytes('dora', dims)).toBeLessThan((dims.dOut * dims.dIn * 4) / 10);
  });
});

describe('Block-LoRA merge: one shared down-projection, n up-blocks', () => {
  const blockShapes = [
    { dOut: 9, dIn: 24, rank: 2, blocks: 8 },
    { dOut: 70, dIn: 12, rank: 1, blocks: 3 },
    { dOut: 1, dIn: 2100, rank: 5, blocks: 2 },
    { dOut: 5, dIn: 6, rank: 7, blocks: 2 },
  ];
  for (const partition of ['rank', 'input'] as const) {
    it(`matches Σ_k B_k·A_s (or B·[A_s … A_s]) built densely, partition '${partition}'`, () => {
      blockShapes.forEach((shape, n) => {
        const seed = 500 + n;
        const rand = prng(seed);
        const { dOut, dIn, rank, blocks } = shape;
        const W = uniform(rand, dOut * dIn, 0.1);
        const A = uniform(rand, rank * (partition === 'input' ? dIn / blocks : dIn), 0.3);
        const B = uniform(rand, dOut * rank * (partition === 'rank' ? blocks : 1), 0.5);
        const out = mergeBlockLora(W, A, B, 0.75, { ...shape, partition });
        const ref = referenceBlockLora(W, A, B, 0.75, shape, blocks, partition);
        expect(worstRowError(out, ref, dOut, dIn), `seed ${seed} (${JSON.stringify(shape)})`).toBeLessThan(1e-5);
      });
    });
  }

  it('with one block is plain LoRA under both readings', () => {
    const c = randomCase(11, { dOut: 10, dIn: 20, rank: 3 });
    const lora = Array.from(mergeLora(c.W, c.A, c.B, c.s, c.dims));
    for (const partition of ['rank', 'input'] as const) {
      expect(Array.from(mergeBlockLora(c.W, c.A, c.B, c.s, { ...c.dims, blocks: 1, partition })), partition).toEqual(lora);
    }
  });

  it('merging in place agrees with out of place', () => {
    const rand = prng(12);
    const dims = { dOut: 6, dIn: 8, rank: 2, blocks: 4, partition: 'input' as const };
    const W = uniform(rand, 48);
    const A = uniform(rand, 4);
    const B = uniform(rand, 12);
    const copy = Array.from(mergeBlockLora(W, A, B, 2, dims));
    expect(Array.from(mergeBlockLora(W, A, B, 2, dims, { inPlace: true }))).toEqual(copy);
    expect(Array.from(W)).toEqual(copy);
  });
});

describe('argument validation', () => {
  const dims = { dOut: 4, dIn: 6, rank: 2 };
  const W = new Float32Array(24);
  const A = new Float32Array(12);
  const B = new Float32Array(8);
  const m = new Float32Array(4);

  it('names the array whose length does not match, with the expected shape', () => {
    expect(() => mergeLora(new Float32Array(23), A, B, 1, dims)).toThrow(new RangeError('mergeLora: W has length 23, expected dOut × dIn = 4 × 6 = 24'));
    expect(() => mergeLora(W, new Float32Array(6), B, 1, dims)).toThrow(/^mergeLora: A has length 6, expected rank × dIn = 2 × 6 = 12$/);
    expect(() => mergeLora(W, A, new Float32Array(9), 1, dims)).toThrow(/B has length 9, expected dOut × rank/);
    expect(() => mergeDora(W, A, B, new Float32Array(3), 1, dims)).toThrow(/^mergeDora: m has length 3, expected dOut = 4$/);
    expect(() => mergeBlockLora(W, A, B, 1, { ...dims, blocks: 2, partition: 'rank' })).toThrow(/B has length 8, expected dOut × blocks·rank = 4 × 4 = 16/);
    expect(() => mergeBlockLora(W, A, B, 1, { ...dims, blocks: 2, partition: 'input' })).toThrow(/A has length 12, expected rank × dIn\/blocks = 2 × 3 = 6/);
    for (const call of [() => mergeLora(W, A, new Float32Array(9), 1, dims), () => mergeDora(W, A, B, new Float32Array(3), 1, dims)]) expect(call).toThrow(RangeError);
  });

  it('rejects non-integer or non-positive dimensions, a non-finite scale, and an indivisible input split', () => {
    expect(() => mergeLora(W, A, B, 1, { ...dims, rank: 0 })).toThrow(/rank must be a positive integer, got 0/);
    expect(() => mergeDora(W, A, B, m, 1, { ...dims, dIn: 6.5 })).toThrow(RangeError);
    expect(() => mergeLora(W, A, B, NaN, dims)).toThrow(/scale s must be finite/);
    expect(() => mergeBlockLora(W, A, B, 1, { ...dims, blocks: 4, partition: 'input' })).toThrow(/dIn = 6 is not divisible by blocks = 4/);
  });
});
