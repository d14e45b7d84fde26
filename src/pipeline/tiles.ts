/**
 * Scenes larger than a model's input: cut into overlapping tiles, run one tile at a time, and stitch
 * the per-tile 2-channel logits back with blending weights, in bounded memory.
 *
 * Grid: along each axis, tiles start every `tile − overlap` pixels and the last one is shifted inward
 * to end at the scene border, so every tile is full-size and neighbours overlap by at least
 * `overlap` (the shifted last pair by more). Small-scene case: on an axis shorter than `tile` there is
 * one tile, at 0, exactly as long as the scene — the tile is smaller than the model input and
 * `runTile` pads it (its logits may come back as [2, tile, tile] with the valid part top-left, or as
 * [2, h, w]).
 *
 * Blending: a tile's weight is separable, wx(x)·wy(y). On each side that is not a scene border it
 * ramps linearly up over the first `overlap` pixels, (i + 1)/(overlap + 1) at distance i from that
 * edge, and is 1 elsewhere (interior and scene-border sides). Weights are never 0, so every pixel has
 * weight, and the pixels near a tile edge — where zero padding corrupts a convolution's output —
 * count least. Because the tiles are the product of the x and y positions, the total weight at a pixel
 * is also separable, Wx(x)·Wy(y), and the stitched logits Σ w·logits / Σ w need no weight accumulator.
 *
 * Memory: the 2-channel Float32 accumulator (8 bytes per scene pixel) and the Uint8 mask; tiles are
 * requested, added and released one at a time.
 */

export interface Tile {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface TilingOptions {
  /** Model input size (square tiles). */
  tile: number;
  /** Minimum overlap of neighbouring tiles, in pixels; 0 ≤ overlap < tile. */
  overlap: number;
}

/** Logits of one tile: Float32 [2, tile, tile] (valid part top-left) or [2, height, width]. */
export type RunTile = (x: number, y: number, width: number, height: number) => Promise<Float32Array>;

export interface Stitched {
  /** Row-major width × height, 1 where channel 1 (change) wins the argmax (ties: 0, as torch.argmax). */
  mask: Uint8Array;
  /** The blended logits [2, height, width]: per-pixel weighted mean over the tiles covering it. */
  logits: Float32Array;
}

function checkTiling(width: number, height: number, { tile, overlap }: TilingOptions): void {
  const ok = (v: number, lo: number) => Number.isInteger(v) && v >= lo;
  if (!ok(width, 1) || !ok(height, 1)) throw new RangeError(`tiling: bad scene size ${width}×${height}`);
  if (!ok(tile, 1)) throw new RangeError(`tiling: tile must be a positive integer, got ${tile}`);
  if (!ok(overlap, 0) || overlap >= tile) throw new RangeError(`tiling: overlap must be an integer in [0, ${tile}), got ${overlap}`);
}

/** Tile start positions along one axis of `size` pixels. */
export function axisPositions(size: number, tile: number, overlap: number): number[] {
  if (size <= tile) return [0];
  const stride = tile - overlap;
  const n = Math.ceil((size - tile) / stride) + 1;
  const out: number[] = [];
  for (let i = 0; i < n - 1; i++) out.push(i * stride);
  out.push(size - tile);
  return out;
}

/** Tiles covering a width × height scene, row by row. */
export function tileGrid(width: number, height: number, tile: number, overlap: number): Tile[] {
  checkTiling(width, height, { tile, overlap });
  const tiles: Tile[] = [];
  const tw = Math.min(tile, width);
  const th = Math.min(tile, height);
  for (const y of axisPositions(height, tile, overlap)) for (const x of axisPositions(width, tile, overlap)) tiles.push({ x, y, width: tw, height: th });
  return tiles;
}

/**
 * Blending weight along one axis of a tile starting at `start`, `length` long, in a scene of `size`:
 * a ramp over `overlap` pixels on each side that is not a scene border, 1 elsewhere.
 */
export function axisWeights(start: number, length: number, size: number, overlap: number): Float32Array {
  const w = new Float32Array(length).fill(1);
  const rampLow = start > 0;
  const rampHigh = start + length < size;
  for (let i = 0; i < Math.min(overlap, length); i++) {
    const r = (i + 1) / (overlap + 1);
    if (rampLow) w[i] = Math.min(w[i], r);
    if (rampHigh) w[length - 1 - i] = Math.min(w[length - 1 - i], r);
  }
  return w;
}

/** Per-tile weight, row-major height × width: wx(x)·wy(y). */
export function tileWeights(t: Tile, sceneWidth: number, sceneHeight: number, overlap: number): Float32Array {
  const wx = axisWeights(t.x, t.width, sceneWidth, overlap);
  const wy = axisWeights(t.y, t.height, sceneHeight, overlap);
  const out = new Float32Array(t.width * t.height);
  for (let r = 0; r < t.height; r++) for (let c = 0; c < t.width; c++) out[r * t.width + c] = wy[r] * wx[c];
  return out;
}

/** Total blending weight along one axis (Σ over the axis' tiles); the scene's total is Wx(x)·Wy(y). */
export function axisWeightSum(size: number, tile: number, overlap: number): Float64Array {
  const sum = new Float64Array(size);
  const length = Math.min(tile, size);
  for (const p of axisPositions(size, tile, overlap)) {
    const w = axisWeights(p, length, size, overlap);
    for (let i = 0; i < length; i++) sum[p + i] += w[i];
  }
  return sum;
}

/**
 * Runs `runTile` on every tile of the grid, one at a time, and blends the 2-channel logits into a
 * scene-sized accumulator; returns the blended logits and their argmax mask.
 */
export async function stitch(width: number, height: number, opts: TilingOptions, runTile: RunTile): Promise<Stitched> {
  checkTiling(width, height, opts);
  const { tile, overlap } = opts;
  const plane = width * height;
  const acc = new Float32Array(2 * plane);
  for (const t of tileGrid(width, height, tile, overlap)) {
    const logits = await runTile(t.x, t.y, t.width, t.height);
    addTile(acc, width, height, t, logits, tile, overlap);
  }

  const wx = axisWeightSum(width, tile, overlap);
  const wy = axisWeightSum(height, tile, overlap);
  const mask = new Uint8Array(plane);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      const s = 1 / (wx[x] * wy[y]);
      acc[i] *= s;
      acc[plane + i] *= s;
      mask[i] = acc[plane + i] > acc[i] ? 1 : 0;
    }
  }
  return { mask, logits: acc };
}

/** acc[c, y, x] += w(x, y) · logits[c, y − t.y, x − t.x] over the tile. */
function addTile(acc: Float32Array, width: number, height: number, t: Tile, logits: Float32Array, tile: number, overlap: number): void {
  let stride: number;
  let rows: number;
  if (logits.length === 2 * tile * tile) [stride, rows] = [tile, tile];
  else if (logits.length === 2 * t.width * t.height) [stride, rows] = [t.width, t.height];
  else throw new RangeError(`stitch: tile (${t.x}, ${t.y}) returned ${logits.length} logits, expected [2, ${tile}, ${tile}] or [2, ${t.height}, ${t.width}]`);
  const wx = axisWeights(t.x, t.width, width, overlap);
  const wy = axisWeights(t.y, t.height, height, overlap);
  const plane = width * height;
  const tilePlane = stride * rows;
  for (let r = 0; r < t.height; r++) {
    const dst = (t.y + r) * width + t.x;
    const src = r * stride;
    const ry = wy[r];
    for (let c = 0; c < t.width; c++) {
      const w = ry * wx[c];
      acc[dst + c] += w * logits[src + c];
      acc[plane + dst + c] += w * logits[tilePlane + src + c];
    }
  }
}
