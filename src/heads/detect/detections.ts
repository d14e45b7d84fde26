/**
 * One typed value for detections (supervision's `Detections`): parallel arrays, boxes as
 * `[x1, y1, x2, y2]` per row. Every detect utility takes and returns this.
 */
export interface Detections {
  /** n×4, xyxy. */
  readonly boxes: Float32Array;
  readonly scores: Float32Array;
  readonly classIds: Int32Array;
  readonly trackIds?: Int32Array;
}

export function emptyDetections(): Detections {
  return { boxes: new Float32Array(0), scores: new Float32Array(0), classIds: new Int32Array(0) };
}

export function detectionCount(d: Detections): number {
  return d.scores.length;
}

/**
 * The rows `order[0..count)` of `d`, in that order, as a new value (copies, so callers may mutate it).
 * Track ids travel with their rows when present.
 */
export function selectDetections(d: Detections, order: ArrayLike<number>, count = order.length): Detections {
  const boxes = new Float32Array(count * 4);
  const scores = new Float32Array(count);
  const classIds = new Int32Array(count);
  const trackIds = d.trackIds ? new Int32Array(count) : undefined;
  for (let k = 0; k < count; k++) {
    const i = order[k];
    boxes[k * 4] = d.boxes[i * 4];
    boxes[k * 4 + 1] = d.boxes[i * 4 + 1];
    boxes[k * 4 + 2] = d.boxes[i * 4 + 2];
    boxes[k * 4 + 3] = d.boxes[i * 4 + 3];
    scores[k] = d.scores[i];
    classIds[k] = d.classIds[i];
    if (trackIds && d.trackIds) trackIds[k] = d.trackIds[i];
  }
  return trackIds ? { boxes, scores, classIds, trackIds } : { boxes, scores, classIds };
}

/** Row indices sorted by score, highest first; ties keep the lower index first (torchvision's stable sort). */
export function scoreOrder(scores: Float32Array | Float64Array, rows: Uint32Array = identityRows(scores.length)): Uint32Array {
  return rows.sort((a, b) => scores[b] - scores[a] || a - b);
}

function identityRows(n: number): Uint32Array {
  const rows = new Uint32Array(n);
  for (let i = 0; i < n; i++) rows[i] = i;
  return rows;
}
