/**
 * Changed regions from a binary change mask: 8-connected components, each with its outer contour
 * simplified to a polygon, its pixel bounding box and its pixel count.
 *
 * Coordinates are in the mask's pixel grid (the caller scales them to the original image):
 * - `polygon` vertices are pixel indices [x, y] of boundary pixels, OpenCV's convention: a filled
 *   rectangle of pixels x0..x0+w−1, y0..y0+h−1 gives its four corner pixels
 *   [x0, y0], [x0, y0+h−1], [x0+w−1, y0+h−1], [x0+w−1, y0] (counter-clockwise in image coordinates,
 *   starting at the top-left-most pixel, as findContours returns them);
 * - `bbox` is [x1, y1, x2, y2] with x2, y2 exclusive (pixel edges, like every box fovea returns), so
 *   (x2 − x1)·(y2 − y1) is the number of pixels the box covers and a full mask gives [0, 0, w, h];
 * - `area` is the component's pixel count, not the polygon's area (a ring's hole and the half-pixel
 *   border the polygon cuts off are not counted as change, and the count does not depend on epsilon).
 */
import { type CvMat, opencv, withMats } from './opencv.js';

export interface ChangeRegion {
  polygon: Array<[number, number]>;
  bbox: [number, number, number, number];
  area: number;
}

export interface RegionOptions {
  /** Components with fewer pixels are dropped. */
  minArea: number;
  /**
   * Douglas–Peucker tolerance as a fraction of the contour's perimeter (cv.approxPolyDP's epsilon =
   * epsilon × cv.arcLength(contour, closed)). Relative, so the simplification looks the same at any
   * region size and mask resolution; 0 keeps CHAIN_APPROX_SIMPLE's vertices (every corner).
   */
  epsilon?: number;
}

/**
 * 1 % of the perimeter: axis-aligned rectangles keep exactly their 4 corners, a 100-pixel-wide blob
 * is drawn to about a pixel, and staircase edges from upsampled masks collapse into straight runs.
 * (OpenCV's tutorials use 1–5 %; more than ~2 % visibly cuts corners off small regions.)
 */
export const DEFAULT_POLYGON_EPSILON = 0.01;

// connectedComponentsWithStats' stats columns (cv::ConnectedComponentsTypes).
const CC_STAT_LEFT = 0;
const CC_STAT_TOP = 1;
const CC_STAT_WIDTH = 2;
const CC_STAT_HEIGHT = 3;
const CC_STAT_AREA = 4;

/** Changed regions of `mask` (row-major, width × height, any nonzero byte = change), largest first. */
export function regions(mask: Uint8Array, width: number, height: number, opts: RegionOptions): ChangeRegion[] {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 0 || height < 0) throw new RangeError(`regions: bad mask size ${width}×${height}`);
  if (mask.length !== width * height) throw new RangeError(`regions: mask has ${mask.length} bytes, ${width}×${height} needs ${width * height}`);
  const epsilon = opts.epsilon ?? DEFAULT_POLYGON_EPSILON;
  if (!(epsilon >= 0)) throw new RangeError(`regions: epsilon must be ≥ 0, got ${epsilon}`);
  if (width === 0 || height === 0) return [];

  const cv = opencv();
  const { labels, stats, count } = withMats((keep) => {
    const binary = new Uint8Array(mask.length);
    for (let i = 0; i < mask.length; i++) binary[i] = mask[i] !== 0 ? 1 : 0;
    const src = keep(cv.matFromArray(height, width, cv.CV_8UC1, binary));
    const labelMat = keep(new cv.Mat());
    const statMat = keep(new cv.Mat());
    const centroids = keep(new cv.Mat());
    const n = cv.connectedComponentsWithStats(src, labelMat, statMat, centroids, 8, cv.CV_32S);
    // Copied out of the wasm heap: the views would be detached when later Mats grow the heap.
    return { labels: labelMat.data32S.slice(), stats: statMat.data32S.slice(), count: n };
  });

  const out: ChangeRegion[] = [];
  // Label 0 is the background.
  for (let id = 1; id < count; id++) {
    const s = id * 5;
    const area = stats[s + CC_STAT_AREA];
    if (area < opts.minArea) continue;
    const x = stats[s + CC_STAT_LEFT];
    const y = stats[s + CC_STAT_TOP];
    const w = stats[s + CC_STAT_WIDTH];
    const h = stats[s + CC_STAT_HEIGHT];
    out.push({ polygon: outerPolygon(labels, width, id, x, y, w, h, epsilon), bbox: [x, y, x + w, y + h], area });
  }
  // Stable: equal areas keep the labels' raster order (by each component's first pixel).
  return out.sort((a, b) => b.area - a.area);
}

/**
 * The outer contour of component `id`, traced with RETR_EXTERNAL on a crop of its bounding box that
 * holds only this component's pixels (plus a 1-pixel zero frame). Tracing the whole mask with
 * RETR_EXTERNAL instead would lose every component that lies inside another one's hole.
 */
function outerPolygon(labels: Int32Array, width: number, id: number, x: number, y: number, w: number, h: number, epsilon: number): Array<[number, number]> {
  const cv = opencv();
  const cw = w + 2;
  const crop = new Uint8Array(cw * (h + 2));
  for (let r = 0; r < h; r++) {
    const row = (y + r) * width + x;
    for (let c = 0; c < w; c++) if (labels[row + c] === id) crop[(r + 1) * cw + c + 1] = 1;
  }
  return withMats((keep) => {
    const src = keep(cv.matFromArray(h + 2, cw, cv.CV_8UC1, crop));
    const contours = keep(new cv.MatVector());
    const hierarchy = keep(new cv.Mat());
    cv.findContours(src, contours, hierarchy, cv.RETR_EXTERNAL, cv.CHAIN_APPROX_SIMPLE);
    // One 8-connected component has exactly one outer border; take the longest should OpenCV differ.
    let contour: CvMat | undefined;
    let best = -1;
    for (let i = 0; i < contours.size(); i++) {
      const c = keep(contours.get(i));
      if (c.rows > best) [contour, best] = [c, c.rows];
    }
    if (!contour) throw new Error(`regions: OpenCV found no contour for component ${id}`);
    let poly = contour;
    if (epsilon > 0) {
      poly = keep(new cv.Mat());
      cv.approxPolyDP(contour, poly, epsilon * cv.arcLength(contour, true), true);
    }
    const pts = poly.data32S;
    const polygon: Array<[number, number]> = [];
    for (let i = 0; i + 1 < pts.length; i += 2) polygon.push([pts[i] + x - 1, pts[i + 1] + y - 1]);
    return polygon;
  });
}

/** Fraction of pixels marked as change (nonzero); 0 for an empty mask. */
export function changedFraction(mask: Uint8Array): number {
  if (mask.length === 0) return 0;
  let n = 0;
  for (let i = 0; i < mask.length; i++) if (mask[i] !== 0) n++;
  return n / mask.length;
}
