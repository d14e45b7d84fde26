import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { ChangeMetrics, type ChangeScores, confusion, scores } from '../src/heads/change/metrics.js';
import { opencv } from '../src/heads/change/opencv.js';
import { type ChangeRegion, changedFraction, regions } from '../src/heads/change/regions.js';
import { maskToPng, maskToRle, rleToMask } from '../src/heads/change/rle.js';
import { prng } from './support/random.js';

/** Base seed for the random cases; set FOVEA_TEST_SEED to replay a failure. */
const SEED = Number(process.env.FOVEA_TEST_SEED ?? 20240611);

interface Mask {
  data: Uint8Array;
  width: number;
  height: number;
}

/** A mask from rows of '#' (set) and '.' (unset). */
function art(...rows: string[]): Mask {
  const width = rows[0].length;
  const data = new Uint8Array(width * rows.length);
  rows.forEach((row, y) => [...row].forEach((ch, x) => (data[y * width + x] = ch === '#' ? 1 : 0)));
  return { data, width, height: rows.length };
}

function blank(width: number, height: number): Mask {
  return { data: new Uint8Array(width * height), width, height };
}

function fillRect(m: Mask, x0: number, y0: number, w: number, h: number, v = 1): void {
  for (let y = y0; y < y0 + h; y++) for (let x = x0; x < x0 + w; x++) m.data[y * m.width + x] = v;
}

function randomMask(r: () => number, width: number, height: number, density: number): Mask {
  return { data: Uint8Array.from({ length: width * height }, () => (r() < density ? 1 : 0)), width, height };
}

// ---------------------------------------------------------------------------------------------
// The slow reference: 8-connected flood fill, pixel by pixel.

interface Component {
  area: number;
  bbox: [number, number, number, number];
}

function floodFill(m: Mask): { components: Component[]; label: Int32Array } {
  const { data, width, height } = m;
  const label = new Int32Array(width * height).fill(-1);
  const components: Component[] = [];
  for (let start = 0; start < data.length; start++) {
    if (!data[start] || label[start] >= 0) continue;
    const id = components.length;
    const c: Component = { area: 0, bbox: [Infinity, Infinity, -Infinity, -Infinity] };
    const stack = [start];
    label[start] = id;
    while (stack.length) {
      const i = stack.pop()!;
      const x = i % width;
      const y = (i - x) / width;
      c.area++;
      c.bbox = [Math.min(c.bbox[0], x), Math.min(c.bbox[1], y), Math.max(c.bbox[2], x + 1), Math.max(c.bbox[3], y + 1)];
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const nx = x + dx;
          const ny = y + dy;
          if (nx < 0 || ny < 0 || nx >= width || ny >= height) continue;
          const j = ny * width + nx;
          if (data[j] && label[j] < 0) {
            label[j] = id;
            stack.push(j);
          }
        }
      }
    }
    components.push(c);
  }
  return { components, label };
}

const key = (c: { area: number; bbox: readonly number[] }): string => `${c.area}@${c.bbox.join(',')}`;

describe('opencv-wasm loading', () => {
  it('is lazy and leaves no process-wide error handlers behind', () => {
    const events = ['uncaughtException', 'unhandledRejection'];
    const before = events.map((e) => process.listenerCount(e));
    const cv = opencv();
    expect(typeof cv.findContours).toBe('function');
    expect(opencv()).toBe(cv);
    expect(events.map((e) => process.listenerCount(e))).toEqual(before);
  });
});

describe('regions', () => {
  it('a filled rectangle is one region: its 4 corner pixels, area w·h, exact bbox', () => {
    const r = prng(SEED);
    for (let k = 0; k < 50; k++) {
      const m = blank(40, 30);
      const w = 1 + Math.floor(r() * 20);
      const h = 1 + Math.floor(r() * 15);
      const x0 = Math.floor(r() * (40 - w + 1));
      const y0 = Math.floor(r() * (30 - h + 1));
      fillRect(m, x0, y0, w, h);
      const got = regions(m.data, m.width, m.height, { minArea: 1 });
      expect(got.length, `seed ${SEED}, case ${k}`).toBe(1);
      const [x1, y1] = [x0 + w - 1, y0 + h - 1];
      const corners = new Set([`${x0},${y0}`, `${x0},${y1}`, `${x1},${y1}`, `${x1},${y0}`]);
      expect(new Set(got[0].polygon.map((p) => p.join(','))), `seed ${SEED}, case ${k}: ${w}×${h} at ${x0},${y0}`).toEqual(corners);
      expect(got[0].area).toBe(w * h);
      expect(got[0].bbox).toEqual([x0, y0, x0 + w, y0 + h]);
    }
  });

  it('a rectangle polygon runs counter-clockwise from its top-left corner, as findContours returns it', () => {
    const m = blank(20, 15);
    fillRect(m, 3, 4, 7, 5);
    expect(regions(m.data, 20, 15, { minArea: 0 })[0].polygon).toEqual([[3, 4], [3, 8], [9, 8], [9, 4]]);
  });

  it('an L-shape keeps its outer corners and the diagonal step across the inner corner', () => {
    const m = art(
      '............',
      '............',
      '..##........',
      '..##........',
      '..##........',
      '..##........',
      '..##........',
      '..##........',
      '..########..',
      '..########..',
      '............',
    );
    const [region, ...rest] = regions(m.data, m.width, m.height, { minArea: 0, epsilon: 0 });
    expect(rest).toEqual([]);
    // (3, 8) is not a border pixel under 8-connectivity, so the trace cuts the inner corner diagonally.
    expect(region.polygon).toEqual([[2, 2], [2, 9], [9, 9], [9, 8], [4, 8], [3, 7], [3, 2]]);
    expect(region.area).toBe(2 * 8 + 6 * 2);
    expect(region.bbox).toEqual([2, 2, 10, 10]);
  });

  it('two squares touching only at a corner are one region (8-connectivity)', () => {
    const m = blank(20, 20);
    fillRect(m, 2, 2, 5, 5);
    fillRect(m, 7, 7, 4, 4);
    const got = regions(m.data, 20, 20, { minArea: 0 });
    expect(got.length).toBe(1);
    expect(got[0].area).toBe(25 + 16);
    expect(got[0].bbox).toEqual([2, 2, 11, 11]);
  });

  it('a ring gives only its outer contour, and its area is the pixel count (the hole is not counted)', () => {
    const m = blank(16, 16);
    fillRect(m, 3, 3, 10, 10);
    fillRect(m, 6, 6, 4, 4, 0);
    const got = regions(m.data, 16, 16, { minArea: 0 });
    expect(got.length).toBe(1);
    expect(got[0].polygon).toEqual([[3, 3], [3, 12], [12, 12], [12, 3]]);
    expect(got[0].area).toBe(100 - 16);
    expect(got[0].bbox).toEqual([3, 3, 13, 13]);
  });

  it('an island inside a ring’s hole is a region of its own', () => {
    const m = blank(16, 16);
    fillRect(m, 1, 1, 14, 14);
    fillRect(m, 4, 4, 8, 8, 0);
    fillRect(m, 7, 7, 2, 2);
    const got = regions(m.data, 16, 16, { minArea: 0 });
    expect(got.map((g) => g.area)).toEqual([196 - 64, 4]);
    expect(got[1].polygon).toEqual([[7, 7], [7, 8], [8, 8], [8, 7]]);
    expect(got[1].bbox).toEqual([7, 7, 9, 9]);
  });

  it('drops regions under minArea and sorts the rest by area, largest first', () => {
    const m = blank(30, 10);
    fillRect(m, 1, 1, 1, 1); // 1
    fillRect(m, 4, 1, 2, 2); // 4
    fillRect(m, 8, 1, 3, 3); // 9
    fillRect(m, 13, 1, 4, 2); // 8
    expect(regions(m.data, 30, 10, { minArea: 0 }).map((g) => g.area)).toEqual([9, 8, 4, 1]);
    expect(regions(m.data, 30, 10, { minArea: 4 }).map((g) => g.area)).toEqual([9, 8, 4]);
    expect(regions(m.data, 30, 10, { minArea: 5 }).map((g) => g.area)).toEqual([9, 8]);
    expect(regions(m.data, 30, 10, { minArea: 10 })).toEqual([]);
  });

  it('an empty mask has no regions; a full mask is one region covering the image', () => {
    expect(regions(new Uint8Array(64 * 48), 64, 48, { minArea: 0 })).toEqual([]);
    expect(regions(new Uint8Array(0), 0, 0, { minArea: 0 })).toEqual([]);
    const full = regions(new Uint8Array(64 * 48).fill(255), 64, 48, { minArea: 0 });
    expect(full).toEqual([{ polygon: [[0, 0], [0, 47], [63, 47], [63, 0]], bbox: [0, 0, 64, 48], area: 64 * 48 }]);
  });

  it('a 1×1 mask: one single-point region when set, none when not', () => {
    expect(regions(new Uint8Array([1]), 1, 1, { minArea: 0 })).toEqual([{ polygon: [[0, 0]], bbox: [0, 0, 1, 1], area: 1 }]);
    expect(regions(new Uint8Array([0]), 1, 1, { minArea: 0 })).toEqual([]);
  });

  it('agrees with a plain 8-connected flood fill on random masks (areas, bboxes), with polygons on each region’s own pixels', () => {
    const r = prng(SEED + 1);
    for (let k = 0; k < 60; k++) {
      const width = 1 + Math.floor(r() * 70);
      const height = 1 + Math.floor(r() * 70);
      const m = randomMask(r, width, height, [0.1, 0.3, 0.45, 0.6][k % 4]);
      const epsilon = k % 3 === 0 ? 0 : 0.01;
      const minArea = k % 5;
      const got = regions(m.data, width, height, { minArea, epsilon });
      const { components, label } = floodFill(m);
      const expected = components.filter((c) => c.area >= minArea);
      const msg = `seed ${SEED + 1}, case ${k}: ${width}×${height}`;
      expect(got.map(key).sort(), msg).toEqual(expected.map(key).sort());
      for (let i = 1; i < got.length; i++) expect(got[i - 1].area, msg).toBeGreaterThanOrEqual(got[i].area);
      for (const g of got) checkPolygon(g, label, width, epsilon === 0, msg);
    }
  });

  it('frees every Mat: the WebAssembly heap stops growing over repeated calls', () => {
    const cv = opencv() as unknown as { HEAP8: Int8Array };
    const size = 1024;
    const m = blank(size, size);
    for (let k = 0; k < 30; k++) fillRect(m, (k * 97) % 900, (k * 61) % 900, 80, 50);
    for (let i = 0; i < 3; i++) regions(m.data, size, size, { minArea: 20 });
    const heap = cv.HEAP8.length;
    // A leaked label image alone is 4 MiB per call: 40 calls would outgrow the 128 MiB initial heap.
    for (let i = 0; i < 40; i++) regions(m.data, size, size, { minArea: 20 });
    expect(cv.HEAP8.length).toBe(heap);
  });

  it('rejects a mask whose length does not match its size', () => {
    expect(() => regions(new Uint8Array(10), 4, 3, { minArea: 0 })).toThrow(RangeError);
  });
});

/** Every vertex is a pixel of the region; with epsilon 0 the vertices span the region's bbox exactly. */
function checkPolygon(g: ChangeRegion, label: Int32Array, width: number, exactBounds: boolean, msg: string): void {
  expect(g.polygon.length, msg).toBeGreaterThan(0);
  const ids = new Set(g.polygon.map(([x, y]) => label[y * width + x]));
  expect(ids.size, msg).toBe(1);
  expect([...ids][0], msg).toBeGreaterThanOrEqual(0);
  const xs = g.polygon.map((p) => p[0]);
  const ys = g.polygon.map((p) => p[1]);
  const bounds = [Math.min(...xs), Math.min(...ys), Math.max(...xs) + 1, Math.max(...ys) + 1];
  if (exactBounds) expect(bounds, msg).toEqual(g.bbox);
  else {
    expect(bounds[0], msg).toBeGreaterThanOrEqual(g.bbox[0]);
    expect(bounds[1], msg).toBeGreaterThanOrEqual(g.bbox[1]);
    expect(bounds[2], msg).toBeLessThanOrEqual(g.bbox[2]);
    expect(bounds[3], msg).toBeLessThanOrEqual(g.bbox[3]);
  }
}

describe('changedFraction', () => {
  it('is the fraction of nonzero pixels, 0 for an empty mask', () => {
    expect(changedFraction(new Uint8Array([0, 1, 255, 0]))).toBe(0.5);
    expect(changedFraction(new Uint8Array(7))).toBe(0);
    expect(changedFraction(new Uint8Array(0))).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------

describe('COCO RLE', () => {
  it('reads the mask column by column, starting with a run of zeros (hand-checked against the definition)', () => {
    // h=2, w=3:  0 1 1 / 0 0 1  → columns 00 | 10 | 11 → runs 0×2, 1×1, 0×1, 1×2.
    const m = art('.##', '..#');
    expect(maskToRle(m.data, 3, 2)).toEqual({ size: [2, 3], counts: [2, 1, 1, 2] });
    // First pixel set: the counts start with an empty run of zeros.  1 0 / 1 1 → columns 11 | 01.
    expect(maskToRle(art('#.', '##').data, 2, 2)).toEqual({ size: [2, 2], counts: [0, 2, 1, 1] });
  });

  it('matches pycocotools’ docstring examples: [0 0 1 1 1 0 1] → [2 3 1 1], [1 1 1 1 1 1 0] → [0 6 1]', () => {
    const a = Uint8Array.from([0, 0, 1, 1, 1, 0, 1]);
    const b = Uint8Array.from([1, 1, 1, 1, 1, 1, 0]);
    // As one column (h = 7, w = 1) the column-major order is the listed order.
    expect(maskToRle(a, 1, 7)).toEqual({ size: [7, 1], counts: [2, 3, 1, 1] });
    expect(maskToRle(b, 1, 7)).toEqual({ size: [7, 1], counts: [0, 6, 1] });
    // As one row the order is the same too.
    expect(maskToRle(a, 7, 1).counts).toEqual([2, 3, 1, 1]);
  });

  it('all-zero and all-set masks are single runs; a 0-pixel mask has no runs', () => {
    expect(maskToRle(new Uint8Array(12), 4, 3)).toEqual({ size: [3, 4], counts: [12] });
    expect(maskToRle(new Uint8Array(12).fill(1), 4, 3)).toEqual({ size: [3, 4], counts: [0, 12] });
    expect(maskToRle(new Uint8Array(0), 0, 5)).toEqual({ size: [5, 0], counts: [] });
    expect(rleToMask({ size: [5, 0], counts: [] })).toEqual(new Uint8Array(0));
  });

  it('round-trips random masks of many shapes', () => {
    const r = prng(SEED + 3);
    for (let k = 0; k < 100; k++) {
      const width = 1 + Math.floor(r() * 40);
      const height = 1 + Math.floor(r() * 40);
      const m = randomMask(r, width, height, r());
      const rle = maskToRle(m.data, width, height);
      expect(rle.counts.reduce((a, b) => a + b, 0)).toBe(width * height);
      expect(rleToMask(rle), `seed ${SEED + 3}, case ${k}: ${width}×${height}`).toEqual(m.data);
    }
  });

  it('rejects runs that do not cover the mask exactly', () => {
    expect(() => rleToMask({ size: [2, 2], counts: [1, 2] })).toThrow(RangeError);
    expect(() => rleToMask({ size: [2, 2], counts: [3, 2] })).toThrow(RangeError);
    expect(() => rleToMask({ size: [2, 2], counts: [2, -1, 3] })).toThrow(RangeError);
  });
});

describe('maskToPng', () => {
  it('writes an 8-bit greyscale PNG (0/255) that sharp decodes back to the mask', async () => {
    const r = prng(SEED + 4);
    const m = randomMask(r, 37, 23, 0.4);
    const png = await maskToPng(m.data, 37, 23);
    expect(Array.from(png.subarray(0, 8))).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    // IHDR: bit depth 8, colour type 0 (greyscale).
    expect([png[24], png[25]]).toEqual([8, 0]);
    expect((await sharp(png).metadata()).channels).toBe(1);
    const { data, info } = await sharp(png).toColourspace('b-w').raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([37, 23, 1]);
    expect(new Uint8Array(data)).toEqual(m.data.map((v) => (v ? 255 : 0)));
  });
});

// ---------------------------------------------------------------------------------------------

/** The reference: counts in one plain loop, then the formulas of FSG-Net's compute_p_r_f1_miou_oa. */
function referenceScores(pairs: Array<[Uint8Array, Uint8Array]>): { tp: number; fp: number; fn: number; tn: number; p: number; r: number; f1: number; iou: number; oa: number } {
  let [tn, fp, fn, tp] = [0, 0, 0, 0];
  for (const [pred, label] of pairs) {
    for (let i = 0; i < pred.length; i++) {
      const p = pred[i] === 1;
      const l = label[i] !== 0;
      if (!p && !l) tn++;
      if (p && !l) fp++;
      if (!p && l) fn++;
      if (p && l) tp++;
    }
  }
  const p = tp / (tp + fp);
  const r = tp / (tp + fn);
  return { tp, fp, fn, tn, p, r, f1: (2 * p * r) / (r + p), iou: tp / (tp + fp + fn), oa: (tp + tn) / (tp + tn + fp + fn) };
}

describe('change metrics', () => {
  it('match a plain reference loop over global TP/FP/FN/TN on random masks (labels 0/255)', () => {
    const r = prng(SEED + 5);
    for (let trial = 0; trial < 10; trial++) {
      const pairs: Array<[Uint8Array, Uint8Array]> = [];
      const acc = new ChangeMetrics();
      for (let k = 0; k < 8; k++) {
        const n = 1 + Math.floor(r() * 3000);
        const label = Uint8Array.from({ length: n }, () => (r() < 0.2 ? 255 : 0));
        // Predictions agree with the label most of the time.
        const pred = Uint8Array.from(label, (l) => (r() < 0.85 ? (l ? 1 : 0) : r() < 0.5 ? 1 : 0));
        pairs.push([pred, label]);
        acc.add(pred, label);
      }
      const got = acc.result();
      const want = referenceScores(pairs);
      const msg = `seed ${SEED + 5}, trial ${trial}`;
      expect([got.tp, got.fp, got.fn, got.tn], msg).toEqual([want.tp, want.fp, want.fn, want.tn]);
      expect(got.precision, msg).toBeCloseTo(want.p, 12);
      expect(got.recall, msg).toBeCloseTo(want.r, 12);
      expect(got.f1, msg).toBeCloseTo(want.f1, 12);
      expect(got.iou, msg).toBeCloseTo(want.iou, 12);
      expect(got.oa, msg).toBeCloseTo(want.oa, 12);
    }
  });

  it('are global, not a mean of per-image scores', () => {
    const acc = new ChangeMetrics();
    acc.add(Uint8Array.from([1, 1, 1, 1]), Uint8Array.from([1, 1, 1, 1])); // perfect image
    acc.add(Uint8Array.from([1, 0]), Uint8Array.from([0, 1])); // all wrong
    // Global: TP 4, FP 1, FN 1 → F1 = 8/10; the mean of per-image F1s would be 0.5.
    expect(acc.result().f1).toBeCloseTo(0.8, 12);
  });

  const ones = (s: ChangeScores) => [s.precision, s.recall, s.f1, s.iou, s.oa];

  it('score 1 everywhere when every pixel is right', () => {
    const label = Uint8Array.from([0, 255, 255, 0, 0, 7]);
    expect(ones(new ChangeMetrics().add(Uint8Array.from(label, (v) => (v ? 1 : 0)), label).result())).toEqual([1, 1, 1, 1, 1]);
  });

  it('0/0 convention: no change in labels and none predicted scores 1 (nothing to get wrong)', () => {
    const s = new ChangeMetrics().add(new Uint8Array(50), new Uint8Array(50)).result();
    expect(ones(s)).toEqual([1, 1, 1, 1, 1]);
    expect(s.tn).toBe(50);
    // An accumulator that saw nothing follows the same rule.
    expect(ones(new ChangeMetrics().result())).toEqual([1, 1, 1, 1, 1]);
  });

  it('0/0 convention: predicting nothing when there was change scores 0, not NaN', () => {
    const s = scores(confusion(new Uint8Array(4), Uint8Array.from([0, 1, 0, 0])));
    expect([s.precision, s.recall, s.f1, s.iou]).toEqual([0, 0, 0, 0]);
    expect(s.oa).toBe(0.75);
    const t = scores(confusion(Uint8Array.from([0, 1, 0, 0]), new Uint8Array(4)));
    expect([t.precision, t.recall, t.f1, t.iou, t.oa]).toEqual([0, 0, 0, 0, 0.75]);
  });

  it('rejects a prediction and label of different sizes', () => {
    expect(() => new ChangeMetrics().add(new Uint8Array(3), new Uint8Array(4))).toThrow(RangeError);
  });
});
