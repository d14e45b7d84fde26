/**
 * Adapter merging at build time (DESIGN "Fused ops" 3): LoRA, DoRA and Block-LoRA folded into a base
 * weight without materialising the dense d_out×d_in product B·A.
 *
 * Layout is PyTorch's nn.Linear, row-major Float32Array: W is d_out×d_in, B (lora_B) is d_out×r,
 * A (lora_A) is r×d_in, so ΔW = s·B·A. Rows are processed in blocks of ROW_BLOCK; inside a block the
 * input dimension is swept in tiles of TILE columns so that A's r×TILE tile stays in cache while the
 * block's rows are formed, four rows at a time against four rows of A (the micro-kernel below).
 * Everything that is summed accumulates in float64; the result is rounded to float32 once.
 *
 * Extra memory (see adapterScratchBytes): O(ROW_BLOCK·r + TILE) for LoRA and Block-LoRA, plus
 * O(r² + ROW_BLOCK·r) for DoRA — independent of d_out and d_in beyond one tile.
 */

export interface LoraDims {
  dOut: number;
  dIn: number;
  rank: number;
}

export interface MergeOptions {
  /** Write the merged weight into W and return W (default: a new array). */
  inPlace?: boolean;
}

/**
 * Where DoRA's row norm ‖W_i + s·B_i·A‖ comes from. 'factored' (DESIGN): ‖W_i‖² + 2s·B_i·P_i + s²·B_i G B_iᵀ
 * with P_i = A·W_iᵀ and G = A·Aᵀ, known before the row is written. 'direct': summed from the row as it is
 * formed, then the row is rescaled; no P, so about half the arithmetic.
 */
export type DoraNorm = 'factored' | 'direct';

export interface DoraOptions extends MergeOptions {
  norm?: DoraNorm;
}

/**
 * The two readings of Block-LoRA the spec admits (specs/models-a.md §4; no official code exists):
 * - 'rank' (reading a): B = [B_1 | … | B_n] is d_out×(n·r), A is the one shared r×d_in down-projection,
 *   ΔW = Σ_k B_k·A_s. (Spec: A = [A_1..A_n] column blocks all equal A_s, B = [B_1;..;B_n], ΔW = A_s Σ B_i,
 *   transposed into nn.Linear layout.)
 * - 'input' (reading b): the input is split into n chunks that share one r×(d_in/n) A_s, so
 *   ΔW = B·[A_s A_s … A_s] (A_s tiled n times along d_in); B is d_out×r.
 * Both merge exactly; which one the paper means is UNCONFIRMED, so the caller must say.
 */
export type BlockPartition = 'rank' | 'input';

export interface BlockLoraDims extends LoraDims {
  /** n, the number of blocks ("arms"). */
  blocks: number;
  partition: BlockPartition;
}

/** Rows per block: the float64 coefficient and projection blocks are ROW_BLOCK×r. A multiple of 3 and of 4 (the kernels' row counts). */
const ROW_BLOCK = 60;
/** Columns per tile: r×TILE of A is reused by every row of a block (1024 measured best at r = 384). */
const TILE = 1024;
/**
 * Cancellation guard for the factored norm. Every term of ‖W_i‖² + 2s⟨W_i,(BA)_i⟩ + s²‖(BA)_i‖² is bounded by
 * (‖W_i‖ + s·Σ_k|B_ik|·‖A_k‖)² =: scale, and float64 error is at most a few (d_in + r²)·2⁻⁵³ of that. When the
 * sum falls below 1e-4·scale (the row nearly cancels, or the sum went negative) it no longer carries
 * float32-worthy digits, so that row's norm is summed directly from the row instead.
 */
const CANCELLATION = 1e-4;
/**
 * A DoRA factor within one float32 ulp of 1 is snapped to 1: m is itself float32, so such a factor is
 * below m's own rounding, and snapping keeps W' bit-identical to the LoRA merge when m = ‖W + sBA‖.
 */
const UNITY = 2 ** -23;

/** LoRA's scaling: alpha/r (PEFT), or alpha/√r for rsLoRA (also CLIP-LoRA, specs/models-a.md §4). */
export function loraScale(alpha: number, rank: number, rule: 'lora' | 'rslora' = 'lora'): number {
  checkPositiveInteger('loraScale', 'rank', rank);
  return rule === 'rslora' ? alpha / Math.sqrt(rank) : alpha / rank;
}

/** Bytes of scratch a merge allocates besides its output (the output is W itself when merging in place). */
export function adapterScratchBytes(kind: 'lora' | 'block-lora' | 'dora', dims: LoraDims, opts: DoraOptions = {}): number {
  const f64 = 8;
  const lowRank = (ROW_BLOCK * dims.rank + 4 * TILE + 2 * ROW_BLOCK) * f64 + ROW_BLOCK;
  if (kind !== 'dora' || opts.norm === 'direct') return lowRank;
  return lowRank + (dims.rank * dims.rank + dims.rank + ROW_BLOCK * dims.rank) * f64;
}

/** W' = W + s·B·A. */
export function mergeLora(W: Float32Array, A: Float32Array, B: Float32Array, s: number, dims: LoraDims, opts: MergeOptions = {}): Float32Array {
  const { dOut, dIn, rank } = checkLowRank('mergeLora', W, A, B, s, dims);
  const out = opts.inPlace ? W : new Float32Array(W.length);
  const ws = new Workspace(rank);
  for (let i0 = 0; i0 < dOut; i0 += ROW_BLOCK) {
    const rows = Math.min(ROW_BLOCK, dOut - i0);
    ws.loadCoefficients(B, s, i0, rows, rank, 1);
    ws.factor.fill(1);
    writeBlock(out, W, A, ws, i0, rows, dIn, dIn, rank);
  }
  return out;
}

/**
 * DoRA (Liu et al. 2024, as PEFT merges it): W' = m ⊙ (W + s·B·A) / ‖W + s·B·A‖_row, the norm over each output
 * row (PEFT's weight_norm, dim 1 for Linear). m has length d_out. Deviation from PEFT: a row that is exactly
 * zero stays zero (PEFT divides 0 by 0).
 */
export function mergeDora(W: Float32Array, A: Float32Array, B: Float32Array, m: Float32Array, s: number, dims: LoraDims, opts: DoraOptions = {}): Float32Array {
  const { dOut, dIn, rank } = checkLowRank('mergeDora', W, A, B, s, dims);
  expectLength('mergeDora', 'm', m, dOut, 'dOut');
  const factored = (opts.norm ?? 'factored') === 'factored';
  const out = opts.inPlace ? W : new Float32Array(W.length);
  const ws = new Workspace(rank);
  const norms = factored ? new FactoredNorms(A, rank, dIn) : undefined;
  for (let i0 = 0; i0 < dOut; i0 += ROW_BLOCK) {
    const rows = Math.min(ROW_BLOCK, dOut - i0);
    ws.loadCoefficients(B, s, i0, rows, rank, 1);
    ws.direct.fill(1);
    ws.factor.fill(1);
    if (norms) {
      norms.project(W, i0, rows);
      for (let q = 0; q < rows; q++) {
        const sq = norms.rowSquaredNorm(W, ws.coef, i0, q);
        if (sq !== undefined) {
          ws.factor[q] = doraFactor(m[i0 + q], sq);
          ws.direct[q] = 0;
        }
      }
    }
    ws.sumSquares.fill(0);
    writeBlock(out, W, A, ws, i0, rows, dIn, dIn, rank);
    rescaleDirectRows(out, m, ws, i0, rows, dIn);
  }
  return out;
}

/** Block-LoRA: W' = W + s·ΔW with ΔW as `dims.partition` reads it (see BlockPartition). */
export function mergeBlockLora(W: Float32Array, A: Float32Array, B: Float32Array, s: number, dims: BlockLoraDims, opts: MergeOptions = {}): Float32Array {
  const fn = 'mergeBlockLora';
  const { dOut, dIn, rank, blocks, partition } = dims;
  checkPositiveInteger(fn, 'dOut', dOut);
  checkPositiveInteger(fn, 'dIn', dIn);
  checkPositiveInteger(fn, 'rank', rank);
  checkPositiveInteger(fn, 'blocks', blocks);
  checkScale(fn, s);
  if (partition !== 'rank' && partition !== 'input') throw new RangeError(`${fn}: partition must be 'rank' or 'input', got ${String(partition)}`);
  if (partition === 'input' && dIn % blocks !== 0) throw new RangeError(`${fn}: dIn = ${dIn} is not divisible by blocks = ${blocks}`);
  const dA = partition === 'input' ? dIn / blocks : dIn;
  const bCols = partition === 'rank' ? blocks * rank : rank;
  expectLength(fn, 'W', W, dOut * dIn, `dOut × dIn = ${dOut} × ${dIn}`);
  expectLength(fn, 'A', A, rank * dA, partition === 'input' ? `rank × dIn/blocks = ${rank} × ${dA}` : `rank × dIn = ${rank} × ${dIn}`);
  expectLength(fn, 'B', B, dOut * bCols, partition === 'rank' ? `dOut × blocks·rank = ${dOut} × ${bCols}` : `dOut × rank = ${dOut} × ${rank}`);
  const out = opts.inPlace ? W : new Float32Array(W.length);
  const ws = new Workspace(rank);
  for (let i0 = 0; i0 < dOut; i0 += ROW_BLOCK) {
    const rows = Math.min(ROW_BLOCK, dOut - i0);
    ws.loadCoefficients(B, s, i0, rows, rank, partition === 'rank' ? blocks : 1);
    ws.factor.fill(1);
    writeBlock(out, W, A, ws, i0, rows, dIn, dA, rank);
  }
  return out;
}

/** Per-call scratch; its size is what adapterScratchBytes counts. */
class Workspace {
  /** s·B for the block's rows (rows past the block stay zero so the 4-row kernel can overrun). */
  readonly coef: Float64Array;
  readonly acc = new Float64Array(4 * TILE);
  readonly factor = new Float64Array(ROW_BLOCK);
  readonly sumSquares = new Float64Array(ROW_BLOCK);
  /** 1 where a DoRA row's norm is summed from the row itself. */
  readonly direct = new Uint8Array(ROW_BLOCK);

  constructor(readonly rank: number) {
    this.coef = new Float64Array(ROW_BLOCK * rank);
  }

  /** coef[q, k] = s·Σ_b B[i0 + q, b·rank + k] over `blocks` column blocks of B (1 for plain LoRA). */
  loadCoefficients(B: Float32Array, s: number, i0: number, rows: number, rank: number, blocks: number): void {
    const coef = this.coef;
    coef.fill(0);
    const stride = blocks * rank;
    for (let q = 0; q < rows; q++) {
      const c = q * rank;
      for (let b = 0; b < blocks; b++) {
        const o = (i0 + q) * stride + b * rank;
        for (let k = 0; k < rank; k++) coef[c + k] += B[o + k];
      }
      for (let k = 0; k < rank; k++) coef[c + k] *= s;
    }
  }
}

/**
 * out[i, p·dA + j] = f_i·(W[i, p·dA + j] + Σ_k coef[i − i0, k]·A[k, j]) for the block's rows and every
 * repeat p < dIn/dA. Rows flagged `direct` are written unscaled and their float64 squares summed.
 * In place is safe: each element of W is read before the same element of out is written.
 */
function writeBlock(out: Float32Array, W: Float32Array, A: Float32Array, ws: Workspace, i0: number, rows: number, dIn: number, dA: number, rank: number): void {
  const { acc, factor, direct, sumSquares } = ws;
  for (let j0 = 0; j0 < dA; j0 += TILE) {
    const t = Math.min(TILE, dA - j0);
    for (let g = 0; g < rows; g += 4) {
      accumulateFour(acc, A, ws.coef, g * rank, rank, dA, j0, t);
      for (let q = g; q < Math.min(g + 4, rows); q++) {
        const f = factor[q];
        const a = (q - g) * TILE;
        for (let o = (i0 + q) * dIn + j0, end = (i0 + q + 1) * dIn; o < end; o += dA) {
          if (direct[q]) {
            let ss = 0;
            for (let j = 0; j < t; j++) {
              const v = W[o + j] + acc[a + j];
              ss += v * v;
              out[o + j] = v;
            }
            sumSquares[q] += ss;
          } else {
            for (let j = 0; j < t; j++) out[o + j] = f * (W[o + j] + acc[a + j]);
          }
        }
      }
    }
  }
}

/**
 * The micro-kernel: acc[q·TILE + j] = Σ_k coef[c + q·rank + k]·A[k, j0 + j] for four rows q, four rows of A
 * at a time, so each load of A feeds sixteen multiply-adds and each accumulator is touched once per four k.
 */
function accumulateFour(acc: Float64Array, A: Float32Array, coef: Float64Array, c: number, rank: number, dA: number, j0: number, t: number): void {
  acc.fill(0);
  const c1 = c + rank;
  const c2 = c1 + rank;
  const c3 = c2 + rank;
  const T1 = TILE;
  const T2 = 2 * TILE;
  const T3 = 3 * TILE;
  let k = 0;
  for (; k + 4 <= rank; k += 4) {
    const a0 = k * dA + j0;
    const a1 = a0 + dA;
    const a2 = a1 + dA;
    const a3 = a2 + dA;
    const p0 = coef[c + k], p1 = coef[c + k + 1], p2 = coef[c + k + 2], p3 = coef[c + k + 3];
    const q0 = coef[c1 + k], q1 = coef[c1 + k + 1], q2 = coef[c1 + k + 2], q3 = coef[c1 + k + 3];
    const u0 = coef[c2 + k], u1 = coef[c2 + k + 1], u2 = coef[c2 + k + 2], u3 = coef[c2 + k + 3];
    const v0 = coef[c3 + k], v1 = coef[c3 + k + 1], v2 = coef[c3 + k + 2], v3 = coef[c3 + k + 3];
    for (let j = 0; j < t; j++) {
      const x0 = A[a0 + j], x1 = A[a1 + j], x2 = A[a2 + j], x3 = A[a3 + j];
      acc[j] += p0 * x0 + p1 * x1 + p2 * x2 + p3 * x3;
      acc[T1 + j] += q0 * x0 + q1 * x1 + q2 * x2 + q3 * x3;
      acc[T2 + j] += u0 * x0 + u1 * x1 + u2 * x2 + u3 * x3;
      acc[T3 + j] += v0 * x0 + v1 * x1 + v2 * x2 + v3 * x3;
    }
  }
  for (; k < rank; k++) {
    const a0 = k * dA + j0;
    const p = coef[c + k], q = coef[c1 + k], u = coef[c2 + k], v = coef[c3 + k];
    for (let j = 0; j < t; j++) {
      const x = A[a0 + j];
      acc[j] += p * x;
      acc[T1 + j] += q * x;
      acc[T2 + j] += u * x;
      acc[T3 + j] += v * x;
    }
  }
}

/** Rows whose norm was summed while writing: scale them by m_i/‖row‖ now. */
function rescaleDirectRows(out: Float32Array, m: Float32Array, ws: Workspace, i0: number, rows: number, dIn: number): void {
  for (let q = 0; q < rows; q++) {
    if (!ws.direct[q]) continue;
    const f = doraFactor(m[i0 + q], ws.sumSquares[q]);
    if (f === 1) continue;
    for (let o = (i0 + q) * dIn, end = o + dIn; o < end; o++) out[o] *= f;
  }
}

function doraFactor(m: number, squaredNorm: number): number {
  if (!(squaredNorm > 0)) return 0; // an all-zero row stays zero
  const f = m / Math.sqrt(squaredNorm);
  return Math.abs(f - 1) <= UNITY ? 1 : f;
}

/**
 * DoRA's row norms in factored form: G = A·Aᵀ (r×r) once, and per block of rows P = W_block·Aᵀ (ROW_BLOCK×r),
 * so ‖W_i + s(BA)_i‖² = ‖W_i‖² + 2·c_i·P_i + c_i G c_iᵀ with c_i = s·B_i. P is per block, not d_out×r:
 * a row's P_i is needed only for that row, so the whole matrix would be memory with no reuse.
 */
class FactoredNorms {
  readonly gram: Float64Array;
  /** ‖A_k‖, for the cancellation bound. */
  readonly aNorm: Float64Array;
  readonly proj: Float64Array;

  constructor(readonly A: Float32Array, readonly rank: number, readonly dIn: number) {
    this.gram = new Float64Array(rank * rank);
    this.aNorm = new Float64Array(rank);
    this.proj = new Float64Array(ROW_BLOCK * rank);
    gramMatrix(this.gram, A, rank, dIn);
    for (let k = 0; k < rank; k++) this.aNorm[k] = Math.sqrt(this.gram[k * rank + k]);
  }

  /** proj[q, k] = W[i0 + q]·A[k] for the block's rows, tiled over d_in so A's tile is reused by every row. */
  project(W: Float32Array, i0: number, rows: number): void {
    const { A, rank, dIn, proj } = this;
    proj.fill(0);
    for (let j0 = 0; j0 < dIn; j0 += TILE) {
      accumulateDots(proj, rank, W, i0 * dIn + j0, rows, A, j0, rank, dIn, Math.min(TILE, dIn - j0));
    }
  }

  /** The factored ‖W_i + s(BA)_i‖² for row i0 + q, or undefined where cancellation makes it untrustworthy. */
  rowSquaredNorm(W: Float32Array, coef: Float64Array, i0: number, q: number): number | undefined {
    const { rank, gram, aNorm, proj } = this;
    const c = q * rank;
    let w2 = 0;
    for (let o = (i0 + q) * this.dIn, end = o + this.dIn; o < end; o++) w2 += W[o] * W[o];
    let cross = 0;
    let quad = 0;
    let reach = 0;
    for (let k = 0; k < rank; k++) {
      const ck = coef[c + k];
      cross += ck * proj[c + k];
      reach += Math.abs(ck) * aNorm[k];
      const g = k * rank;
      let off = 0;
      for (let l = 0; l < k; l++) off += gram[g + l] * coef[c + l];
      quad += ck * (gram[g + k] * ck + 2 * off);
    }
    const sq = w2 + 2 * cross + quad;
    const bound = (Math.sqrt(w2) + reach) ** 2;
    return sq > CANCELLATION * bound ? sq : undefined;
  }
}

/** G = A·Aᵀ, tiled over d_in: the lower triangle in bands of GRAM_BAND rows, then mirrored. */
function gramMatrix(gram: Float64Array, A: Float32Array, rank: number, dIn: number): void {
  gram.fill(0);
  for (let j0 = 0; j0 < dIn; j0 += TILE) {
    const t = Math.min(TILE, dIn - j0);
    for (let k0 = 0; k0 < rank; k0 += GRAM_BAND) {
      const band = Math.min(GRAM_BAND, rank - k0);
      accumulateDots(gram.subarray(k0 * rank), rank, A, k0 * dIn + j0, band, A, j0, k0 + band, dIn, t);
    }
  }
  for (let k = 0; k < rank; k++) for (let l = k + 1; l < rank; l++) gram[k * rank + l] = gram[l * rank + k];
}
const GRAM_BAND = 48;

/**
 * out[p·stride + q] += X_p · Y_q over one tile of t columns, for nX rows of X (starting at x, n apart) and nY
 * rows of Y (starting at y). Three rows of each at a time: six loads feed nine multiply-adds, and the nine
 * accumulators stay in registers (four by four would spill on x64).
 */
function accumulateDots(out: Float64Array, stride: number, X: Float32Array, x: number, nX: number, Y: Float32Array, y: number, nY: number, n: number, t: number): void {
  let p = 0;
  for (; p + 3 <= nX; p += 3) {
    const x0 = x + p * n;
    const x1 = x0 + n;
    const x2 = x1 + n;
    const o = p * stride;
    let q = 0;
    for (; q + 3 <= nY; q += 3) {
      const y0 = y + q * n;
      const y1 = y0 + n;
      const y2 = y1 + n;
      let s00 = 0, s01 = 0, s02 = 0, s10 = 0, s11 = 0, s12 = 0, s20 = 0, s21 = 0, s22 = 0;
      for (let j = 0; j < t; j++) {
        const a0 = X[x0 + j], a1 = X[x1 + j], a2 = X[x2 + j];
        const b0 = Y[y0 + j], b1 = Y[y1 + j], b2 = Y[y2 + j];
        s00 += a0 * b0; s01 += a0 * b1; s02 += a0 * b2;
        s10 += a1 * b0; s11 += a1 * b1; s12 += a1 * b2;
        s20 += a2 * b0; s21 += a2 * b1; s22 += a2 * b2;
      }
      out[o + q] += s00; out[o + q + 1] += s01; out[o + q + 2] += s02;
      out[o + stride + q] += s10; out[o + stride + q + 1] += s11; out[o + stride + q + 2] += s12;
      out[o + 2 * stride + q] += s20; out[o + 2 * stride + q + 1] += s21; out[o + 2 * stride + q + 2] += s22;
    }
    for (; q < nY; q++) for (let e = 0; e < 3; e++) out[o + e * stride + q] += dot(X, x0 + e * n, Y, y + q * n, t);
  }
  for (; p < nX; p++) for (let q = 0; q < nY; q++) out[p * stride + q] += dot(X, x + p * n, Y, y + q * n, t);
}

function dot(X: Float32Array, x: number, Y: Float32Array, y: number, t: number): number {
  let sum = 0;
  for (let j = 0; j < t; j++) sum += X[x + j] * Y[y + j];
  return sum;
}

function checkLowRank(fn: string, W: Float32Array, A: Float32Array, B: Float32Array, s: number, dims: LoraDims): LoraDims {
  const { dOut, dIn, rank } = dims;
  checkPositiveInteger(fn, 'dOut', dOut);
  checkPositiveInteger(fn, 'dIn', dIn);
  checkPositiveInteger(fn, 'rank', rank);
  checkScale(fn, s);
  expectLength(fn, 'W', W, dOut * dIn, `dOut × dIn = ${dOut} × ${dIn}`);
  expectLength(fn, 'A', A, rank * dIn, `rank × dIn = ${rank} × ${dIn}`);
  expectLength(fn, 'B', B, dOut * rank, `dOut × rank = ${dOut} × ${rank}`);
  return dims;
}

function checkPositiveInteger(fn: string, name: string, x: number): void {
  if (!Number.isInteger(x) || x < 1) throw new RangeError(`${fn}: ${name} must be a positive integer, got ${x}`);
}

function checkScale(fn: string, s: number): void {
  if (!Number.isFinite(s)) throw new RangeError(`${fn}: scale s must be finite, got ${s}`);
}

function expectLength(fn: string, name: string, x: ArrayLike<number>, expected: number, shape: string): void {
  if (x.length !== expected) throw new RangeError(`${fn}: ${name} has length ${x.length}, expected ${shape} = ${expected}`);
}
