import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { type Box, type CropParams, cropGeometry, cropParams, cropToImage, imageToCrop } from '../src/pipeline/crop.js';
import { LORAT_224, SingleObjectTracker, decodeSearch, hannWindow, hannWindow2d } from '../src/heads/track/lorat.js';
import { prng as rng } from './support/random.js';

/** Base seed for the random cases; set FOVEA_TEST_SEED to replay a failure. */
const SEED = Number(process.env.FOVEA_TEST_SEED ?? 20240611);


const N = 16 * 16;
const sigmoid32 = (x: number): number => Math.fround(1 / Math.fround(1 + Math.fround(Math.exp(-x))));
/** A flat score map of `base` logits with planted cells, and every cell's box the same. */
function plantedMap(peaks: [row: number, col: number, logit: number][], base = -8): Float32Array {
  const m = new Float32Array(N).fill(base);
  for (const [row, col, v] of peaks) m[row * 16 + col] = v;
  return m;
}
const sameBoxes = (b: Box): Float32Array => {
  const out = new Float32Array(4 * N);
  for (let i = 0; i < N; i++) out.set(b, 4 * i);
  return out;
};
const unit: CropParams = { scaleX: 1, scaleY: 1, translateX: 0, translateY: 0 };

describe('Hann window', () => {
  it('is 0.5 − 0.5·cos(2πk/(N − 1)), zero at both ends', () => {
    const w = hannWindow(16);
    expect(w.length).toBe(16);
    expect(w[0]).toBe(0);
    expect(w[15]).toBe(0);
    for (let k = 0; k < 16; k++) expect(w[k]).toBeCloseTo(0.5 - 0.5 * Math.cos((2 * Math.PI * k) / 15), 6);
    expect(w[5]).toBeCloseTo(0.75, 7); // cos(2π/3) = −1/2
    expect(w[10]).toBeCloseTo(0.75, 6); // torch's float32 gives 0.74999994 here
    expect(w[7]).toBeCloseTo(0.5 + 0.5 * Math.cos(Math.PI / 15), 6); // the two middle samples, just under 1
    expect([...hannWindow(1)]).toEqual([1]);
    expect([...hannWindow(2)]).toEqual([0, 0]);
    expect([...hannWindow(3)]).toEqual([0, 1, 0]);
  });

  it('equals torch.hann_window(16, periodic=False) bit for bit, asymmetry included', () => {
    const torch = (JSON.parse(readFileSync(new URL('./fixtures/lorat-crop/reference.json', import.meta.url), 'utf8')) as { hann16: number[] }).hann16;
    expect([...hannWindow(16)]).toEqual(torch);
    expect(hannWindow(16)[7]).toBeGreaterThan(hannWindow(16)[8]);
  });

  it('is the outer product in 2-D, row-major', () => {
    const w = hannWindow(16), w2 = hannWindow2d(16, 16);
    expect(w2.length).toBe(256);
    for (const [i, j] of [[0, 0], [3, 9], [7, 8], [15, 4]]) expect(w2[i * 16 + j]).toBe(Math.fround(w[i] * w[j]));
  });
});

describe('decodeSearch', () => {
  it('chooses a planted peak at a known cell and returns its un-penalised sigmoid score', () => {
    const d = decodeSearch(plantedMap([[5, 9, 4]]), sameBoxes([0.25, 0.25, 0.75, 0.75]), unit, [1000, 1000]);
    expect(d.index).toBe(5 * 16 + 9);
    expect(d.score).toBe(sigmoid32(4));
  });

  it('lets a centre peak beat a slightly higher border peak through the window', () => {
    const logits = plantedMap([[0, 3, 2.2], [8, 8, 2.0]]);
    const boxes = sameBoxes([0.1, 0.1, 0.2, 0.2]);
    const d = decodeSearch(logits, boxes, unit, [1000, 1000]);
    expect(d.index).toBe(8 * 16 + 8);
    expect(d.score).toBe(sigmoid32(2.0)); // not the penalised value
    expect(d.score).toBeLessThan(sigmoid32(2.2));
    // Without the window the border peak wins.
    expect(decodeSearch(logits, boxes, unit, [1000, 1000], 0).index).toBe(3);
  });

  it('takes the first cell on ties, as torch.max does', () => {
    // The window is 0 along the border row, so these two cells score exactly the same.
    expect(decodeSearch(plantedMap([[0, 9, 3], [0, 2, 3]]), sameBoxes([0, 0, 1, 1]), unit, [500, 500]).index).toBe(2);
    // Equal logits at (7, 7) and (8, 8): torch's float32 window is one ulp larger at 7.
    expect(decodeSearch(plantedMap([[8, 8, 3], [7, 7, 3]]), sameBoxes([0, 0, 1, 1]), unit, [500, 500]).index).toBe(7 * 16 + 7);
  });

  it('maps the chosen box from normalised crop coordinates back to the image, then clips it', () => {
    // Crop = image · 0.5 + (10, 20). The box [0.25, 0.25, 0.75, 0.75] is [56, 56, 168, 168] in the crop,
    // [92, 72, 316, 296] in the image, clipped to a 300×280 image.
    const p: CropParams = { scaleX: 0.5, scaleY: 0.5, translateX: 10, translateY: 20 };
    const boxes = sameBoxes([0, 0, 0.01, 0.01]);
    boxes.set([0.25, 0.25, 0.75, 0.75], 4 * (6 * 16 + 7));
    const d = decodeSearch(plantedMap([[6, 7, 5]]), boxes, p, [300, 280]);
    expect(d.box).toEqual([92, 72, 300, 280]);
    expect(decodeSearch(plantedMap([[6, 7, 5]]), boxes, p, [1000, 1000]).box).toEqual(cropToImage([56, 56, 168, 168], p));
  });

  it('agrees with the crop mapping on random boxes and adjusted params', () => {
    const r = rng(SEED + 20);
    for (let i = 0; i < 100; i++) {
      const W = 200 + Math.floor(r() * 1800), H = 200 + Math.floor(r() * 1800);
      const obj: Box = [r() * W, r() * H, 0, 0];
      const target: Box = [obj[0], obj[1], obj[0] + 5 + r() * 300, obj[1] + 5 + r() * 300];
      const p = cropGeometry([W, H], cropParams(target, 4, [224, 224], 10), [224, 224]).params;
      const inCrop = imageToCrop(target, p).map((v) => v / 224);
      const cell = Math.floor(r() * N);
      const boxes = sameBoxes([0, 0, 0, 0]);
      boxes.set(inCrop, 4 * cell);
      const logits = new Float32Array(N).fill(-20);
      logits[cell] = 20;
      const d = decodeSearch(logits, boxes, p, [W, H], 0);
      expect(d.index, `seed ${SEED + 20}, case ${i}`).toBe(cell);
      const clipped = [Math.min(target[0], W), Math.min(target[1], H), Math.min(target[2], W), Math.min(target[3], H)];
      for (let k = 0; k < 4; k++) expect(Math.abs(d.box[k] - clipped[k]), `seed ${SEED + 20}, case ${i}`).toBeLessThan(2e-3);
    }
  });

  it('refuses maps that are not square or boxes that are too short', () => {
    expect(() => decodeSearch(new Float32Array(250), new Float32Array(1000), unit, [10, 10])).toThrow(RangeError);
    expect(() => decodeSearch(new Float32Array(256), new Float32Array(1023), unit, [10, 10])).toThrow(RangeError);
  });
});

describe('SingleObjectTracker', () => {
  it('init gives the template crop (area factor 2, 112) and its foreground mask', () => {
    const t = new SingleObjectTracker();
    const box: Box = [300, 200, 360, 240];
    const z = t.init([854, 480], box, [100, 110, 120]);
    expect(z.params).toEqual(cropParams(box, 2, [112, 112]));
    expect(z.adjusted).toEqual(cropGeometry([854, 480], z.params, [112, 112]).params);
    expect(z.mask).toBeInstanceOf(BigInt64Array);
    expect(z.mask.length).toBe(64);
    // 60 × 40 at f = 2 fills about 60·s × 40·s of 112, s = 112/sqrt(110·90): cells 1..6 × 2..5.
    const on = [...z.mask].flatMap((v, i) => (v === 1n ? [i] : []));
    expect(on.length).toBe(6 * 4);
    expect(t.padMean).toEqual([100, 110, 120]);
    expect(t.lastBox).toEqual(box);
  });

  it('centres the next search crop (area factor 4, 224) on the last box, with w, h ≥ 10', () => {
    const t = new SingleObjectTracker();
    t.init([854, 480], [400, 300, 403, 302], [0, 0, 0]);
    const p = t.searchParams();
    const [x1, y1, x2, y2] = imageToCrop([400, 300, 403, 302], p);
    expect((x1 + x2) / 2).toBeCloseTo(112, 9);
    expect((y1 + y2) / 2).toBeCloseTo(112, 9);
    expect(p.scaleX).toBeCloseTo(224 / 40, 12); // the 10 × 10 minimum: 10 + 3·10 = 40
    expect(p).toEqual(cropParams([400, 300, 403, 302], LORAT_224.searchAreaFactor, [224, 224], LORAT_224.minObjectSize));
  });

  it('moves to every valid box, whatever its score, and clips it to the frame', () => {
    const t = new SingleObjectTracker();
    t.init([640, 360], [100, 100, 150, 160], [0, 0, 0]);
    expect(t.update({ box: [120, 110, 170, 170] })).toBe(true);
    expect(t.lastBox).toEqual([120, 110, 170, 170]);
    expect(t.update({ box: [600, 300, 700, 400] })).toBe(true); // partly outside: kept as its clipped part
    expect(t.lastBox).toEqual([600, 300, 640, 360]);
    const d = decodeSearch(plantedMap([[8, 8, -12]], -15), sameBoxes([0.4, 0.4, 0.6, 0.6]), t.searchParams(), [640, 360]);
    expect(d.score).toBeLessThan(1e-5);
    expect(t.update(d)).toBe(true); // no confidence threshold
  });

  it('keeps its state when the box lies outside the image or is degenerate', () => {
    const t = new SingleObjectTracker();
    t.init([640, 360], [100, 100, 150, 160], [0, 0, 0]);
    const before = t.searchParams();
    expect(t.update({ box: [700, 100, 760, 160] })).toBe(false); // clipped to zero width
    expect(t.update({ box: [-60, -50, -10, -5] })).toBe(false);
    expect(t.update({ box: [200, 100, 200, 160] })).toBe(false);
    expect(t.update({ box: [Number.NaN, 100, 200, 160] })).toBe(false);
    expect(t.lastBox).toEqual([100, 100, 150, 160]);
    expect(t.searchParams()).toEqual(before);
    // A box touching the image only along an edge has no area inside it either.
    expect(t.update({ box: [640, 100, 700, 160] })).toBe(false);
  });

  it('refuses to search before init and refuses an empty initial box', () => {
    const t = new SingleObjectTracker();
    expect(() => t.searchParams()).toThrow();
    expect(() => t.init([640, 360], [10, 10, 10, 20], [0, 0, 0])).toThrow(RangeError);
    expect(t.initialized).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// Against the official post-processing and search-region provider (scripts/make-lorat-crop-fixtures.py).

interface DecodeCase {
  imageSize: [number, number]; logits: string; boxes: string; params: number[]; index: number; score: number;
  cropBox: number[]; box: number[]; stateBefore: number[]; stateAfter: number[];
}
const floats = (b64: string): Float32Array => {
  const b = Buffer.from(b64, 'base64');
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};

describe('against the official LoRAT code (PyTorch fixtures)', () => {
  const cases = (JSON.parse(readFileSync(new URL('./fixtures/lorat-crop/reference.json', import.meta.url), 'utf8')) as { decode: DecodeCase[] }).decode;

  it('picks the same cell, score and image box as box_with_score_map and the pipeline', () => {
    for (const [i, c] of cases.entries()) {
      const [scaleX, scaleY, translateX, translateY] = c.params;
      const d = decodeSearch(floats(c.logits), floats(c.boxes), { scaleX, scaleY, translateX, translateY }, c.imageSize);
      expect(d.index, `decode case ${i}`).toBe(c.index);
      // torch's float32 exp (SLEEF) is within an ulp of the exact one, and so is the sigmoid here.
      expect(Math.abs(d.score - c.score), `decode case ${i}`).toBeLessThanOrEqual(1.2e-7);
      expect(d.box, `decode case ${i}`).toEqual(c.box);
    }
  });

  it('updates the state as the simple search-region provider does', () => {
    for (const [i, c] of cases.entries()) {
      const t = new SingleObjectTracker();
      t.init(c.imageSize, c.stateBefore as unknown as Box, [0, 0, 0]);
      t.update({ box: c.box as unknown as Box });
      expect(t.lastBox, `decode case ${i}`).toEqual(c.stateAfter);
    }
  });
});
