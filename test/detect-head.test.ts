import { describe, expect, it } from 'vitest';
import { candidatesFromOutput } from '../src/heads/detect/decode.js';
import type { Detections } from '../src/heads/detect/detections.js';
import { COCO80, DEFAULT_DETECT_OPTIONS, postprocessDetect, toJson } from '../src/heads/detect/index.js';
import { letterboxBoxes, scaleBoxes } from '../src/heads/detect/scale.js';
import { letterboxGeometry } from '../src/pipeline/letterbox.js';
import { prng } from './support/random.js';


function boxesOnly(boxes: number[]): Detections {
  const n = boxes.length / 4;
  return { boxes: Float32Array.from(boxes), scores: new Float32Array(n).fill(0.5), classIds: new Int32Array(n) };
}

/**
 * The plain reference: per anchor, read its nc scores, take the first maximum, keep it when > conf (compared
 * in float32, as torch does), box = (cx ∓ w/2, cy ∓ h/2) in float32; then sort by score (ties by anchor).
 */
function referenceCandidates(out: Float32Array, nc: number, n: number, conf: number, batch: number, maxCandidates: number) {
  const at = (row: number, a: number): number => out[(batch * (4 + nc) + row) * n + a];
  const found: Array<{ anchor: number; score: number; classId: number; box: number[] }> = [];
  for (let a = 0; a < n; a++) {
    let score = at(4, a);
    let classId = 0;
    for (let c = 1; c < nc; c++) {
      if (at(4 + c, a) > score) {
        score = at(4 + c, a);
        classId = c;
      }
    }
    if (!(score > Math.fround(conf))) continue;
    const [cx, cy, w, h] = [at(0, a), at(1, a), at(2, a), at(3, a)];
    const box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2].map(Math.fround);
    found.push({ anchor: a, score, classId, box });
  }
  found.sort((p, q) => (q.score !== p.score ? q.score - p.score : p.anchor - q.anchor));
  return found.slice(0, maxCandidates);
}

function randomOutput(rand: () => number, batches: number, nc: number, n: number, conf: number): Float32Array {
  const out = new Float32Array(batches * (4 + nc) * n);
  for (let b = 0; b < batches; b++) {
    for (let a = 0; a < n; a++) {
      const base = b * (4 + nc) * n;
      out[base + a] = rand() * 640;
      out[base + n + a] = rand() * 640;
      out[base + 2 * n + a] = rand() * 200;
      out[base + 3 * n + a] = rand() * 200;
      for (let c = 0; c < nc; c++) {
        const u = rand();
        // Mostly low scores, some exact ties on a coarse grid, some exactly at the threshold.
        out[base + (4 + c) * n + a] = u < 0.02 ? conf : u < 0.1 ? Math.floor(rand() * 8) / 8 : rand() * rand() * 0.5;
      }
    }
  }
  return out;
}

describe('candidatesFromOutput', () => {
  it('matches a plain per-anchor loop on random outputs (argmax, conf strictly, xywh→xyxy, score order)', () => {
    for (let seed = 1; seed <= 60; seed++) {
      const rand = prng(seed);
      const nc = [1, 3, 80][seed % 3];
      const n = [1, 37, 2100][Math.floor(rand() * 3)];
      const conf = [0.25, 0.001, 0.375][Math.floor(rand() * 3)];
      const batch = Math.floor(rand() * 2);
      const maxCandidates = rand() < 0.3 ? 5 : 30000;
      const out = randomOutput(rand, 2, nc, n, conf);
      const expected = referenceCandidates(out, nc, n, conf, batch, maxCandidates);
      const actual = candidatesFromOutput(out, nc, n, conf, batch, maxCandidates);
      const where = `seed ${seed} (nc ${nc}, N ${n}, conf ${conf}, batch ${batch}, max ${maxCandidates})`;
      expect(Array.from(actual.scores), where).toEqual(expected.map((e) => e.score));
      expect(Array.from(actual.classIds), where).toEqual(expected.map((e) => e.classId));
      expect(Array.from(actual.boxes), where).toEqual(expected.flatMap((e) => e.box));
    }
  });

  it('handles the hot case, 80 classes over 8400 anchors', () => {
    const seed = 640;
    const out = randomOutput(prng(seed), 1, 80, 8400, 0.25);
    const expected = referenceCandidates(out, 80, 8400, 0.25, 0, 30000);
    const actual = candidatesFromOutput(out, 80, 8400, 0.25);
    expect(Array.from(actual.scores), `seed ${seed}`).toEqual(expected.map((e) => e.score));
    expect(Array.from(actual.boxes), `seed ${seed}`).toEqual(expected.flatMap((e) => e.box));
  });

  it('drops an anchor whose scores contain NaN, as torch max propagates it', () => {
    // nc 2, N 2: anchor 0 has scores [NaN, 0.9]; anchor 1 is (cx 20, cy 20, w 4, h 2) with scores [0.5, 0.8].
    const out = Float32Array.from([10, 20, 10, 20, 4, 4, 2, 2, NaN, 0.5, 0.9, 0.8]);
    const d = candidatesFromOutput(out, 2, 2, 0.25);
    expect(Array.from(d.scores)).toEqual([Math.fround(0.8)]);
    expect(Array.from(d.classIds)).toEqual([1]);
    expect(Array.from(d.boxes)).toEqual([18, 19, 22, 21]);
  });

  it('rejects an output too short for the requested batch', () => {
    expect(() => candidatesFromOutput(new Float32Array(84 * 10), 80, 10, 0.25, 1)).toThrow(RangeError);
  });
});

describe('scaleBoxes and letterboxBoxes', () => {
  const sizes = [320, 480, 640];
  const shapes: Array<[number, number]> = [
    [1, 1], [1, 4000], [4000, 1], [4000, 300], [300, 4000], [810, 1080], [1080, 810], [854, 480], [640, 640],
    [641, 639], [333, 777], [1920, 1080], [7, 3],
  ];

  it('round-trips boxes inside the image within 1e-3 px over many aspect ratios and sizes', () => {
    const seed = 11;
    const rand = prng(seed);
    for (const size of sizes) {
      for (const [w, h] of [...shapes, ...Array.from({ length: 30 }, () => [1 + Math.floor(rand() * 4000), 1 + Math.floor(rand() * 4000)])]) {
        const geom = letterboxGeometry(w, h, size, size);
        const boxes: number[] = [];
        for (let i = 0; i < 20; i++) {
          const [xa, xb] = [rand() * w, rand() * w].sort((p, q) => p - q);
          const [ya, yb] = [rand() * h, rand() * h].sort((p, q) => p - q);
          boxes.push(xa, ya, xb, yb);
        }
        const original = boxesOnly(boxes);
        const back = scaleBoxes(letterboxBoxes(original, geom), geom);
        for (let k = 0; k < boxes.length; k++) {
          expect(Math.abs(back.boxes[k] - original.boxes[k]), `seed ${seed}, ${w}x${h} at ${size}, coord ${k}`).toBeLessThan(1e-3);
        }
      }
    }
  });

  it('clips boxes that reach outside the image to its edges', () => {
    const seed = 12;
    const rand = prng(seed);
    for (const size of sizes) {
      for (const [w, h] of shapes) {
        const geom = letterboxGeometry(w, h, size, size);
        const boxes: number[] = [];
        for (let i = 0; i < 20; i++) boxes.push((rand() * 3 - 1) * w, (rand() * 3 - 1) * h, (rand() * 3 - 1) * w, (rand() * 3 - 1) * h);
        const back = scaleBoxes(letterboxBoxes(boxesOnly(boxes), geom), geom);
        for (let k = 0; k < boxes.length; k++) {
          const limit = k % 2 === 0 ? w : h;
          const expected = Math.min(Math.max(Math.fround(boxes[k]), 0), limit);
          expect(Math.abs(back.boxes[k] - expected), `seed ${seed}, ${w}x${h} at ${size}, coord ${k}`).toBeLessThan(1e-3);
        }
      }
    }
    const geom = letterboxGeometry(810, 1080, 640, 640);
    // The whole canvas, padding included, maps onto the whole image.
    expect(Array.from(scaleBoxes(boxesOnly([0, 0, 640, 640]), geom).boxes)).toEqual([0, 0, 810, 1080]);
  });

  it('maps 810×1080 at 640 with gain 0.592593 and pad (80, 0), as worked by hand', () => {
    const geom = letterboxGeometry(810, 1080, 640, 640);
    expect(geom.scale).toBeCloseTo(0.592593, 6);
    const back = scaleBoxes(boxesOnly([80, 0, 560, 640, 100, 100, 200, 300]), geom);
    // (100 − 80)/0.592593 = 33.75, 100/0.592593 = 168.75, 120/0.592593 = 202.5, 300/0.592593 = 506.25.
    const expected = [0, 0, 810, 1080, 33.75, 168.75, 202.5, 506.25];
    expected.forEach((v, k) => expect(back.boxes[k]).toBeCloseTo(v, 3));
    const there = letterboxBoxes(boxesOnly([0, 0, 810, 1080]), geom);
    [80, 0, 560, 640].forEach((v, k) => expect(there.boxes[k]).toBeCloseTo(v, 3));
  });
  it('rounds the pad as round(d/2 − 0.1) half-to-even: 117×1000 at 640 has pad x 282, not 283', () => {
    // gain 0.64, (640 − 74.88)/2 = 282.56 → round(282.46) = 282.
    const geom = letterboxGeometry(117, 1000, 640, 640);
    const back = scaleBoxes(boxesOnly([282, 0, 282 + 64, 640]), geom);
    [0, 0, 100, 1000].forEach((v, k) => expect(back.boxes[k]).toBeCloseTo(v, 3));
  });

  it("uses scale_boxes' own pad, which can be a pixel off the letterbox pad (101×1000 at 640: 288 vs 287)", () => {
    // ultralytics recomputes the pad from the unrounded 64.64 px width, not from the 65 px it resized to.
    const geom = letterboxGeometry(101, 1000, 640, 640);
    expect(geom.padLeft).toBe(287);
    const back = scaleBoxes(boxesOnly([288, 0, 288 + 64, 640]), geom);
    [0, 0, 100, 1000].forEach((v, k) => expect(back.boxes[k]).toBeCloseTo(v, 3));
  });
});

describe('postprocessDetect and toJson', () => {
  it('runs candidates → NMS → original pixels with the predict defaults', () => {
    expect(DEFAULT_DETECT_OPTIONS).toEqual({ conf: 0.25, iou: 0.7, maxDet: 300 });
    // nc 2, N 3 (rows cx, cy, w, h, s0, s1). Anchors 0 and 1 overlap (IoU ≈ 0.82) in class 1; anchor 2 is below conf.
    const out = Float32Array.from([
      180, 182, 400,
      200, 200, 400,
      100, 100, 10,
      100, 100, 10,
      0.1, 0.2, 0.1,
      0.9, 0.6, 0.2,
    ]);
    const geom = letterboxGeometry(810, 1080, 640, 640);
    const d = postprocessDetect(out, { numClasses: 2, numAnchors: 3 }, geom, DEFAULT_DETECT_OPTIONS);
    expect(Array.from(d.classIds)).toEqual([1]);
    // Input box [130, 150, 230, 250] → ((x − 80)/gain, y/gain).
    [84.375, 253.125, 253.125, 421.875].forEach((v, k) => expect(d.boxes[k]).toBeCloseTo(v, 3));
  });

  it('shapes JSON as {box, score, classId, label[, trackId]} with boxes to 2 decimals and scores to 4', () => {
    const d: Detections = {
      boxes: Float32Array.from([1.23456, 2.5, 3.999, 4.001, -0.001, 0, 10, 20]),
      scores: Float32Array.from([0.876543, 0.25]),
      classIds: Int32Array.from([62, 80]),
    };
    const json = toJson(d, COCO80);
    expect(json).toEqual([
      { box: [1.23, 2.5, 4, 4], score: 0.8765, classId: 62, label: 'tv' },
      { box: [0, 0, 10, 20], score: 0.25, classId: 80, label: '80' },
    ]);
    expect(Object.keys(json[0])).not.toContain('trackId');
    expect(toJson({ ...d, trackIds: Int32Array.from([3, 4]) }, COCO80).map((j) => j.trackId)).toEqual([3, 4]);
    expect(JSON.parse(JSON.stringify(json))).toEqual(json);
  });

  it('names the 80 COCO classes in the ultralytics order', () => {
    expect(COCO80.length).toBe(80);
    expect([COCO80[0], COCO80[1], COCO80[2], COCO80[62], COCO80[79]]).toEqual(['person', 'bicycle', 'car', 'tv', 'toothbrush']);
    expect(new Set(COCO80).size).toBe(80);
  });
});
