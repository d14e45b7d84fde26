/**
 * Change-detection metrics as FSG-Net's eval computes them (specs/models-b.md §3, `eval.py` +
 * `utils/common.py` compute_p_r_f1_miou_oa): labels binarised with label > 0, TP/FP/FN/TN summed over
 * every pixel of every image (global counts, not a mean of per-image scores), then
 * P = TP/(TP+FP), R = TP/(TP+FN), F1 = 2PR/(P+R), IoU = TP/(TP+FP+FN) (the change class only),
 * OA = (TP+TN)/(TP+TN+FP+FN). Predictions are binarised the same way (argmax masks are 0/1).
 *
 * 0/0 convention (numpy gives NaN there): a ratio whose denominator is 0 is 1 when there was nothing
 * to get wrong — no change in the labels and none predicted (TP+FP+FN = 0), or no pixels at all —
 * and 0 otherwise (e.g. precision when nothing was predicted but change was there to find). So a
 * perfect prediction scores 1 everywhere, also on pairs without any change, and F1/IoU never reward
 * predicting nothing when something changed. F1 is computed as 2TP/(2TP+FP+FN), which equals
 * 2PR/(P+R) whenever that is defined and follows the same convention when it is not.
 */
export interface ConfusionCounts {
  tp: number;
  fp: number;
  fn: number;
  tn: number;
}

export interface ChangeScores extends ConfusionCounts {
  precision: number;
  recall: number;
  f1: number;
  iou: number;
  /** Overall accuracy. */
  oa: number;
}

/** TP/FP/FN/TN of one prediction against its label (both binarised with > 0). */
export function confusion(pred: Uint8Array, label: Uint8Array): ConfusionCounts {
  if (pred.length !== label.length) throw new RangeError(`confusion: prediction has ${pred.length} pixels, label ${label.length}`);
  let tp = 0;
  let fp = 0;
  let fn = 0;
  for (let i = 0; i < pred.length; i++) {
    const p = pred[i] > 0;
    const l = label[i] > 0;
    if (p && l) tp++;
    else if (p) fp++;
    else if (l) fn++;
  }
  return { tp, fp, fn, tn: pred.length - tp - fp - fn };
}

/** Scores from global counts, with the 0/0 convention above. */
export function scores(c: ConfusionCounts): ChangeScores {
  const perfect = c.tp + c.fp + c.fn === 0;
  const ratio = (num: number, den: number): number => (den > 0 ? num / den : perfect ? 1 : 0);
  return {
    ...c,
    precision: ratio(c.tp, c.tp + c.fp),
    recall: ratio(c.tp, c.tp + c.fn),
    f1: ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn),
    iou: ratio(c.tp, c.tp + c.fp + c.fn),
    oa: ratio(c.tp + c.tn, c.tp + c.tn + c.fp + c.fn),
  };
}

/** Accumulates global TP/FP/FN/TN over many (prediction, label) pairs. */
export class ChangeMetrics {
  private readonly counts: ConfusionCounts = { tp: 0, fp: 0, fn: 0, tn: 0 };

  add(pred: Uint8Array, label: Uint8Array): this {
    const c = confusion(pred, label);
    this.counts.tp += c.tp;
    this.counts.fp += c.fp;
    this.counts.fn += c.fn;
    this.counts.tn += c.tn;
    return this;
  }

  result(): ChangeScores {
    return scores(this.counts);
  }
}
