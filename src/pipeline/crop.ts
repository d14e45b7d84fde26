/**
 * SiamFC crops for the LoRAT tracker (specs/models-a.md §1 "Tracking pipeline"), as the official
 * code computes them: the crop geometry of `trackit/core/utils/siamfc_cropping.py` and the
 * pixel-aligned resampling of `trackit/core/operator/scale_and_translate.py` (the image rectangle
 * mapped into the crop, clipped, rasterised, mapped back to whole source pixels and resized there
 * with bilinear, align_corners=False, as `F.interpolate`), fused with the ImageNet normalisation
 * into one pass over the destination, like `letterboxInto` (DESIGN.md "Fused ops", item 2).
 *
 * A crop point is `p_crop = p_img · scale + translation`, per axis. Boxes are [x1, y1, x2, y2] in
 * float pixels; sizes are [width, height].
 */
import type { RgbImage } from './decode.js';

export type Box = readonly [number, number, number, number];
/** [width, height]. */
export type Size = readonly [number, number];

/** `p_crop = p_img · scale + translation`, per axis (the official params are (2, 2): scale row, translation row). */
export interface CropParams {
  readonly scaleX: number;
  readonly scaleY: number;
  readonly translateX: number;
  readonly translateY: number;
}

/** timm IMAGENET_DEFAULT_MEAN / _STD, applied to pixels / 255 (`trackit/core/transforms/dataset_norm_stats.py`). */
export const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
export const IMAGENET_STD = [0.229, 0.224, 0.225] as const;

/** bbox_rasterize's eps: x2, y2 become floor(x + 1 − 1e-4), end-exclusive. */
const RASTER_EPS = 1e-4;

/**
 * The SiamFC crop of `box` at context `areaFactor` into an `outSize` crop: area = wh + (f − 1)(w + h)/2,
 * one scale sqrt(outW·outH / (area_w·area_h)) for both axes, the box centre onto the crop centre.
 * `minObjectSize` is the search-region provider's clamp (w, h ≥ it, about the same centre;
 * `siamfc_search_region_cropping_params_provider/simple.py`); the template crop has none.
 */
export function cropParams(box: Box, areaFactor: number, outSize: Size, minObjectSize?: number | Size): CropParams {
  let [x1, y1, x2, y2] = box;
  if (minObjectSize !== undefined) {
    // Through centre/size and back, as _adjust_bbox_size does even when nothing is clamped.
    const [minW, minH] = typeof minObjectSize === 'number' ? [minObjectSize, minObjectSize] : minObjectSize;
    const cx = (x1 + x2) / 2, cy = (y1 + y2) / 2;
    const w = Math.max(x2 - x1, minW), h = Math.max(y2 - y1, minH);
    [x1, y1, x2, y2] = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2];
  }
  const w = x2 - x1, h = y2 - y1;
  const context = (areaFactor - 1) * ((w + h) * 0.5);
  const scale = Math.sqrt((outSize[0] * outSize[1]) / ((w + context) * (h + context)));
  if (!(Number.isFinite(scale) && scale > 0)) {
    throw new RangeError(`box [${box.join(', ')}] gives no finite crop scale (area factor ${areaFactor})`);
  }
  return {
    scaleX: scale,
    scaleY: scale,
    translateX: outSize[0] / 2 - (x1 + x2) * 0.5 * scale,
    translateY: outSize[1] / 2 - (y1 + y2) * 0.5 * scale,
  };
}

/** The inverse mapping as reverse_scale_and_translation_parameters writes it: (1/s, −t/s). */
function inverse(p: CropParams): CropParams {
  return {
    scaleX: 1 / p.scaleX,
    scaleY: 1 / p.scaleY,
    translateX: -p.translateX / p.scaleX,
    translateY: -p.translateY / p.scaleY,
  };
}

function apply(b: Box, p: CropParams): [number, number, number, number] {
  return [b[0] * p.scaleX + p.translateX, b[1] * p.scaleY + p.translateY, b[2] * p.scaleX + p.translateX, b[3] * p.scaleY + p.translateY];
}

/** A box from image pixels into crop pixels (apply_siamfc_cropping_to_boxes). */
export function imageToCrop(box: Box, params: CropParams): [number, number, number, number] {
  return apply(box, params);
}

/** A box from crop pixels back into image pixels, through the reversed params as the official pipeline does. */
export function cropToImage(box: Box, params: CropParams): [number, number, number, number] {
  return apply(box, inverse(params));
}

/** bbox_rasterize_: floor(x1, y1), floor(x2 + 1 − eps, y2 + 1 − eps), end-exclusive. */
function rasterize(b: Box): [number, number, number, number] {
  return [Math.floor(b[0]), Math.floor(b[1]), Math.floor(b[2] + (1 - RASTER_EPS)), Math.floor(b[3] + (1 - RASTER_EPS))];
}

const clamp = (v: number, hi: number): number => (v < 0 ? 0 : v > hi ? hi : v); // np.clip(v, 0, hi); NaN stays NaN

function clip(b: Box, size: Size): [number, number, number, number] {
  return [clamp(b[0], size[0]), clamp(b[1], size[1]), clamp(b[2], size[0]), clamp(b[3], size[1])];
}

export interface CropGeometry {
  /** Whole destination pixels [x1, y1, x2, y2), end-exclusive, that receive image content. */
  readonly dst: Box;
  /** Whole source pixels [x1, y1, x2, y2), end-exclusive, resized onto `dst`. */
  readonly src: Box;
  /** The rasterisation-corrected params that map `src` exactly onto `dst`; use them for every box. */
  readonly params: CropParams;
  /** False when the image does not reach into the crop: all padding, and `params` are the requested ones. */
  readonly valid: boolean;
}

/**
 * The pixel-aligned rectangles of scale_and_translate for an image of `imageSize`, with the adjusted
 * params it returns. Those are computed in float32 there (`.float()` on the integer rectangles), so
 * they are float32 values here too. The destination rectangle is clipped then rasterised, the source
 * rectangle rasterised then clipped, in that order, as the official code does.
 */
export function cropGeometry(imageSize: Size, params: CropParams, outSize: Size): CropGeometry {
  const [w, h] = imageSize;
  const dst = rasterize(clip(apply([0, 0, w, h], params), outSize));
  const src = clip(rasterize(apply(dst, inverse(params))), imageSize);
  const finite = dst.every(Number.isFinite) && src.every(Number.isFinite);
  // The official code checks only dst; an empty src (which F.interpolate would refuse) cannot follow
  // from a non-empty dst unless the params are degenerate, and is treated as no overlap.
  if (!(finite && dst[0] < dst[2] && dst[1] < dst[3] && src[0] < src[2] && src[1] < src[3])) {
    return { dst: [0, 0, 0, 0], src: [0, 0, 0, 0], params, valid: false };
  }
  const f = Math.fround;
  const scaleX = f((dst[2] - dst[0]) / (src[2] - src[0]));
  const scaleY = f((dst[3] - dst[1]) / (src[3] - src[1]));
  const adjusted = { scaleX, scaleY, translateX: f(dst[0] - f(src[0] * scaleX)), translateY: f(dst[1] - f(src[1] * scaleY)) };
  return { dst, src, params: adjusted, valid: true };
}

/**
 * Per-channel mean of the frame in the 0–255 domain (`torch.mean(image, dim=(-2, -1))` on the float
 * image): the padding value of every crop of the stream. Sums in float64; the result is rounded to
 * float32, the dtype the official mean has.
 */
export function imageChannelMeans(img: RgbImage): [number, number, number] {
  const n = img.width * img.height;
  if (!(n > 0) || img.data.length < 3 * n) throw new RangeError(`image ${img.width}x${img.height} holds ${img.data.length} bytes`);
  const d = img.data;
  let r = 0, g = 0, b = 0;
  for (let i = 0, end = 3 * n; i < end; i += 3) {
    r += d[i];
    g += d[i + 1];
    b += d[i + 2];
  }
  return [Math.fround(r / n), Math.fround(g / n), Math.fround(b / n)];
}

/**
 * Taps of `F.interpolate(mode='bilinear', align_corners=False)` on one axis, `srcLen` → `dstLen`:
 * per destination index, two source indices (times `stride`, plus `base`) and their weights. The
 * source coordinate is computed in float32 as ATen does (area_pixel_compute_source_index with the
 * float ratio in/out), negative coordinates clamp to 0, and the upper tap stays on the last pixel.
 */
function linearTaps(srcLen: number, dstLen: number, base: number, stride: number, idx: Int32Array, wts: Float64Array): void {
  const f = Math.fround;
  const ratio = f(srcLen / dstLen);
  for (let d = 0; d < dstLen; d++) {
    let s = f(f(ratio * f(d + 0.5)) - 0.5);
    if (s < 0) s = 0;
    const i0 = Math.min(Math.floor(s), srcLen - 1);
    const l1 = Math.min(Math.max(f(s - i0), 0), 1);
    const i1 = i0 < srcLen - 1 ? i0 + 1 : i0;
    idx[2 * d] = base + i0 * stride;
    idx[2 * d + 1] = base + i1 * stride;
    wts[2 * d] = f(1 - l1);
    wts[2 * d + 1] = l1;
  }
}

let tapIdx = new Int32Array(0);
let tapWts = new Float64Array(0);
/** One reusable set of tap tables (x then y), so a frame allocates nothing but its result. */
function tapTables(n: number): [Int32Array, Float64Array] {
  if (tapIdx.length < n) (tapIdx = new Int32Array(n)), (tapWts = new Float64Array(n));
  return [tapIdx, tapWts];
}

/** (v/255 − mean)/std as v·NORM_SCALE + NORM_SHIFT per channel, in float64; one rounding on store. */
const NORM_SCALE = IMAGENET_STD.map((s) => 1 / (255 * s));
const NORM_SHIFT = IMAGENET_MEAN.map((m, c) => -m / IMAGENET_STD[c]);

/**
 * Crop `img` into `out` at `offset` as a 1×3×H×W float tensor (`outSize` = [W, H]): bilinear resample
 * of the pixel-aligned source rectangle, `padMean` (0–255, per channel) everywhere else, then
 * (v/255 − mean)/std per channel. Every element of the tensor is written. Returns the adjusted params.
 */
export function cropInto(
  img: RgbImage,
  params: CropParams,
  outSize: Size,
  padMean: readonly number[],
  out: Float32Array,
  offset = 0,
): CropParams {
  const [W, H] = outSize;
  if (!(Number.isInteger(W) && Number.isInteger(H) && W > 0 && H > 0)) throw new RangeError(`crop size must be positive integers: ${W}x${H}`);
  if (!(img.width > 0 && img.height > 0) || img.data.length < img.width * img.height * 3) {
    throw new RangeError(`image ${img.width}x${img.height} holds ${img.data.length} bytes`);
  }
  const plane = W * H;
  if (!(offset >= 0) || out.length < offset + 3 * plane) throw new RangeError(`output holds ${out.length} floats, needs ${offset + 3 * plane}`);
  if (padMean.length !== 3) throw new RangeError(`padding mean needs 3 channels, got ${padMean.length}`);

  const pads = padMean.map((m, c) => m * NORM_SCALE[c] + NORM_SHIFT[c]);
  const geom = cropGeometry([img.width, img.height], params, outSize);
  if (!geom.valid) {
    for (let c = 0; c < 3; c++) out.fill(pads[c], offset + c * plane, offset + (c + 1) * plane);
  } else {
    fillOutside(out, offset, W, H, geom.dst, pads);
    resampleInto(img, geom.src, geom.dst, W, plane, out, offset);
  }
  return geom.params;
}

/**
 * The bilinear resize of the `src` rectangle of `img` onto the `dst` rectangle of the crop (row
 * length W, planes `plane` apart), normalised, in one pass over the destination.
 */
function resampleInto(img: RgbImage, src: Box, dst: Box, W: number, plane: number, out: Float32Array, offset: number): void {
  const [ox1, oy1, ox2, oy2] = dst;
  const ow = ox2 - ox1, oh = oy2 - oy1;
  const [idx, wts] = tapTables(2 * (ow + oh));
  const rowBytes = 3 * img.width;
  linearTaps(src[2] - src[0], ow, 3 * src[0], 3, idx, wts);
  const yIdx = idx.subarray(2 * ow), yWts = wts.subarray(2 * ow);
  linearTaps(src[3] - src[1], oh, src[1] * rowBytes, rowBytes, yIdx, yWts);

  const px = img.data, plane2 = 2 * plane;
  const [k0, k1, k2] = NORM_SCALE, [b0, b1, b2] = NORM_SHIFT;
  for (let dy = 0; dy < oh; dy++) {
    const r0 = yIdx[2 * dy], r1 = yIdx[2 * dy + 1], wy0 = yWts[2 * dy], wy1 = yWts[2 * dy + 1];
    let o = offset + (oy1 + dy) * W + ox1;
    for (let k = 0, end = 2 * ow; k < end; k += 2, o++) {
      const c0 = idx[k], c1 = idx[k + 1];
      // The four corner weights once per pixel, shared by the three channels.
      const w00 = wts[k] * wy0, w01 = wts[k + 1] * wy0, w10 = wts[k] * wy1, w11 = wts[k + 1] * wy1;
      const p00 = r0 + c0, p01 = r0 + c1, p10 = r1 + c0, p11 = r1 + c1;
      out[o] = (px[p00] * w00 + px[p01] * w01 + px[p10] * w10 + px[p11] * w11) * k0 + b0;
      out[o + plane] = (px[p00 + 1] * w00 + px[p01 + 1] * w01 + px[p10 + 1] * w10 + px[p11 + 1] * w11) * k1 + b1;
      out[o + plane2] = (px[p00 + 2] * w00 + px[p01 + 2] * w01 + px[p10 + 2] * w10 + px[p11 + 2] * w11) * k2 + b2;
    }
  }
}

/** Padding on every element outside `dst`: bands above and below, strips left and right. */
function fillOutside(out: Float32Array, offset: number, W: number, H: number, dst: Box, pads: readonly number[]): void {
  const [x1, y1, x2, y2] = dst;
  for (let c = 0; c < 3; c++) {
    const p = offset + c * W * H, v = pads[c];
    out.fill(v, p, p + y1 * W);
    out.fill(v, p + y2 * W, p + H * W);
    for (let y = y1; y < y2; y++) {
      const row = p + y * W;
      if (x1 > 0) out.fill(v, row, row + x1);
      if (x2 < W) out.fill(v, row + x2, row + W);
    }
  }
}

/**
 * The template's foreground mask (`pipelines/utils/bbox_mask_gen.py` and the
 * template_foreground_indicating_mask_generation plugin): the box mapped into the template crop with
 * the adjusted params, divided by the stride (template size / feature size), rasterised (floor x1, y1;
 * floor(x2 + 1 − 1e-4), floor(y2 + 1 − 1e-4)), clipped to the feature map, 1 inside. Row-major
 * [featH·featW], int64 as the graph's `z_feat_mask` input takes it.
 */
export function foregroundMask(box: Box, templateParams: CropParams, templateSize: Size = [112, 112], featSize: Size = [8, 8]): BigInt64Array {
  const [fw, fh] = featSize;
  const sx = templateSize[0] / fw, sy = templateSize[1] / fh;
  const [bx1, by1, bx2, by2] = imageToCrop(box, templateParams);
  const [x1, y1, x2, y2] = clip(rasterize([bx1 / sx, by1 / sy, bx2 / sx, by2 / sy]), featSize);
  const mask = new BigInt64Array(fw * fh);
  // The official plugin asserts a non-empty mask; a NaN box leaves it all background here.
  for (let y = y1; y < y2; y++) mask.fill(1n, y * fw + x1, y * fw + Math.max(x1, x2));
  return mask;
}
