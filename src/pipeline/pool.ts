/**
 * The inference worker pool, on the serving thread: hands jobs to the least-loaded worker, bounds
 * the queue (overload → 503 at once rather than unbounded memory), and replaces a worker that dies,
 * failing only the jobs that were on it.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { FoveaError, unavailable } from '../errors.js';
import type { DetectOptions } from '../heads/detect/index.js';
import type { AdapterFeed, AdapterRequest, ChangeJob, ChangeModelSpec, ChangeReply, ClassifyJob, ClassifyModelSpec, ClassifyReply, DetectResult, ExecutionProvider, ImageInput, ModelSpec, TrackJob, TrackModelSpec, TrackReply, WorkerConfig, WorkerReply, WorkerRequest, WorkerStats } from './messages.js';

export interface PoolOptions {
  workers?: number;
  ep?: ExecutionProvider;
  intraOpThreads?: number;
  maxPixels?: number;
  maxBatch?: number;
  maxDelayMs?: number;
  spin?: boolean;
  /** Jobs in flight per worker before new ones are refused with 503. */
  maxQueuePerWorker?: number;
  log?: (level: 'warn' | 'info', message: string) => void;
}

type Distribute<T> = T extends unknown ? Omit<T, 'id'> : never;
type JobBody = Distribute<WorkerRequest>;

interface Pending {
  resolve: (r: WorkerReply) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  pending: Map<number, Pending>;
}

/** Under vitest the sources are TypeScript: the worker then registers tsx's loader before importing its module. */
function spawn(config: WorkerConfig): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./worker.js', import.meta.url), { workerData: config });
  const entry = JSON.stringify(new URL('./worker.ts', import.meta.url).href);
  return new Worker(`import('tsx/esm/api').then((t) => { t.register(); return import(${entry}); });`, { eval: true, workerData: config });
}

export class InferencePool {
  readonly size: number;
  readonly config: WorkerConfig;
  private readonly slots: Slot[] = [];
  private readonly maxQueue: number;
  private readonly log: NonNullable<PoolOptions['log']>;
  private nextId = 1;
  private closed = false;
  /** Adapters every worker holds (model key + name → request), given again to a worker started after a crash. */
  private readonly adapters = new Map<string, Omit<AdapterRequest, 'id'>>();

  constructor(opts: PoolOptions = {}) {
    const cores = availableParallelism();
    this.size = Math.max(1, opts.workers ?? 1);
    this.config = {
      ep: opts.ep ?? 'cpu',
      intraOpThreads: opts.intraOpThreads ?? Math.max(1, Math.floor(cores / this.size)),
      maxPixels: opts.maxPixels ?? 40_000_000,
      spin: opts.spin ?? process.env.FOVEA_ORT_SPIN === '1',
      maxBatch: Math.max(1, opts.maxBatch ?? 8),
      maxDelayMs: Math.max(0, opts.maxDelayMs ?? 1),
    };
    this.maxQueue = opts.maxQueuePerWorker ?? 32;
    this.log = opts.log ?? ((level, m) => console[level](m));
    for (let i = 0; i < this.size; i++) this.slots.push(this.start());
  }

  private start(): Slot {
    const slot: Slot = { worker: spawn(this.config), pending: new Map() };
    slot.worker.on('message', (m: WorkerReply) => {
      if (m.type === 'log') return this.log(m.level, m.message);
      const p = slot.pending.get(m.id);
      if (!p) return;
      slot.pending.delete(m.id);
      if (m.type === 'error') p.reject(new FoveaError(m.status as FoveaError['status'], m.code, m.message));
      else p.resolve(m);
    });
    const die = (why: string) => {
      for (const p of slot.pending.values()) p.reject(unavailable(`inference worker stopped: ${why}`, 'worker_failed'));
      slot.pending.clear();
      const i = this.slots.indexOf(slot);
      if (i >= 0 && !this.closed) {
        this.log('warn', `inference worker stopped (${why}); starting a new one`);
        this.slots[i] = this.start();
      }
    };
    slot.worker.on('error', (e) => die(e.message));
    slot.worker.on('exit', (code) => die(`exit code ${code}`));
    // Before any job can reach it (messages arrive in order): the adapters the other workers hold.
    for (const a of this.adapters.values())
      this.send(slot, a).catch((e: unknown) => this.log('warn', `adapter '${a.name}' not given to the new worker: ${(e as Error).message}`));
    return slot;
  }

  private send(slot: Slot, body: JobBody, transfer: ArrayBuffer[] = []): Promise<WorkerReply> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      slot.pending.set(id, { resolve, reject });
      slot.worker.postMessage({ ...body, id }, transfer);
    });
  }

  private submit(body: JobBody, transfer: ArrayBuffer[] = []): Promise<WorkerReply> {
    if (this.closed) return Promise.reject(unavailable('the server is shutting down'));
    const slot = this.slots.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
    if (slot.pending.size >= this.maxQueue) return Promise.reject(new FoveaError(503, 'overloaded', 'inference queue is full; retry shortly'));
    return this.send(slot, body, transfer);
  }

  /** Every worker, once each (not through the queue bound). */
  private broadcast(body: JobBody): Promise<WorkerReply[]> {
    if (this.closed) return Promise.reject(unavailable('the server is shutting down'));
    return Promise.all(this.slots.map((slot) => this.send(slot, body)));
  }

  /**
   * Gives every worker (and any worker started later) the named adapter of an unmerged tracker graph; a search
   * job naming it then runs the model's one session with these factors. The factors are copied to each worker once.
   */
  async addAdapter(model: TrackModelSpec, name: string, feeds: readonly AdapterFeed[]): Promise<void> {
    if (!model.adapters) throw new Error(`model ${model.key} has LoRA merged: it takes no adapters`);
    const body: Omit<AdapterRequest, 'id'> = { type: 'adapter', model, name, feeds };
    this.adapters.set(JSON.stringify([model.key, name]), body);
    await this.broadcast(body);
  }

  /** What each worker holds: sessions created, loaded model keys, adapters per model. */
  async stats(): Promise<WorkerStats[]> {
    const replies = await this.broadcast({ type: 'stats' });
    return replies.map((r) => {
      if (r.type !== 'stats') throw new Error(`unexpected worker reply ${r.type}`);
      return { loads: r.loads, sessions: r.sessions, adapters: r.adapters };
    });
  }

  /** Loads the model's session on every worker; resolves with the provider it runs on. */
  async warmup(model: ModelSpec | TrackModelSpec | ClassifyModelSpec | ChangeModelSpec): Promise<ExecutionProvider> {
    const replies = await this.broadcast({ type: 'warmup', model });
    const r = replies[0];
    return r.type === 'warmup' ? r.ep : 'cpu';
  }

  /** Decode, letterbox, run and NMS on a worker. The image bytes are copied once into a transferable buffer. */
  async detect(model: ModelSpec, image: ImageInput, options: DetectOptions): Promise<DetectResult> {
    const bytes = new Uint8Array(image.kind === 'encoded' ? image.bytes : image.data);
    const moved: ImageInput = image.kind === 'encoded' ? { kind: 'encoded', bytes } : { ...image, data: bytes };
    const r = await this.submit({ type: 'detect', model, image: moved, options }, [bytes.buffer]);
    if (r.type !== 'detect') throw new Error(`unexpected worker reply ${r.type}`);
    return r;
  }

  /** Decode, resize + crop + normalise, run on a worker: the image's logits or pooled features. */
  async classify(model: ClassifyModelSpec, image: ImageInput, output: ClassifyJob['output']): Promise<ClassifyReply> {
    const bytes = new Uint8Array(image.kind === 'encoded' ? image.bytes : image.data);
    const moved: ImageInput = image.kind === 'encoded' ? { kind: 'encoded', bytes } : { ...image, data: bytes };
    const r = await this.submit({ type: 'classify', model, image: moved, output }, [bytes.buffer]);
    if (r.type !== 'classify') throw new Error(`unexpected worker reply ${r.type}`);
    return r;
  }

  /**
   * A change job on a worker: both images decoded there, tiled, run, stitched; the reply carries the regions,
   * the changed fraction and the encoded mask. Each image's bytes are copied once into a transferable buffer.
   */
  async change(model: ChangeModelSpec, before: ImageInput, after: ImageInput, options: Pick<ChangeJob, 'resize' | 'overlap' | 'minArea' | 'mask'>): Promise<ChangeReply> {
    const move = (image: ImageInput): [ImageInput, ArrayBuffer] => {
      const bytes = new Uint8Array(image.kind === 'encoded' ? image.bytes : image.data);
      return [image.kind === 'encoded' ? { kind: 'encoded', bytes } : { ...image, data: bytes }, bytes.buffer];
    };
    const [b, bb] = move(before);
    const [a, ab] = move(after);
    const r = await this.submit({ type: 'change', model, image: b, after: a, ...options }, [bb, ab]);
    if (r.type !== 'change') throw new Error(`unexpected worker reply ${r.type}`);
    return r;
  }

  /** A tracking frame (template crop at init, or search + run) on a worker. */
  async track(model: TrackModelSpec, image: ImageInput, step: Pick<TrackJob, 'init' | 'search' | 'adapter'>): Promise<TrackReply> {
    const bytes = new Uint8Array(image.kind === 'encoded' ? image.bytes : image.data);
    const moved: ImageInput = image.kind === 'encoded' ? { kind: 'encoded', bytes } : { ...image, data: bytes };
    const transfer: ArrayBuffer[] = [bytes.buffer];
    let search = step.search;
    if (search) {
      // Copies: the session keeps its template and mask for the next frames.
      search = { ...search, template: Float32Array.from(search.template), mask: BigInt64Array.from(search.mask) };
      transfer.push(search.template.buffer as ArrayBuffer, search.mask.buffer as ArrayBuffer);
    }
    const r = await this.submit({ type: 'track', model, image: moved, init: step.init, search, adapter: step.adapter }, transfer);
    if (r.type !== 'track') throw new Error(`unexpected worker reply ${r.type}`);
    return r;
  }

  get inFlight(): number {
    return this.slots.reduce((n, s) => n + s.pending.size, 0);
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
