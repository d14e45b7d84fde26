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

/** A single-object tracker graph (LoRAT): template and search crop sizes. */
export interface TrackModelSpec {
  readonly key: string;
  readonly path: string;
  readonly templateSize: number;
  readonly searchSize: number;
  /** Template tokens per side (the foreground mask is templateFeat²). */
  readonly templateFeat: number;
  readonly templateAreaFactor: number;
  readonly maxBatch: 1;
}

export interface CropParamsMessage {
  readonly scaleX: number;
  readonly scaleY: number;
  readonly translateX: number;
  readonly translateY: number;
}

/**
 * A tracking frame. `init`: decode, take the frame's channel means and crop the template around the
 * box. `search`: crop the search region, run the graph with the session's template and mask.
 */
export interface TrackJob {
  readonly type: 'track';
  readonly id: number;
  readonly model: TrackModelSpec;
  readonly image: ImageInput;
  readonly init?: { readonly box: readonly [number, number, number, number] };
  readonly search?: {
    readonly params: CropParamsMessage;
    readonly padMean: readonly [number, number, number];
    readonly template: Float32Array;
    readonly mask: BigInt64Array;
  };
}

export type WorkerRequest = DetectJob | TrackJob | { readonly type: 'warmup'; readonly id: number; readonly model: ModelSpec | TrackModelSpec };

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

export interface TrackReply {
  readonly type: 'track';
  readonly id: number;
  readonly width: number;
  readonly height: number;
  readonly init?: { readonly template: Float32Array; readonly means: readonly [number, number, number] };
  readonly search?: { readonly scoreMap: Float32Array; readonly boxes: Float32Array; readonly adjusted: CropParamsMessage };
  readonly timings: Timings;
}

export type WorkerReply =
  | DetectResult
  | TrackReply
  | WorkerError
  | { readonly type: 'warmup'; readonly id: number; readonly ep: ExecutionProvider; readonly warning?: string }
  | { readonly type: 'log'; readonly level: 'warn' | 'info'; readonly message: string };
