import { createRequire } from 'node:module';
import { beforeAll, describe, expect, it } from 'vitest';
import { letterboxGeometry, type Letterbox } from '../src/pipeline/letterbox.js';
import { INTER_RESIZE_COEF_SCALE, letterboxInto, resizeLinearU8 } from '../src/pipeline/preprocess.js';
import type { RgbImage } from '../src/pipeline/decode.js';
import { prng as rng } from './support/random.js';

/** Base seed for the random cases; set FOVEA_TEST_SEED to replay a failure. */
const SEED = Number(process.env.FOVEA_TEST_SEED ?? 20240611);

const randInt = (r: () => number, lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
const randomImage = (r: () => number, w: number, h: number): RgbImage => ({
  data: Uint8Array.from({ length: w * h * 3 }, () => Math.floor(r() * 256)),
  width: w,
  height: h,
});

// ---------------------------------------------------------------------------------------------
// The slow reference: OpenCV's INTER_LINEAR for 8-bit images written out per pixel.

/** C's float, one operation at a time. */
const f32 = (x: number): number => new Float32Array([x])[0];
/** cvRound: round half to even. */
function cvRound(v: number): number {
  const f = Math.floor(v);
  if (v - f !== 0.5) return Math.round(v);
  return f % 2 === 0 ? f : f + 1;
}

/** The two source taps and fixed-point weights of destination index d on one axis. */
function taps(d: number, src: number, dst: number, isX: boolean): [number, number, number, number] {
  const scale = 1 / (dst / src);
  const fpos = f32((d + 0.5) * scale - 0.5);
  let s = Math.floor(fpos);
  let frac = f32(fpos - s);
  // x: the border taps collapse onto the edge pixel with weight 0; y: only the rows are clipped.
  if (isX && s < 0) [s, frac] = [0, 0];
  if (isX && s >= src - 1) [s, frac] = [src - 1, 0];
  const clip = (i: number): number => Math.min(Math.max(i, 0), src - 1);
  return [clip(s), clip(s + 1), cvRound(f32(1 - frac) * INTER_RESIZE_COEF_SCALE), cvRound(frac * INTER_RESIZE_COEF_SCALE)];
}

function referenceResize(src: Uint8Array, sw: number, sh: number, dw: number, dh: number): Uint8Array {
  const px = (x: number, y: number, c: number): number => src[(y * sw + x) * 3 + c];
  const dst = new Uint8Array(dw * dh * 3);
  for (let y = 0; y < dh; y++) {
    for (let x = 0; x < dw; x++) {
      for (let c = 0; c < 3; c++) {
        let v: number;
        if (sw === dw && sh === dh) v = px(x, y, c);
        else if (sw === 2 * dw && sh === 2 * dh) {
          v = (px(2 * x, 2 * y, c) + px(2 * x + 1, 2 * y, c) + px(2 * x, 2 * y + 1, c) + px(2 * x + 1, 2 * y + 1, c) + 2) >> 2;
        } else {
          const [x0, x1, a0, a1] = taps(x, sw, dw, true);
          const [y0, y1, b0, b1] = taps(y, sh, dh, false);
          const s0 = px(x0, y0, c) * a0 + px(x1, y0, c) * a1;
          const s1 = px(x0, y1, c) * a0 + px(x1, y1, c) * a1;
          v = (Math.floor((b0 * Math.floor(s0 / 16)) / 65536) + Math.floor((b1 * Math.floor(s1 / 16)) / 65536) + 2) >> 2;
        }
        dst[(y * dw + x) * 3 + c] = v;
      }
    }
  }
  return dst;
}

/** Resize, copyMakeBorder with 114, then /255 into C,H,W — the unfused ultralytics order. */
function referenceLetterbox(img: RgbImage, g: Letterbox): Float32Array {
  const resized = referenceResize(img.data, img.width, img.height, g.newWidth, g.newHeight);
  const out = new Float32Array(3 * g.dstWidth * g.dstHeight);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < g.dstHeight; y++) {
      for (let x = 0; x < g.dstWidth; x++) {
        const ix = x - g.padLeft;
        const iy = y - g.padTop;
        const inside = ix >= 0 && ix < g.newWidth && iy >= 0 && iy < g.newHeight;
        const byte = inside ? resized[(iy * g.newWidth + ix) * 3 + c] : 114;
        out[(c * g.dstHeight + y) * g.dstWidth + x] = f32(byte / 255);
      }
    }
  }
  return out;
}

/** Index of the first element that differs, or -1; `NaN !== NaN` counts as a difference. */
function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/** Source → canvas sizes covering up- and down-scaling, 1×1, thin strips, exact halves, identity. */
function letterboxCases(r: () => number): Array<[number, number, number, number]> {
  const fixed: Array<[number, number, number, number]> = [
    [1, 1, 8, 8], [1, 37, 16, 16], [53, 1, 16, 16], [2, 90, 32, 24], [64, 48, 32, 32],
    [40, 40, 20, 20], [33, 21, 33, 21], [24, 24, 24, 24], [81, 108, 64, 64], [7, 5, 64, 48],
  ];
  const random = Array.from({ length: 60 }, (): [number, number, number, number] => {
    const sw = randInt(r, 1, 120);
    const sh = r() < 0.15 ? randInt(r, 1, 3) : randInt(r, 1, 120);
    return [sw, sh, randInt(r, 1, 96), randInt(r, 1, 96)];
  });
  return [...fixed, ...random];
}

describe('letterboxInto (fused letterbox kernel)', () => {
  it('equals resize → pad 114 → /255 → NCHW done one step at a time, bit for bit, on random sizes', () => {
    const r = rng(SEED);
    for (const [sw, sh, W, H] of letterboxCases(r)) {
      const img = randomImage(r, sw, sh);
      const g = letterboxGeometry(sw, sh, W, H);
      const out = new Float32Array(3 * W * H).fill(Number.NaN);
      letterboxInto(img, g, out);
      const i = firstDifference(out, referenceLetterbox(img, g));
      expect(i, `seed ${SEED}: ${sw}x${sh} → ${W}x${H} differs at element ${i}`).toBe(-1);
    }
  });

  it('rewrites every pad element when the buffer is reused for a smaller image after a bigger one', () => {
    const r = rng(SEED + 1);
    const out = new Float32Array(3 * 64 * 64).fill(Number.NaN);
    letterboxInto(randomImage(r, 64, 64), letterboxGeometry(64, 64, 64, 64), out); // fills the whole canvas
    for (const [sw, sh] of [[64, 16], [10, 64], [3, 3], [64, 63]]) {
      const img = randomImage(r, sw, sh);
      const g = letterboxGeometry(sw, sh, 64, 64);
      letterboxInto(img, g, out);
      const i = firstDifference(out, referenceLetterbox(img, g));
      expect(i, `seed ${SEED + 1}: ${sw}x${sh} after a larger image differs at element ${i}`).toBe(-1);
    }
  });

  it('writes pad value 114/255 everywhere outside the image region', () => {
    const img = { data: new Uint8Array(30 * 10 * 3).fill(255), width: 30, height: 10 };
    const g = letterboxGeometry(30, 10, 32, 32);
    const out = new Float32Array(3 * 32 * 32).fill(Number.NaN);
    letterboxInto(img, g, out);
    const pad = f32(114 / 255);
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < 32; y++) {
        for (let x = 0; x < 32; x++) {
          const inside = x >= g.padLeft && x < g.padLeft + g.newWidth && y >= g.padTop && y < g.padTop + g.newHeight;
          expect(out[(c * 32 + y) * 32 + x]).toBe(inside ? 1 : pad);
        }
      }
    }
  });

  it('fills one batch slot at outOffset and leaves the others alone', () => {
    const r = rng(SEED + 2);
    const img = randomImage(r, 40, 25);
    const g = letterboxGeometry(40, 25, 32, 32);
    const slot = 3 * 32 * 32;
    const out = new Float32Array(3 * slot).fill(-1);
    letterboxInto(img, g, out, slot);
    expect(out.subarray(0, slot).every((v) => v === -1)).toBe(true);
    expect(out.subarray(2 * slot).every((v) => v === -1)).toBe(true);
    expect(firstDifference(out.subarray(slot, 2 * slot), referenceLetterbox(img, g)), `seed ${SEED + 2}`).toBe(-1);
  });

  it('keeps R, G, B in that order in the three planes', () => {
    const img = { data: Uint8Array.from([10, 20, 30]), width: 1, height: 1 };
    const out = new Float32Array(3);
    letterboxInto(img, letterboxGeometry(1, 1, 1, 1), out);
    expect(Array.from(out)).toEqual([f32(10 / 255), f32(20 / 255), f32(30 / 255)]);
  });

  it('refuses an image whose size is not the geometry source size, or a too short buffer', () => {
    const img = { data: new Uint8Array(4 * 4 * 3), width: 4, height: 4 };
    expect(() => letterboxInto(img, letterboxGeometry(5, 4, 8, 8), new Float32Array(192))).toThrow(RangeError);
    expect(() => letterboxInto(img, letterboxGeometry(4, 4, 8, 8), new Float32Array(191))).toThrow(RangeError);
  });
});

describe('letterboxGeometry (ultralytics LetterBox)', () => {
  // Hand-computed: r = min(H/h, W/w); new = round(w·r), round(h·r) half-even; pads round(d/2 ∓ 0.1).
  it.each([
    // bus.jpg: r = 640/1080 = 0.5926, 810·r = 480, pads (640-480)/2 = 80 | 80
    [810, 1080, 640, 640, { newWidth: 480, newHeight: 640, padLeft: 80, padRight: 80, padTop: 0, padBottom: 0 }],
    // zidane.jpg: r = 0.5, 640×360, pads (640-360)/2 = 140 | 140
    [1280, 720, 640, 640, { newWidth: 640, newHeight: 360, padLeft: 0, padRight: 0, padTop: 140, padBottom: 140 }],
    // r = 640/600, 400·r = 426.67 → 427, dh = 106.5 → round(106.4) = 106, round(106.6) = 107
    [600, 400, 640, 640, { newWidth: 640, newHeight: 427, padLeft: 0, padRight: 0, padTop: 106, padBottom: 107 }],
    // r = 0.5, 5·r = 2.5 → 2 (half to even), dh = 1.5 → 1 | 2
    [10, 5, 5, 5, { newWidth: 5, newHeight: 2, padLeft: 0, padRight: 0, padTop: 1, padBottom: 2 }],
    // upscaling: r = 640/320 = 2, 320×240 → 640×480, pads 80 | 80
    [320, 240, 640, 640, { newWidth: 640, newHeight: 480, padLeft: 0, padRight: 0, padTop: 80, padBottom: 80 }],
  ])('%i×%i into %i×%i', (w, h, W, H, expected) => {
    const g = letterboxGeometry(w, h, W, H);
    expect(g).toMatchObject(expected);
    expect(g.padLeft + g.newWidth + g.padRight).toBe(W);
    expect(g.padTop + g.newHeight + g.padBottom).toBe(H);
  });

  it('gives r = 0.5926 for bus.jpg', () => {
    expect(letterboxGeometry(810, 1080, 640, 640).scale).toBeCloseTo(0.5926, 4);
  });
});

// ---------------------------------------------------------------------------------------------
// Against real OpenCV (4.3.0 compiled to WebAssembly).

interface CvMat {
  data: Uint8Array;
  delete(): void;
}
interface OpenCv {
  CV_8UC3: number;
  INTER_LINEAR: number;
  Mat: new () => CvMat;
  Size: new (w: number, h: number) => unknown;
  matFromArray(rows: number, cols: number, type: number, data: ArrayLike<number>): CvMat;
  resize(src: CvMat, dst: CvMat, size: unknown, fx: number, fy: number, interpolation: number): void;
}

describe('resizeLinearU8 against OpenCV cv2.resize(INTER_LINEAR)', () => {
  let cv: OpenCv;
  let leftover = -1;

  beforeAll(() => {
    const emitter: NodeJS.EventEmitter = process;
    const events = ['uncaughtException', 'unhandledRejection'];
    const before = events.map((e) => emitter.listeners(e));
    cv = (createRequire(import.meta.url)('opencv-wasm') as { cv: OpenCv }).cv;
    // Emscripten installs process-wide handlers that would swallow or rethrow the runner's errors.
    events.forEach((e, k) => {
      for (const l of emitter.listeners(e)) {
        if (!before[k].includes(l)) emitter.removeListener(e, l as (...args: unknown[]) => void);
      }
    });
    leftover = events.reduce((n, e, k) => n + emitter.listenerCount(e) - before[k].length, 0);
  });

  it('is loaded without leaving process-wide error handlers behind', () => {
    expect(leftover).toBe(0);
  });

  function opencvResize(src: Uint8Array, sw: number, sh: number, dw: number, dh: number): Uint8Array {
    const s = cv.matFromArray(sh, sw, cv.CV_8UC3, src);
    const d = new cv.Mat();
    try {
      cv.resize(s, d, new cv.Size(dw, dh), 0, 0, cv.INTER_LINEAR);
      return Uint8Array.from(d.data);
    } finally {
      s.delete();
      d.delete();
    }
  }

  it('is bit-exact on random images of many sizes, up and down, thin, 1×1, halves and identity', () => {
    const r = rng(SEED + 3);
    const cases: Array<[number, number, number, number]> = [
      [1, 1, 1, 1], [1, 1, 5, 3], [5, 3, 1, 1], [1, 50, 7, 9], [50, 1, 9, 7], [2, 2, 1, 1], [64, 48, 32, 24],
      [63, 47, 32, 24], [30, 20, 30, 20], [30, 20, 30, 41], [30, 20, 17, 20], [81, 108, 48, 64], [128, 72, 64, 36],
    ];
    for (let k = 0; k < 250; k++) {
      const sw = randInt(r, 1, 160);
      const sh = randInt(r, 1, 160);
      if (k % 8 === 0) cases.push([2 * sw, 2 * sh, sw, sh]);
      else cases.push([sw, sh, randInt(r, 1, 200), randInt(r, 1, 200)]);
    }
    for (const [sw, sh, dw, dh] of cases) {
      const src = randomImage(r, sw, sh).data;
      const ours = resizeLinearU8(src, sw, sh, dw, dh);
      const i = firstDifference(ours, opencvResize(src, sw, sh, dw, dh));
      expect(i, `seed ${SEED + 3}: ${sw}x${sh} → ${dw}x${dh} differs at byte ${i}`).toBe(-1);
    }
  });

  it('is bit-exact on photo-sized frames going to detector sizes', () => {
    const r = rng(SEED + 4);
    for (const [sw, sh, dw, dh] of [[810, 1080, 480, 640], [1280, 720, 640, 360], [854, 480, 640, 360], [300, 200, 640, 427]]) {
      const src = randomImage(r, sw, sh).data;
      const i = firstDifference(resizeLinearU8(src, sw, sh, dw, dh), opencvResize(src, sw, sh, dw, dh));
      expect(i, `seed ${SEED + 4}: ${sw}x${sh} → ${dw}x${dh} differs at byte ${i}`).toBe(-1);
    }
  });

  it('matches the per-pixel reference as well (so the reference above is OpenCV too)', () => {
    const r = rng(SEED + 5);
    for (let k = 0; k < 40; k++) {
      const [sw, sh, dw, dh] = [randInt(r, 1, 50), randInt(r, 1, 50), randInt(r, 1, 70), randInt(r, 1, 70)];
      const src = randomImage(r, sw, sh).data;
      const i = firstDifference(referenceResize(src, sw, sh, dw, dh), opencvResize(src, sw, sh, dw, dh));
      expect(i, `seed ${SEED + 5}: ${sw}x${sh} → ${dw}x${dh} differs at byte ${i}`).toBe(-1);
    }
  });
});
