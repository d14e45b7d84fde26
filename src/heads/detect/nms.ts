import { type Detections, detectionCount, scoreOrder, selectDetections } from './detections.js';

/**
 * Class-aware greedy NMS, equivalent to torchvision `batched_nms` as ultralytics 8.1.4 calls it
 * (it offsets boxes by class × 7680 so that classes never overlap; here suppression is simply per class).
 * Boxes are visited by score, highest first (ties: lower index first, torchvision's stable sort); a box is
 * dropped when its IoU with an already kept box of its class is > `iou`. Areas are (x2−x1)·(y2−y1), no +1.
 * Returns at most `maxDet` rows sorted by score.
 */
export function nms(d: Detections, iou: number, maxDet: number): Detections {
  const n = detectionCount(d);
  const b = d.boxes;
  const areas = new Float64Array(n);
  for (let i = 0; i < n; i++) areas[i] = (b[i * 4 + 2] - b[i * 4]) * (b[i * 4 + 3] - b[i * 4 + 1]);

  const order = scoreOrder(d.scores);
  const limit = Math.max(0, maxDet);
  const keep = new Uint32Array(Math.min(n, limit));
  // Kept rows per class: a candidate is only ever compared with kept boxes of its own class.
  const keptByClass = new Map<number, number[]>();
  let count = 0;
  for (let k = 0; k < n && count < limit; k++) {
    const i = order[k];
    let kept = keptByClass.get(d.classIds[i]);
    if (kept === undefined) {
      kept = [];
      keptByClass.set(d.classIds[i], kept);
    }
    if (overlapsAny(b, areas, i, kept, iou)) continue;
    kept.push(i);
    keep[count++] = i;
  }
  return selectDetections(d, keep, count);
}

/** Whether box i has IoU > iou with any of `kept` (torchvision's overlap test; 0/0 is NaN and never suppresses). */
function overlapsAny(b: Float32Array, areas: Float64Array, i: number, kept: number[], iou: number): boolean {
  const x1 = b[i * 4];
  const y1 = b[i * 4 + 1];
  const x2 = b[i * 4 + 2];
  const y2 = b[i * 4 + 3];
  const area = areas[i];
  for (let m = 0; m < kept.length; m++) {
    const j = kept[m];
    const w = Math.max(0, Math.min(x2, b[j * 4 + 2]) - Math.max(x1, b[j * 4]));
    const h = Math.max(0, Math.min(y2, b[j * 4 + 3]) - Math.max(y1, b[j * 4 + 1]));
    const inter = w * h;
    if (inter / (area + areas[j] - inter) > iou) return true;
  }
  return false;
}
