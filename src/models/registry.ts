/**
 * The model catalogue: which ids exist, what task and family they serve, and how to build the graph
 * for one input size. Built graphs are cached on disk under a key of builder version + model + size
 * + weights digest, so a second start does not rebuild.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { invalidValue, notFound } from '../errors.js';
import { CheckpointMismatchError, Params, type StateDict } from './graph/params.js';
import type { Graph } from './graph/graph.js';
import type { ModelProto } from './graph/proto.js';
import { saveModel } from './graph/serialize.js';
import { readStateDict } from './io/index.js';
import { loadManifests, type BroughtModel, type Normalize } from './manifest.js';
import { COCO80 } from '../heads/detect/labels.js';
import { SIZE_MULTIPLE, buildLeYolo, variants as leyoloVariants, type LeYoloVariant } from './leyolo.js';
import { buildLoRAT, featureSizes, loadLoRATWeights, loraFeeds, loraInputShapes, parameterCount as loratParameterCount, variants as loratVariants, type LoRATVariant, type LoRATWeights } from './lorat.js';
import type { AdapterFeed, ChangeModelSpec, ClassifyModelSpec, TrackModelSpec } from '../pipeline/messages.js';
import { CLASSIFIERS, CLASSIFY_SIZE, buildClassifier, classifierInfo, mapClassifierCheckpoint, sizeMultiple } from './classifiers.js';
import { IMAGENET1K } from '../heads/classify/index.js';
import { buildFsgNet, mapCheckpoint as mapFsgNetCheckpoint, SIZE_MULTIPLE as FSGNET_MULTIPLE, type FsgNetVariant } from './fsgnet.js';
import { buildCareCd, mapCheckpoint as mapCareCheckpoint, type CareVariant } from './care.js';

/** Bump when a builder's output changes, so cached graphs are rebuilt. */
export const BUILDER_VERSION = 'fovea-builder-2';

/** A checkpoint named by the user: its digest keys the cache; its tensors are read only when a graph must be built. */
interface Weights {
  readonly path: string;
  readonly digest: string;
  stateDict?: Promise<StateDict>;
}

export type Task = 'detect' | 'track' | 'classify' | 'change';

export interface ModelInfo {
  readonly id: string;
  readonly task: Task;
  readonly family: string;
  readonly variant: string;
  /** Unfolded parameter count, as the official checkpoint counts it. */
  readonly params: number;
  readonly trained: boolean;
  /** Default input [width, height]. */
  readonly input: readonly [number, number];
  readonly numClasses: number;
}

export interface BuiltModel {
  readonly info: ModelInfo;
  /** The requested input side (the width, for a brought-in non-square graph). */
  readonly size: number;
  readonly width: number;
  readonly height: number;
  readonly labels: readonly string[];
  /** Images one run can take. */
  readonly maxBatch: number;
  readonly normalize?: Normalize;
  /** The cache key: also the name workers load the session under. */
  readonly key: string;
  readonly path: string;
  readonly numAnchors: number;
}

interface Family {
  readonly family: string;
  readonly task: Task;
  readonly variant: LeYoloVariant;
  readonly defaultSize: number;
  readonly minSize: number;
  readonly maxSize: number;
}

const MODELS: Readonly<Record<string, Family>> = {
  'leyolo-nano': { family: 'leyolo', task: 'detect', variant: 'nano', defaultSize: 640, minSize: 160, maxSize: 1280 },
  'leyolo-small': { family: 'leyolo', task: 'detect', variant: 'small', defaultSize: 640, minSize: 160, maxSize: 1280 },
};

/** Single-object trackers (LoRAT, specs/models-a.md §1): one graph per variant, template 112, search 224. */
const TRACKERS: Readonly<Record<string, LoRATVariant>> = {
  'lorat-s224': 'S-224',
  'lorat-b224': 'B-224',
  'lorat-l224': 'L-224',
};

export const DEFAULT_MODEL = 'leyolo-nano';
export const DEFAULT_TRACKER = 'lorat-b224';

/** A built classifier: the spec a worker needs, with the model's catalogue entry and its labels. */
export interface BuiltClassifier extends ClassifyModelSpec {
  readonly info: ModelInfo;
  readonly labels: readonly string[];
}

/**
 * Bitemporal change detectors: FSG-Net-R18 (specs/models-b.md §3) and care-cd (a siamese CARE-S0 trunk with
 * FSG-Net's LGFU + FCN head). Both take `before`, `after` [batch, 3, S, S] in [0, 1] and give `logits`
 * [batch, 2, S, S]; scenes larger than S are tiled (src/pipeline/tiles.ts). S is the tile side: 256 (the
 * side FSG-Net is trained and evaluated at) by default, any multiple of 32 from 64 to 1024 on request.
 */
type ChangeFamily = { readonly family: 'fsgnet'; readonly variant: FsgNetVariant } | { readonly family: 'care-cd'; readonly variant: CareVariant };
const CHANGE_MODELS: Readonly<Record<string, ChangeFamily>> = {
  fsgnet: { family: 'fsgnet', variant: 'r18' },
  'care-cd': { family: 'care-cd', variant: 'S0' },
};
export const CHANGE_TILE = { default: 256, multiple: FSGNET_MULTIPLE, min: 64, max: 1024 } as const;
/** Tiles per session.run of a change model (each tile is two 3×S×S inputs). */
export const CHANGE_TILE_BATCH = 4;
export const DEFAULT_CHANGE_MODEL = 'fsgnet';

function buildChangeGraph(f: ChangeFamily, tile: number, p: Params): Graph {
  return f.family === 'fsgnet' ? buildFsgNet(f.variant, tile, p) : buildCareCd(f.variant, p, { imageSize: tile });
}

/** Unfolded parameter count of a change model, from a small seeded build; once per process. */
const changeParamCounts = new Map<string, number>();
function changeParams(f: ChangeFamily): number {
  const memo = `${f.family}:${f.variant}`;
  let n = changeParamCounts.get(memo);
  if (n === undefined) {
    const p = Params.seeded(0);
    buildChangeGraph(f, 32, p);
    n = p.parameterCount();
    changeParamCounts.set(memo, n);
  }
  return n;
}

/** A built change detector: the spec a worker needs, with the model's catalogue entry. */
export interface BuiltChange extends ChangeModelSpec {
  readonly info: ModelInfo;
}

/** A built tracker: the spec a worker needs, with the model's catalogue entry. */
export interface BuiltTracker extends TrackModelSpec {
  readonly info: ModelInfo;
}

/** Adapter names: what a stream or session asks for (`adapter=NAME`). */
export const ADAPTER_NAME = /^[a-z0-9._-]{1,64}$/;

/** Keys an adapter file may hold: LoRA factors under LoRAT's module paths, and the scaling. */
const ADAPTER_KEY = /^blocks\.\d+\.(?:attn\.qkv\.[qkv]|attn\.proj|mlp\.fc[12])\.lora\.[AB]$|^lora_alpha$|^use_rslora$/;

interface Adapter {
  readonly path: string;
  /** In the graph's input order, scaling folded into B (`loraFeeds`). */
  readonly feeds: readonly AdapterFeed[];
}

/** The project root (where package.json is), found from this file in src/ or dist/src/. */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

export function defaultCacheDir(): string {
  return process.env.FOVEA_CACHE ?? join(projectRoot(), 'models', 'cache');
}

export function defaultModelsDir(): string {
  return process.env.FOVEA_MODELS ?? join(projectRoot(), 'models');
}

export interface RegistryOptions {
  cacheDir?: string;
}

export class ModelRegistry {
  private readonly cacheDir: string;
  private readonly infos = new Map<string, ModelInfo>();
  private readonly built = new Map<string, Promise<BuiltModel>>();
  private readonly weights = new Map<string, Weights>();
  private readonly brought = new Map<string, BroughtModel>();
  /** Built trackers by model id, and by `id:inputs` for the unmerged graph the adapters share. */
  private readonly trackers = new Map<string, Promise<BuiltTracker>>();
  /** Built classifiers by `id@size`. */
  private readonly classifiers = new Map<string, Promise<BuiltClassifier>>();
  /** Built change detectors by `id@tile`. */
  private readonly changes = new Map<string, Promise<BuiltChange>>();
  /** Named adapters per tracker model id. */
  private readonly adapters = new Map<string, Map<string, Adapter>>();

  constructor(opts: RegistryOptions = {}) {
    this.cacheDir = opts.cacheDir ?? defaultCacheDir();
    for (const [id, f] of Object.entries(MODELS)) {
      const cfg = leyoloVariants[f.variant];
      this.infos.set(id, {
        id,
        task: f.task,
        family: f.family,
        variant: f.variant,
        params: countParams(f.variant),
        trained: false,
        input: [f.defaultSize, f.defaultSize],
        numClasses: cfg.numClasses,
      });
    }
    for (const [id, variant] of Object.entries(TRACKERS)) {
      const cfg = loratVariants[variant];
      const info: ModelInfo = { id, task: 'track', family: 'lorat', variant, params: loratParameterCount(cfg), trained: false, input: [cfg.searchSize, cfg.searchSize], numClasses: 0 };
      this.infos.set(id, info);
    }
    for (const [id, spec] of Object.entries(CLASSIFIERS)) {
      const { params, numClasses } = classifierInfo(spec);
      const side = CLASSIFY_SIZE.default;
      this.infos.set(id, { id, task: 'classify', family: spec.family, variant: spec.variant, params, trained: false, input: [side, side], numClasses });
    }
    for (const [id, f] of Object.entries(CHANGE_MODELS)) {
      const side = CHANGE_TILE.default;
      this.infos.set(id, { id, task: 'change', family: f.family, variant: f.variant, params: changeParams(f), trained: false, input: [side, side], numClasses: 2 });
    }
  }

  list(): ModelInfo[] {
    return [...this.infos.values()];
  }

  info(id: string): ModelInfo {
    return this.infos.get(id) ?? this.unknown(id);
  }

  private unknown(id: string): never {
    throw notFound(`unknown model '${id}'; available: ${[...this.infos.keys()].join(', ')}`, 'unknown_model');
  }

  /**
   * Adds the brought-in ONNX models described by the manifests in `dir`; a manifest that does not fit
   * its graph throws (the server refuses to start), naming the mismatch.
   */
  async addManifests(dir = defaultModelsDir()): Promise<ModelInfo[]> {
    const added: ModelInfo[] = [];
    for (const b of await loadManifests(dir)) {
      if (this.infos.has(b.id)) throw invalidValue(`${b.manifestPath}: model id '${b.id}' is already taken`);
      const info: ModelInfo = { id: b.id, task: b.task, family: 'onnx', variant: b.path.split('/').pop()!, params: b.params, trained: true, input: [b.width, b.height], numClasses: b.labels.length };
      this.brought.set(b.id, b);
      this.infos.set(b.id, info);
      added.push(info);
    }
    return added;
  }

  /** Checks a requested input side against the family's rule (multiple of 32, within bounds). */
  resolveSize(id: string, size: number | undefined): number {
    const b = this.brought.get(id);
    if (b) {
      if (size !== undefined && size !== b.width) throw invalidValue(`model '${id}' is a fixed-size graph of ${b.width}×${b.height}; omit size or give ${b.width}`);
      return b.width;
    }
    const t = TRACKERS[id];
    if (t) {
      const side = loratVariants[t].searchSize;
      if (size !== undefined && size !== side) throw invalidValue(`model '${id}' tracks with a fixed ${side}×${side} search region; omit size or give ${side}`);
      return side;
    }
    if (CLASSIFIERS[id]) {
      const { default: d, min, max } = CLASSIFY_SIZE;
      const m = sizeMultiple(CLASSIFIERS[id]);
      const s = size ?? d;
      if (!Number.isInteger(s) || s % m !== 0 || s < min || s > max) throw invalidValue(`size must be a multiple of ${m} between ${min} and ${max}, got ${size}`);
      return s;
    }
    const f = MODELS[id] ?? this.unknown(id);
    const s = size ?? f.defaultSize;
    if (!Number.isInteger(s) || s % SIZE_MULTIPLE !== 0 || s < f.minSize || s > f.maxSize)
      throw invalidValue(`size must be a multiple of ${SIZE_MULTIPLE} between ${f.minSize} and ${f.maxSize}, got ${size}`);
    return s;
  }

  /**
   * Serves `id` with the official checkpoint at `path`: the model becomes `trained: true`, and the
   * default-size graph is built (or found in the cache) now, so a checkpoint that does not fit the
   * model is refused at start, naming the first missing and unexpected keys.
   */
  async useWeights(id: string, path: string): Promise<void> {
    const info = this.info(id);
    if (this.adapters.has(id)) throw invalidValue(`model '${id}' already has adapters: give its weights first`);
    const hash = createHash('sha256');
    for (const file of path.split(',')) hash.update(await readFile(file));
    this.weights.set(id, { path, digest: hash.digest('hex').slice(0, 16) });
    this.infos.set(id, { ...info, trained: true });
    for (const key of [...this.built.keys()]) if (key.startsWith(`${id}@`)) this.built.delete(key);
    this.trackers.delete(id);
    this.trackers.delete(`${id}:inputs`);
    for (const key of [...this.classifiers.keys()]) if (key.startsWith(`${id}@`)) this.classifiers.delete(key);
    for (const key of [...this.changes.keys()]) if (key.startsWith(`${id}@`)) this.changes.delete(key);
    if (info.task === 'change') {
      await this.buildChange(id);
      return;
    }
    if (info.task === 'classify') {
      await this.buildClassifier(id);
      return;
    }
    if (info.task === 'track') {
      await this.buildTracker(id);
      return;
    }
    await this.build(id);
  }

  /** The task a model serves; anything else is a 422 naming both. */
  requireTask(id: string, task: Task): ModelInfo {
    const info = this.info(id);
    if (info.task !== task) throw invalidValue(`model '${id}' serves task '${info.task}', not '${task}'`, 'wrong_task');
    return info;
  }

  /** Builds (or finds in the cache) the detection graph of `id` at `size`. */
  build(id: string, size?: number): Promise<BuiltModel> {
    const info = this.requireTask(id, 'detect');
    const s = this.resolveSize(id, size);
    const memo = `${id}@${s}`;
    return memoize(this.built, memo, () => this.buildUncached(info, s));
  }

  private async buildUncached(info: ModelInfo, s: number): Promise<BuiltModel> {
    const b = this.brought.get(info.id);
    if (b) return { info, size: s, width: b.width, height: b.height, labels: b.labels, maxBatch: b.maxBatch, normalize: b.normalize, key: `${info.id}:${b.path}`, path: b.path, numAnchors: b.numAnchors };
    const f = MODELS[info.id];
    const w = this.weights.get(info.id);
    const key = cacheKey([BUILDER_VERSION, info.id, s, weightsTag(w)]);
    const path = join(this.cacheDir, `${info.id}-${s}-${key}.onnx`);
    if (!existsSync(path)) {
      const params = w ? Params.fromStateDict(await (w.stateDict ??= readStateDict(w.path))) : Params.seeded(0);
      const g = buildLeYolo(f.variant, s, params);
      saveAtomically(g.toModel({ model: info.id, size: String(s), trained: String(info.trained) }), path);
    }
    const numAnchors = [8, 16, 32].reduce((n, st) => n + (s / st) ** 2, 0);
    return { info, size: s, width: s, height: s, labels: COCO80, maxBatch: Infinity, key: `${info.id}@${s}:${key}`, path, numAnchors };
  }

  /**
   * Builds (or finds in the cache) the classifier graph of `id` at `size` (outputs `logits` and `features`).
   * Weights: ViG's `checkpoint['model']` or a timm state dict (the readers unwrap `model`); keys map one-to-one.
   */
  buildClassifier(id: string, size?: number): Promise<BuiltClassifier> {
    const info = this.requireTask(id, 'classify');
    const s = this.resolveSize(id, size);
    const memo = `${id}@${s}`;
    return memoize(this.classifiers, memo, () => this.buildClassifierUncached(info, s));
  }

  private async buildClassifierUncached(info: ModelInfo, s: number): Promise<BuiltClassifier> {
    const spec = CLASSIFIERS[info.id];
    const w = this.weights.get(info.id);
    const key = cacheKey([BUILDER_VERSION, info.id, s, weightsTag(w)]);
    const path = join(this.cacheDir, `${info.id}-${s}-${key}.onnx`);
    if (!existsSync(path)) {
      const params = w ? Params.fromStateDict(mapClassifierCheckpoint(spec, await (w.stateDict ??= readStateDict(w.path)))) : Params.seeded(0);
      const g = buildClassifier(spec, s, params);
      saveAtomically(g.toModel({ model: info.id, size: String(s), trained: String(info.trained) }), path);
    }
    const { dim } = classifierInfo(spec);
    // The workers' reused input buffer holds maxBatch images: at most 8 of 512² worth (one 2048² image).
    const maxBatch = Math.max(1, Math.floor((8 * 512 * 512) / (s * s)));
    return { info, key: `${info.id}@${s}:${key}`, path, size: s, numClasses: info.numClasses, dim, maxBatch, labels: IMAGENET1K };
  }

  /** Checks a change model's tile side: a multiple of 32 from 64 to 1024 (422 otherwise); default 256. */
  resolveTile(id: string, tile: number | undefined): number {
    this.requireTask(id, 'change');
    if (tile === undefined) return CHANGE_TILE.default;
    const { multiple, min, max } = CHANGE_TILE;
    if (!(Number.isInteger(tile) && tile >= min && tile <= max && tile % multiple === 0)) throw invalidValue(`tile must be a multiple of ${multiple} from ${min} to ${max}, got ${tile}`);
    return tile;
  }

  /**
   * Builds (or finds in the cache) the change graph of `id` with a `tile`×`tile` input. Weights: FSG-Net's
   * official state dict (DataParallel's `module.` and thop keys stripped, layer4 ignored); care-cd's own state
   * dict (`backbone.`, `fusion.`, `head.`). A checkpoint must fit the graph exactly (assertComplete).
   */
  buildChange(id: string, tile?: number): Promise<BuiltChange> {
    const info = this.requireTask(id, 'change');
    const s = this.resolveTile(id, tile);
    const memo = `${id}@${s}`;
    return memoize(this.changes, memo, () => this.buildChangeUncached(info, s));
  }

  private async buildChangeUncached(info: ModelInfo, s: number): Promise<BuiltChange> {
    const f = CHANGE_MODELS[info.id];
    const w = this.weights.get(info.id);
    const key = cacheKey([BUILDER_VERSION, info.id, s, weightsTag(w)]);
    const path = join(this.cacheDir, `${info.id}-${s}-${key}.onnx`);
    if (!existsSync(path)) {
      let params: Params;
      if (w) {
        const sd = await (w.stateDict ??= readStateDict(w.path));
        params = Params.fromStateDict(f.family === 'fsgnet' ? mapFsgNetCheckpoint(sd) : mapCareCheckpoint(sd));
      } else params = Params.seeded(0);
      const g = buildChangeGraph(f, s, params);
      saveAtomically(g.toModel({ model: info.id, size: String(s), trained: String(info.trained) }), path);
    }
    return { info, key: `${info.id}@${s}:${key}`, path, tile: s, maxBatch: 1, tileBatch: CHANGE_TILE_BATCH };
  }

  /**
   * Builds (or finds in the cache) the tracker graph of `id`. By default LoRA is merged: the deployed graph is a
   * plain ViT. With `adapters`, the LoRA factors are graph inputs (`lora: 'inputs'`): one session, shared by every
   * adapter of the model (`addAdapter`), a search naming the adapter it runs with; the base weights are the model's
   * (seeded, or `useWeights` less the checkpoint's own LoRA factors).
   */
  buildTracker(id: string, opts: { adapters?: boolean } = {}): Promise<BuiltTracker> {
    const info = this.requireTask(id, 'track');
    const memo = opts.adapters ? `${id}:inputs` : id;
    return memoize(this.trackers, memo, () => this.buildTrackerUncached(info, opts.adapters === true));
  }

  private async buildTrackerUncached(info: ModelInfo, inputs: boolean): Promise<BuiltTracker> {
    const variant = TRACKERS[info.id];
    const cfg = loratVariants[variant];
    const w = this.weights.get(info.id);
    const key = cacheKey([BUILDER_VERSION, info.id, weightsTag(w), ...(inputs ? ['lora:inputs'] : [])]);
    const path = join(this.cacheDir, `${info.id}${inputs ? '-inputs' : ''}-${key}.onnx`);
    if (!existsSync(path)) {
      // `--weights lorat-b224=LORAT_FILE[,DINOV2_FILE]`: an adapters-only LoRAT file needs the DINOv2 backbone.
      const params = w ? loadLoRATWeights(await loratWeights(w.path), variant) : Params.seeded(0);
      const g = buildLoRAT(variant, params, { lora: inputs ? 'inputs' : 'merged' });
      saveAtomically(g.toModel({ model: info.id, trained: String(info.trained), lora: inputs ? 'inputs' : 'merged' }), path);
    }
    const feat = featureSizes(cfg);
    const spec = { info, key: `${info.id}:${key}`, path, templateSize: cfg.templateSize, searchSize: cfg.searchSize, templateFeat: feat.template, templateAreaFactor: 2, maxBatch: 1 } as const;
    return inputs ? { ...spec, key: `${spec.key}:inputs`, adapters: true } : spec;
  }

  /**
   * Registers the LoRA adapter file at `path` as `name` for the tracker `id` (`--adapter lorat-b224:NAME=PATH`).
   * The file (.safetensors/.pth/.bin) holds only LoRA factors under LoRAT's names (`blocks.N.attn.qkv.q.lora.A`,
   * `...lora.B`, for q, k, v, proj, fc1, fc2 of every block) and optionally `lora_alpha` / `use_rslora` (scaling
   * 1 without them); they replace the checkpoint's own factors. The file is checked against the inputs of the
   * model's unmerged graph (refused at start, naming the keys, when it does not fit), and that graph is built (or
   * found in the cache) now.
   */
  async addAdapter(id: string, name: string, path: string): Promise<void> {
    this.requireTask(id, 'track');
    if (!ADAPTER_NAME.test(name)) throw invalidValue(`adapter name must match ${ADAPTER_NAME.source}, got '${name.slice(0, 80)}'`);
    if (this.adapters.get(id)?.has(name)) throw invalidValue(`model '${id}' already has an adapter named '${name}'`);
    const sd = await readStateDict(path);
    const fail = (what: string) => new CheckpointMismatchError(`adapter '${name}' (${path}) does not fit ${id}: ${what}`);
    const foreign = [...sd.keys()].filter((k) => !ADAPTER_KEY.test(k));
    if (foreign.length)
      throw fail(`it holds keys that are not LoRA factors: ${foreign.slice(0, 5).join(', ')}${foreign.length > 5 ? `, … (${foreign.length} in all)` : ''} (an adapter file holds blocks.N.<module>.lora.A/B and lora_alpha only)`);
    let feeds: AdapterFeed[];
    try {
      // Compact copies: a view into a larger file buffer would take all of it along to every worker.
      feeds = [...loraFeeds(sd, loraInputShapes(TRACKERS[id]))].map(([input, t]) => ({ name: input, dims: [...t.shape], data: (t.data as Float32Array).slice() }));
    } catch (e) {
      if (e instanceof CheckpointMismatchError) throw fail(e.message.replace(/^adapter does not fit the graph — /, ''));
      throw e;
    }
    await this.buildTracker(id, { adapters: true });
    if (this.adapters.get(id)?.has(name)) throw invalidValue(`model '${id}' already has an adapter named '${name}'`);
    const set = this.adapters.get(id) ?? new Map<string, Adapter>();
    set.set(name, { path, feeds });
    this.adapters.set(id, set);
  }

  /** The adapters registered for `id`, in the order they were added. */
  adapterNames(id: string): string[] {
    return [...(this.adapters.get(id)?.keys() ?? [])];
  }

  /** Checks that `id` has an adapter `name`: 404 `unknown_adapter`, naming the ones it has. */
  requireAdapter(id: string, name: string): void {
    if (this.adapters.get(id)?.has(name)) return;
    const names = this.adapterNames(id);
    throw notFound(`unknown adapter '${name.slice(0, 64)}' for model '${id}'; ${names.length ? `available: ${names.join(', ')}` : 'it has none (serve --adapter MODEL:NAME=PATH)'}`, 'unknown_adapter');
  }

  /** The feeds of adapter `name` of `id`, as the workers take them. */
  adapterFeeds(id: string, name: string): readonly AdapterFeed[] {
    this.requireAdapter(id, name);
    return this.adapters.get(id)!.get(name)!.feeds;
  }

  /** The serialized graph of a built model (for sessions created from bytes). */
  static bytes(b: BuiltModel): Uint8Array {
    return readFileSync(b.path);
  }
}

/** One build per memo key, shared by concurrent callers; a failed build is forgotten so it can be retried. */
function memoize<T>(cache: Map<string, Promise<T>>, memo: string, make: () => Promise<T>): Promise<T> {
  let b = cache.get(memo);
  if (!b) {
    b = make();
    b.catch(() => cache.delete(memo));
    cache.set(memo, b);
  }
  return b;
}

/** The build cache key: what the graph depends on (builder version, model, size, weights digest). */
const cacheKey = (parts: readonly unknown[]): string => createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 16);
const weightsTag = (w: Weights | undefined): string => (w ? `weights:${w.digest}` : 'seeded:0');

/**
 * Writes into a private folder, then renames into place (external data first), so a concurrent start
 * never loads a half-written graph. The external-data file keeps the name the model refers to.
 */
function saveAtomically(model: ModelProto, path: string): void {
  const tmpDir = join(dirname(path), `.tmp-${process.pid}-${basename(path)}`);
  mkdirSync(tmpDir, { recursive: true });
  try {
    const tmp = join(tmpDir, basename(path));
    const { external } = saveModel(model, tmp);
    if (external) renameSync(`${tmp}.data`, `${path}.data`);
    renameSync(tmp, path);
  } finally {
    rmSync(tmpDir, { recursive: true, force: true });
  }
}

/** `LORAT_FILE[,DINOV2_FILE]` → the state dicts `loadLoRATWeights` takes. */
async function loratWeights(paths: string): Promise<LoRATWeights> {
  const [lorat, dinov2] = paths.split(',');
  return { lorat: await readStateDict(lorat), dinov2: dinov2 ? await readStateDict(dinov2) : undefined };
}

/** The unfolded parameter count of a variant, from a (small, seeded) build; computed once per process. */
const paramCounts = new Map<LeYoloVariant, number>();
function countParams(variant: LeYoloVariant): number {
  let n = paramCounts.get(variant);
  if (n === undefined) {
    const p = Params.seeded(0);
    buildLeYolo(variant, SIZE_MULTIPLE, p);
    n = p.parameterCount();
    paramCounts.set(variant, n);
  }
  return n;
}
