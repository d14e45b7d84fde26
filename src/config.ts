/** Server configuration: defaults, then environment, then CLI flags (the CLI merges them). */
import type { ExecutionProvider } from './pipeline/messages.js';

export interface ServerConfig {
  port: number;
  host: string;
  ep: ExecutionProvider;
  /** Inference worker threads. */
  workers: number;
  /** Cross-stream batching: most images per session.run, and how long an idle worker waits for decodes to finish (ms). */
  maxBatch: number;
  maxDelayMs: number;
  /** Largest request body in bytes (raw image or multipart file). */
  bodyLimit: number;
  /**
   * Largest file of a `POST /v1/change` pair in bytes: scenes are large (a 4096² aerial PNG is 30–40 MB);
   * `maxPixels` still bounds what decoding may allocate.
   */
  changeFileLimit: number;
  /** Largest image in pixels (width × height), checked from the header before decoding. */
  maxPixels: number;
  /** Checkpoint files per model id (`--weights MODEL=PATH`). */
  weights: Record<string, string>;
  /**
   * Named LoRA adapters per tracker model id (`--adapter lorat-b224:NAME=PATH`): files of LoRA factors only, all
   * served by one loaded session of the model's unmerged graph; a stream or session picks one by name.
   */
  adapters: Record<string, Record<string, string>>;
  /** Folder of brought-in ONNX models and their JSON manifests (default: the project's models/). */
  modelsDir?: string;
  /** Models built and loaded at start so the first request is not slow. */
  preload: string[];
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'silent';
  /** `/v1/stream` limits (specs/protocol.md). */
  stream: StreamConfig;
  /** `/v1/track/sessions` limits. */
  track: TrackConfig;
}

export interface TrackConfig {
  /**
   * Open REST tracking sessions at once; one more is refused with 429 `too_many_sessions`. Each holds
   * only its template crop (112×112×3 floats) and tracker state: the bound is against abandoned clients.
   */
  maxSessions: number;
  /** A session not used for this long (ms) is dropped; later calls on it answer 404 `unknown_session`. */
  idleMs: number;
}

export function defaultTrackConfig(env: NodeJS.ProcessEnv = process.env): TrackConfig {
  return {
    maxSessions: env.FOVEA_TRACK_MAX_SESSIONS ? Number(env.FOVEA_TRACK_MAX_SESSIONS) : 64,
    idleMs: env.FOVEA_TRACK_IDLE_MS ? Number(env.FOVEA_TRACK_IDLE_MS) : 120_000,
  };
}

export interface StreamConfig {
  /**
   * Open streams (WebSocket connections) at once; one more is refused with `too_many_streams` and
   * close 1013. Each has at most one frame in flight, so 32 fits the worker pool's queue of 32 per worker.
   */
  maxStreams: number;
  /** Largest frame payload in bytes (encoded image or rgb24); a larger frame is answered `too_large`. */
  maxFrameBytes: number;
  /** Largest frame in pixels (raw: from the frame header; encoded: from the image header, before decoding). */
  maxFramePixels: number;
  /** Largest frame JSON header in bytes. */
  maxHeaderBytes: number;
  /**
   * Send-buffer bound per stream: above it dispatch waits and frames and results are dropped
   * (`slow-consumer`); once the answers queued while over it add up to this much again, reading pauses.
   */
  maxBufferedBytes: number;
  /** Answers held back for frame order before the stream stops reading. */
  maxHeldAnswers: number;
  /** The server pings every this many ms. */
  pingIntervalMs: number;
  /** No pong and no message for this long closes the stream (1001); no `start` for this long closes it (1008). */
  idleTimeoutMs: number;
}

export function defaultStreamConfig(): StreamConfig {
  return {
    maxStreams: 32,
    maxFrameBytes: 16 * 1024 * 1024,
    maxFramePixels: 3840 * 2160,
    maxHeaderBytes: 16 * 1024,
    maxBufferedBytes: 1024 * 1024,
    maxHeldAnswers: 256,
    pingIntervalMs: 10_000,
    idleTimeoutMs: 30_000,
  };
}

export function defaultConfig(env: NodeJS.ProcessEnv = process.env): ServerConfig {
  return {
    port: env.PORT ? Number(env.PORT) : 8080,
    host: env.HOST ?? '0.0.0.0',
    ep: env.FOVEA_EP === 'cuda' ? 'cuda' : 'cpu',
    workers: env.FOVEA_WORKERS ? Number(env.FOVEA_WORKERS) : 1,
    maxBatch: 8,
    maxDelayMs: 1,
    bodyLimit: 20 * 1024 * 1024,
    changeFileLimit: 128 * 1024 * 1024,
    maxPixels: 40_000_000,
    weights: {},
    adapters: {},
    preload: ['leyolo-nano'],
    logLevel: 'info',
    stream: defaultStreamConfig(),
    track: defaultTrackConfig(env),
  };
}
