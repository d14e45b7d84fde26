/**
 * Fused pre-processing (DESIGN.md "Fused ops", item 2): one pass from packed RGB bytes to the
 * letterboxed NCHW float tensor. The resize reproduces OpenCV 4.x `cv2.resize(INTER_LINEAR)` on
 * CV_8UC3 bit for bit (modules/imgproc/src/resize.cpp, fixed-point path), because the models were
 * trained and validated on images that went through exactly that.
 */
import { LETTERBOX_PAD, type Letterbox } from './letterbox.js';
import type { RgbImage } from './decode.js';

/** OpenCV's fixed-point resize: coefficients are shorts scaled by 2^11. */
export const INTER_RESIZE_COEF_BITS = 11;
export const INTER_RESIZE_COEF_SCALE = 1 << INTER_RESIZE_COEF_BITS;

/** v / 255 as float32 division gives it (ultralytics: `im.float() / 255`). */
const UNIT = new Float32Array(256).map((_, v) => v / 255);
const PAD_VALUE = UNIT[LETTERBOX_PAD];

/**
 * Taps and weights for one source→destination size, as `resizeGeneric_` tabulates them, packed
 * four int32 per destination column / row: [offset of tap 0, offset of tap 1, weight 0, weight 1].
 * Offsets are in bytes of the packed RGB source (column·3, row·width·3), already clamped inside it.
 */
interface ResizeTable {
  readonly x: Int32Array;
  readonly y: Int32Array;
}

/** saturate_cast<short>(float): cvRound is lrintf, i.e. round half to even. */
function roundShort(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  const r = d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
  return Math.max(-32768, Math.min(32767, r));
}

/**
 * One axis of `resizeGeneric_`'s table. `clampWeights` is the x-axis behaviour: OpenCV resets
 * fx to 0 at the borders there, but on the y-axis it only clips the row indices and keeps the
 * weights (both taps then read the same row, and the two truncating shifts of the vertical pass
 * can give one less than a single full-weight tap).
 */
function axisTable(src: number, dst: number, stride: number, clampWeights: boolean): Int32Array {
  const scale = 1 / (dst / src); // resize(): inv_scale = (double)dsize/ssize; hal::resize: scale = 1./inv_scale
  const t = new Int32Array(4 * dst);
  for (let d = 0; d < dst; d++) {
    const f0 = Math.fround((d + 0.5) * scale - 0.5); // float fx = (float)((dx+0.5)*scale_x - 0.5)
    let s = Math.floor(f0);
    let f = Math.fround(f0 - s); // float arithmetic: fx -= sx
    if (clampWeights && s < 0) (s = 0), (f = 0);
    if (clampWeights && s >= src - 1) (s = src - 1), (f = 0);
    t[4 * d] = Math.min(Math.max(s, 0), src - 1) * stride;
    t[4 * d + 1] = Math.min(Math.max(s + 1, 0), src - 1) * stride;
    // Both weights are rounded independently from float cbuf[] = {1.f - fx, fx}, as OpenCV does.
    t[4 * d + 2] = roundShort(Math.fround(1 - f) * INTER_RESIZE_COEF_SCALE);
    t[4 * d + 3] = roundShort(f * INTER_RESIZE_COEF_SCALE);
  }
  return t;
}

const tableCache = new Map<string, ResizeTable>();
const TABLE_CACHE_SIZE = 32;

/** Tables for one geometry, built once: a stream sends the same frame size again and again. */
function resizeTable(sw: number, sh: number, dw: number, dh: number): ResizeTable {
  const key = `${sw}x${sh}>${dw}x${dh}`;
  let t = tableCache.get(key);
  if (t === undefined) {
    t = { x: axisTable(sw, dw, 3, true), y: axisTable(sh, dh, 3 * sw, false) };
    if (tableCache.size >= TABLE_CACHE_SIZE) tableCache.delete(tableCache.keys().next().value as string);
    tableCache.set(key, t);
  }
  return t;
}

/*
 * The linear kernels below fuse OpenCV's two passes per destination byte:
 *   HResizeLinear:  S = p0·a0 + p1·a1                      (per source row)
 *   VResizeLinear<uchar, int, short>:  ((b0·(S0>>4))>>16) + ((b1·(S1>>4))>>16) + 2) >> 2
 * Recomputing S per destination row costs less here than storing and reloading a row buffer.
 */

/** One destination row of the linear resize into packed RGB bytes at `o`. */
function linearRowU8(src: Uint8Array, x: Int32Array, y: Int32Array, dy: number, dst: Uint8Array, o: number): void {
  const k = 4 * dy;
  const r0 = y[k], r1 = y[k + 1], b0 = y[k + 2], b1 = y[k + 3];
  for (let i = 0; i < x.length; i += 4, o += 3) {
    const p0 = r0 + x[i], q0 = r0 + x[i + 1], p1 = r1 + x[i], q1 = r1 + x[i + 1];
    const a0 = x[i + 2], a1 = x[i + 3];
    dst[o] = (((b0 * ((src[p0] * a0 + src[q0] * a1) >> 4)) >> 16) + ((b1 * ((src[p1] * a0 + src[q1] * a1) >> 4)) >> 16) + 2) >> 2;
    dst[o + 1] = (((b0 * ((src[p0 + 1] * a0 + src[q0 + 1] * a1) >> 4)) >> 16) + ((b1 * ((src[p1 + 1] * a0 + src[q1 + 1] * a1) >> 4)) >> 16) + 2) >> 2;
    dst[o + 2] = (((b0 * ((src[p0 + 2] * a0 + src[q0 + 2] * a1) >> 4)) >> 16) + ((b1 * ((src[p1 + 2] * a0 + src[q1 + 2] * a1) >> 4)) >> 16) + 2) >> 2;
  }
}

/** The same row written as /255 floats into three planes `plane` apart, starting at `o`. */
function linearRowPlanar(src: Uint8Array, x: Int32Array, y: Int32Array, dy: number, out: Float32Array, o: number, plane: number): void {
  const k = 4 * dy;
  const r0 = y[k], r1 = y[k + 1], b0 = y[k + 2], b1 = y[k + 3];
  for (let i = 0; i < x.length; i += 4, o++) {
    const p0 = r0 + x[i], q0 = r0 + x[i + 1], p1 = r1 + x[i], q1 = r1 + x[i + 1];
    const a0 = x[i + 2], a1 = x[i + 3];
    out[o] = UNIT[(((b0 * ((src[p0] * a0 + src[q0] * a1) >> 4)) >> 16) + ((b1 * ((src[p1] * a0 + src[q1] * a1) >> 4)) >> 16) + 2) >> 2];
    out[o + plane] = UNIT[(((b0 * ((src[p0 + 1] * a0 + src[q0 + 1] * a1) >> 4)) >> 16) + ((b1 * ((src[p1 + 1] * a0 + src[q1 + 1] * a1) >> 4)) >> 16) + 2) >> 2];
    out[o + 2 * plane] = UNIT[(((b0 * ((src[p0 + 2] * a0 + src[q0 + 2] * a1) >> 4)) >> 16) + ((b1 * ((src[p1 + 2] * a0 + src[q1 + 2] * a1) >> 4)) >> 16) + 2) >> 2];
  }
}

/** OpenCV turns INTER_LINEAR into INTER_AREA when both axes shrink by exactly 2 (hal::resize). */
function isExactHalf(sw: number, sh: number, dw: number, dh: number): boolean {
  return 1 / (dw / sw) === 2 && 1 / (dh / sh) === 2;
}

/** ResizeAreaFastVec, cn == 3, scale 2: one destination row, each byte the 2×2 mean rounded half up. */
function halveRow(src: Uint8Array, sw: number, dw: number, dy: number, dst: Uint8Array, o: number): void {
  const s0 = 2 * dy * sw * 3;
  const s1 = s0 + sw * 3;
  for (let x = 0, k = 0; x < dw; x++, k += 6, o += 3) {
    dst[o] = (src[s0 + k] + src[s0 + k + 3] + src[s1 + k] + src[s1 + k + 3] + 2) >> 2;
    dst[o + 1] = (src[s0 + k + 1] + src[s0 + k + 4] + src[s1 + k + 1] + src[s1 + k + 4] + 2) >> 2;
    dst[o + 2] = (src[s0 + k + 2] + src[s0 + k + 5] + src[s1 + k + 2] + src[s1 + k + 5] + 2) >> 2;
  }
}

/**
 * `cv2.resize(src, (dw, dh), interpolation=cv2.INTER_LINEAR)` for packed 3-channel uint8 images,
 * bit for bit (tested against OpenCV 4.3 compiled to wasm, whose scalar path the SIMD paths equal).
 */
export function resizeLinearU8(src: Uint8Array, sw: number, sh: number, dw: number, dh: number): Uint8Array {
  checkSizes(src, sw, sh, dw, dh);
  const dst = new Uint8Array(dw * dh * 3);
  if (sw === dw && sh === dh) dst.set(src.subarray(0, dst.length));
  else if (isExactHalf(sw, sh, dw, dh)) for (let dy = 0; dy < dh; dy++) halveRow(src, sw, dw, dy, dst, dy * dw * 3);
  else {
    const { x, y } = resizeTable(sw, sh, dw, dh);
    for (let dy = 0; dy < dh; dy++) linearRowU8(src, x, y, dy, dst, dy * dw * 3);
  }
  return dst;
}

function checkSizes(src: Uint8Array, sw: number, sh: number, dw: number, dh: number): void {
  if (!(sw > 0 && sh > 0 && dw > 0 && dh > 0)) throw new RangeError(`resize sizes must be positive: ${sw}x${sh} → ${dw}x${dh}`);
  if (src.length < sw * sh * 3) throw new RangeError(`source holds ${src.length} bytes, ${sw}x${sh} RGB needs ${sw * sh * 3}`);
}

/**
 * Letterbox `img` into `out` as a 1×3×H×W float tensor at `outOffset`: OpenCV INTER_LINEAR resize
 * to the unpadded size, pad 114, R,G,B planes, /255 — in one pass over the destination. Every
 * element of the tensor is written, so `out` can be reused across frames of any size.
 */
export function letterboxInto(img: RgbImage, geom: Letterbox, out: Float32Array, outOffset = 0): void {
  const { dstWidth: W, dstHeight: H, newWidth: nw, newHeight: nh, padLeft, padTop } = geom;
  if (img.width !== geom.srcWidth || img.height !== geom.srcHeight) {
    throw new RangeError(`image is ${img.width}x${img.height}, letterbox expects ${geom.srcWidth}x${geom.srcHeight}`);
  }
  const plane = W * H;
  if (out.length < outOffset + 3 * plane) throw new RangeError(`output holds ${out.length} floats, needs ${outOffset + 3 * plane}`);
  checkSizes(img.data, img.width, img.height, nw, nh);
  fillPads(out, outOffset, geom);
  const origin = outOffset + padTop * W + padLeft; // first image element of the R plane
  const toPlanes = (px: Uint8Array, s: number, dy: number): void => {
    for (let r = origin + dy * W, end = r + nw; r < end; r++, s += 3) {
      out[r] = UNIT[px[s]];
      out[r + plane] = UNIT[px[s + 1]];
      out[r + 2 * plane] = UNIT[px[s + 2]];
    }
  };
  if (nw === img.width && nh === img.height) {
    for (let dy = 0; dy < nh; dy++) toPlanes(img.data, dy * nw * 3, dy);
  } else if (isExactHalf(img.width, img.height, nw, nh)) {
    const row = scratchRow(nw * 3);
    for (let dy = 0; dy < nh; dy++) halveRow(img.data, img.width, nw, dy, row, 0), toPlanes(row, 0, dy);
  } else {
    const { x, y } = resizeTable(img.width, img.height, nw, nh);
    for (let dy = 0; dy < nh; dy++) linearRowPlanar(img.data, x, y, dy, out, origin + dy * W, plane);
  }
}

let scratch = new Uint8Array(0);
/** One reusable row of bytes for the 2× path, so a frame allocates nothing. */
function scratchRow(n: number): Uint8Array {
  if (scratch.length < n) scratch = new Uint8Array(n);
  return scratch;
}

/** Pad value on every element outside the image region: top and bottom bands, left and right strips. */
function fillPads(out: Float32Array, offset: number, g: Letterbox): void {
  const { dstWidth: W, dstHeight: H, newWidth: nw, newHeight: nh, padLeft, padTop } = g;
  const right = W - padLeft - nw;
  for (let c = 0; c < 3; c++) {
    const p = offset + c * W * H;
    out.fill(PAD_VALUE, p, p + padTop * W);
    out.fill(PAD_VALUE, p + (padTop + nh) * W, p + H * W);
    for (let y = padTop; y < padTop + nh; y++) {
      const row = p + y * W;
      if (padLeft > 0) out.fill(PAD_VALUE, row, row + padLeft);
      if (right > 0) out.fill(PAD_VALUE, row + padLeft + nw, row + W);
    }
  }
}
