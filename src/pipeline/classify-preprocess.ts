/**
 * The ImageNet eval transform of ViG and DeiT (specs/models-a.md §2; timm's crop_pct 0.875), fused into
 * one kernel (DESIGN.md "Fused ops", item 2):
 *
 *   Resize(S/0.875, bicubic)  torchvision on a PIL image: the shorter side to S/0.875, the longer to
 *                             int(short' · long / short); PIL's antialiased bicubic (a = −0.5, support
 *                             2 scaled by the downscale factor), 8-bit fixed point, horizontal pass then
 *                             vertical, each rounded and clipped to uint8 (Pillow's `Resample.c`)
 *   CenterCrop(S)             offsets int(round((side − S)/2)), Python's round (half to even)
 *   ToTensor, Normalize       /255, (x − mean)/std in float32, NCHW
 *
 * Only the cropped part of the resized image is computed: each output pixel of PIL's resize depends on
 * its own taps alone, so the crop of the full resize and the resize restricted to the crop are equal.
 */
import { IMAGENET_MEAN, IMAGENET_STD } from './crop.js';
import type { RgbImage } from './decode.js';

/** Pillow's `PRECISION_BITS` for 8-bit images: 32 − 8 − 2. */
const PRECISION_BITS = 22;
/** timm's DEFAULT_CROP_PCT: resize to S/0.875 (256 for 224) before the centre crop. */
export const CROP_PCT = 0.875;

/** Where the crop lies in the resized image. */
export interface ClassifyGeometry {
  readonly srcWidth: number;
  readonly srcHeight: number;
  /** The resized image (before the crop). */
  readonly resizeWidth: number;
  readonly resizeHeight: number;
  readonly left: number;
  readonly top: number;
  /** The crop side: the model's input side. */
  readonly size: number;
}

/** Python's round(): half to even. */
function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
}

/** torchvision `_compute_resized_output_size` for an int size, then `center_crop`'s offsets. */
export function classifyGeometry(srcWidth: number, srcHeight: number, size: number): ClassifyGeometry {
  if (!(srcWidth > 0 && srcHeight > 0 && size > 0)) throw new RangeError(`sizes must be positive: ${srcWidth}×${srcHeight} → ${size}`);
  const short = Math.trunc(size / CROP_PCT);
  const [w, h] = srcWidth <= srcHeight ? [short, Math.trunc((short * srcHeight) / srcWidth)] : [Math.trunc((short * srcWidth) / srcHeight), short];
  return { srcWidth, srcHeight, resizeWidth: w, resizeHeight: h, left: roundHalfEven((w - size) / 2), top: roundHalfEven((h - size) / 2), size };
}

/** Pillow's `bicubic_filter` (a = −0.5). */
function bicubic(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/** One axis of the resample: per output index, the first tap, the tap count, and `ksize` fixed-point weights. */
export interface AxisCoefficients {
  readonly first: Int32Array;
  readonly count: Int32Array;
  readonly ksize: number;
  readonly weights: Int32Array;
}

/**
 * Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for `inSize → outSize`, for the output indices
 * `start … start + n − 1` only (the crop).
 */
export function axisCoefficients(inSize: number, outSize: number, start: number, n: number): AxisCoefficients {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 2 * filterscale; // the bicubic filter's support, 2, widened when shrinking (antialias)
  const ksize = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(n);
  const count = new Int32Array(n);
  const weights = new Int32Array(n * ksize);
  const k = new Float64Array(ksize);
  for (let i = 0; i < n; i++) {
    const center = (start + i + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) ww += k[x] = bicubic((x + xmin - center + 0.5) * ss);
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0 ? k[x] / ww : k[x];
      weights[i * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
    }
    first[i] = xmin;
    count[i] = xmax;
  }
  return { first, count, ksize, weights };
}

/** clip8: the fixed-point sum back to a byte. */
const clip8 = (v: number): number => {
  const b = v >> PRECISION_BITS;
  return b < 0 ? 0 : b > 255 ? 255 : b;
};

/** Per channel, byte → ((b/255) − mean)/std as torchvision computes it in float32. */
const NORMALIZED: readonly Float32Array[] = [0, 1, 2].map((c) => {
  const [m, s] = [Math.fround(IMAGENET_MEAN[c]), Math.fround(IMAGENET_STD[c])];
  return Float32Array.from({ length: 256 }, (_, v) => Math.fround(Math.fround(Math.fround(v / 255) - m) / s));
});

let scratch = new Uint8Array(0);
/** The horizontal pass's rows, reused across images so a frame allocates nothing once warm. */
function scratchBytes(n: number): Uint8Array {
  if (scratch.length < n) scratch = new Uint8Array(n);
  return scratch;
}

/**
 * The crop of PIL's bicubic resize as packed RGB bytes (size × size × 3): the values torchvision's
 * Resize + CenterCrop give before ToTensor. For tests and for callers that want the bytes.
 */
export function resizeCropU8(img: RgbImage, geom: ClassifyGeometry): Uint8Array {
  const out = new Uint8Array(geom.size * geom.size * 3);
  resample(img, geom, (o, r, g, b) => {
    out[3 * o] = r;
    out[3 * o + 1] = g;
    out[3 * o + 2] = b;
  });
  return out;
}

/**
 * Resize + centre crop + /255 + ImageNet mean/std of `img` into `out` at `outOffset` as a 1×3×S×S float
 * tensor. Every element is written, so `out` can be reused across images of any size.
 */
export function classifyInto(img: RgbImage, geom: ClassifyGeometry, out: Float32Array, outOffset = 0): void {
  const plane = geom.size * geom.size;
  if (out.length < outOffset + 3 * plane) throw new RangeError(`output holds ${out.length} floats, needs ${outOffset + 3 * plane}`);
  const [nr, ng, nb] = NORMALIZED;
  resample(img, geom, (o, r, g, b) => {
    out[outOffset + o] = nr[r];
    out[outOffset + plane + o] = ng[g];
    out[outOffset + 2 * plane + o] = nb[b];
  });
}

/** The two passes over the crop; `emit(pixelIndex, r, g, b)` receives each output pixel in row-major order. */
function resample(img: RgbImage, geom: ClassifyGeometry, emit: (o: number, r: number, g: number, b: number) => void): void {
  const { width: sw, height: sh, data } = img;
  if (sw !== geom.srcWidth || sh !== geom.srcHeight) throw new RangeError(`image is ${sw}×${sh}, the geometry expects ${geom.srcWidth}×${geom.srcHeight}`);
  if (data.length < sw * sh * 3) throw new RangeError(`image holds ${data.length} bytes, ${sw}×${sh} RGB needs ${sw * sh * 3}`);
  const S = geom.size;
  const xs = axisCoefficients(sw, geom.resizeWidth, geom.left, S);
  const ys = axisCoefficients(sh, geom.resizeHeight, geom.top, S);
  // Source rows the vertical taps read: the horizontal pass runs on these only.
  const row0 = ys.first[0];
  const row1 = ys.first[S - 1] + ys.count[S - 1];
  const rows = scratchBytes((row1 - row0) * S * 3);
  const half = 1 << (PRECISION_BITS - 1);
  for (let y = row0; y < row1; y++) {
    const src = y * sw * 3;
    let o = (y - row0) * S * 3;
    for (let x = 0; x < S; x++, o += 3) {
      let r = half, g = half, b = half;
      const w0 = x * xs.ksize;
      for (let t = 0, s = src + 3 * xs.first[x]; t < xs.count[x]; t++, s += 3) {
        const w = xs.weights[w0 + t];
        r += data[s] * w;
        g += data[s + 1] * w;
        b += data[s + 2] * w;
      }
      rows[o] = clip8(r);
      rows[o + 1] = clip8(g);
      rows[o + 2] = clip8(b);
    }
  }
  const stride = S * 3;
  for (let y = 0; y < S; y++) {
    const w0 = y * ys.ksize;
    const base = (ys.first[y] - row0) * stride;
    const n = ys.count[y];
    for (let x = 0; x < S; x++) {
      let r = half, g = half, b = half;
      for (let t = 0, s = base + 3 * x; t < n; t++, s += stride) {
        const w = ys.weights[w0 + t];
        r += rows[s] * w;
        g += rows[s + 1] * w;
        b += rows[s + 2] * w;
      }
      emit(y * S + x, clip8(r), clip8(g), clip8(b));
    }
  }
}
