import type { Letterbox } from '../../pipeline/letterbox.js';
import { roundHalfEven } from '../../pipeline/letterbox.js';
import type { Detections } from './detections.js';

/**
 * Gain and padding as ultralytics 8.1.4 `ops.scale_boxes` recomputes them from the two shapes. The pad comes
 * from the unrounded resized size (src·gain), so it can differ from the letterbox's own pad by a pixel;
 * ultralytics uses this one to map boxes back, and so do we.
 */
function boxGeometry(geom: Letterbox): { gain: number; padX: number; padY: number } {
  const gain = Math.min(geom.dstHeight / geom.srcHeight, geom.dstWidth / geom.srcWidth);
  const padX = roundHalfEven((geom.dstWidth - geom.srcWidth * gain) / 2 - 0.1);
  const padY = roundHalfEven((geom.dstHeight - geom.srcHeight * gain) / 2 - 0.1);
  return { gain, padX, padY };
}

/** Boxes from model-input pixels to original-image pixels: subtract pad, divide by gain, clip to the image. */
export function scaleBoxes(d: Detections, geom: Letterbox): Detections {
  const { gain, padX, padY } = boxGeometry(geom);
  const src = d.boxes;
  const boxes = new Float32Array(src.length);
  for (let k = 0; k < src.length; k += 4) {
    boxes[k] = clamp((src[k] - padX) / gain, geom.srcWidth);
    boxes[k + 1] = clamp((src[k + 1] - padY) / gain, geom.srcHeight);
    boxes[k + 2] = clamp((src[k + 2] - padX) / gain, geom.srcWidth);
    boxes[k + 3] = clamp((src[k + 3] - padY) / gain, geom.srcHeight);
  }
  return withBoxes(d, boxes);
}

/** The inverse of `scaleBoxes` without clipping: original-image pixels to model-input pixels. */
export function letterboxBoxes(d: Detections, geom: Letterbox): Detections {
  const { gain, padX, padY } = boxGeometry(geom);
  const src = d.boxes;
  const boxes = new Float32Array(src.length);
  for (let k = 0; k < src.length; k += 4) {
    boxes[k] = src[k] * gain + padX;
    boxes[k + 1] = src[k + 1] * gain + padY;
    boxes[k + 2] = src[k + 2] * gain + padX;
    boxes[k + 3] = src[k + 3] * gain + padY;
  }
  return withBoxes(d, boxes);
}

function clamp(v: number, max: number): number {
  return v < 0 ? 0 : v > max ? max : v;
}

function withBoxes(d: Detections, boxes: Float32Array): Detections {
  const scores = d.scores.slice();
  const classIds = d.classIds.slice();
  return d.trackIds ? { boxes, scores, classIds, trackIds: d.trackIds.slice() } : { boxes, scores, classIds };
}
