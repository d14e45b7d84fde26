/**
 * The single-object tracking task (LoRAT, specs/models-a.md §1) as the routes and streams see it. A
 * `TrackRun` is one tracked object: the first frame's template crop, foreground mask and channel
 * means, and the tracker state; each frame is cropped, run and decoded on a worker, and the state
 * moves on the main thread. `TrackService` keeps the REST sessions, expiring idle ones.
 */
import { randomUUID } from 'node:crypto';
import { invalidValue, notFound, overLimit } from '../errors.js';
import { SingleObjectTracker, decodeSearch, LORAT_224 } from '../heads/track/lorat.js';
import type { BuiltTracker, ModelRegistry } from '../models/registry.js';
import { DEFAULT_TRACKER } from '../models/registry.js';
import { roundTimings, type DetectService } from './detect.js';
import type { ImageInput, Timings } from './messages.js';
import type { InferencePool } from './pool.js';

export type Box = [number, number, number, number];

export interface TrackAnswer {
  model: { id: string; trained: boolean; input: [number, number] };
  image: { width: number; height: number };
  box: Box;
  /** sigmoid of the score logit at the chosen cell (not window-penalised); 1 on the init frame. */
  score: number;
  timings: Timings;
}

const round2 = (v: number) => Math.round(v * 100) / 100 + 0;

/** A box from a client: four finite numbers with x1 < x2 and y1 < y2. */
export function parseBox(v: unknown): Box {
  if (!Array.isArray(v) || v.length !== 4 || !v.every((x) => typeof x === 'number' && Number.isFinite(x)))
    throw invalidValue(`box must be [x1, y1, x2, y2] as four numbers, got ${JSON.stringify(v)?.slice(0, 80)}`, 'invalid_box');
  const [x1, y1, x2, y2] = v as number[];
  if (!(x1 < x2 && y1 < y2)) throw invalidValue(`box must have x1 < x2 and y1 < y2, got [${v.join(', ')}]`, 'invalid_box');
  return [x1, y1, x2, y2];
}

/**
 * One tracked object on one model. Frames must not overlap: callers run them one at a time. With `adapter`,
 * `model` is the unmerged graph (`buildTracker(id, {adapters: true})`) and every search runs with that adapter.
 */
export class TrackRun {
  private readonly tracker = new SingleObjectTracker(LORAT_224);
  private template?: Float32Array;
  private mask?: BigInt64Array;

  constructor(
    readonly model: BuiltTracker,
    private readonly pool: InferencePool,
    readonly adapter?: string,
  ) {
    if ((adapter !== undefined) !== (model.adapters === true)) throw new Error(`model ${model.key} ${model.adapters ? 'needs' : 'takes no'} adapter`);
  }

  get initialized(): boolean {
    return this.template !== undefined;
  }

  private answer(width: number, height: number, box: Box, score: number, timings: Timings): TrackAnswer {
    const { info } = this.model;
    return { model: { id: info.id, trained: info.trained, input: [...info.input] }, image: { width, height }, box: box.map(round2) as Box, score: Math.round(score * 1e4) / 1e4, timings: roundTimings(timings) };
  }

  /** Starts (or restarts) on `box` in this frame; the answer is the box itself. */
  async init(image: ImageInput, box: Box): Promise<TrackAnswer> {
    const r = await this.pool.track(this.model, image, { init: { box } });
    if (!r.init) throw new Error('worker answered an init without a template');
    const [x1, y1, x2, y2] = box;
    if (x2 <= 0 || y2 <= 0 || x1 >= r.width || y1 >= r.height)
      throw invalidValue(`box [${box.join(', ')}] does not overlap the ${r.width}×${r.height} image`, 'invalid_box');
    const setup = this.tracker.init([r.width, r.height], box, r.init.means);
    this.template = r.init.template;
    this.mask = setup.mask;
    return this.answer(r.width, r.height, box, 1, r.timings);
  }

  /** The next frame: search around the last box, decode, move the state. */
  async step(image: ImageInput): Promise<TrackAnswer> {
    if (!this.template || !this.mask) throw invalidValue('the tracker has no initial box yet', 'not_initialized');
    const params = this.tracker.searchParams();
    const r = await this.pool.track(this.model, image, { search: { params, padMean: this.tracker.padMean as [number, number, number], template: this.template, mask: this.mask }, adapter: this.adapter });
    if (!r.search) throw new Error('worker answered a search without outputs');
    const t = performance.now();
    const decoded = decodeSearch(r.search.scoreMap, r.search.boxes, r.search.adjusted, [r.width, r.height]);
    this.tracker.update(decoded, [r.width, r.height]);
    const timings = { ...r.timings, post: r.timings.post + performance.now() - t };
    return this.answer(r.width, r.height, [...decoded.box] as Box, decoded.score, timings);
  }
}

interface Session {
  readonly run: TrackRun;
  lastUsed: number;
  /** Frames of one session run one after another. */
  queue: Promise<unknown>;
}

export interface TrackServiceOptions {
  maxSessions?: number;
  /** Sessions untouched for this long are dropped (ms). */
  idleMs?: number;
}

export class TrackService {
  private readonly sessions = new Map<string, Session>();
  private readonly maxSessions: number;
  private readonly idleMs: number;
  private readonly sweeper: NodeJS.Timeout;
  /** Creates between the limit check and their session's insertion. */
  private starting = 0;

  constructor(
    readonly registry: ModelRegistry,
    readonly pool: InferencePool,
    private readonly detector: DetectService,
    opts: TrackServiceOptions = {},
  ) {
    this.maxSessions = opts.maxSessions ?? 64;
    this.idleMs = opts.idleMs ?? 120_000;
    this.sweeper = setInterval(() => this.sweep(), Math.min(this.idleMs, 10_000)).unref();
  }

  /**
   * A new tracker for a stream or a session: the model must serve `track`, and have `adapter` when one is named
   * (404 `unknown_adapter`). Without an adapter it runs the merged graph; with one, the unmerged graph that all
   * of the model's adapters share (the workers hold every adapter: no rebuild, no reload).
   */
  async newRun(modelId = DEFAULT_TRACKER, adapter?: string): Promise<TrackRun> {
    if (adapter === undefined) return new TrackRun(await this.registry.buildTracker(modelId), this.pool);
    this.registry.requireTask(modelId, 'track');
    this.registry.requireAdapter(modelId, adapter);
    return new TrackRun(await this.registry.buildTracker(modelId, { adapters: true }), this.pool, adapter);
  }

  /** Gives the workers every adapter in the registry (at start, before any stream or session names one). */
  async loadAdapters(): Promise<void> {
    for (const { id } of this.registry.list()) {
      const names = this.registry.adapterNames(id);
      if (names.length === 0) continue;
      const spec = await this.registry.buildTracker(id, { adapters: true });
      for (const name of names) await this.pool.addAdapter(spec, name, this.registry.adapterFeeds(id, name));
    }
  }

  /** Checks an image the way detect does (header, pixel limit) before it reaches a worker. */
  check(image: ImageInput): Promise<void> {
    return this.detector.checkImage(image);
  }

  async create(image: ImageInput, box: Box, modelId = DEFAULT_TRACKER, adapter?: string): Promise<{ sessionId: string } & TrackAnswer> {
    this.sweep();
    // Creates still initialising hold their place: creates sent at once cannot pass the limit together.
    if (this.sessions.size + this.starting >= this.maxSessions) throw overLimit(`too many tracking sessions (${this.maxSessions}); delete finished ones`, 'too_many_sessions');
    this.starting++;
    try {
      await this.check(image);
      const run = await this.newRun(modelId, adapter);
      const answer = await run.init(image, box);
      const sessionId = randomUUID();
      this.sessions.set(sessionId, { run, lastUsed: Date.now(), queue: Promise.resolve() });
      return { sessionId, ...answer };
    } finally {
      this.starting--;
    }
  }

  async frame(sessionId: string, image: ImageInput): Promise<TrackAnswer> {
    const s = this.live(sessionId);
    s.lastUsed = Date.now();
    await this.check(image);
    const next = s.queue.then(() => s.run.step(image));
    s.queue = next.catch(() => undefined);
    s.queue.then(() => (s.lastUsed = Date.now()));
    return next;
  }

  delete(sessionId: string): void {
    this.live(sessionId);
    this.sessions.delete(sessionId);
  }

  get size(): number {
    return this.sessions.size;
  }

  /**
   * A session that has not expired. The sweeper runs only every min(idleMs, 10 s), so a session idle
   * past `idleMs` may still be in the map: it is expired all the same.
   */
  private live(id: string): Session {
    const s = this.sessions.get(id);
    if (s && Date.now() - s.lastUsed <= this.idleMs) return s;
    if (s) this.sessions.delete(id);
    return this.missing(id);
  }

  private missing(id: string): never {
    throw notFound(`no tracking session '${id.slice(0, 64)}' (it may have expired)`, 'unknown_session');
  }

  private sweep(): void {
    const now = Date.now();
    for (const [id, s] of this.sessions) if (now - s.lastUsed > this.idleMs) this.sessions.delete(id);
  }

  close(): void {
    clearInterval(this.sweeper);
    this.sessions.clear();
  }
}
