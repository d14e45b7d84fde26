import { describe, expect, it } from 'vitest';
import { type Detections, emptyDetections } from '../src/heads/detect/detections.js';
import { linearAssignment, solveAssignment } from '../src/heads/track/assignment.js';
import { ByteTracker } from '../src/heads/track/bytetrack.js';
import { type KalmanState, initiate, predict, update } from '../src/heads/track/kalman.js';
import { IdCounter, Track } from '../src/heads/track/track.js';
import { prng } from './support/random.js';


// ---------------------------------------------------------------------------------------------------------
// Assignment: the solver against enumeration of every assignment.

/** Every injective map from `k` items into `n` slots (as arrays of slot indices). */
function injections(k: number, n: number): number[][] {
  if (k === 0) return [[]];
  const out: number[][] = [];
  for (const head of injections(k - 1, n)) {
    for (let s = 0; s < n; s++) if (!head.includes(s)) out.push([...head, s]);
  }
  return out;
}

/** Least total over all maximum-cardinality assignments, by enumeration. */
function bruteForceMinimum(cost: Float64Array, rows: number, cols: number): number {
  let best = Infinity;
  if (rows <= cols) {
    for (const colOfRow of injections(rows, cols)) {
      best = Math.min(best, colOfRow.reduce((sum, c, r) => sum + cost[r * cols + c], 0));
    }
  } else {
    for (const rowOfCol of injections(cols, rows)) {
      best = Math.min(best, rowOfCol.reduce((sum, r, c) => sum + cost[r * cols + c], 0));
    }
  }
  return best;
}

/**
 * The thresholded problem stated directly: over every partial matching that uses only pairs with cost ≤ t,
 * the least Σ (cost − t − 1e-4) — each match is worth what it saves against leaving both ends unmatched.
 */
function bruteForceThresholded(cost: Float64Array, rows: number, cols: number, t: number): number {
  let best = 0;
  const visit = (r: number, used: Set<number>, total: number): void => {
    if (r === rows) {
      best = Math.min(best, total);
      return;
    }
    visit(r + 1, used, total); // row r unmatched
    for (let c = 0; c < cols; c++) {
      if (used.has(c) || cost[r * cols + c] > t) continue;
      used.add(c);
      visit(r + 1, used, total + cost[r * cols + c] - t - 1e-4);
      used.delete(c);
    }
  };
  visit(0, new Set(), 0);
  return best;
}

function randomCost(random: () => number, rows: number, cols: number, integer: boolean): Float64Array {
  // Integer costs make ties common, which exercises the solver's tie handling.
  return Float64Array.from({ length: rows * cols }, () => (integer ? Math.floor(random() * 4) / 4 : random()));
}

describe('linear assignment', () => {
  it('solveAssignment finds the least-cost assignment that brute force finds, on 600 seeded random matrices up to 6×6', () => {
    for (let seed = 1; seed <= 600; seed++) {
      const random = prng(seed);
      const rows = Math.floor(random() * 7);
      const cols = Math.floor(random() * 7);
      const cost = randomCost(random, rows, cols, seed % 3 === 0);
      const colOfRow = solveAssignment({ data: cost, rows, cols });
      const usedCols = new Set<number>();
      let total = 0;
      let assigned = 0;
      for (let r = 0; r < rows; r++) {
        const c = colOfRow[r];
        if (c === -1) continue;
        expect(usedCols.has(c), `seed ${seed}: column ${c} assigned twice`).toBe(false);
        usedCols.add(c);
        total += cost[r * cols + c];
        assigned++;
      }
      expect(assigned, `seed ${seed}: assignment size`).toBe(Math.min(rows, cols));
      expect(total, `seed ${seed}: total cost`).toBeCloseTo(bruteForceMinimum(cost, rows, cols), 9);
    }
  });

  it('linearAssignment keeps only pairs with cost ≤ thresh and saves as much as the best partial matching, on 600 seeded cases', () => {
    for (let seed = 1; seed <= 600; seed++) {
      const random = prng(1000 + seed);
      const rows = Math.floor(random() * 6);
      const cols = Math.floor(random() * 6);
      const cost = randomCost(random, rows, cols, seed % 3 === 0);
      const thresh = [0.3, 0.5, 0.7, 0.8][seed % 4];
      const before = cost.slice();
      const { matches, unmatchedRows, unmatchedCols } = linearAssignment({ data: cost, rows, cols }, thresh);
      expect(cost, `seed ${seed}: input left alone`).toEqual(before);
      let saving = 0;
      for (const [r, c] of matches) {
        expect(cost[r * cols + c], `seed ${seed}: match (${r}, ${c}) over threshold`).toBeLessThanOrEqual(thresh);
        saving += cost[r * cols + c] - thresh - 1e-4;
      }
      expect(saving, `seed ${seed}: matching quality`).toBeCloseTo(bruteForceThresholded(cost, rows, cols, thresh), 9);
      const matchedRows = matches.map(([r]) => r);
      const matchedCols = matches.map(([, c]) => c);
      expect(new Set(matchedRows).size, `seed ${seed}`).toBe(matches.length);
      expect(new Set(matchedCols).size, `seed ${seed}`).toBe(matches.length);
      expect([...matchedRows, ...unmatchedRows].sort((a, b) => a - b), `seed ${seed}`).toEqual([...Array(rows).keys()]);
      expect([...matchedCols, ...unmatchedCols].sort((a, b) => a - b), `seed ${seed}`).toEqual([...Array(cols).keys()]);
      expect(matchedRows, `seed ${seed}: matches ascending by row`).toEqual([...matchedRows].sort((a, b) => a - b));
    }
  });

  it('prefers two good matches over one perfect match when that costs less in total (not greedy)', () => {
    // Greedy takes (0,0) at 0 and leaves row 1 with 0.9; the optimum is (0,1) + (1,0) = 0.2.
    const cost = Float64Array.of(0, 0.1, 0.1, 0.9);
    expect(linearAssignment({ data: cost, rows: 2, cols: 2 }, 0.8).matches).toEqual([
      [0, 1],
      [1, 0],
    ]);
  });

  it('an empty side leaves everything unmatched', () => {
    expect(linearAssignment({ data: new Float64Array(0), rows: 3, cols: 0 }, 0.8)).toEqual({
      matches: [],
      unmatchedRows: [0, 1, 2],
      unmatchedCols: [],
    });
  });
});

// ---------------------------------------------------------------------------------------------------------
// Kalman filter: hand-computed values, and a plain matrix implementation of the same equations.

type Matrix = number[][];
const matmul = (a: Matrix, b: Matrix): Matrix => a.map((row) => b[0].map((_, j) => row.reduce((s, v, k) => s + v * b[k][j], 0)));
const transpose = (a: Matrix): Matrix => a[0].map((_, j) => a.map((row) => row[j]));
const add = (a: Matrix, b: Matrix): Matrix => a.map((row, i) => row.map((v, j) => v + b[i][j]));
const sub = (a: Matrix, b: Matrix): Matrix => a.map((row, i) => row.map((v, j) => v - b[i][j]));
const diag = (v: number[]): Matrix => v.map((x, i) => v.map((_, j) => (i === j ? x : 0)));
const eye = (n: number, m = n): Matrix =>
  Array.from({ length: n }, (_, i) => Array.from({ length: m }, (_, j) => (i === j ? 1 : 0)));
const column = (v: ArrayLike<number>): Matrix => Array.from(v, (x) => [x]);

/** Gauss–Jordan inverse with partial pivoting. */
function inverse(a: Matrix): Matrix {
  const n = a.length;
  const m = a.map((row, i) => [...row, ...eye(n)[i]]);
  for (let c = 0; c < n; c++) {
    let pivot = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r][c]) > Math.abs(m[pivot][c])) pivot = r;
    [m[c], m[pivot]] = [m[pivot], m[c]];
    const p = m[c][c];
    m[c] = m[c].map((v) => v / p);
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = m[r][c];
      m[r] = m[r].map((v, j) => v - f * m[c][j]);
    }
  }
  return m.map((row) => row.slice(n));
}

/** DeepSORT's filter in textbook form: x' = Fx, P' = FPFᵀ + Q; K = PHᵀ(HPHᵀ + R)⁻¹, x += K(z − Hx), P −= KSKᵀ. */
const reference = {
  F: add(eye(8), eye(8).map((row, i) => row.map((_, j) => (j === i + 4 ? 1 : 0)))),
  H: eye(4, 8),
  predict(mean: Matrix, cov: Matrix): [Matrix, Matrix] {
    const h = mean[3][0];
    const q = diag([h / 20, h / 20, 1e-2, h / 20, h / 160, h / 160, 1e-5, h / 160].map((s) => s * s));
    return [matmul(this.F, mean), add(matmul(matmul(this.F, cov), transpose(this.F)), q)];
  },
  update(mean: Matrix, cov: Matrix, z: number[]): [Matrix, Matrix] {
    const h = mean[3][0];
    const r = diag([h / 20, h / 20, 1e-1, h / 20].map((s) => s * s));
    const s = add(matmul(matmul(this.H, cov), transpose(this.H)), r);
    const k = matmul(matmul(cov, transpose(this.H)), inverse(s));
    const innovation = sub(column(z), matmul(this.H, mean));
    return [add(mean, matmul(k, innovation)), sub(cov, matmul(matmul(k, s), transpose(k)))];
  },
};

function expectState(state: KalmanState, mean: Matrix, cov: Matrix, label: string): void {
  for (let i = 0; i < 8; i++) {
    expect(state.mean[i], `${label}: mean[${i}]`).toBeCloseTo(mean[i][0], 8);
    for (let j = 0; j < 8; j++) {
      const want = cov[i][j];
      const error = Math.abs(state.covariance[i * 8 + j] - want);
      expect(error, `${label}: cov[${i}][${j}]`).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(want)));
    }
  }
}

describe('Kalman filter (x, y, a, h + velocities)', () => {
  const at = (s: KalmanState, i: number, j: number): number => s.covariance[i * 8 + j];

  it('initiate: the measurement as mean, zero velocity, stds 2h/20 for position and 10h/160 for velocity', () => {
    const s = initiate([50, 60, 0.5, 100]);
    expect(Array.from(s.mean)).toEqual([50, 60, 0.5, 100, 0, 0, 0, 0]);
    const expected = [100, 100, 1e-4, 100, 39.0625, 39.0625, 1e-10, 39.0625];
    for (let i = 0; i < 8; i++) {
      for (let j = 0; j < 8; j++) expect(at(s, i, j)).toBeCloseTo(i === j ? expected[i] : 0, 15);
    }
  });

  it('predict then update matches the hand-worked 2×2 blocks for x (h = 100)', () => {
    const predicted = predict(initiate([50, 60, 0.5, 100]));
    // x block: P_xx = 100 + 39.0625 + (100/20)² = 164.0625, P_xv = 39.0625, P_vv = 39.0625 + (100/160)² = 39.453125.
    expect(at(predicted, 0, 0)).toBeCloseTo(164.0625, 12);
    expect(at(predicted, 0, 4)).toBeCloseTo(39.0625, 12);
    expect(at(predicted, 4, 0)).toBeCloseTo(39.0625, 12);
    expect(at(predicted, 4, 4)).toBeCloseTo(39.453125, 12);
    expect(at(predicted, 0, 1)).toBe(0);

    // Measure x = 54: S = 164.0625 + 25, gains 164.0625/S (x) and 39.0625/S (vx).
    const corrected = update(predicted, [54, 60, 0.5, 100]);
    const s = 189.0625;
    expect(corrected.mean[0]).toBeCloseTo(50 + (4 * 164.0625) / s, 12);
    expect(corrected.mean[4]).toBeCloseTo((4 * 39.0625) / s, 12);
    expect(corrected.mean[1]).toBeCloseTo(60, 12);
    expect(corrected.mean[3]).toBeCloseTo(100, 12);
    expect(at(corrected, 0, 0)).toBeCloseTo(164.0625 - (164.0625 * 164.0625) / s, 10);
    expect(at(corrected, 0, 4)).toBeCloseTo(39.0625 - (164.0625 * 39.0625) / s, 10);
    expect(at(corrected, 4, 4)).toBeCloseTo(39.453125 - (39.0625 * 39.0625) / s, 10);
  });

  it('a lost track is predicted with its height velocity zeroed; a tracked one keeps growing', () => {
    const grown = (state: 'tracked' | 'lost'): number => {
      const ids = { internal: new IdCounter(0), external: new IdCounter(1) };
      const track = new Track(Float64Array.of(0, 0, 40, 80), 0.9, 1, ids);
      track.activate(1);
      for (let t = 1; t <= 10; t++) {
        track.predict();
        track.update(new Track(Float64Array.of(0, 0, 40 + 2 * t, 80 + 4 * t), 0.9, 1, ids), t + 1);
      }
      const before = track.box();
      track.state = state;
      track.predict();
      const after = track.box();
      return after[3] - after[1] - (before[3] - before[1]);
    };
    expect(grown('tracked')).toBeGreaterThan(2);
    expect(grown('lost')).toBeCloseTo(0, 9);
  });

  it('a seeded run of 30 predict/update steps on a moving, growing box agrees with the plain matrix filter', () => {
    const seed = 7;
    const random = prng(seed);
    const first = [100, 80, 0.6, 50];
    let state = initiate(first);
    const s0 = initiate(first);
    let mean = column(s0.mean);
    let cov = Array.from({ length: 8 }, (_, i) => Array.from(s0.covariance.subarray(i * 8, i * 8 + 8)));
    for (let t = 1; t <= 30; t++) {
      state = predict(state);
      [mean, cov] = reference.predict(mean, cov);
      expectState(state, mean, cov, `seed ${seed}, predict ${t}`);
      const z = [100 + 3 * t + random() * 2, 80 - t + random() * 2, 0.6 + random() * 0.02, 50 + 0.5 * t + random()];
      state = update(state, z);
      [mean, cov] = reference.update(mean, cov, z);
      expectState(state, mean, cov, `seed ${seed}, update ${t}`);
    }
    // The velocity estimate has converged near the true motion (+3, −1, 0, +0.5 per frame).
    expect(state.mean[4]).toBeCloseTo(3, 0);
    expect(state.mean[5]).toBeCloseTo(-1, 0);
  });
});

// ---------------------------------------------------------------------------------------------------------
// The tracker on synthetic scenes. Each object carries its own class id, so outputs can be told apart.

interface Row {
  box: readonly number[];
  score?: number;
  classId: number;
}

function frame(rows: readonly Row[]): Detections {
  return {
    boxes: Float32Array.from(rows.flatMap((r) => r.box)),
    scores: Float32Array.from(rows.map((r) => r.score ?? 0.9)),
    classIds: Int32Array.from(rows.map((r) => r.classId)),
  };
}

/** A 40×80 box with its top-left corner at (x, y). */
const box = (x: number, y: number): number[] => [x, y, x + 40, y + 80];

/** Track id per class id in one output. */
function idsByClass(d: Detections): Map<number, number> {
  expect(d.trackIds).toBeDefined();
  const out = new Map<number, number>();
  for (let i = 0; i < d.scores.length; i++) out.set(d.classIds[i], d.trackIds![i]);
  return out;
}

describe('ByteTracker', () => {
  it('numbers the first frame\'s objects 1, 2 in input order (supervision\'s own test)', () => {
    const tracker = new ByteTracker();
    const d = frame([
      { box: [10, 10, 20, 20], score: 1, classId: 1 },
      { box: [30, 30, 40, 40], score: 1, classId: 1 },
    ]);
    tracker.update(d);
    const out = tracker.update(d);
    expect(Array.from(out.trackIds!)).toEqual([1, 2]);
    expect(Array.from(out.boxes)).toEqual([10, 10, 20, 20, 30, 30, 40, 40]);
    expect(Array.from(out.classIds)).toEqual([1, 1]);
  });

  it('returns the input rows (boxes, scores, class ids) in input order, not the Kalman boxes', () => {
    const tracker = new ByteTracker();
    for (let t = 0; t < 5; t++) {
      const d = frame([
        { box: box(300 - 5 * t, 50), score: 0.6, classId: 7 },
        { box: box(20 + 5 * t, 200), score: 0.95, classId: 3 },
      ]);
      const out = tracker.update(d);
      expect(Array.from(out.boxes)).toEqual(Array.from(d.boxes));
      expect(Array.from(out.scores)).toEqual(Array.from(d.scores));
      expect(Array.from(out.classIds)).toEqual([7, 3]);
      expect(Array.from(out.trackIds!)).toEqual([1, 2]);
    }
  });

  it('two objects crossing paths (boxes overlapping mid-way) keep their own ids', () => {
    const tracker = new ByteTracker();
    let maxOverlap = 0;
    for (let t = 0; t <= 50; t++) {
      const a = box(10 + 8 * t, 100);
      const b = box(410 - 8 * t, 130);
      maxOverlap = Math.max(maxOverlap, iou(a, b));
      const ids = idsByClass(tracker.update(frame([
        { box: a, classId: 0 },
        { box: b, classId: 1 },
      ])));
      expect(ids, `frame ${t}`).toEqual(
        new Map([
          [0, 1],
          [1, 2],
        ]),
      );
    }
    expect(maxOverlap).toBeGreaterThan(0.4);
  });

  it('an object missing for a few frames comes back with its id; one missing longer than the buffer gets a new id', () => {
    const tracker = new ByteTracker();
    const seen: Array<number | undefined> = [];
    const present = (t: number): boolean => !(t >= 10 && t < 15) && !(t >= 30 && t < 70);
    for (let t = 0; t < 80; t++) {
      const other = { box: box(400, 300), classId: 9 };
      const rows = present(t) ? [{ box: box(20 + 2 * t, 50), classId: 0 }, other] : [other];
      const ids = idsByClass(tracker.update(frame(rows)));
      seen.push(ids.get(0));
      expect(ids.get(9), `frame ${t}: the steady object keeps id 2`).toBe(2);
    }
    expect(seen.slice(0, 10)).toEqual(Array(10).fill(1));
    expect(seen.slice(10, 15)).toEqual(Array(5).fill(undefined));
    expect(seen.slice(15, 30), 'back after 5 missed frames').toEqual(Array(15).fill(1));
    expect(seen.slice(30, 70)).toEqual(Array(40).fill(undefined));
    // After 40 missed frames (> 30) it is a new track: unconfirmed on its first frame back, id 3 from the next.
    expect(seen.slice(70)).toEqual([undefined, ...Array(9).fill(3)]);
  });

  it('a lost track can be found again up to lostTrackBuffer + 1 missed frames (removal takes effect a frame later)', () => {
    const recoveredAfter = (gap: number): boolean => {
      const tracker = new ByteTracker({ lostTrackBuffer: 5 });
      for (let t = 0; t < 3; t++) tracker.update(frame([{ box: box(100, 100), classId: 0 }]));
      for (let t = 0; t < gap; t++) tracker.update(emptyDetections());
      const back = tracker.update(frame([{ box: box(100, 100), classId: 0 }]));
      return back.trackIds!.length === 1 && back.trackIds![0] === 1;
    };
    expect(recoveredAfter(1)).toBe(true);
    expect(recoveredAfter(5)).toBe(true);
    expect(recoveredAfter(6)).toBe(true);
    expect(recoveredAfter(7)).toBe(false);
  });

  it('keeps lost tracks for frameRate / 30 × lostTrackBuffer frames', () => {
    expect(new ByteTracker().maxTimeLost).toBe(30);
    expect(new ByteTracker({ frameRate: 15 }).maxTimeLost).toBe(15);
    expect(new ByteTracker({ frameRate: 60, lostTrackBuffer: 10 }).maxTimeLost).toBe(20);
  });

  it('a new object entering mid-sequence gets a new id (shown from its second frame) while the old keep theirs', () => {
    const tracker = new ByteTracker();
    for (let t = 0; t < 20; t++) {
      const rows: Row[] = [
        { box: box(10 + 4 * t, 10), classId: 0 },
        { box: box(300, 10 + 3 * t), classId: 1 },
      ];
      if (t >= 10) rows.push({ box: box(600 - 6 * t, 300), classId: 2 });
      const ids = idsByClass(tracker.update(frame(rows)));
      expect(ids.get(0), `frame ${t}`).toBe(1);
      expect(ids.get(1), `frame ${t}`).toBe(2);
      expect(ids.get(2), `frame ${t}`).toBe(t <= 10 ? undefined : 3);
    }
  });

  it('a low-score detection (0.15) continues an existing track in the second round', () => {
    const tracker = new ByteTracker();
    for (let t = 0; t < 20; t++) {
      const score = t < 5 || t >= 15 ? 0.9 : 0.15;
      const out = tracker.update(frame([{ box: box(50 + 3 * t, 60), score, classId: 0 }]));
      expect(Array.from(out.trackIds!), `frame ${t}`).toEqual([1]);
      expect(out.scores[0]).toBeCloseTo(score, 6);
    }
  });

  it('low-score detections never start tracks: not at 0.15, nor between the threshold and threshold + 0.1', () => {
    const tracker = new ByteTracker();
    for (let t = 0; t < 10; t++) {
      const out = tracker.update(frame([
        { box: box(50 + 3 * t, 60), score: 0.15, classId: 0 },
        { box: box(300, 60), score: 0.3, classId: 1 },
      ]));
      expect(out.trackIds!.length, `frame ${t}`).toBe(0);
    }
    // A 0.4 detection does start one (shown from its second frame), numbered 1: the others drew no ids.
    // (Not 0.35 itself: as float32 it is 0.34999999…, just under threshold + 0.1, as in numpy.)
    tracker.update(frame([{ box: box(500, 60), score: 0.4, classId: 2 }]));
    expect(Array.from(tracker.update(frame([{ box: box(500, 60), score: 0.4, classId: 2 }])).trackIds!)).toEqual([1]);
  });

  it('the first round weighs IoU by score (fuse_score): at IoU ≈ 0.54 a 0.9 detection continues a track, a 0.3 one does not', () => {
    const continues = (score: number): boolean => {
      const tracker = new ByteTracker();
      for (let t = 0; t < 5; t++) tracker.update(frame([{ box: box(100, 100), classId: 0 }]));
      // Shifted 12 px: IoU 28/52 with the (stationary) prediction; fused cost 1 − IoU·score against 0.8.
      return tracker.update(frame([{ box: box(112, 100), score, classId: 0 }])).trackIds!.length === 1;
    };
    expect(continues(0.9)).toBe(true);
    expect(continues(0.3)).toBe(false);
  });

  it('a detection scoring under 0.1 does not continue a track', () => {
    const tracker = new ByteTracker();
    tracker.update(frame([{ box: box(50, 60), classId: 0 }]));
    expect(tracker.update(frame([{ box: box(50, 60), score: 0.08, classId: 0 }])).trackIds!.length).toBe(0);
  });

  it('two trackers are independent: each numbers its own objects from 1', () => {
    const a = new ByteTracker();
    const b = new ByteTracker();
    for (let t = 0; t < 10; t++) {
      const outA = a.update(frame([
        { box: box(10 + 5 * t, 10), classId: 0 },
        { box: box(200, 10 + 5 * t), classId: 1 },
      ]));
      const outB = b.update(frame([{ box: box(400 - 5 * t, 300), classId: 5 }]));
      expect(idsByClass(outA)).toEqual(
        new Map([
          [0, 1],
          [1, 2],
        ]),
      );
      expect(idsByClass(outB)).toEqual(new Map([[5, 1]]));
    }
  });

  it('reset forgets all tracks and restarts ids at 1', () => {
    const tracker = new ByteTracker();
    for (let t = 0; t < 5; t++) {
      tracker.update(frame([
        { box: box(10 + 5 * t, 10), classId: 0 },
        { box: box(300, 10), classId: 1 },
      ]));
    }
    tracker.reset();
    // The frame after a reset is a first frame again: its tracks are confirmed at once.
    const out = tracker.update(frame([{ box: box(35, 10), classId: 0 }]));
    expect(Array.from(out.trackIds!)).toEqual([1]);
  });

  it('empty frames give empty output with trackIds, and tracks survive a few of them', () => {
    const tracker = new ByteTracker();
    const empty = tracker.update(emptyDetections());
    expect(empty.scores.length).toBe(0);
    expect(empty.boxes.length).toBe(0);
    expect(empty.trackIds).toEqual(new Int32Array(0));
    for (let t = 0; t < 3; t++) tracker.update(frame([{ box: box(100, 100), classId: 0 }]));
    for (let t = 0; t < 4; t++) expect(tracker.update(emptyDetections()).trackIds!.length).toBe(0);
    expect(Array.from(tracker.update(frame([{ box: box(100, 100), classId: 0 }])).trackIds!)).toEqual([1]);
  });

  it('with minimumConsecutiveFrames 1, a one-frame false positive still draws an id (supervision numbers tracks at activation)', () => {
    const tracker = new ByteTracker();
    tracker.update(frame([{ box: box(10, 10), classId: 0 }]));
    tracker.update(frame([
      { box: box(10, 10), classId: 0 },
      { box: box(300, 300), classId: 1 }, // seen once: started, never confirmed
    ]));
    tracker.update(frame([{ box: box(10, 10), classId: 0 }]));
    tracker.update(frame([
      { box: box(10, 10), classId: 0 },
      { box: box(500, 100), classId: 2 },
    ]));
    const out = tracker.update(frame([
      { box: box(10, 10), classId: 0 },
      { box: box(500, 100), classId: 2 },
    ]));
    expect(idsByClass(out)).toEqual(
      new Map([
        [0, 1],
        [2, 3],
      ]),
    );
  });

  it('with minimumConsecutiveFrames 3, a new track is shown (and numbered) only after three consecutive matches', () => {
    const tracker = new ByteTracker({ minimumConsecutiveFrames: 3 });
    const shown: Array<number | undefined> = [];
    for (let t = 0; t < 8; t++) {
      const rows: Row[] = [];
      if (t === 1) rows.push({ box: box(300, 300), classId: 1 }); // a one-frame false positive
      if (t >= 2) rows.push({ box: box(10 + 2 * t, 10), classId: 0 });
      shown.push(idsByClass(tracker.update(frame(rows))).get(0));
    }
    // Started at t = 2, matched at 3, 4, 5: confirmed at t = 5 with id 1 (the false positive drew none).
    expect(shown).toEqual([undefined, undefined, undefined, undefined, undefined, 1, 1, 1]);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Frame-by-frame agreement with supervision's own ByteTrack on seeded random scenes.

/**
 * A seeded scene: `objects` boxes on straight lines, each present for a stretch of the sequence, with jitter,
 * missed detections (10%), a quarter of its scores low (0.05–0.5) and now and then a false positive.
 */
function randomScene(seed: number, frames: number, objects: number): Detections[] {
  const random = prng(seed);
  const paths = Array.from({ length: objects }, () => ({
    x: random() * 500,
    y: random() * 300,
    vx: (random() - 0.5) * 12,
    vy: (random() - 0.5) * 8,
    w: 30 + random() * 60,
    h: 40 + random() * 80,
    start: Math.floor((random() * frames) / 2),
    end: Math.floor(frames / 2 + (random() * frames) / 2) + 1,
  }));
  const scene: Detections[] = [];
  for (let t = 0; t < frames; t++) {
    const boxes: number[] = [];
    const scores: number[] = [];
    const classIds: number[] = [];
    paths.forEach((p, k) => {
      if (t < p.start || t >= p.end || random() < 0.1) return;
      const x = p.x + p.vx * t;
      const y = p.y + p.vy * t;
      const jitter = (): number => (random() - 0.5) * 3;
      boxes.push(x + jitter(), y + jitter(), x + p.w + jitter(), y + p.h + jitter());
      scores.push(random() < 0.75 ? 0.5 + random() * 0.45 : 0.05 + random() * 0.45);
      classIds.push(k);
    });
    if (random() < 0.3) {
      const x = random() * 600;
      const y = random() * 400;
      boxes.push(x, y, x + 10 + random() * 70, y + 10 + random() * 70);
      scores.push(0.05 + random() * 0.5);
      classIds.push(99);
    }
    scene.push({ boxes: Float32Array.from(boxes), scores: Float32Array.from(scores), classIds: Int32Array.from(classIds) });
  }
  return scene;
}

/** Track ids per input row of each frame ('.' where a row was dropped), as one string per frame. */
function trackScene(tracker: ByteTracker, scene: Detections[]): string[] {
  return scene.map((d) => {
    const out = tracker.update(d);
    const ids: string[] = Array.from(d.scores, () => '.');
    let j = 0;
    for (let i = 0; i < d.scores.length && j < out.scores.length; i++) {
      const same = [0, 1, 2, 3].every((k) => d.boxes[i * 4 + k] === out.boxes[j * 4 + k]);
      if (same) ids[i] = String(out.trackIds![j++]);
    }
    expect(j).toBe(out.scores.length);
    return ids.join(' ');
  });
}

// Recorded by running supervision (roboflow/supervision 7f7b25d, tracker/byte_tracker/*, numpy + scipy) on
// exactly these scenes (the float32 boxes and scores randomScene makes), with the options named.
const SUPERVISION_SEED_11_DEFAULTS = [
  "", ".", "1", "1", "1", "1 .", "1 2", "1 2", "2 .", "1", "1 2", "1 . 2 .", "1 . 2", "1 . 5 2 .", "1 6 5 2 7",
  "1 6 5 2 7", "1 6 5 7 .", "1 6 2 7 .", "1 6 2 7", "1 6 . 2 7 .", "1 6 5 2 7", "1 6 5 2 7", "1 5", "1 6 5 7",
  "1 .", "1 . 7 .", "1 5 7 .", "1 7 .", "1 5 7", "5 7", "1 5 7", "", ".", "", "", "", ".", "", ".", "",
];

const SUPERVISION_SEED_12_MIN2_BUFFER6 = [
  ".", "", "", ".", "", ".", ".", ". . .", ". . . .", "1 .", ". .", "1 . .", "1 2 3", ". 1 2 3", ". 1 2 3",
  ". . 1 2 3", ". . 1 2 3", ". 4 1 2 3", ". 1 2 3", ". 4 1 2 3", ". 4 1 2 3", ". 4 1 2 3 .", ". . 1 3 .",
  "5 4 1 2 3 .", "5 4 1 3 .", "5 4 1 3", "4 1 3", "5 4 1 3", "5 4 1 3", "5 4 3", "5 4 3", "5 .", "5 4 3",
  "4 3", "3", "3 .", "", ".", ".", "",
];

describe('ByteTracker against supervision', () => {
  it('gives the ids supervision gives, frame by frame, on a seeded scene with default options', () => {
    expect(trackScene(new ByteTracker(), randomScene(11, 40, 5))).toEqual(SUPERVISION_SEED_11_DEFAULTS);
  });

  it('gives the ids supervision gives with minimumConsecutiveFrames 2 and lostTrackBuffer 6', () => {
    const tracker = new ByteTracker({ minimumConsecutiveFrames: 2, lostTrackBuffer: 6 });
    expect(trackScene(tracker, randomScene(12, 40, 5))).toEqual(SUPERVISION_SEED_12_MIN2_BUFFER6);
  });
});

function iou(a: number[], b: number[]): number {
  const w = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const h = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = w * h;
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter);
}
