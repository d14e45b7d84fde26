/**
 * opencv-wasm (OpenCV 4.3 compiled to WebAssembly), loaded lazily on first use.
 *
 * Why a module of its own: Emscripten's Node glue installs process-wide `uncaughtException` and
 * `unhandledRejection` handlers when the module is evaluated; left in place they would swallow or
 * rethrow the server's own errors. So the library is only required when a change head first needs
 * it (never at import time, so the HTTP thread never pays for it unless it asks), and every process
 * listener it adds while loading is removed right after.
 */
import { createRequire } from 'node:module';

/** The few OpenCV.js types and functions the change heads use. */
export interface CvMat {
  readonly rows: number;
  readonly cols: number;
  readonly data: Uint8Array;
  readonly data32S: Int32Array;
  delete(): void;
}

export interface CvMatVector {
  size(): number;
  get(i: number): CvMat;
  delete(): void;
}

export interface OpenCv {
  readonly CV_8UC1: number;
  readonly CV_32S: number;
  readonly RETR_EXTERNAL: number;
  readonly CHAIN_APPROX_SIMPLE: number;
  Mat: new () => CvMat;
  MatVector: new () => CvMatVector;
  matFromArray(rows: number, cols: number, type: number, data: ArrayLike<number>): CvMat;
  connectedComponentsWithStats(image: CvMat, labels: CvMat, stats: CvMat, centroids: CvMat, connectivity: number, ltype: number): number;
  findContours(image: CvMat, contours: CvMatVector, hierarchy: CvMat, mode: number, method: number): void;
  arcLength(curve: CvMat, closed: boolean): number;
  approxPolyDP(curve: CvMat, approxCurve: CvMat, epsilon: number, closed: boolean): void;
}

let cached: OpenCv | undefined;

/** The OpenCV.js module, loaded on the first call; process-wide listeners it installs are removed. */
export function opencv(): OpenCv {
  if (cached) return cached;
  const emitter: NodeJS.EventEmitter = process;
  const before = new Map(emitter.eventNames().map((e) => [e, emitter.listeners(e)]));
  try {
    cached = (createRequire(import.meta.url)('opencv-wasm') as { cv: OpenCv }).cv;
  } finally {
    for (const e of emitter.eventNames()) {
      const had = before.get(e) ?? [];
      for (const l of emitter.listeners(e)) if (!had.includes(l)) emitter.removeListener(e, l as (...args: unknown[]) => void);
    }
  }
  return cached;
}

/** Runs `fn` with Mats it allocates through `keep`, deleting every one of them afterwards, thrown or not. */
export function withMats<T>(fn: (keep: <M extends { delete(): void }>(m: M) => M) => T): T {
  const owned: Array<{ delete(): void }> = [];
  try {
    return fn((m) => {
      owned.push(m);
      return m;
    });
  } finally {
    for (const m of owned) m.delete();
  }
}
