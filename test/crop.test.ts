import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  type Box,
  type CropParams,
  type Size,
  IMAGENET_MEAN,
  IMAGENET_STD,
  cropGeometry,
  cropInto,
  cropParams,
  cropToImage,
  foregroundMask,
  imageChannelMeans,
  imageToCrop,
} from '../src/pipeline/crop.js';
import type { RgbImage } from '../src/pipeline/decode.js';
import { prng as rng } from './support/random.js';

/** Base seed for the random cases; set FOVEA_TEST_SEED to replay a failure. */
const SEED = Number(process.env.FOVEA_TEST_SEED ?? 20240611);

const randInt = (r: () => number, lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
const uniform = (r: () => number, lo: number, hi: number): number => lo + r() * (hi - lo);
const randomImage = (r: () => number, w: number, h: number): RgbImage => ({
  data: Uint8Array.from({ length: w * h * 3 }, () => Math.floor(r() * 256)),
  width: w,
  height: h,
});
const asParams = ([scaleX, scaleY, translateX, translateY]: number[]): CropParams => ({ scaleX, scaleY, translateX, translateY });
const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return a.length === b.length ? m : Infinity;
};

// ---------------------------------------------------------------------------------------------
// The slow reference: scale_and_translate written out per output pixel, then /255, mean, std.

/**
 * For each crop pixel: inside the rasterised destination rectangle, the align_corners=False bilinear
 * sample of the source rectangle; outside, the padding mean. The rectangles follow the spec's words:
 * the image rectangle mapped into the crop, clipped to it, rasterised (floor; x2 as floor(x + 1 − 1e-4));
 * mapped back with the reversed params (1/s, −t/s), rasterised, clipped to the image.
 */
function referenceCrop(img: RgbImage, p: CropParams, [W, H]: Size, mean: readonly number[]): Float32Array {
  const clip = (v: number, hi: number): number => Math.min(Math.max(v, 0), hi);
  const raster2 = (v: number): number => Math.floor(v + (1 - 1e-4));
  const dx1 = Math.floor(clip(p.translateX, W)), dx2 = raster2(clip(img.width * p.scaleX + p.translateX, W));
  const dy1 = Math.floor(clip(p.translateY, H)), dy2 = raster2(clip(img.height * p.scaleY + p.translateY, H));
  const back = (v: number, s: number, t: number): number => v * (1 / s) + -t / s;
  const sx1 = clip(Math.floor(back(dx1, p.scaleX, p.translateX)), img.width);
  const sx2 = clip(raster2(back(dx2, p.scaleX, p.translateX)), img.width);
  const sy1 = clip(Math.floor(back(dy1, p.scaleY, p.translateY)), img.height);
  const sy2 = clip(raster2(back(dy2, p.scaleY, p.translateY)), img.height);
  const valid = dx1 < dx2 && dy1 < dy2 && sx1 < sx2 && sy1 < sy2;

  /** One axis of F.interpolate(bilinear, align_corners=False): the two taps and the upper weight. */
  const sample = (d: number, srcLen: number, dstLen: number): [number, number, number] => {
    const u = Math.max((d + 0.5) * (srcLen / dstLen) - 0.5, 0);
    const i0 = Math.min(Math.floor(u), srcLen - 1);
    return [i0, Math.min(i0 + 1, srcLen - 1), u - i0];
  };
  const px = (x: number, y: number, c: number): number => img.data[(y * img.width + x) * 3 + c];
  const out = new Float32Array(3 * W * H);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        let v = mean[c];
        if (valid && x >= dx1 && x < dx2 && y >= dy1 && y < dy2) {
          const [x0, x1, a] = sample(x - dx1, sx2 - sx1, dx2 - dx1);
          const [y0, y1, b] = sample(y - dy1, sy2 - sy1, dy2 - dy1);
          const at = (i: number, j: number): number => px(sx1 + i, sy1 + j, c);
          v = (1 - a) * (1 - b) * at(x0, y0) + a * (1 - b) * at(x1, y0) + (1 - a) * b * at(x0, y1) + a * b * at(x1, y1);
        }
        out[c * W * H + y * W + x] = (v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
      }
    }
  }
  return out;
}

/** A box for a random case: ordinary, partly outside, tiny, huge, or far away from the image. */
function randomBox(r: () => number, w: number, h: number): Box {
  const kind = randInt(r, 0, 4);
  const size = kind === 2 ? [uniform(r, 0.01, 2), uniform(r, 0.01, 2)] : kind === 3 ? [uniform(r, 2, 10) * w, uniform(r, 2, 10) * h] : [uniform(r, 1, w), uniform(r, 1, h)];
  const spread = kind === 1 ? 1.5 : 1;
  let cx = uniform(r, (1 - spread) * w, spread * w), cy = uniform(r, (1 - spread) * h, spread * h);
  if (kind === 4) (cx = w + uniform(r, 50, 5000)), (cy = -uniform(r, 50, 5000));
  return [cx - size[0] / 2, cy - size[1] / 2, cx + size[0] / 2, cy + size[1] / 2];
}

describe('SiamFC crop params', () => {
  it('put the box centre at the crop centre with one scale from the context area', () => {
    // w = 40, h = 20, f = 2: area = (40 + 30, 20 + 30); scale = sqrt(112² / (70·50)).
    const p = cropParams([100, 50, 140, 70], 2, [112, 112]);
    const s = Math.sqrt((112 * 112) / (70 * 50));
    expect(p.scaleX).toBeCloseTo(s, 12);
    expect(p.scaleY).toBe(p.scaleX);
    expect(p.translateX).toBeCloseTo(56 - 120 * s, 10);
    expect(p.translateY).toBeCloseTo(56 - 60 * s, 10);
    const [x1, y1, x2, y2] = imageToCrop([100, 50, 140, 70], p);
    expect((x1 + x2) / 2).toBeCloseTo(56, 10);
    expect((y1 + y2) / 2).toBeCloseTo(56, 10);
  });

  it('clamp the object to at least min_object_size about its centre for the search crop', () => {
    const tiny = cropParams([200, 100, 203, 101], 4, [224, 224], 10);
    const ten = cropParams([196.5, 95.5, 206.5, 105.5], 4, [224, 224]);
    expect(tiny.scaleX).toBeCloseTo(224 / 40, 12); // 10 × 10 at f = 4: area 10 + 3·(10 + 10)/2 = 40 per side
    expect(tiny.scaleX).toBeCloseTo(ten.scaleX, 12);
    expect(tiny.translateX).toBeCloseTo(ten.translateX, 9);
    expect(tiny.translateY).toBeCloseTo(ten.translateY, 9);
    // A box already larger than the minimum keeps its size.
    expect(cropParams([0, 0, 50, 40], 4, [224, 224], 10).scaleX).toBeCloseTo(cropParams([0, 0, 50, 40], 4, [224, 224]).scaleX, 12);
  });

  it('refuse a box with no area', () => {
    expect(() => cropParams([10, 10, 10, 10], 2, [112, 112])).toThrow(RangeError);
    expect(() => cropParams([10, 10, Number.NaN, 20], 2, [112, 112])).toThrow(RangeError);
  });
});

describe('crop geometry (pixel-aligned scale_and_translate)', () => {
  it('rasterises the destination rectangle with floor and floor(x + 1 − 1e-4), end-exclusive', () => {
    // Image 100×50 at scale 0.5 with translation (10.2, 3.7): it covers [10.2, 60.2) × [3.7, 28.7) of the crop.
    const g = cropGeometry([100, 50], { scaleX: 0.5, scaleY: 0.5, translateX: 10.2, translateY: 3.7 }, [64, 64]);
    expect(g.valid).toBe(true);
    expect(g.dst).toEqual([10, 3, 61, 29]);
    // Back: (10 − 10.2)/0.5 = −0.4 → −1 → 0; (61 − 10.2)/0.5 = 101.6 → 102 → 100; (3 − 3.7)/0.5 → 0; (29 − 3.7)/0.5 = 50.6 → 51 → 50.
    expect(g.src).toEqual([0, 0, 100, 50]);
    expect(g.params.scaleX).toBe(Math.fround(51 / 100));
    expect(g.params.scaleY).toBe(Math.fround(26 / 50));
    expect(g.params.translateX).toBe(10);
    expect(g.params.translateY).toBe(3);
  });

  it('keeps per-axis adjusted scales, as the official (2, 2) params do', () => {
    // A box at the frame's right edge (from the official fixtures): the crop is clipped there.
    const box: Box = [632.9478328443628, 17.7698585574379, 656.2788161918282, 86.10262139974922];
    const g = cropGeometry([854, 480], cropParams(box, 4, [224, 224], 10), [224, 224]);
    expect(g.params.scaleX).toBe(Math.fround(1.2240437269210815));
    expect(g.params.scaleY).toBe(Math.fround(1.2307692766189575));
    expect(g.params.scaleX).toBe(Math.fround((g.dst[2] - g.dst[0]) / (g.src[2] - g.src[0])));
  });

  it('maps the source rectangle exactly onto the destination rectangle with the adjusted params', () => {
    const r = rng(SEED + 10);
    for (let i = 0; i < 200; i++) {
      const w = randInt(r, 1, 900), h = randInt(r, 1, 700);
      const g = cropGeometry([w, h], cropParams(randomBox(r, w, h), uniform(r, 1.5, 5), [224, 224], 10), [224, 224]);
      if (!g.valid) continue;
      const mapped = imageToCrop(g.src, g.params);
      expect(maxAbsDiff(mapped, g.dst), `seed ${SEED + 10}, case ${i}`).toBeLessThan(1e-3);
    }
  });

  it('is invalid, all padding, when the image does not reach into the crop', () => {
    const img = randomImage(rng(SEED), 30, 20);
    const p = cropParams([5000, 5000, 5010, 5010], 4, [16, 16], 10);
    const out = new Float32Array(3 * 16 * 16).fill(Number.NaN);
    const mean = [10, 20, 30];
    const adjusted = cropInto(img, p, [16, 16], mean, out);
    expect(cropGeometry([30, 20], p, [16, 16]).valid).toBe(false);
    expect(adjusted).toEqual(p);
    for (let c = 0; c < 3; c++) {
      const pad = Math.fround((mean[c] / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]);
      for (let i = 0; i < 256; i++) expect(out[c * 256 + i]).toBeCloseTo(pad, 6);
    }
  });
});

describe('cropInto', () => {
  it('matches the per-pixel reference on random boxes, images and crop sizes', () => {
    const r = rng(SEED + 11);
    let empty = 0, clipped = 0;
    for (let i = 0; i < 300; i++) {
      const w = randInt(r, 1, 70), h = randInt(r, 1, 70);
      const img = randomImage(r, w, h);
      const side = randInt(r, 1, 40);
      const out: Size = r() < 0.5 ? [randInt(r, 1, 40), randInt(r, 1, 40)] : [side, side];
      const box = randomBox(r, w, h);
      const f = [2, 4, 5][randInt(r, 0, 2)];
      const p = cropParams(box, f, out, r() < 0.5 ? 10 : undefined);
      const mean = [uniform(r, 0, 255), uniform(r, 0, 255), uniform(r, 0, 255)];
      const offset = randInt(r, 0, 5);
      const buf = new Float32Array(offset + 3 * out[0] * out[1] + 3).fill(Number.NaN);
      cropInto(img, p, out, mean, buf, offset);
      const g = cropGeometry([w, h], p, out);
      if (!g.valid) empty++;
      else if (g.dst[0] > 0 || g.dst[1] > 0 || g.dst[2] < out[0] || g.dst[3] < out[1]) clipped++;
      const expected = referenceCrop(img, p, out, mean);
      const d = maxAbsDiff(buf.subarray(offset, offset + expected.length), expected);
      expect(d, `seed ${SEED + 11}, case ${i}: ${w}x${h} box [${box.join(', ')}] f ${f} → ${out[0]}x${out[1]}`).toBeLessThan(2e-5);
      expect(Number.isNaN(buf[offset + expected.length]), 'writes nothing past the tensor').toBe(true);
    }
    // The draw covers crops with no image content and crops padded on some side.
    expect(empty).toBeGreaterThan(10);
    expect(clipped).toBeGreaterThan(50);
  });

  it('matches the per-pixel reference for a 224 search crop of a real-size frame, reusing the buffer', () => {
    const r = rng(SEED + 12);
    const img = randomImage(r, 854, 480);
    const mean = imageChannelMeans(img);
    const buf = new Float32Array(3 * 224 * 224);
    for (const box of [[400, 200, 460, 300], [-30, 400, 40, 520], [840, -5, 870, 10], [0, 0, 854, 480]] as Box[]) {
      const p = cropParams(box, 4, [224, 224], 10);
      cropInto(img, p, [224, 224], mean, buf);
      // 3e-4 ≈ 0.02 grey levels: the kernel computes source coordinates in float32 as ATen does, the
      // reference in float64; at coordinates in the hundreds that is ~1e-5 px, times gradients up to 255.
      expect(maxAbsDiff(buf, referenceCrop(img, p, [224, 224], mean)), `box [${box.join(', ')}]`).toBeLessThan(3e-4);
    }
  });

  it('copies pixels exactly, R plane first, at unit scale and whole-pixel translation', () => {
    const r = rng(SEED + 13);
    const img = randomImage(r, 9, 7);
    const out = new Float32Array(3 * 12 * 10);
    cropInto(img, { scaleX: 1, scaleY: 1, translateX: 2, translateY: -1 }, [12, 10], [0, 0, 0], out);
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < 10; y++) {
        for (let x = 0; x < 12; x++) {
          const sx = x - 2, sy = y + 1;
          const v = sx >= 0 && sx < 9 && sy >= 0 && sy < 7 ? img.data[(sy * 9 + sx) * 3 + c] : 0;
          expect(out[c * 120 + y * 12 + x]).toBeCloseTo((v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], 6);
        }
      }
    }
  });

  it('refuses buffers that are too small and crop sizes that are not positive integers', () => {
    const img = randomImage(rng(SEED), 8, 8);
    const p = cropParams([1, 1, 5, 5], 2, [8, 8]);
    expect(() => cropInto(img, p, [8, 8], [0, 0, 0], new Float32Array(3 * 64 - 1))).toThrow(RangeError);
    expect(() => cropInto(img, p, [8, 8], [0, 0, 0], new Float32Array(3 * 64), 1)).toThrow(RangeError);
    expect(() => cropInto(img, p, [8.5, 8], [0, 0, 0], new Float32Array(3 * 80))).toThrow(RangeError);
    expect(() => cropInto(img, p, [8, 8], [0, 0], new Float32Array(3 * 64))).toThrow(RangeError);
  });
});

describe('box mapping', () => {
  it('crop then inverse crop returns the box within 1e-3 px', () => {
    const r = rng(SEED + 14);
    for (let i = 0; i < 500; i++) {
      const w = randInt(r, 10, 2000), h = randInt(r, 10, 2000);
      const box = randomBox(r, w, h);
      const p = cropGeometry([w, h], cropParams(box, uniform(r, 1, 6), [224, 224], 10), [224, 224]).params;
      expect(maxAbsDiff(cropToImage(imageToCrop(box, p), p), box), `seed ${SEED + 14}, case ${i}`).toBeLessThan(1e-3);
    }
  });
});

describe('channel means', () => {
  it('are the per-channel averages in the 0–255 domain', () => {
    const img: RgbImage = { data: Uint8Array.from([0, 10, 255, 2, 20, 255, 4, 30, 255, 6, 40, 254]), width: 2, height: 2 };
    expect(imageChannelMeans(img)).toEqual([3, 25, Math.fround(1019 / 4)]);
  });
});

describe('template foreground mask', () => {
  const unit = { scaleX: 1, scaleY: 1, translateX: 0, translateY: 0 };
  const cells = (m: BigInt64Array): string[] => [...m].flatMap((v, i) => (v === 1n ? [`${Math.floor(i / 8)},${i % 8}`] : []));

  it('covers whole stride cells: a box exactly on stride boundaries ends before the next cell', () => {
    // [14, 28, 56, 70] / 14 = [1, 2, 4, 5]: columns 1..3, rows 2..4.
    const m = foregroundMask([14, 28, 56, 70], unit);
    expect(m).toBeInstanceOf(BigInt64Array);
    expect(m.length).toBe(64);
    expect(cells(m)).toEqual(['2,1', '2,2', '2,3', '3,1', '3,2', '3,3', '4,1', '4,2', '4,3']);
  });

  it('takes the next cell as soon as x2 passes the boundary by more than 1e-4 cells', () => {
    expect(cells(foregroundMask([14, 28, 56.01, 42], unit))).toEqual(['2,1', '2,2', '2,3', '2,4']);
    expect(cells(foregroundMask([14, 28, 56.001, 42], unit))).toEqual(['2,1', '2,2', '2,3']); // 0.00007 cells
  });

  it('clips a box partly outside the template to the feature map', () => {
    // [-20, 100, 30, 200] / 14 → floor [-2, 7], floor(x + 0.9999) [3, 15] → clipped [0, 7, 3, 8].
    expect(cells(foregroundMask([-20, 100, 30, 200], unit))).toEqual(['7,0', '7,1', '7,2']);
  });

  it('maps the box through the template params first', () => {
    // Scale 0.5, translation (7, 14): [14, 28, 70, 84] → [14, 28, 42, 56] → cells [1, 2, 3, 4).
    const m = foregroundMask([14, 28, 70, 84], { scaleX: 0.5, scaleY: 0.5, translateX: 7, translateY: 14 });
    expect(cells(m)).toEqual(['2,1', '2,2', '3,1', '3,2']);
  });
});

// ---------------------------------------------------------------------------------------------
// Against the official LoRAT functions run with real PyTorch (scripts/make-lorat-crop-fixtures.py).

interface CropCase {
  width: number; height: number; pixels: string; box: number[]; areaFactor: number; outSize: [number, number];
  minObjectSize: number | null; params: number[]; mean: number[]; adjusted: number[]; crop: string;
}
interface InterpolateCase { inSize: [number, number]; outSize: [number, number]; pixels: string; output: string }
interface GeometryCase {
  imageSize: [number, number]; box: number[]; template?: number[]; templateAdjusted?: number[]; mask?: number[];
  search: number[]; searchAdjusted: number[] | null;
}
const reference = JSON.parse(readFileSync(new URL('./fixtures/lorat-crop/reference.json', import.meta.url), 'utf8')) as {
  crops: CropCase[]; interpolate: InterpolateCase[]; geometry: GeometryCase[];
};
const bytes = (b64: string): Uint8Array => new Uint8Array(Buffer.from(b64, 'base64'));
const floats = (b64: string): Float32Array => {
  const b = Buffer.from(b64, 'base64');
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};

describe('against the official LoRAT code (PyTorch fixtures)', () => {
  it('gives the same crop params, adjusted params, means and normalised crops', () => {
    for (const [i, c] of reference.crops.entries()) {
      const img: RgbImage = { data: bytes(c.pixels), width: c.width, height: c.height };
      const p = cropParams(c.box as unknown as Box, c.areaFactor, c.outSize, c.minObjectSize ?? undefined);
      expect([p.scaleX, p.scaleY, p.translateX, p.translateY], `crop case ${i}`).toEqual(c.params);
      const mean = imageChannelMeans(img);
      expect(maxAbsDiff(mean, c.mean), `crop case ${i}`).toBeLessThan(1e-4);
      const out = new Float32Array(3 * c.outSize[0] * c.outSize[1]);
      const adjusted = cropInto(img, p, c.outSize, c.mean, out);
      expect([adjusted.scaleX, adjusted.scaleY, adjusted.translateX, adjusted.translateY], `crop case ${i}`).toEqual(c.adjusted);
      expect(maxAbsDiff(out, floats(c.crop)), `crop case ${i}`).toBeLessThan(1e-5);
    }
  });

  it('resizes as F.interpolate(bilinear, align_corners=False) does', () => {
    for (const c of reference.interpolate) {
      const [iw, ih] = c.inSize, [ow, oh] = c.outSize;
      const img: RgbImage = { data: bytes(c.pixels), width: iw, height: ih };
      const out = new Float32Array(3 * ow * oh);
      // Scale out/in and no translation: the source rectangle is the image, the destination the crop.
      cropInto(img, { scaleX: ow / iw, scaleY: oh / ih, translateX: 0, translateY: 0 }, [ow, oh], [0, 0, 0], out);
      const torch = floats(c.output);
      const denormalised = out.map((v, k) => {
        const ch = Math.floor(k / (ow * oh));
        return (v * IMAGENET_STD[ch] + IMAGENET_MEAN[ch]) * 255;
      });
      expect(maxAbsDiff(denormalised, torch), `${iw}x${ih} → ${ow}x${oh}`).toBeLessThan(1e-3);
    }
  });

  it('gives the same template and search params, adjusted params and foreground masks on real frame sizes', () => {
    for (const [i, g] of reference.geometry.entries()) {
      const box = g.box as unknown as Box;
      const search = cropParams(box, 4, [224, 224], 10);
      expect([search.scaleX, search.scaleY, search.translateX, search.translateY], `geometry ${i}`).toEqual(g.search);
      const s = cropGeometry(g.imageSize, search, [224, 224]);
      if (g.searchAdjusted === null) expect(s.valid).toBe(false);
      else expect([s.params.scaleX, s.params.scaleY, s.params.translateX, s.params.translateY], `geometry ${i}`).toEqual(g.searchAdjusted);
      if (g.template === undefined) continue;
      const t = cropParams(box, 2, [112, 112]);
      expect([t.scaleX, t.scaleY, t.translateX, t.translateY], `geometry ${i}`).toEqual(g.template);
      const adjusted = cropGeometry(g.imageSize, t, [112, 112]).params;
      expect(adjusted, `geometry ${i}`).toEqual(asParams(g.templateAdjusted as number[]));
      expect([...foregroundMask(box, adjusted)].map(Number), `geometry ${i}`).toEqual(g.mask);
    }
  });
});
