/**
 * The detect task pipeline as the routes and the CLI see it: validate the options, read the image
 * header (pixel limit before any decode), build or find the graph, and hand the rest to a worker.
 */
import { badInput, invalidValue, tooLarge } from '../errors.js';
import { DEFAULT_DETECT_OPTIONS, toJson, type DetectOptions, type DetectionJson, type Detections } from '../heads/detect/index.js';
import type { BuiltModel, ModelRegistry } from '../models/registry.js';
import { DEFAULT_MODEL } from '../models/registry.js';
import { probeImage } from './decode.js';
import type { ImageInput, ModelSpec, Timings } from './messages.js';
import type { InferencePool } from './pool.js';

export interface DetectRequest {
  model?: string;
  size?: number;
  conf?: number;
  iou?: number;
  maxDet?: number;
}

export interface RawDetectResponse {
  model: { id: string; trained: boolean; input: [number, number] };
  /** Class names by class id. */
  labels: readonly string[];
  image: { width: number; height: number };
  detections: Detections;
  timings: Timings;
}

export interface DetectResponse {
  model: { id: string; trained: boolean; input: [number, number] };
  image: { width: number; height: number };
  detections: DetectionJson[];
  timings: Timings;
}

const MAX_DET_LIMIT = 10_000;

export function detectOptions(r: DetectRequest): DetectOptions {
  const o = { conf: r.conf ?? DEFAULT_DETECT_OPTIONS.conf, iou: r.iou ?? DEFAULT_DETECT_OPTIONS.iou, maxDet: r.maxDet ?? DEFAULT_DETECT_OPTIONS.maxDet };
  if (!(o.conf >= 0 && o.conf <= 1)) throw invalidValue(`conf must be between 0 and 1, got ${r.conf}`);
  if (!(o.iou >= 0 && o.iou <= 1)) throw invalidValue(`iou must be between 0 and 1, got ${r.iou}`);
  if (!(Number.isInteger(o.maxDet) && o.maxDet >= 1 && o.maxDet <= MAX_DET_LIMIT)) throw invalidValue(`maxDet must be an integer between 1 and ${MAX_DET_LIMIT}, got ${r.maxDet}`);
  return o;
}

export class DetectService {
  constructor(
    readonly registry: ModelRegistry,
    readonly pool: InferencePool,
  ) {}

  async spec(id: string, size?: number): Promise<ModelSpec> {
    return specOf(await this.registry.build(id, size));
  }   /** Raw frames are checked here, encoded ones by their header (pixel limit before any decode). */
  async checkImage(image: ImageInput): Promise<void> {
    const { maxPixels } = this.pool.config;
    if (image.kind === 'encoded') {
      await probeImage(image.bytes, { maxPixels });
      return;
    }
    const { width: w, height: h, data } = image;
    if (!(Number.isInteger(w) && Number.isInteger(h) && w > 0 && h > 0)) throw badInput(`raw frame size must be positive integers, got ${w}×${h}`, 'bad_raw_size');
    if (w * h > maxPixels) throw tooLarge(`raw frame of ${w}×${h} pixels is over the limit of ${maxPixels}`, 'too_many_pixels');
    if (data.length !== w * h * 3) throw badInput(`rgb24 frame of ${w}×${h} needs ${w * h * 3} bytes, got ${data.length}`, 'bad_raw_size');
  }

  /** Detections as typed arrays (for heads that go on, like a per-stream tracker) with the answer's other fields. */
  async detectRaw(input: Uint8Array | ImageInput, req: DetectRequest = {}): Promise<RawDetectResponse> {
    const image: ImageInput = input instanceof Uint8Array ? { kind: 'encoded', bytes: input } : input;
    const id = req.model ?? DEFAULT_MODEL;
    const info = this.registry.info(id);
    const size = this.registry.resolveSize(id, req.size);
    const options = detectOptions(req);
    const t0 = performance.now();
    await this.checkImage(image);
    const probeMs = performance.now() - t0;
    const built = await this.registry.build(id, size);
    const r = await this.pool.detect(specOf(built), image, options);
    return {
      model: { id, trained: info.trained, input: [built.width, built.height] },
      labels: built.labels,
      image: { width: r.width, height: r.height },
      detections: { boxes: r.boxes, scores: r.scores, classIds: r.classIds },
      timings: { ...r.timings, decode: probeMs + r.timings.decode },
    };
  }

  async detect(input: Uint8Array | ImageInput, req: DetectRequest = {}): Promise<DetectResponse> {
    const r = await this.detectRaw(input, req);
    const t1 = performance.now();
    const { labels, ...rest } = r;
    const detections = toJson(r.detections, labels);
    return { ...rest, detections, timings: roundTimings({ ...r.timings, post: r.timings.post + performance.now() - t1 }) };
  }
}

function specOf(b: BuiltModel): ModelSpec {
  return { key: b.key, path: b.path, width: b.width, height: b.height, maxBatch: b.maxBatch, normalize: b.normalize, numClasses: b.info.numClasses, numAnchors: b.numAnchors };
}

export function roundTimings(t: Timings): Timings {
  const ms = (v: number) => Math.round(v * 1000) / 1000;
  return { decode: ms(t.decode), preprocess: ms(t.preprocess), infer: ms(t.infer), post: ms(t.post) };
}
