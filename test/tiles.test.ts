import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Graph } from '../src/models/graph/graph.js';
import { conv2d } from '../src/models/graph/nn.js';
import { Params } from '../src/models/graph/params.js';
import { serializeModel } from '../src/models/graph/serialize.js';
import { type Tile, axisWeightSum, stitch, tileGrid, tileWeights } from '../src/pipeline/tiles.js';
import { prng } from './support/random.js';

/** Base seed for the random cases; set FOVEA_TEST_SEED to replay a failure. */
const SEED = Number(process.env.FOVEA_TEST_SEED ?? 20240611);
const MiB = 2 ** 20;

const randInt = (r: () => number, lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));

/** Copies channels × h × w starting at (x, y) out of a channels × H × W field. */
function crop(field: Float32Array, channels: number, W: number, H: number, x: number, y: number, w: number, h: number): Float32Array {
  const out = new Float32Array(channels * w * h);
  for (let c = 0; c < channels; c++) for (let r = 0; r < h; r++) out.set(field.subarray(c * W * H + (y + r) * W + x, c * W * H + (y + r) * W + x + w), (c * h + r) * w);
  return out;
}

describe('tileGrid', () => {
  it('covers every pixel with full-size in-bounds tiles whose neighbours overlap by at least `overlap`', () => {
    const r = prng(SEED);
    for (let k = 0; k < 200; k++) {
      const tile = randInt(r, 1, 64);
      const overlap = randInt(r, 0, tile - 1);
      const width = randInt(r, tile, 300);
      const height = randInt(r, tile, 300);
      const msg = `seed ${SEED}, case ${k}: ${width}×${height}, tile ${tile}, overlap ${overlap}`;
      const tiles = tileGrid(width, height, tile, overlap);
      const cover = new Uint8Array(width * height);
      const bad = tiles.filter((t) => t.width !== tile || t.height !== tile || t.x < 0 || t.y < 0 || t.x + t.width > width || t.y + t.height > height);
      expect(bad, msg).toEqual([]);
      for (const t of tiles) for (let y = t.y; y < t.y + t.height; y++) cover.fill(1, y * width + t.x, y * width + t.x + t.width);
      expect(cover.indexOf(0), msg).toBe(-1);
      // Row-major grid: distinct x starts, each step at most tile − overlap (so neighbours share ≥ overlap columns).
      const xs = [...new Set(tiles.map((t) => t.x))];
      const ys = [...new Set(tiles.map((t) => t.y))];
      expect(tiles.length, msg).toBe(xs.length * ys.length);
      for (const starts of [xs, ys]) {
        expect(starts[0], msg).toBe(0);
        for (let i = 1; i < starts.length; i++) {
          expect(starts[i] - starts[i - 1], msg).toBeGreaterThan(0);
          expect(starts[i] - starts[i - 1], msg).toBeLessThanOrEqual(tile - overlap);
        }
      }
      expect(xs[xs.length - 1] + tile, msg).toBe(width);
      expect(ys[ys.length - 1] + tile, msg).toBe(height);
    }
  });

  it('places tiles every tile − overlap pixels and shifts the last one inward to end at the border', () => {
    const xs = [...new Set(tileGrid(100, 32, 32, 8).map((t) => t.x))];
    expect(xs).toEqual([0, 24, 48, 68]);
    expect(tileGrid(64, 64, 32, 0).map((t) => [t.x, t.y])).toEqual([[0, 0], [32, 0], [0, 32], [32, 32]]);
    expect(tileGrid(32, 32, 32, 8)).toEqual([{ x: 0, y: 0, width: 32, height: 32 }]);
  });

  it('a scene smaller than the tile on an axis gets one tile there, as long as the scene', () => {
    expect(tileGrid(20, 15, 32, 8)).toEqual([{ x: 0, y: 0, width: 20, height: 15 }]);
    expect(tileGrid(80, 10, 32, 8).map((t) => [t.x, t.y, t.width, t.height])).toEqual([[0, 0, 32, 10], [24, 0, 32, 10], [48, 0, 32, 10]]);
  });

  it('rejects bad sizes and an overlap not smaller than the tile', () => {
    expect(() => tileGrid(0, 10, 8, 2)).toThrow(RangeError);
    expect(() => tileGrid(10, 10, 8, 8)).toThrow(RangeError);
    expect(() => tileGrid(10, 10, 8, -1)).toThrow(RangeError);
    expect(() => tileGrid(10, 10, 2.5, 0)).toThrow(RangeError);
  });
});

describe('blending weights', () => {
  it('are positive, 1 away from inner tile edges and on scene borders, ramping over the overlap', () => {
    const t: Tile = { x: 24, y: 0, width: 32, height: 32 };
    const w = tileWeights(t, 100, 32, 8);
    expect(Math.min(...w)).toBeGreaterThan(0);
    const row = Array.from(w.subarray(0, 32));
    // Left and right are inner edges: (i + 1)/9 for the first and last 8 columns; top and bottom are scene borders.
    expect(row.slice(0, 8)).toEqual([1, 2, 3, 4, 5, 6, 7, 8].map((i) => Math.fround(i / 9)));
    expect(row.slice(8, 24)).toEqual(new Array(16).fill(1));
    expect(row.slice(24)).toEqual([8, 7, 6, 5, 4, 3, 2, 1].map((i) => Math.fround(i / 9)));
    for (let y = 0; y < 32; y++) expect(w[y * 32 + 16]).toBe(1);
  });

  it('sum over the tiles to the separable total Wx(x)·Wy(y) that stitch divides by', () => {
    const r = prng(SEED + 1);
    for (let k = 0; k < 30; k++) {
      const tile = randInt(r, 4, 40);
      const overlap = randInt(r, 0, tile - 1);
      const [width, height] = [randInt(r, 1, 150), randInt(r, 1, 150)];
      const sum = new Float64Array(width * height);
      for (const t of tileGrid(width, height, tile, overlap)) {
        const w = tileWeights(t, width, height, overlap);
        for (let y = 0; y < t.height; y++) for (let x = 0; x < t.width; x++) sum[(t.y + y) * width + t.x + x] += w[y * t.width + x];
      }
      const wx = axisWeightSum(width, tile, overlap);
      const wy = axisWeightSum(height, tile, overlap);
      let worst = 0;
      for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) worst = Math.max(worst, Math.abs(sum[y * width + x] - wx[x] * wy[y]));
      expect(worst, `seed ${SEED + 1}, case ${k}: ${width}×${height}, tile ${tile}, overlap ${overlap}`).toBeLessThan(1e-5);
      expect(Math.min(...wx, ...wy)).toBeGreaterThan(0);
    }
  });

  it('stitching tiles that agree with each other reproduces their logits everywhere (the weights normalise)', async () => {
    const r = prng(SEED + 2);
    for (const [width, height, tile, overlap] of [[100, 70, 32, 12], [57, 200, 40, 0], [33, 33, 32, 31], [20, 15, 32, 8], [90, 10, 32, 4]]) {
      const field = Float32Array.from({ length: 2 * width * height }, () => r() * 2 - 1);
      const { logits, mask } = await stitch(width, height, { tile, overlap }, async (x, y, w, h) => {
        // The small-scene tile comes back padded to [2, tile, tile], valid part top-left.
        if (w < tile || h < tile) {
          const padded = new Float32Array(2 * tile * tile).fill(99);
          const part = crop(field, 2, width, height, x, y, w, h);
          for (let c = 0; c < 2; c++) for (let j = 0; j < h; j++) padded.set(part.subarray((c * h + j) * w, (c * h + j + 1) * w), (c * tile + j) * tile);
          return padded;
        }
        return crop(field, 2, width, height, x, y, w, h);
      });
      const msg = `seed ${SEED + 2}: ${width}×${height}, tile ${tile}, overlap ${overlap}`;
      let worst = 0;
      for (let i = 0; i < field.length; i++) worst = Math.max(worst, Math.abs(logits[i] - field[i]));
      expect(worst, msg).toBeLessThan(1e-5);
      const plane = width * height;
      expect(mask, msg).toEqual(Uint8Array.from({ length: plane }, (_, i) => (field[plane + i] > field[i] ? 1 : 0)));
    }
  });

  it('stitch rejects a tile result of the wrong size', async () => {
    await expect(stitch(64, 64, { tile: 32, overlap: 8 }, async () => new Float32Array(10))).rejects.toThrow(RangeError);
  });
});

// ---------------------------------------------------------------------------------------------
// Whole-image against tiled inference on a purely convolutional graph.

const RECEPTIVE_RADIUS = 2; // two 3×3 convolutions

/** conv3×3(3→4) → ReLU → conv3×3(4→2), zero-padded "same"; the same seeded weights at every input size. */
function convNet(width: number, height: number): Uint8Array {
  const g = new Graph(`convnet_${width}x${height}`);
  const p = Params.seeded(SEED);
  const x = g.input('image', 'float32', [1, 3, height, width]);
  const h = g.op1('Relu', [conv2d(g, p.scope('conv1'), x, { cout: 4, k: 3 })]);
  g.output(conv2d(g, p.scope('conv2'), h, { cout: 2, k: 3 }), 'logits');
  return serializeModel(g.toModel());
}

async function infer(session: ort.InferenceSession, image: Float32Array, width: number, height: number): Promise<Float32Array> {
  const out = await session.run({ image: new ort.Tensor('float32', image, [1, 3, height, width]) });
  return out.logits.data as Float32Array;
}

describe('stitched inference on a convolutional graph', () => {
  const sessions: ort.InferenceSession[] = [];
  afterAll(async () => {
    for (const s of sessions) await s.release();
  });

  for (const [width, height, tile, overlap] of [[90, 70, 32, 12], [129, 64, 48, 6], [64, 100, 32, 0]]) {
    it(`equals whole-image inference away from inner tile borders (${width}×${height}, tile ${tile}, overlap ${overlap})`, async () => {
      const r = prng(SEED + 3 + width);
      const image = Float32Array.from({ length: 3 * width * height }, () => r());
      const whole = await ort.InferenceSession.create(convNet(width, height));
      const tiled = await ort.InferenceSession.create(convNet(tile, tile));
      sessions.push(whole, tiled);
      const reference = await infer(whole, image, width, height);
      const { logits, mask } = await stitch(width, height, { tile, overlap }, (x, y, w, h) => infer(tiled, crop(image, 3, width, height, x, y, w, h), w, h));

      // Interior: no covering tile sees zero padding in place of real neighbours.
      const exterior = new Uint8Array(width * height);
      for (const t of tileGrid(width, height, tile, overlap)) {
        for (let y = t.y; y < t.y + t.height; y++) {
          for (let x = t.x; x < t.x + t.width; x++) {
            const nearInner =
              (t.x > 0 && x - t.x < RECEPTIVE_RADIUS) ||
              (t.x + t.width < width && t.x + t.width - 1 - x < RECEPTIVE_RADIUS) ||
              (t.y > 0 && y - t.y < RECEPTIVE_RADIUS) ||
              (t.y + t.height < height && t.y + t.height - 1 - y < RECEPTIVE_RADIUS);
            if (nearInner) exterior[y * width + x] = 1;
          }
        }
      }
      const plane = width * height;
      let interior = 0;
      let differsNearSeams = false;
      let [worst, worstAt, maskMismatches] = [0, -1, 0];
      for (let i = 0; i < plane; i++) {
        const gap = Math.max(Math.abs(logits[i] - reference[i]), Math.abs(logits[plane + i] - reference[plane + i]));
        if (exterior[i]) {
          differsNearSeams ||= gap > 1e-3;
          continue;
        }
        interior++;
        if (gap > worst) [worst, worstAt] = [gap, i];
        // The argmax agrees wherever the two logits are not within rounding of each other.
        if (Math.abs(reference[plane + i] - reference[i]) > 1e-4 && mask[i] !== (reference[plane + i] > reference[i] ? 1 : 0)) maskMismatches++;
      }
      expect(worst, `seed ${SEED + 3 + width}: worst at pixel ${worstAt % width},${Math.floor(worstAt / width)}`).toBeLessThan(1e-5);
      expect(maskMismatches).toBe(0);
      expect(interior / plane).toBeGreaterThan(0.6);
      // The comparison has teeth: near inner borders the zero padding does change the output.
      expect(differsNearSeams).toBe(true);
    });
  }
});

// ---------------------------------------------------------------------------------------------

describe('stitch memory', () => {
  let before = 0;
  beforeAll(() => {
    before = process.memoryUsage().arrayBuffers;
  });

  it('a 4096×4096 scene stitches within the accumulator’s memory, not per-tile copies', async () => {
    const [size, tile, overlap] = [4096, 512, 64];
    // One reused tile buffer: logit 0 falls, logit 1 rises along x, so the mask is the right half.
    const logitsTile = new Float32Array(2 * tile * tile);
    let peak = 0;
    let calls = 0;
    const result = await stitch(size, size, { tile, overlap }, async (x) => {
      calls++;
      for (let r = 0; r < tile; r++) {
        for (let c = 0; c < tile; c++) {
          logitsTile[r * tile + c] = 0;
          logitsTile[tile * tile + r * tile + c] = x + c - size / 2 + 0.5;
        }
      }
      peak = Math.max(peak, process.memoryUsage().arrayBuffers - before);
      return logitsTile;
    });
    const after = process.memoryUsage().arrayBuffers - before;
    const accumulator = 2 * size * size * 4; // 128 MiB
    const mask = size * size; // 16 MiB
    expect(calls).toBe(tileGrid(size, size, tile, overlap).length);
    expect(peak).toBeGreaterThanOrEqual(accumulator - 8 * MiB);
    expect(peak).toBeLessThan(accumulator + 16 * MiB);
    expect(after).toBeLessThan(accumulator + mask + 16 * MiB);
    expect(result.mask[100 * size + size / 2 - 1]).toBe(0);
    expect(result.mask[100 * size + size / 2]).toBe(1);
    expect(result.logits[size * size + 5 * size + 7]).toBeCloseTo(7 - size / 2 + 0.5, 3);
  }, 30_000);
});
