/**
 * Minimum-cost linear assignment for the tracker's association steps.
 *
 * `solveAssignment` is the rectangular assignment problem (what scipy's `linear_sum_assignment` solves):
 * pair every row with a distinct column when rows ≤ columns (or every column with a distinct row otherwise)
 * so that the summed cost is least. It uses shortest augmenting paths with row/column potentials
 * (Jonker–Volgenant style, O(n²m)), one row at a time.
 *
 * `linearAssignment` is the thresholded form supervision's ByteTrack uses (tracker/byte_tracker/matching.py):
 * costs above `thresh` are clipped to `thresh + 1e-4`, the full assignment is solved, and only pairs whose
 * (clipped) cost is ≤ `thresh` are kept. That makes the kept pairs a matching that minimises
 * Σ (cost − thresh − 1e-4) over all partial matchings of admissible pairs — lapjv's `cost_limit` rule with a
 * 1e-4 bonus per match.
 */

/** A cost matrix, `rows × cols`, row-major. */
export interface CostMatrix {
  readonly data: Float64Array;
  readonly rows: number;
  readonly cols: number;
}

export interface Assignment {
  /** `[row, col]` pairs, ascending by row. */
  readonly matches: ReadonlyArray<readonly [number, number]>;
  /** Rows left without a column, ascending. */
  readonly unmatchedRows: readonly number[];
  /** Columns left without a row, ascending. */
  readonly unmatchedCols: readonly number[];
}

/** supervision clips inadmissible costs to just above the threshold (matching.py). */
const CLIP_MARGIN = 1e-4;

/**
 * The column assigned to each row (−1 where a row has none, which happens only when rows > cols), minimising
 * the summed cost of a maximum-cardinality assignment. Costs must be finite.
 */
export function solveAssignment(cost: CostMatrix): Int32Array {
  const { data, rows, cols } = cost;
  if (rows <= cols) return solveWide(data, rows, cols);
  // More rows than columns: solve the transpose (every column gets a row), then read it back per row.
  const transposed = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) transposed[c * rows + r] = data[r * cols + c];
  const rowOfCol = solveWide(transposed, cols, rows);
  const colOfRow = new Int32Array(rows).fill(-1);
  for (let c = 0; c < cols; c++) colOfRow[rowOfCol[c]] = c;
  return colOfRow;
}

/** Assignment for rows ≤ cols: every row gets a column. */
function solveWide(cost: Float64Array, rows: number, cols: number): Int32Array {
  const u = new Float64Array(rows); // row potentials
  const v = new Float64Array(cols); // column potentials
  const colOfRow = new Int32Array(rows).fill(-1);
  const rowOfCol = new Int32Array(cols).fill(-1);
  const path = new Int32Array(cols); // the row from which each column was reached
  const dist = new Float64Array(cols);
  const scannedCol = new Uint8Array(cols);
  const scannedRow = new Uint8Array(rows);
  for (let start = 0; start < rows; start++) {
    dist.fill(Infinity);
    scannedCol.fill(0);
    scannedRow.fill(0);
    const search = { u, v, rowOfCol, path, dist, scannedRow, scannedCol };
    const { sink, reach } = shortestAugmentingPath(cost, cols, start, search);
    // Keep reduced costs non-negative: shift the potentials of everything the search settled.
    u[start] += reach;
    for (let r = 0; r < rows; r++) if (scannedRow[r] && r !== start) u[r] += reach - dist[colOfRow[r]];
    for (let c = 0; c < cols; c++) if (scannedCol[c]) v[c] -= reach - dist[c];
    // Flip the path: each column on it takes the row it was reached from.
    let c = sink;
    for (;;) {
      const r = path[c];
      rowOfCol[c] = r;
      const previous = colOfRow[r];
      colOfRow[r] = c;
      if (r === start) break;
      c = previous;
    }
  }
  return colOfRow;
}

/** Potentials, the current matching and the per-search scratch of `solveWide`. */
interface SearchState {
  readonly u: Float64Array;
  readonly v: Float64Array;
  readonly rowOfCol: Int32Array;
  readonly path: Int32Array;
  readonly dist: Float64Array;
  readonly scannedRow: Uint8Array;
  readonly scannedCol: Uint8Array;
}

/**
 * Dijkstra over reduced costs from row `start` until a free column is settled. Fills `dist`, `path` and the
 * scanned marks; returns that free column and its distance. Among equally near columns a free one is taken
 * first, so the search stops as early as it can.
 */
function shortestAugmentingPath(
  cost: Float64Array,
  cols: number,
  start: number,
  search: SearchState,
): { sink: number; reach: number } {
  const { u, v, rowOfCol, path, dist, scannedRow, scannedCol } = search;
  let row = start;
  let reach = 0;
  for (;;) {
    scannedRow[row] = 1;
    let best = -1;
    let bestDist = Infinity;
    for (let c = 0; c < cols; c++) {
      if (scannedCol[c]) continue;
      const d = reach + cost[row * cols + c] - u[row] - v[c];
      if (d < dist[c]) {
        dist[c] = d;
        path[c] = row;
      }
      if (dist[c] < bestDist || (dist[c] === bestDist && rowOfCol[c] === -1 && best !== -1 && rowOfCol[best] !== -1)) {
        bestDist = dist[c];
        best = c;
      }
    }
    if (best === -1) throw new Error('assignment: cost matrix has no finite assignment');
    reach = bestDist;
    scannedCol[best] = 1;
    if (rowOfCol[best] === -1) return { sink: best, reach };
    row = rowOfCol[best];
  }
}

/**
 * supervision's `linear_assignment(cost, thresh)`: the minimum-cost assignment after clipping costs above
 * `thresh` to `thresh + 1e-4`, keeping only pairs with cost ≤ `thresh`. Does not modify `cost`.
 */
export function linearAssignment(cost: CostMatrix, thresh: number): Assignment {
  const { rows, cols } = cost;
  if (rows === 0 || cols === 0) {
    return { matches: [], unmatchedRows: range(rows), unmatchedCols: range(cols) };
  }
  const clipped = new Float64Array(cost.data.length);
  for (let k = 0; k < clipped.length; k++) clipped[k] = cost.data[k] > thresh ? thresh + CLIP_MARGIN : cost.data[k];
  const colOfRow = solveAssignment({ data: clipped, rows, cols });
  const matches: Array<readonly [number, number]> = [];
  const rowTaken = new Uint8Array(rows);
  const colTaken = new Uint8Array(cols);
  for (let r = 0; r < rows; r++) {
    const c = colOfRow[r];
    if (c < 0 || !(clipped[r * cols + c] <= thresh)) continue;
    matches.push([r, c]);
    rowTaken[r] = 1;
    colTaken[c] = 1;
  }
  return {
    matches,
    unmatchedRows: range(rows).filter((r) => !rowTaken[r]),
    unmatchedCols: range(cols).filter((c) => !colTaken[c]),
  };
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
