/**
 * The classify and embed tasks (ViG, DeiT on ImageNet-1k) as the routes and the CLI see them: check the
 * model, size and image header, build or find the graph, run on a worker, and shape the answer: the
 * top-k classes with softmax scores, or the pooled feature vector.
 */
import { invalidValue } from '../errors.js';
import { topK } from '../heads/classify/index.js';
import type { BuiltClassifier, ModelRegistry } from '../models/registry.js';
import { roundTimings, type DetectService } from './detect.js';
import type { ClassifyModelSpec, ImageInput, Timings } from './messages.js';
import type { InferencePool } from './pool.js';

export const DEFAULT_CLASSIFIER = 'vig-t';
export const DEFAULT_TOP_K = 5;

export interface ClassifyRequest {
  model?: string;
  size?: number;
  topK?: number;
}

export interface ModelField {
  id: string;
  trained: boolean;
  input: [number, number];
}

export interface ClassifyResponse {
  model: ModelField;
  image: { width: number; height: number };
  classes: { classId: number; label: string; score: number }[];
  timings: Timings;
}

export interface EmbedResponse {
  model: ModelField;
  image: { width: number; height: number };
  /** The pooled trunk output the head reads (ViG: mean of the normed tokens; DeiT: the normed class token). */
  embedding: number[];
  dim: number;
  timings: Timings;
}

export class ClassifyService {
  constructor(
    readonly registry: ModelRegistry,
    readonly pool: InferencePool,
    /** For its image checks (pixel limit from the header, raw frame sizes). */
    private readonly detector: DetectService,
  ) {}

  /** The built graph of a classify model at `size`: 404 unknown model, 422 wrong task or bad size. */
  async spec(id: string, size?: number): Promise<BuiltClassifier> {
    this.registry.requireTask(id, 'classify');
    return this.registry.buildClassifier(id, this.registry.resolveSize(id, size));
  }

  /** The request checked and defaulted: 404 unknown model, 422 wrong task, bad size or topK. Shared by REST and streams. */
  resolve(req: ClassifyRequest): Required<ClassifyRequest> {
    const model = req.model ?? DEFAULT_CLASSIFIER;
    this.registry.requireTask(model, 'classify');
    const size = this.registry.resolveSize(model, req.size);
    const topK = req.topK ?? DEFAULT_TOP_K;
    if (!(Number.isInteger(topK) && topK >= 1 && topK <= 1000)) throw invalidValue(`topK must be an integer between 1 and 1000, got ${req.topK}`);
    return { model, size, topK };
  }

  private async run(input: Uint8Array | ImageInput, req: Required<ClassifyRequest>, output: 'logits' | 'features') {
    const image: ImageInput = input instanceof Uint8Array ? { kind: 'encoded', bytes: input } : input;
    const { model: id, size } = req;
    const info = this.registry.info(id);
    const t0 = performance.now();
    await this.detector.checkImage(image);
    const probeMs = performance.now() - t0;
    const built = await this.registry.buildClassifier(id, size);
    const r = await this.pool.classify(specOf(built), image, output);
    const model: ModelField = { id, trained: info.trained, input: [size, size] };
    return { built, model, r, timings: { ...r.timings, decode: probeMs + r.timings.decode } };
  }

  async classify(input: Uint8Array | ImageInput, req: ClassifyRequest = {}): Promise<ClassifyResponse> {
    const checked = this.resolve(req);
    const { built, model, r, timings } = await this.run(input, checked, 'logits');
    const t1 = performance.now();
    const top = topK(r.values, checked.topK);
    const classes = [...top.classIds].map((c, i) => ({ classId: c, label: built.labels[c] ?? String(c), score: top.scores[i] }));
    return { model, image: { width: r.width, height: r.height }, classes, timings: roundTimings({ ...timings, post: timings.post + performance.now() - t1 }) };
  }

  async embed(input: Uint8Array | ImageInput, req: Omit<ClassifyRequest, 'topK'> = {}): Promise<EmbedResponse> {
    const { model, r, timings } = await this.run(input, this.resolve(req), 'features');
    return { model, image: { width: r.width, height: r.height }, embedding: Array.from(r.values), dim: r.values.length, timings: roundTimings(timings) };
  }
}

export function specOf(b: BuiltClassifier): ClassifyModelSpec {
  return { key: b.key, path: b.path, size: b.size, numClasses: b.numClasses, dim: b.dim, maxBatch: b.maxBatch };
}
