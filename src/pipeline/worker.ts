/**
 * An inference worker thread. It owns the ORT sessions (session.run blocks the thread it runs on, so
 * it never runs on the thread that serves traffic) and runs the whole per-image path: sharp decode,
 * the fused letterbox kernel into a reused input buffer, session.run, and the detect head.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { FoveaError, invalidValue, notFound } from '../errors.js';
import { changedFraction, maskToPng, maskToRle, regions } from '../heads/change/index.js';
import { postprocessDetect } from '../heads/detect/index.js';
import { decodeImage, type RgbImage } from './decode.js';
import { letterboxGeometry } from './letterbox.js';
import type { AdapterRequest, ChangeJob, ChangeModelSpec, ClassifyJob, ClassifyModelSpec, DetectJob, ImageInput, ExecutionProvider, ModelSpec, TrackJob, TrackModelSpec, WorkerConfig, WorkerReply, WorkerRequest } from './messages.js';
import { classifyGeometry, classifyInto } from './classify-preprocess.js';
import { cropInto, cropParams, imageChannelMeans } from './crop.js';
import { letterboxInto } from './preprocess.js';
import { sessionOptions } from './session-options.js';
import { stitch, tileGrid } from './tiles.js';

interface LoadedModel {
  readonly session: ort.InferenceSession;
  /** The reused NCHW input buffer, room for `maxBatch` images. */
  readonly input: Float32Array;
  readonly ep: ExecutionProvider;
  readonly warning?: string;
}

interface Decoded {
  readonly img: RgbImage;
  /** A change job's `after` image, the size of `img`. */
  readonly after?: RgbImage;
  readonly ms: number;
}

/** A job waiting in its model's queue; `decoded` fills in when sharp is done. */
interface Waiting {
  readonly job: DetectJob | TrackJob | ClassifyJob | ChangeJob;
  readonly arrived: number;
  decoded?: Decoded;
  error?: unknown;
}

const config = workerData as WorkerConfig;
const port = parentPort!;
const models = new Map<string, Promise<LoadedModel>>();
/** Adapters of unmerged tracker graphs: model key → adapter name → its feeds as ready tensors. One session serves them all. */
const adapters = new Map<string, Map<string, Record<string, ort.Tensor>>>();
/** Sessions created (for `stats`: switching adapters must not add one). */
let loads = 0;

const post = (m: WorkerReply, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);

/** CUDA only where the CUDA provider is installed; otherwise a clear warning and the CPU. */
async function createSession(path: string): Promise<{ session: ort.InferenceSession; ep: ExecutionProvider; warning?: string }> {
  const base = sessionOptions(config.intraOpThreads, config.spin);
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

function load(spec: ModelSpec | TrackModelSpec | ClassifyModelSpec | ChangeModelSpec): Promise<LoadedModel> {
  let m = models.get(spec.key);
  if (!m) {
    loads++;
    m = createSession(spec.path).then(({ session, ep, warning }) => {
      if (warning) post({ type: 'log', level: 'warn', message: warning });
      const pixels =
        // A change model's buffer: `before` tiles, then `after` tiles, tileBatch of each.
        'tile' in spec ? 2 * spec.tileBatch * spec.tile * spec.tile
        : 'searchSize' in spec ? spec.searchSize * spec.searchSize
        : 'dim' in spec ? Math.min(config.maxBatch, spec.maxBatch) * spec.size * spec.size
        : Math.min(config.maxBatch, spec.maxBatch) * spec.width * spec.height;
      return { session, input: new Float32Array(3 * pixels), ep, warning };
    });
    m.catch(() => models.delete(spec.key));
    models.set(spec.key, m);
  }
  return m;
}

/** Decode starts as soon as the job arrives (sharp works on libuv's pool), overlapping the run in progress. */
function startDecode(job: DetectJob | TrackJob | ClassifyJob | ChangeJob): Promise<Decoded> {
  const t0 = performance.now();
  if (job.type === 'change') return decodePair(job, t0);
  const { image } = job;
  return decodeOne(image).then((img) => ({ img, ms: image.kind === 'rgb24' ? 0 : performance.now() - t0 }));
}

function decodeOne(input: ImageInput): Promise<RgbImage> {
  if (input.kind === 'rgb24') return Promise.resolve({ data: input.data, width: input.width, height: input.height });
  return decodeImage(input.bytes, { maxPixels: config.maxPixels });
}

/** Both images of a change job; `after` resized (sharp's default lanczos3) to `before`'s size when the job allows it. */
async function decodePair(job: ChangeJob, t0: number): Promise<Decoded> {
  const [before, after] = await Promise.all([decodeOne(job.image), decodeOne(job.after)]);
  let b = after;
  if (after.width !== before.width || after.height !== before.height) {
    if (!job.resize)
      throw invalidValue(`before is ${before.width}×${before.height} but after is ${after.width}×${after.height}; send images of one size or resize=true`, 'size_mismatch');
    const data = await sharp(after.data, { raw: { width: after.width, height: after.height, channels: 3 }, limitInputPixels: false })
      .resize(before.width, before.height, { fit: 'fill' })
      .raw()
      .toBuffer();
    b = { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: before.width, height: before.height };
  }
  return { img: before, after: b, ms: performance.now() - t0 };
}

/**
 * Copies the tile at (x, y), w × h, of packed RGB `img` into `dst` at `offset` as a [3, tile, tile] plane in
 * [0, 1]; the rest of the slot (a scene smaller than the tile) is zero padding, bottom and right.
 */
function tileInto(img: RgbImage, x: number, y: number, w: number, h: number, tile: number, dst: Float32Array, offset: number): void {
  const plane = tile * tile;
  if (w < tile || h < tile) dst.fill(0, offset, offset + 3 * plane);
  const src = img.data;
  const k = 1 / 255;
  for (let r = 0; r < h; r++) {
    let si = ((y + r) * img.width + x) * 3;
    const di = offset + r * tile;
    for (let c = 0; c < w; c++, si += 3) {
      dst[di + c] = src[si] * k;
      dst[di + plane + c] = src[si + 1] * k;
      dst[di + 2 * plane + c] = src[si + 2] * k;
    }
  }
}

/**
 * One session.run for up to `maxBatch` decoded jobs of the same model: each image letterboxed into its
 * slot of the reused batch buffer, one run, then the detect head per batch index.
 */
async function runBatch(batch: readonly Waiting[]): Promise<void> {
  const first = batch[0].job;
  if (first.type === 'track') return runTrack(first, batch[0].decoded!);
  if (first.type === 'classify') return runClassify(batch as readonly (Waiting & { job: ClassifyJob })[]);
  if (first.type === 'change') return runChange(first, batch[0].decoded!);
  const spec = first.model;
  const model = await load(spec);
  const per = 3 * spec.width * spec.height;
  const geoms = batch.map((w, i) => {
    const t = performance.now();
    const { img } = w.decoded!;
    const geom = letterboxGeometry(img.width, img.height, spec.width, spec.height);
    letterboxInto(img, geom, model.input, i * per);
    if (spec.normalize) normalizeInPlace(model.input.subarray(i * per, (i + 1) * per), spec.normalize);
    return { geom, ms: performance.now() - t };
  });
  const t1 = performance.now();
  const tensor = new ort.Tensor('float32', model.input.subarray(0, batch.length * per), [batch.length, 3, spec.height, spec.width]);
  const out = await model.session.run({ [model.session.inputNames[0]]: tensor });
  const infer = performance.now() - t1;
  const y = out[model.session.outputNames[0]].data as Float32Array;
  batch.forEach((w, i) => {
    const t = performance.now();
    const d = postprocessDetect(y, { numClasses: spec.numClasses, numAnchors: spec.numAnchors }, geoms[i].geom, (w.job as DetectJob).options, i);
    const boxes = Float32Array.from(d.boxes);
    const scores = Float32Array.from(d.scores);
    const classIds = Int32Array.from(d.classIds);
    const timings = { decode: w.decoded!.ms, preprocess: geoms[i].ms, infer, post: performance.now() - t };
    const { width, height } = w.decoded!.img;
    post({ type: 'detect', id: w.job.id, width, height, boxes, scores, classIds, timings, batchSize: batch.length }, [boxes.buffer, scores.buffer, classIds.buffer]);
  });
}

/**
 * One change job: the scene is cut into overlapping tiles (tiles.ts), cropped straight from the decoded uint8
 * RGB into the reused input buffer (no scene-sized float copy), run `tileBatch` tiles per session.run, and the
 * logits blended back in bounded memory; then the head (regions, changed fraction) and the mask encoding, so
 * only the small answer leaves the worker.
 */
async function runChange(job: ChangeJob, decoded: Decoded): Promise<void> {
  const spec = job.model;
  const model = await load(spec);
  const { img } = decoded;
  const after = decoded.after!;
  const { width, height } = img;
  const { tile, tileBatch } = spec;
  const per = 3 * tile * tile;
  const afterBase = tileBatch * per;
  const t0 = performance.now();
  let preprocess = 0;
  let infer = 0;
  let runs = 0;
  let tiles = 0;
  // Tiles come in stitch's order; each run takes the next tileBatch of them and keeps their logits until asked.
  const queue = new Map<string, Float32Array>();
  const grid: { x: number; y: number; w: number; h: number }[] = [];
  for (const t of tileGrid(width, height, tile, job.overlap)) grid.push({ x: t.x, y: t.y, w: t.width, h: t.height });
  let next = 0;
  const runNext = async (): Promise<void> => {
    const chunk = grid.slice(next, next + tileBatch);
    next += chunk.length;
    const t1 = performance.now();
    chunk.forEach((t, i) => {
      tileInto(img, t.x, t.y, t.w, t.h, tile, model.input, i * per);
      tileInto(after, t.x, t.y, t.w, t.h, tile, model.input, afterBase + i * per);
    });
    const t2 = performance.now();
    const dims = [chunk.length, 3, tile, tile];
    const out = await model.session.run({
      before: new ort.Tensor('float32', model.input.subarray(0, chunk.length * per), dims),
      after: new ort.Tensor('float32', model.input.subarray(afterBase, afterBase + chunk.length * per), dims),
    });
    const logits = out.logits.data as Float32Array;
    const n = 2 * tile * tile;
    chunk.forEach((t, i) => queue.set(`${t.x},${t.y}`, logits.slice(i * n, (i + 1) * n)));
    preprocess += t2 - t1;
    infer += performance.now() - t2;
    runs++;
    tiles += chunk.length;
  };
  const { mask } = await stitch(width, height, { tile, overlap: job.overlap }, async (x, y) => {
    const k = `${x},${y}`;
    if (!queue.has(k)) await runNext();
    const logits = queue.get(k);
    if (!logits) throw new Error(`change: tile (${x}, ${y}) was not run`);
    queue.delete(k);
    return logits;
  });
  const t3 = performance.now();
  const found = regions(mask, width, height, { minArea: job.minArea });
  const fraction = changedFraction(mask);
  // A compact copy: the PNG may be a view into a larger buffer, and only its bytes should travel.
  const encoded = job.mask === 'png' ? (await maskToPng(mask, width, height)).slice() : job.mask === 'rle' ? maskToRle(mask, width, height) : null;
  // Blending and the argmax happen inside stitch, between the runs: counted with the head as post-processing.
  const postMs = performance.now() - t3 + (t3 - t0 - preprocess - infer);
  const timings = { decode: decoded.ms, preprocess, infer, post: postMs };
  const transfer = encoded instanceof Uint8Array ? [encoded.buffer as ArrayBuffer] : [];
  post({ type: 'change', id: job.id, width, height, changedFraction: fraction, regions: found, mask: encoded, tiles, runs, timings }, transfer);
}

/**
 * One session.run for decoded classify jobs of the same model: each image resized, centre-cropped and
 * normalised into its slot of the reused batch buffer; each reply takes its row of the output it asked for.
 */
async function runClassify(batch: readonly (Waiting & { job: ClassifyJob })[]): Promise<void> {
  const spec = batch[0].job.model;
  const model = await load(spec);
  const per = 3 * spec.size * spec.size;
  const prep = batch.map((w, i) => {
    const t = performance.now();
    const { img } = w.decoded!;
    classifyInto(img, classifyGeometry(img.width, img.height, spec.size), model.input, i * per);
    return performance.now() - t;
  });
  const t1 = performance.now();
  const tensor = new ort.Tensor('float32', model.input.subarray(0, batch.length * per), [batch.length, 3, spec.size, spec.size]);
  const out = await model.session.run({ images: tensor });
  const infer = performance.now() - t1;
  batch.forEach((w, i) => {
    const t = performance.now();
    const n = w.job.output === 'logits' ? spec.numClasses : spec.dim;
    const values = (out[w.job.output].data as Float32Array).slice(i * n, (i + 1) * n);
    const timings = { decode: w.decoded!.ms, preprocess: prep[i], infer, post: performance.now() - t };
    const { width, height } = w.decoded!.img;
    post({ type: 'classify', id: w.job.id, width, height, values, timings, batchSize: batch.length }, [values.buffer]);
  });
}

/**
 * One tracking frame. Init: the frame's channel means and the template crop (returned: the main
 * thread keeps them with the session). Search: the search crop, one run with the session's template
 * and foreground mask, and the raw head outputs for the decode.
 */
async function runTrack(job: TrackJob, decoded: Decoded): Promise<void> {
  const spec = job.model;
  const { img, ms: decodeMs } = decoded;
  const t0 = performance.now();
  if (job.init) {
    const means = imageChannelMeans(img);
    const size: [number, number] = [spec.templateSize, spec.templateSize];
    const template = new Float32Array(3 * spec.templateSize * spec.templateSize);
    cropInto(img, cropParams(job.init.box, spec.templateAreaFactor, size), size, means, template);
    const timings = { decode: decodeMs, preprocess: performance.now() - t0, infer: 0, post: 0 };
    post({ type: 'track', id: job.id, width: img.width, height: img.height, init: { template, means }, timings }, [template.buffer]);
    return;
  }
  const search = job.search!;
  const model = await load(spec);
  const t1Crop = performance.now();
  const size: [number, number] = [spec.searchSize, spec.searchSize];
  const adjusted = cropInto(img, search.params, size, search.padMean, model.input);
  const t1 = performance.now();
  const s = spec.templateSize;
  const feat = spec.templateFeat;
  const out = await model.session.run({
    z: new ort.Tensor('float32', search.template, [1, 3, s, s]),
    x: new ort.Tensor('float32', model.input, [1, 3, spec.searchSize, spec.searchSize]),
    z_feat_mask: new ort.Tensor('int64', search.mask, [1, feat, feat]),
    ...adapterFeeds(spec, job.adapter),
  });
  const t2 = performance.now();
  const scoreMap = Float32Array.from(out.score_map.data as Float32Array);
  const boxes = Float32Array.from(out.boxes.data as Float32Array);
  const timings = { decode: decodeMs, preprocess: t1 - t1Crop, infer: t2 - t1, post: performance.now() - t2 };
  post({ type: 'track', id: job.id, width: img.width, height: img.height, search: { scoreMap, boxes, adjusted }, timings }, [scoreMap.buffer, boxes.buffer]);
}

/** The LoRA factors a search on `spec` runs with: those of the named adapter on an unmerged graph, none on a merged one. */
function adapterFeeds(spec: TrackModelSpec, name: string | undefined): Record<string, ort.Tensor> {
  if (!spec.adapters) {
    if (name !== undefined) throw new Error(`model ${spec.key} has LoRA merged: it takes no adapter ('${name}')`);
    return {};
  }
  if (name === undefined) throw new Error(`model ${spec.key} takes its LoRA factors as inputs: a search must name an adapter`);
  const feeds = adapters.get(spec.key)?.get(name);
  if (!feeds) throw notFound(`unknown adapter '${name}' for ${spec.key} on this worker`, 'unknown_adapter');
  return feeds;
}

function addAdapter(req: AdapterRequest): void {
  const byName = adapters.get(req.model.key) ?? new Map<string, Record<string, ort.Tensor>>();
  byName.set(req.name, Object.fromEntries(req.feeds.map((f) => [f.name, new ort.Tensor('float32', f.data, [...f.dims])])));
  adapters.set(req.model.key, byName);
}

/** (x − mean)/std per channel plane, for brought-in graphs trained with ImageNet-style normalisation. */
function normalizeInPlace(chw: Float32Array, n: NonNullable<ModelSpec['normalize']>): void {
  const plane = chw.length / 3;
  for (let c = 0; c < 3; c++) {
    const m = n.mean[c];
    const inv = 1 / n.std[c];
    for (let i = c * plane, end = i + plane; i < end; i++) chw[i] = (chw[i] - m) * inv;
  }
}

function fail(id: number, e: unknown): void {
  if (e instanceof FoveaError) post({ type: 'error', id, status: e.status, code: e.code, message: e.message });
  else post({ type: 'error', id, status: 500, code: 'inference_failed', message: e instanceof Error ? e.message : String(e) });
}

/**
 * The batcher. Jobs wait per model; whenever no run is in progress, the model whose oldest decoded
 * job has waited longest runs with every decoded job it has (up to maxBatch). Jobs that arrive while
 * a run blocks the thread are batched naturally; when some of a model's jobs are still decoding, an
 * idle worker waits for them at most maxDelayMs past the oldest job's arrival.
 */
const queues = new Map<string, Waiting[]>();
let running = false;
let timer: NodeJS.Timeout | undefined;

function pump(): void {
  if (running) return;
  const now = performance.now();
  let pick: Waiting[] | undefined;
  let due = Infinity;
  for (const q of queues.values()) {
    for (let i = q.length - 1; i >= 0; i--) if (q[i].error !== undefined) fail(q[i].job.id, q.splice(i, 1)[0].error);
    const ready = q.filter((w) => w.decoded);
    if (ready.length === 0) continue;
    const wait = ready[0].arrived + config.maxDelayMs - now;
    const full = ready.length >= config.maxBatch || ready.length === q.length;
    if ((full || wait <= 0) && (!pick || ready[0].arrived < pick[0].arrived)) pick = ready;
    else due = Math.min(due, wait);
  }
  if (!pick) {
    if (due < Infinity && !timer) timer = setTimeout(() => ((timer = undefined), pump()), Math.max(0, due));
    return;
  }
  const batch = pick.slice(0, Math.min(config.maxBatch, pick[0].job.model.maxBatch));
  const q = queues.get(batch[0].job.model.key)!;
  queues.set(batch[0].job.model.key, q.filter((w) => !batch.includes(w)));
  running = true;
  runBatch(batch)
    .catch((e: unknown) => batch.forEach((w) => fail(w.job.id, e)))
    .finally(() => {
      running = false;
      pump();
    });
}

port.on('message', (req: WorkerRequest) => {
  if (req.type === 'adapter') {
    try {
      addAdapter(req);
      post({ type: 'adapter', id: req.id });
    } catch (e) {
      fail(req.id, e);
    }
    return;
  }
  if (req.type === 'stats') {
    const byModel = Object.fromEntries([...adapters].map(([key, m]) => [key, [...m.keys()]]));
    post({ type: 'stats', id: req.id, loads, sessions: [...models.keys()], adapters: byModel });
    return;
  }
  if (req.type === 'warmup') {
    load(req.model).then(
      (m) => post({ type: 'warmup', id: req.id, ep: m.ep, warning: m.warning }),
      (e: unknown) => fail(req.id, e),
    );
    return;
  }
  const w: Waiting = { job: req, arrived: performance.now() };
  const q = queues.get(req.model.key) ?? [];
  q.push(w);
  queues.set(req.model.key, q);
  startDecode(req).then(
    (d) => ((w.decoded = d), pump()),
    (e: unknown) => ((w.error = e), pump()),
  );
});
