/**
 * Letterbox geometry exactly as ultralytics 8.1.4 `LetterBox` computes it (specs/models-b.md §1):
 * scale r = min(H/h, W/w), unpadded size round(w·r) × round(h·r) with Python's round-half-even,
 * the padding split round(d/2 ∓ 0.1), pad value 114.
 */
export interface Letterbox {
  /** Source image size. */
  readonly srcWidth: number;
  readonly srcHeight: number;
  /** Model input size. */
  readonly dstWidth: number;
  readonly dstHeight: number;
  /** Resize gain r. */
  readonly scale: number;
  /** Size of the resized image inside the canvas. */
  readonly newWidth: number;
  readonly newHeight: number;
  readonly padLeft: number;
  readonly padTop: number;
  readonly padRight: number;
  readonly padBottom: number;
}

export const LETTERBOX_PAD = 114;

/** Python 3's round(): halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

export function letterboxGeometry(srcWidth: number, srcHeight: number, dstWidth: number, dstHeight: number): Letterbox {
  if (!(srcWidth > 0 && srcHeight > 0 && dstWidth > 0 && dstHeight > 0)) {
    throw new RangeError(`letterbox sizes must be positive: ${srcWidth}x${srcHeight} → ${dstWidth}x${dstHeight}`);
  }
  const scale = Math.min(dstHeight / srcHeight, dstWidth / srcWidth);
  const newWidth = Math.min(dstWidth, Math.max(1, roundHalfEven(srcWidth * scale)));
  const newHeight = Math.min(dstHeight, Math.max(1, roundHalfEven(srcHeight * scale)));
  const dw = (dstWidth - newWidth) / 2;
  const dh = (dstHeight - newHeight) / 2;
  const padTop = roundHalfEven(dh - 0.1);
  const padBottom = roundHalfEven(dh + 0.1);
  const padLeft = roundHalfEven(dw - 0.1);
  const padRight = roundHalfEven(dw + 0.1);
  return { srcWidth, srcHeight, dstWidth, dstHeight, scale, newWidth, newHeight, padLeft, padTop, padRight, padBottom };
}
