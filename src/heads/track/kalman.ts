/**
 * The constant-velocity Kalman filter ByteTrack runs on each box (supervision tracker/byte_tracker/
 * kalman_filter.py, itself DeepSORT's). State (8): centre x, centre y, aspect a = w/h, height h, and their
 * velocities. Measurement (4): x, y, a, h. One frame is one time step (dt = 1).
 *
 * Noise scales with the box height: position std h/20, velocity std h/160; the aspect gets fixed stds
 * (1e-2 process, 1e-5 velocity process, 1e-1 measurement). Covariances are 8×8 row-major Float64Arrays.
 */

export interface KalmanState {
  /** x, y, a, h, vx, vy, va, vh. */
  readonly mean: Float64Array;
  /** 8×8, row-major. */
  readonly covariance: Float64Array;
}

/** Std weights relative to the box height (kalman_filter.py). */
export const STD_WEIGHT_POSITION = 1 / 20;
export const STD_WEIGHT_VELOCITY = 1 / 160;

const N = 8;
const M = 4;

/** A new track from an unmatched measurement: velocities 0, wide uncertainty (2× position, 10× velocity std). */
export function initiate(measurement: ArrayLike<number>): KalmanState {
  const mean = new Float64Array(N);
  for (let i = 0; i < M; i++) mean[i] = measurement[i];
  const h = measurement[3];
  const std = [
    2 * STD_WEIGHT_POSITION * h,
    2 * STD_WEIGHT_POSITION * h,
    1e-2,
    2 * STD_WEIGHT_POSITION * h,
    10 * STD_WEIGHT_VELOCITY * h,
    10 * STD_WEIGHT_VELOCITY * h,
    1e-5,
    10 * STD_WEIGHT_VELOCITY * h,
  ];
  return { mean, covariance: diagonalOfSquares(std) };
}

/**
 * One step of constant-velocity motion: mean ← F·mean, P ← F·P·Fᵀ + Q, with F = [[I, I], [0, I]] and Q from
 * the height before the step.
 */
export function predict(state: KalmanState): KalmanState {
  const { mean: m, covariance: p } = state;
  const h = m[3];
  const q = diagonalOfSquares([
    STD_WEIGHT_POSITION * h,
    STD_WEIGHT_POSITION * h,
    1e-2,
    STD_WEIGHT_POSITION * h,
    STD_WEIGHT_VELOCITY * h,
    STD_WEIGHT_VELOCITY * h,
    1e-5,
    STD_WEIGHT_VELOCITY * h,
  ]);
  const mean = new Float64Array(N);
  for (let i = 0; i < N; i++) mean[i] = i < M ? m[i] + m[i + M] : m[i];
  // F·P: row i (< 4) gains row i + 4.
  const fp = new Float64Array(N * N);
  for (let i = 0; i < N; i++) {
    for (let j = 0; j < N; j++) fp[i * N + j] = p[i * N + j] + (i < M ? p[(i + M) * N + j] : 0);
  }
  // (F·P)·Fᵀ: column j (< 4) gains column j + 4.
  const covariance = new Float64Array(N * N);
  for (let i = 0; i < N; i++) {
    for (let j = 0; j < N; j++) {
      covariance[i * N + j] = fp[i * N + j] + (j < M ? fp[i * N + j + M] : 0) + q[i * N + j];
    }
  }
  return { mean, covariance };
}

/** The state in measurement space: H·mean and H·P·Hᵀ + R (H takes the first four components). */
export function project(state: KalmanState): { mean: Float64Array; covariance: Float64Array } {
  const { mean: m, covariance: p } = state;
  const h = m[3];
  const r = [STD_WEIGHT_POSITION * h, STD_WEIGHT_POSITION * h, 1e-1, STD_WEIGHT_POSITION * h];
  const mean = m.slice(0, M);
  const covariance = new Float64Array(M * M);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < M; j++) covariance[i * M + j] = p[i * N + j] + (i === j ? r[i] * r[i] : 0);
  }
  return { mean, covariance };
}

/**
 * The correction with a measurement (x, y, a, h): K = P·Hᵀ·S⁻¹ (S from `project`, solved by Cholesky),
 * mean ← mean + K·(z − H·mean), P ← P − K·S·Kᵀ.
 */
export function update(state: KalmanState, measurement: ArrayLike<number>): KalmanState {
  const { mean: m, covariance: p } = state;
  const projected = project(state);
  const s = projected.covariance;
  const lower = cholesky4(s);
  // Kᵀ = S⁻¹·(P·Hᵀ)ᵀ; (P·Hᵀ)ᵀ is the first four rows of P (P is symmetric).
  const gain = new Float64Array(N * M); // K, 8×4
  const column = new Float64Array(M);
  for (let i = 0; i < N; i++) {
    for (let k = 0; k < M; k++) column[k] = p[k * N + i];
    choleskySolve4(lower, column);
    for (let k = 0; k < M; k++) gain[i * M + k] = column[k];
  }
  const innovation = new Float64Array(M);
  for (let k = 0; k < M; k++) innovation[k] = measurement[k] - projected.mean[k];
  const mean = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    let sum = m[i];
    for (let k = 0; k < M; k++) sum += gain[i * M + k] * innovation[k];
    mean[i] = sum;
  }
  // K·S (8×4), then P − (K·S)·Kᵀ.
  const ks = new Float64Array(N * M);
  for (let i = 0; i < N; i++) {
    for (let j = 0; j < M; j++) {
      let sum = 0;
      for (let k = 0; k < M; k++) sum += gain[i * M + k] * s[k * M + j];
      ks[i * M + j] = sum;
    }
  }
  const covariance = new Float64Array(N * N);
  for (let i = 0; i < N; i++) {
    for (let j = 0; j < N; j++) {
      let sum = 0;
      for (let k = 0; k < M; k++) sum += ks[i * M + k] * gain[j * M + k];
      covariance[i * N + j] = p[i * N + j] - sum;
    }
  }
  return { mean, covariance };
}

function diagonalOfSquares(std: readonly number[]): Float64Array {
  const n = std.length;
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) out[i * n + i] = std[i] * std[i];
  return out;
}

/** Lower Cholesky factor of a symmetric positive-definite 4×4 matrix. */
function cholesky4(a: Float64Array): Float64Array {
  const l = new Float64Array(M * M);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j <= i; j++) {
      let sum = a[i * M + j];
      for (let k = 0; k < j; k++) sum -= l[i * M + k] * l[j * M + k];
      if (i === j) {
        if (!(sum > 0)) throw new Error('kalman: innovation covariance is not positive definite');
        l[i * M + i] = Math.sqrt(sum);
      } else {
        l[i * M + j] = sum / l[j * M + j];
      }
    }
  }
  return l;
}

/** Solves (L·Lᵀ)·x = b in place. */
function choleskySolve4(l: Float64Array, b: Float64Array): void {
  for (let i = 0; i < M; i++) {
    let sum = b[i];
    for (let k = 0; k < i; k++) sum -= l[i * M + k] * b[k];
    b[i] = sum / l[i * M + i];
  }
  for (let i = M - 1; i >= 0; i--) {
    let sum = b[i];
    for (let k = i + 1; k < M; k++) sum -= l[k * M + i] * b[k];
    b[i] = sum / l[i * M + i];
  }
}
