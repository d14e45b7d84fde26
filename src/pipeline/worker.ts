/**
 * An inference worker thread. It owns the ORT sessions (session.run blocks the thread it runs on, so
 * it never runs on the thread that serves traffic) and runs the whole per-image path: sharp decode,
 * the fused letterbox kernel into a reused input buffer, session.run, and the detect head.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { FoveaError } from '../errors.js';
import { postprocessDetect } from '../heads/detect/index.js';
import { decodeImage, type RgbImage } from './decode.js';
import { letterboxGeometry } from './letterbox.js';
import type { DetectJob, ExecutionProvider, ModelSpec, WorkerConfig, WorkerReply, WorkerRequest } from './messages.js';
import { letterboxInto } from './preprocess.js';

interface LoadedModel {
  readonly session: ort.InferenceSession;
  /** The reused NCHW input buffer (one image). */
  readonly input: Float32Array;
  readonly tensor: ort.Tensor;
  readonly ep: ExecutionProvider;
  readonly warning?: string;
}

const config = workerData as WorkerConfig;
const port = parentPort!;
const models = new Map<string, Promise<LoadedModel>>();

const post = (m: WorkerReply, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);

/** CUDA only where the CUDA provider is installed; otherwise a clear warning and the CPU. */
async function createSession(path: string): Promise<{ session: ort.InferenceSession; ep: ExecutionProvider; warning?: string }> {
  const base: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: 'all', intraOpNumThreads: config.intraOpThreads, interOpNumThreads: 1 };
  if (config.ep === 'cuda') {
    const cuda = ort.listSupportedBackends().find((b) => b.name === 'cuda');
    try {
      if (!cuda) throw new Error('this onnxruntime-node build has no CUDA backend');
      return { session: await ort.InferenceSession.create(path, { ...base, executionProviders: ['cuda', 'cpu'] }), ep: 'cuda' };
    } catch (e) {
      const warning = `CUDA execution provider unavailable (${(e as Error).message.split('\n')[0]}); running on CPU. Install with ONNXRUNTIME_NODE_INSTALL=cuda12 npm ci on a CUDA host.`;
      return { session: await ort.InferenceSession.create(path, { ...base, executionProviders: ['cpu'] }), ep: 'cpu', warning };
    }
  }
  return { session: await ort.InferenceSession.create(path, { ...base, executionProviders: ['cpu'] }), ep: 'cpu' };
}

function load(spec: ModelSpec): Promise<LoadedModel> {
  let m = models.get(spec.key);
  if (!m) {
    m = createSession(spec.path).then(({ session, ep, warning }) => {
      const input = new Float32Array(3 * spec.size * spec.size);
      const tensor = new ort.Tensor('float32', input, [1, 3, spec.size, spec.size]);
      if (warning) post({ type: 'log', level: 'warn', message: warning });
      return { session, input, tensor, ep, warning };
    });
    m.catch(() => models.delete(spec.key));
    models.set(spec.key, m);
  }
  return m;
}

/** Decode starts as soon as the job arrives (sharp works on libuv's pool), overlapping the run in progress. */
function startDecode(job: DetectJob): Promise<{ img: RgbImage; ms: number }> {
  const t0 = performance.now();
  const { image } = job;
  if (image.kind === 'rgb24') return Promise.resolve({ img: { data: image.data, width: image.width, height: image.height }, ms: 0 });
  return decodeImage(image.bytes, { maxPixels: config.maxPixels }).then((img) => ({ img, ms: performance.now() - t0 }));
}

async function detect(job: DetectJob, decoded: Promise<{ img: RgbImage; ms: number }>): Promise<void> {
  const model = await load(job.model);
  const { img, ms: decodeMs } = await decoded;
  const t1 = performance.now();
  const geom = letterboxGeometry(img.width, img.height, job.model.size, job.model.size);
  letterboxInto(img, geom, model.input);
  const t2 = performance.now();
  const out = await model.session.run({ [model.session.inputNames[0]]: model.tensor });
  const t3 = performance.now();
  const y = out[model.session.outputNames[0]].data as Float32Array;
  const d = postprocessDetect(y, { numClasses: job.model.numClasses, numAnchors: job.model.numAnchors }, geom, job.options);
  const t4 = performance.now();
  const boxes = Float32Array.from(d.boxes);
  const scores = Float32Array.from(d.scores);
  const classIds = Int32Array.from(d.classIds);
  post(
    { type: 'detect', id: job.id, width: img.width, height: img.height, boxes, scores, classIds, timings: { decode: decodeMs, preprocess: t2 - t1, infer: t3 - t2, post: t4 - t3 } },
    [boxes.buffer, scores.buffer, classIds.buffer],
  );
}

function fail(id: number, e: unknown): void {
  if (e instanceof FoveaError) post({ type: 'error', id, status: e.status, code: e.code, message: e.message });
  else post({ type: 'error', id, status: 500, code: 'inference_failed', message: e instanceof Error ? e.message : String(e) });
}

// Runs one at a time: session.run is synchronous underneath.
let chain: Promise<void> = Promise.resolve();
port.on('message', (req: WorkerRequest) => {
  const decoded = req.type === 'detect' ? startDecode(req) : undefined;
  decoded?.catch(() => undefined); // reported when its turn comes
  chain = chain.then(async () => {
    try {
      if (req.type === 'detect') await detect(req, decoded!);
      else {
        const m = await load(req.model);
        post({ type: 'warmup', id: req.id, ep: m.ep, warning: m.warning });
      }
    } catch (e) {
      fail(req.id, e);
    }
  });
});
