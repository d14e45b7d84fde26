import { describe, expect, it } from 'vitest';
import type { Detections } from '../src/heads/detect/detections.js';
import { nms } from '../src/heads/detect/nms.js';
import { prng } from './support/random.js';


function detections(rows: Array<{ box: number[]; score: number; classId: number }>): Detections {
  return {
    boxes: Float32Array.from(rows.flatMap((r) => r.box)),
    scores: Float32Array.from(rows.map((r) => r.score)),
    classIds: Int32Array.from(rows.map((r) => r.classId)),
  };
}

function iouOf(b: Float32Array, i: number, j: number): number {
  const areaI = (b[i * 4 + 2] - b[i * 4]) * (b[i * 4 + 3] - b[i * 4 + 1]);
  const areaJ = (b[j * 4 + 2] - b[j * 4]) * (b[j * 4 + 3] - b[j * 4 + 1]);
  const w = Math.max(0, Math.min(b[i * 4 + 2], b[j * 4 + 2]) - Math.max(b[i * 4], b[j * 4]));
  const h = Math.max(0, Math.min(b[i * 4 + 3], b[j * 4 + 3]) - Math.max(b[i * 4 + 1], b[j * 4 + 1]));
  const inter = w * h;
  return inter / (areaI + areaJ - inter);
}

/**
 * The plain reference, torchvision's loop written out: visit boxes by score (ties: lower index first); each
 * box not yet suppressed is kept and suppresses every later box of its class with IoU > iou. Then take maxDet.
 */
function referenceNms(d: Detections, iou: number, maxDet: number): number[] {
  const n = d.scores.length;
  const order = [...Array(n).keys()].sort((a, b) => (d.scores[b] !== d.scores[a] ? d.scores[b] - d.scores[a] : a - b));
  const suppressed = new Array<boolean>(n).fill(false);
  const keep: number[] = [];
  for (let p = 0; p < n; p++) {
    const i = order[p];
    if (suppressed[i]) continue;
    keep.push(i);
    for (let q = p + 1; q < n; q++) {
      const j = order[q];
      if (d.classIds[j] === d.classIds[i] && iouOf(d.boxes, i, j) > iou) suppressed[j] = true;
    }
  }
  return keep.slice(0, Math.max(0, maxDet));
}

function rowsOf(d: Detections, keep: number[]): Detections {
  return {
    boxes: Float32Array.from(keep.flatMap((i) => Array.from(d.boxes.subarray(i * 4, i * 4 + 4)))),
    scores: Float32Array.from(keep.map((i) => d.scores[i])),
    classIds: Int32Array.from(keep.map((i) => d.classIds[i])),
  };
}

/** Boxes on a coarse grid so overlaps, exact IoU ties, duplicates and zero-area boxes are common. */
function randomDetections(rand: () => number, n: number, numClasses: number): Detections {
  const rows = [];
  for (let i = 0; i < n; i++) {
    const gridded = rand() < 0.7;
    const coord = (): number => (gridded ? Math.floor(rand() * 12) : rand() * 12);
    const x1 = coord();
    const y1 = coord();
    // About one box in ten is degenerate (zero width or height).
    const x2 = rand() < 0.1 ? x1 : x1 + coord();
    const y2 = rand() < 0.1 ? y1 : y1 + coord();
    const score = rand() < 0.5 ? Math.floor(rand() * 5) / 5 + 0.1 : rand();
    rows.push({ box: [x1, y1, x2, y2], score, classId: Math.floor(rand() * numClasses) });
  }
  return detections(rows);
}

describe('nms', () => {
  it('keeps the higher-scoring of two boxes with IoU above the threshold', () => {
    const d = detections([
      { box: [0, 0, 10, 10], score: 0.8, classId: 0 },
      { box: [1, 0, 11, 10], score: 0.9, classId: 0 },
    ]);
    const r = nms(d, 0.7, 300);
    expect(Array.from(r.scores)).toEqual([Math.fround(0.9)]);
    expect(Array.from(r.boxes)).toEqual([1, 0, 11, 10]);
  });

  it('keeps identical boxes of different classes', () => {
    const d = detections([
      { box: [0, 0, 10, 10], score: 0.8, classId: 0 },
      { box: [0, 0, 10, 10], score: 0.9, classId: 1 },
    ]);
    const r = nms(d, 0.5, 300);
    expect(Array.from(r.classIds)).toEqual([1, 0]);
  });

  it('keeps both boxes when their IoU equals the threshold exactly (suppression needs IoU > iou)', () => {
    // inter 2, union 4: IoU exactly 0.5.
    const d = detections([
      { box: [0, 0, 4, 1], score: 0.9, classId: 0 },
      { box: [0, 0, 2, 1], score: 0.8, classId: 0 },
    ]);
    expect(nms(d, 0.5, 300).scores.length).toBe(2);
    expect(nms(d, 0.49, 300).scores.length).toBe(1);
  });

  it('never lets zero-area boxes suppress each other (0/0 IoU is NaN) even at iou 0', () => {
    const d = detections([
      { box: [5, 5, 5, 5], score: 0.9, classId: 0 },
      { box: [5, 5, 5, 5], score: 0.8, classId: 0 },
      { box: [5, 5, 5, 9], score: 0.7, classId: 0 },
    ]);
    expect(nms(d, 0, 300).scores.length).toBe(3);
  });

  it('orders the result by score, equal scores by lower index first, and truncates to maxDet', () => {
    const d = detections([
      { box: [0, 0, 1, 1], score: 0.5, classId: 0 },
      { box: [10, 10, 11, 11], score: 0.9, classId: 0 },
      { box: [20, 20, 21, 21], score: 0.5, classId: 1 },
      { box: [30, 30, 31, 31], score: 0.7, classId: 2 },
    ]);
    expect(Array.from(nms(d, 0.7, 300).classIds)).toEqual([0, 2, 0, 1]);
    expect(Array.from(nms(d, 0.7, 3).boxes.subarray(8))).toEqual([0, 0, 1, 1]);
    expect(nms(d, 0.7, 0).scores.length).toBe(0);
  });

  it('carries track ids with their boxes', () => {
    const d: Detections = {
      ...detections([
        { box: [0, 0, 10, 10], score: 0.6, classId: 0 },
        { box: [0, 0, 10, 10], score: 0.9, classId: 0 },
        { box: [50, 50, 60, 60], score: 0.7, classId: 0 },
      ]),
      trackIds: Int32Array.from([7, 8, 9]),
    };
    expect(Array.from(nms(d, 0.7, 300).trackIds ?? [])).toEqual([8, 9]);
  });

  it('returns an empty result for no boxes', () => {
    const r = nms(detections([]), 0.7, 300);
    expect(r.scores.length).toBe(0);
    expect(r.boxes.length).toBe(0);
  });

  it('matches the brute-force reference on random box sets (classes, overlaps, ties, degenerate boxes)', () => {
    for (let seed = 1; seed <= 400; seed++) {
      const rand = prng(seed);
      const n = Math.floor(rand() * 120);
      const d = randomDetections(rand, n, 1 + Math.floor(rand() * 4));
      const iou = [0, 0.5, 0.7, 1][seed % 4];
      const maxDet = [300, n, 5, 1, 0][Math.floor(rand() * 5)];
      const expected = rowsOf(d, referenceNms(d, iou, maxDet));
      const actual = nms(d, iou, maxDet);
      const where = `seed ${seed} (n ${n}, iou ${iou}, maxDet ${maxDet})`;
      expect(Array.from(actual.scores), where).toEqual(Array.from(expected.scores));
      expect(Array.from(actual.classIds), where).toEqual(Array.from(expected.classIds));
      expect(Array.from(actual.boxes), where).toEqual(Array.from(expected.boxes));
    }
  });

  it('matches the reference on thousands of boxes over 80 classes', () => {
    const seed = 2024;
    const rand = prng(seed);
    const rows = [];
    for (let i = 0; i < 3000; i++) {
      const x = rand() * 600;
      const y = rand() * 600;
      rows.push({ box: [x, y, x + 10 + rand() * 60, y + 10 + rand() * 60], score: rand(), classId: Math.floor(rand() * 80) });
    }
    const d = detections(rows);
    const expected = rowsOf(d, referenceNms(d, 0.7, 300));
    expect(Array.from(nms(d, 0.7, 300).boxes), `seed ${seed}`).toEqual(Array.from(expected.boxes));
  });
});
