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
  /** Largest image in pixels (width × height), checked from the header before decoding. */
  maxPixels: number;
  /** Checkpoint files per model id (`--weights MODEL=PATH`). */
  weights: Record<string, string>;
  /** Folder of brought-in ONNX models and their JSON manifests (default: the project's models/). */
  modelsDir?: string;
  /** Models built and loaded at start so the first request is not slow. */
  preload: string[];
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'silent';
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
    maxPixels: 40_000_000,
    weights: {},
    preload: ['leyolo-nano'],
    logLevel: 'info',
  };
}
