import type { Letterbox } from '../../pipeline/letterbox.js';
import { candidatesFromOutput } from './decode.js';
import { type Detections, detectionCount } from './detections.js';
import { nms } from './nms.js';
import { scaleBoxes } from './scale.js';

export { candidatesFromOutput } from './decode.js';
export { type Detections, detectionCount, emptyDetections, scoreOrder, selectDetections } from './detections.js';
export { COCO80 } from './labels.js';
export { nms } from './nms.js';
export { letterboxBoxes, scaleBoxes } from './scale.js';

export interface DetectOptions {
  conf: number;
  iou: number;
  maxDet: number;
}

/** ultralytics 8.1.4 predict defaults (specs/models-b.md §1). */
export const DEFAULT_DETECT_OPTIONS: Readonly<DetectOptions> = Object.freeze({ conf: 0.25, iou: 0.7, maxDet: 300 });

/** Detections in original-image pixels from one image's `[B, 4 + nc, N]` output. */
export function postprocessDetect(
  out: Float32Array,
  dims: { numClasses: number; numAnchors: number },
  geom: Letterbox,
  opts: DetectOptions,
  batchIndex = 0,
): Detections {
  const candidates = candidatesFromOutput(out, dims.numClasses, dims.numAnchors, opts.conf, batchIndex);
  return scaleBoxes(nms(candidates, opts.iou, opts.maxDet), geom);
}

export interface DetectionJson {
  box: [number, number, number, number];
  score: number;
  classId: number;
  label: string;
  trackId?: number;
}

/** The JSON form of detections, made here only: boxes to 2 decimals, scores to 4. */
export function toJson(d: Detections, labels: readonly string[]): DetectionJson[] {
  const result: DetectionJson[] = [];
  for (let i = 0; i < detectionCount(d); i++) {
    const b = d.boxes;
    const classId = d.classIds[i];
    const item: DetectionJson = {
      box: [round(b[i * 4], 2), round(b[i * 4 + 1], 2), round(b[i * 4 + 2], 2), round(b[i * 4 + 3], 2)],
      score: round(d.scores[i], 4),
      classId,
      label: labels[classId] ?? String(classId),
    };
    if (d.trackIds) item.trackId = d.trackIds[i];
    result.push(item);
  }
  return result;
}

function round(v: number, decimals: number): number {
  const f = 10 ** decimals;
  // `+ 0` turns -0 (a tiny negative rounded) into 0, which Object.is and deep equality tell apart.
  return Math.round(v * f) / f + 0;
}
