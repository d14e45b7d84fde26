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
  /** The graph takes LoRA factors as inputs (`lora: 'inputs'`): every search job names one of the adapters given to the workers. */
  readonly adapters?: true;
}

/** An ImageNet classifier graph (ViG, DeiT): `images` [B, 3, S, S] → `logits` [B, classes], `features` [B, dim]. */
export interface ClassifyModelSpec {
  readonly key: string;
  readonly path: string;
  /** The input side S (the centre crop); the resize before it takes the shorter side to S/0.875. */
  readonly size: number;
  readonly numClasses: number;
  /** The pooled feature width. */
  readonly dim: number;
  readonly maxBatch: number;
}

/** Decode, resize + centre crop + normalise, run; the reply carries the logits or the features. */
export interface ClassifyJob {
  readonly type: 'classify';
  readonly id: number;
  readonly model: ClassifyModelSpec;
  readonly image: ImageInput;
  readonly output: 'logits' | 'features';
}

/** One LoRA factor as an adapter is fed (`blocks.3.attn.qkv.q.lora.A`, scaling folded into B). */
export interface AdapterFeed {
  readonly name: string;
  readonly dims: readonly number[];
  readonly data: Float32Array;
}

/** Gives every worker a named adapter of an unmerged tracker graph; kept as ready tensors next to its session. */
export interface AdapterRequest {
  readonly type: 'adapter';
  readonly id: number;
  readonly model: TrackModelSpec;
  readonly name: string;
  readonly feeds: readonly AdapterFeed[];
}

/** What a worker holds: for tests and diagnostics. */
export interface WorkerStats {
  /** Sessions created so far (a reload after a failed load counts again). */
  readonly loads: number;
  /** Model keys with a session. */
  readonly sessions: readonly string[];
  /** Adapter names per model key. */
  readonly adapters: Readonly<Record<string, readonly string[]>>;
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
  /** The adapter a search runs with (required by, and only for, a model with `adapters`). */
  readonly adapter?: string;
}

/** A bitemporal change graph (FSG-Net, care-cd): `before`, `after` [B, 3, tile, tile] in [0, 1] → `logits` [B, 2, tile, tile]. */
export interface ChangeModelSpec {
  readonly key: string;
  readonly path: string;
  /** The graph's input side: the tile side scenes are cut into. */
  readonly tile: number;
  /** Jobs per batcher run: 1 (a change job batches its own tiles). */
  readonly maxBatch: 1;
  /** Tiles per session.run. */
  readonly tileBatch: number;
}

export type ChangeMaskEncoding = 'png' | 'rle' | 'none';

/**
 * A pair of images of one scene: decode both, (optionally resize `after` to `before`'s size), tile, run,
 * stitch, then regions, changed fraction and the encoded mask.
 */
export interface ChangeJob {
  readonly type: 'change';
  readonly id: number;
  readonly model: ChangeModelSpec;
  /** The `before` image; `image` so the batcher's decode and queue treat it like other jobs. */
  readonly image: ImageInput;
  readonly after: ImageInput;
  /** Resize `after` to `before`'s size when they differ (else a 422 size_mismatch). */
  readonly resize: boolean;
  readonly overlap: number;
  readonly minArea: number;
  readonly mask: ChangeMaskEncoding;
}

export type WorkerRequest =
  | DetectJob
  | ChangeJob
  | TrackJob
  | ClassifyJob
  | AdapterRequest
  | { readonly type: 'warmup'; readonly id: number; readonly model: ModelSpec | TrackModelSpec | ClassifyModelSpec | ChangeModelSpec }
  | { readonly type: 'stats'; readonly id: number };

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

export interface ClassifyReply {
  readonly type: 'classify';
  readonly id: number;
  readonly width: number;
  readonly height: number;
  /** The logits [classes] or the pooled features [dim] of this image, as the job asked. */
  readonly values: Float32Array;
  readonly timings: Timings;
  readonly batchSize: number;
}

export interface ChangeReply {
  readonly type: 'change';
  readonly id: number;
  readonly width: number;
  readonly height: number;
  readonly changedFraction: number;
  readonly regions: { polygon: Array<[number, number]>; bbox: [number, number, number, number]; area: number }[];
  /** The PNG bytes, the COCO RLE, or null, as the job asked. */
  readonly mask: Uint8Array | { size: [number, number]; counts: number[] } | null;
  /** Tiles run, and session.runs they took. */
  readonly tiles: number;
  readonly runs: number;
  readonly timings: Timings;
}

export type WorkerReply =
  | DetectResult
  | ChangeReply
  | ClassifyReply
  | TrackReply
  | WorkerError
  | { readonly type: 'warmup'; readonly id: number; readonly ep: ExecutionProvider; readonly warning?: string }
  | { readonly type: 'adapter'; readonly id: number }
  | ({ readonly type: 'stats'; readonly id: number } & WorkerStats)
  | { readonly type: 'log'; readonly level: 'warn' | 'info'; readonly message: string };
