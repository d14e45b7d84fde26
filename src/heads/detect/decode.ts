import { type Detections, emptyDetections, scoreOrder } from './detections.js';

/**
 * Candidate boxes from a LeYOLO/ultralytics detect output `[B, 4 + nc, N]` (specs/models-b.md §1):
 * rows cx, cy, w, h (input pixels) then nc sigmoid scores, anchors contiguous within a row.
 * Matches ultralytics 8.1.4 `non_max_suppression` up to the NMS call, for predict (multi_label False):
 * keep anchors whose best class score is > conf, class = argmax, xywh → xyxy, at most `maxCandidates`
 * (max_nms) by score. Output is sorted by score, highest first, ties by anchor index.
 */
export function candidatesFromOutput(
  out: Float32Array,
  numClasses: number,
  numAnchors: number,
  conf: number,
  batchIndex = 0,
  maxCandidates = 30000,
): Detections {
  const rows = 4 + numClasses;
  const base = batchIndex * rows * numAnchors;
  if (!(numClasses >= 1 && numAnchors >= 0 && batchIndex >= 0) || out.length < base + rows * numAnchors) {
    throw new RangeError(
      `detect output of ${out.length} floats is too short for batch ${batchIndex} of [B, ${rows}, ${numAnchors}]`,
    );
  }
  // torch compares a float32 tensor with a Python float in float32.
  const threshold = Math.fround(conf);

  // One pass over the class rows, each read contiguously: running max and first argmax per anchor.
  // Float64 scratch holds the float32 scores exactly and skips a conversion per store (~1.6× faster).
  const best = new Float64Array(numAnchors).fill(-Infinity);
  const bestClass = new Int32Array(numAnchors);
  for (let c = 0; c < numClasses; c++) {
    const row = base + (4 + c) * numAnchors;
    for (let a = 0; a < numAnchors; a++) {
      const v = out[row + a];
      // `v !== v`: torch's max propagates NaN, and NaN never passes the threshold.
      if (v > best[a] || v !== v) {
        best[a] = v;
        bestClass[a] = c;
      }
    }
  }

  let n = 0;
  const kept = new Uint32Array(numAnchors);
  for (let a = 0; a < numAnchors; a++) if (best[a] > threshold) kept[n++] = a;
  if (n === 0) return emptyDetections();
  const order = scoreOrder(best, kept.subarray(0, n));
  const count = Math.min(n, Math.max(0, maxCandidates));

  const boxes = new Float32Array(count * 4);
  const scores = new Float32Array(count);
  const classIds = new Int32Array(count);
  for (let k = 0; k < count; k++) {
    const a = order[k];
    const cx = out[base + a];
    const cy = out[base + numAnchors + a];
    const halfW = out[base + 2 * numAnchors + a] / 2;
    const halfH = out[base + 3 * numAnchors + a] / 2;
    // Float32 operands, one rounding on store: the same bits as torch's float32 xywh2xyxy.
    boxes[k * 4] = cx - halfW;
    boxes[k * 4 + 1] = cy - halfH;
    boxes[k * 4 + 2] = cx + halfW;
    boxes[k * 4 + 3] = cy + halfH;
    scores[k] = best[a];
    classIds[k] = bestClass[a];
  }
  return { boxes, scores, classIds };
}
