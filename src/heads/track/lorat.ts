/**
 * LoRAT's single-object tracking head (specs/models-a.md §1 "Tracking pipeline"): the Hann-window
 * peak search of `components/post_process/box_with_score_map.py`, the box mapped back through the
 * search crop, and the tracker state of the one-stream pipeline with the simple search-region
 * provider (`siamfc_search_region_cropping_params_provider/simple.py`). Pure typed arrays: the
 * caller crops (pipeline/crop.ts), runs the graph and hands the two outputs here.
 */
import {
  type Box,
  type CropParams,
  type Size,
  cropGeometry,
  cropParams,
  cropToImage,
  foregroundMask,
} from '../../pipeline/crop.js';

/** Crop sizes and factors of one LoRAT variant (config/LoRAT/<variant>/config.yaml, run.yaml). */
export interface LoratGeometry {
  readonly templateSize: number;
  readonly searchSize: number;
  /** Feature map side of the template and the search crop (patch 14). */
  readonly templateFeat: number;
  readonly searchFeat: number;
  /** Always 2 (run.yaml data.eval.transform.template_area_factor). */
  readonly templateAreaFactor: number;
  readonly searchAreaFactor: number;
  /** run.yaml search_region_cropping.min_object_size. */
  readonly minObjectSize: number;
  /** run.yaml post_process.window_penalty. */
  readonly windowPenalty: number;
}

export const LORAT_224: LoratGeometry = {
  templateSize: 112,
  searchSize: 224,
  templateFeat: 8,
  searchFeat: 16,
  templateAreaFactor: 2,
  searchAreaFactor: 4,
  minObjectSize: 10,
  windowPenalty: 0.45,
};

/** The 378 variants: search area factor 5 (config/LoRAT/_mixin/_378.yaml). */
export const LORAT_378: LoratGeometry = { ...LORAT_224, templateSize: 196, searchSize: 378, templateFeat: 14, searchFeat: 27, searchAreaFactor: 5 };

/**
 * `torch.hann_window(n, periodic=False)`: 0.5 − 0.5·cos(2πk/(n − 1)), [1] for n = 1, in float32 and
 * in torch's order of operations (arange · float(2π/(n−1)), cos, · −0.5, + 0.5). That order makes the
 * window slightly asymmetric (at n = 16, w[7] > w[8] by one ulp), which breaks ties in the peak
 * search the way the official tracker does; these are torch 1.13's values bit for bit at n = 16.
 */
export function hannWindow(n: number): Float32Array {
  if (!(Number.isInteger(n) && n >= 1)) throw new RangeError(`window length must be a positive integer, got ${n}`);
  const w = new Float32Array(n);
  if (n === 1) return w.fill(1);
  const f = Math.fround;
  const step = f((Math.PI * 2) / (n - 1));
  for (let k = 0; k < n; k++) w[k] = f(f(Math.cos(f(k * step))) * -0.5) + 0.5;
  return w;
}

const windows = new Map<string, Float32Array>();
/** `torch.outer(hann(h), hann(w))` flattened row-major, float32; built once per size. */
export function hannWindow2d(h: number, w: number): Float32Array {
  const key = `${h}x${w}`;
  let win = windows.get(key);
  if (win === undefined) {
    const wy = hannWindow(h), wx = hannWindow(w);
    win = new Float32Array(h * w);
    for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) win[i * w + j] = wy[i] * wx[j];
    windows.set(key, win);
  }
  return win;
}

export interface TrackResult {
  /** [x1, y1, x2, y2] in image pixels, clipped to the image (possibly empty when the box left it). */
  box: [number, number, number, number];
  /** sigmoid(logit) at the chosen cell, without the window penalty. */
  score: number;
  /** Row-major index of the chosen cell of the score map. */
  index: number;
}

/**
 * Decode one search crop: `scoreLogits` [h·w] raw logits, `boxes` [h·w·4] xyxy normalised to the crop
 * (the head's outputs for one batch item, h = w = searchFeat). The cell is the first argmax of
 * s·(1 − penalty) + window·penalty with s = sigmoid(logit), all in float32 as torch computes it;
 * its box is scaled to crop pixels (float32), mapped back through the adjusted crop `params` and
 * clipped to `imageSize`.
 */
export function decodeSearch(
  scoreLogits: Float32Array,
  boxes: Float32Array,
  params: CropParams,
  imageSize: Size,
  windowPenalty = LORAT_224.windowPenalty,
  searchSize: Size = [LORAT_224.searchSize, LORAT_224.searchSize],
): TrackResult {
  const n = scoreLogits.length;
  const side = Math.round(Math.sqrt(n));
  if (n === 0 || side * side !== n) throw new RangeError(`score map of ${n} cells is not square`);
  if (boxes.length < 4 * n) throw new RangeError(`boxes hold ${boxes.length} floats, a ${side}x${side} map needs ${4 * n}`);
  const f = Math.fround;
  const win = hannWindow2d(side, side);
  const keep = f(1 - windowPenalty), pen = f(windowPenalty);
  let best = -Infinity, index = 0;
  for (let i = 0; i < n; i++) {
    const v = f(f(sigmoid(scoreLogits[i]) * keep) + f(win[i] * pen));
    // torch.max: the first maximum; a NaN wins and stops the search.
    if (v !== v) {
      index = i;
      break;
    }
    if (v > best) (best = v), (index = i);
  }
  const k = 4 * index;
  const crop: Box = [
    f(boxes[k] * searchSize[0]),
    f(boxes[k + 1] * searchSize[1]),
    f(boxes[k + 2] * searchSize[0]),
    f(boxes[k + 3] * searchSize[1]),
  ];
  const [x1, y1, x2, y2] = cropToImage(crop, params);
  const [w, h] = imageSize;
  return { box: [clamp(x1, w), clamp(y1, h), clamp(x2, w), clamp(y2, h)], score: sigmoid(scoreLogits[index]), index };
}

/**
 * torch's float32 sigmoid, 1 / (1 + exp(−x)) rounded at each step. torch's own exp (SLEEF on CPU) is
 * within 1 ulp of the exact one, so this can differ from it by an ulp.
 */
function sigmoid(x: number): number {
  const f = Math.fround;
  return f(1 / f(1 + f(Math.exp(-x))));
}
const clamp = (v: number, hi: number): number => (v < 0 ? 0 : v > hi ? hi : v);

/** x1 < x2, y1 < y2, all finite (bbox_is_valid). */
function isValidBox(b: Box): boolean {
  return b.every(Number.isFinite) && b[0] < b[2] && b[1] < b[3];
}

export interface TemplateSetup {
  /** Params to crop the template with (`cropInto(frame, params, [templateSize]², means, …)`). */
  readonly params: CropParams;
  /** The adjusted params that crop will return, from the frame size alone. */
  readonly adjusted: CropParams;
  /** `z_feat_mask`, [templateFeat²] int64. */
  readonly mask: BigInt64Array;
}

/**
 * One tracked object. `init` takes the first frame's box; each frame then crops with
 * `searchParams()`, decodes with `decodeSearch` and calls `update`. The state is the last accepted
 * box and the first frame's channel means (padding for every crop). No confidence threshold and no
 * template update, as in the official evaluation pipeline.
 */
export class SingleObjectTracker {
  private box: [number, number, number, number] | undefined;
  private means: readonly [number, number, number] = [0, 0, 0];
  private frameSize: Size = [0, 0];

  constructor(readonly geometry: LoratGeometry = LORAT_224) {}

  get initialized(): boolean {
    return this.box !== undefined;
  }

  /** The last accepted box, image pixels. */
  get lastBox(): Box | undefined {
    return this.box;
  }

  /** The first frame's per-channel means (0–255): the padding value for every crop of this object. */
  get padMean(): readonly [number, number, number] {
    return this.means;
  }

  /**
   * Start (or restart) on `box` in a frame of `imageSize` whose channel means are `templateMeans`.
   * Returns the template crop params, the adjusted params and the foreground mask.
   */
  init(imageSize: Size, box: Box, templateMeans: readonly [number, number, number]): TemplateSetup {
    if (!isValidBox(box)) throw new RangeError(`initial box [${box.join(', ')}] needs x1 < x2 and y1 < y2`);
    if (!(imageSize[0] > 0 && imageSize[1] > 0)) throw new RangeError(`image size ${imageSize[0]}x${imageSize[1]} is empty`);
    const g = this.geometry;
    const size: Size = [g.templateSize, g.templateSize];
    const params = cropParams(box, g.templateAreaFactor, size);
    const { params: adjusted } = cropGeometry(imageSize, params, size);
    const mask = foregroundMask(box, adjusted, size, [g.templateFeat, g.templateFeat]);
    this.box = [box[0], box[1], box[2], box[3]];
    this.frameSize = [imageSize[0], imageSize[1]];
    this.means = [templateMeans[0], templateMeans[1], templateMeans[2]];
    return { params, adjusted, mask };
  }

  /** Search crop params for the next frame: centred on the last box, w and h at least minObjectSize. */
  searchParams(): CropParams {
    if (this.box === undefined) throw new Error('the tracker has no box yet: call init first');
    const g = this.geometry;
    return cropParams(this.box, g.searchAreaFactor, [g.searchSize, g.searchSize], g.minObjectSize);
  }

  /**
   * Take a decoded frame: the state moves to its box when, clipped to the frame (`imageSize`, by
   * default the first frame's size), the box is valid, which for a clipped box is the same as
   * overlapping the image. Any score is accepted. Returns whether the state moved.
   */
  update(result: { readonly box: Box }, imageSize: Size = this.frameSize): boolean {
    if (this.box === undefined) throw new Error('the tracker has no box yet: call init first');
    const [w, h] = imageSize;
    const r = result.box;
    const b: Box = [clamp(r[0], w), clamp(r[1], h), clamp(r[2], w), clamp(r[3], h)];
    if (!isValidBox(b)) return false;
    this.box = [b[0], b[1], b[2], b[3]];
    return true;
  }
}
