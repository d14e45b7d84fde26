/**
 * The classify head: logits → the k most probable classes, softmax probabilities. Pure typed arrays;
 * names are attached at the edge (the route) from `IMAGENET1K` or a model's own labels.
 */
import labels from './imagenet.json' with { type: 'json' };

/** ImageNet-1k class names by class id (torchvision's `_IMAGENET_CATEGORIES`; scripts/make-imagenet-labels.py). */
export const IMAGENET1K: readonly string[] = labels;

export interface TopK {
  readonly classIds: Int32Array;
  /** Softmax probabilities over all classes, of the classes in `classIds`. */
  readonly scores: Float32Array;
}

/**
 * The `k` classes with the highest logits, best first; ties keep the lower class id first (a stable
 * order). Probabilities are softmax(logits) computed with the max subtracted, in float64.
 * `offset` picks one row of a batched [B, classes] array; `classes` is the row length.
 */
export function topK(logits: ArrayLike<number>, k: number, classes = logits.length, offset = 0): TopK {
  if (!(Number.isInteger(k) && k >= 1)) throw new RangeError(`k must be a positive integer, got ${k}`);
  const n = Math.min(k, classes);
  let max = -Infinity;
  for (let i = 0; i < classes; i++) max = Math.max(max, logits[offset + i]);
  let sum = 0;
  for (let i = 0; i < classes; i++) sum += Math.exp(logits[offset + i] - max);
  // Insertion into a sorted list of n: k is small (≤ the class count, typically 5).
  const ids = new Int32Array(n);
  const vals = new Float64Array(n).fill(-Infinity);
  let filled = 0;
  for (let i = 0; i < classes; i++) {
    const v = logits[offset + i];
    if (filled === n && !(v > vals[n - 1])) continue;
    let j = filled < n ? filled++ : n - 1;
    while (j > 0 && v > vals[j - 1]) {
      vals[j] = vals[j - 1];
      ids[j] = ids[j - 1];
      j--;
    }
    vals[j] = v;
    ids[j] = i;
  }
  const scores = Float32Array.from(vals, (v) => Math.exp(v - max) / sum);
  return { classIds: ids, scores };
}
