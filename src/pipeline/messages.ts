/** Messages between the server thread and the inference workers (structured-clone friendly). */
import type { DetectOptions } from '../heads/detect/index.js';

export type ExecutionProvider = 'cpu' | 'cuda';

export interface WorkerConfig {
  readonly ep: ExecutionProvider;
  /** ORT intra-op threads per session. */
  readonly intraOpThreads: number;
  /** Let ORT's pool threads spin between runs (lower latency on an idle many-core host, stolen cores on a small one). */
  readonly spin: boolean;
  /** Largest decoded image accepted (width × height). */
  readonly maxPixels: number;
  /** Most images one session.run takes (cross-stream batching). */
  readonly maxBatch: number;
  /** How long an idle worker waits for more images of the same model before running (ms). */
  readonly maxDelayMs: number;
}

export interface ModelSpec {
  readonly key: string;
  readonly path: string;
  readonly width: number;
  readonly height: number;
  /** Images one run of this graph can take (1 for exports with a fixed batch of one). */
  readonly maxBatch: number;
  /** Per-channel (x/255 − mean)/std after the letterbox; absent for plain /255. */
  readonly normalize?: { readonly mean: readonly number[]; readonly std: readonly number[] };
  readonly numClasses: number;
  readonly numAnchors: number;
}

/** An image as a job carries it: encoded bytes (decoded on the worker, at dispatch), or raw packed RGB. */
export type ImageInput =
  | { readonly kind: 'encoded'; readonly bytes: Uint8Array }
  | { readonly kind: 'rgb24'; readonly data: Uint8Array; readonly width: number; readonly height: number };

export interface DetectJob {
  readonly type: 'detect';
  readonly id: number;
  readonly model: ModelSpec;
  readonly image: ImageInput;
  readonly options: DetectOptions;
}

export type WorkerRequest = DetectJob | { readonly type: 'warmup'; readonly id: number; readonly model: ModelSpec };

export interface Timings {
  decode: number;
  preprocess: number;
  infer: number;
  post: number;
}

export interface DetectResult {
  readonly type: 'detect';
  readonly id: number;
  readonly width: number;
  readonly height: number;
  readonly boxes: Float32Array;
  readonly scores: Float32Array;
  readonly classIds: Int32Array;
  readonly timings: Timings;
  /** Images in the session.run this one was part of. */
  readonly batchSize: number;
}

export interface WorkerError {
  readonly type: 'error';
  readonly id: number;
  readonly status: number;
  readonly code: string;
  readonly message: string;
}

export type WorkerReply =
  | DetectResult
  | WorkerError
  | { readonly type: 'warmup'; readonly id: number; readonly ep: ExecutionProvider; readonly warning?: string }
  | { readonly type: 'log'; readonly level: 'warn' | 'info'; readonly message: string };
