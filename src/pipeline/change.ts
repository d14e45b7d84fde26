/**
 * The change task (FSG-Net, care-cd) as the routes and the CLI see it: check the model, tiling and both
 * image headers (pixel limit, equal sizes) before anything is decoded, build or find the graph, run the
 * pair on a worker (decode, tile, run, stitch, regions, mask encoding all happen there) and shape the answer.
 *
 * Scenes of any size are cut into overlapping `tile`×`tile` tiles (src/pipeline/tiles.ts) and the logits
 * blended back. A scene smaller than the tile on an axis is zero-padded (black, bottom/right) to the tile
 * side; only the valid part of the logits is kept.
 */
import { badInput, invalidValue } from '../errors.js';
import type { Rle } from '../heads/change/index.js';
import { DEFAULT_CHANGE_MODEL, type BuiltChange, type ModelRegistry } from '../models/registry.js';
import { probeImage } from './decode.js';
import { roundTimings, type DetectService } from './detect.js';
import type { ChangeMaskEncoding, ChangeModelSpec, ImageInput, Timings } from './messages.js';
import type { InferencePool } from './pool.js';
import type { ModelField } from './classify.js';

export { DEFAULT_CHANGE_MODEL };
export const DEFAULT_OVERLAP = 32;
export const DEFAULT_MIN_AREA = 16;
export const MASK_ENCODINGS: readonly ChangeMaskEncoding[] = ['png', 'rle', 'none'];

export interface ChangeRequest {
  model?: string;
  tile?: number;
  overlap?: number;
  minArea?: number;
  mask?: ChangeMaskEncoding;
  /** Resize `after` to `before`'s size when they differ (else 422 size_mismatch). */
  resize?: boolean;
}

export interface ChangeRegionJson {
  polygon: Array<[number, number]>;
  bbox: [number, number, number, number];
  area: number;
}

export interface ChangeResponse {
  model: ModelField;
  width: number;
  height: number;
  changedFraction: number;
  regions: ChangeRegionJson[];
  /** base64 PNG (8-bit grey, 255 = change), COCO RLE, or null. */
  mask: string | Rle | null;
  tiles: number;
  timings: Timings;
}

/** The answer with the mask as the worker gave it (PNG bytes rather than base64): for the CLI's evaluation. */
export interface RawChangeResponse extends Omit<ChangeResponse, 'mask'> {
  mask: Uint8Array | Rle | null;
}

/** A change request with every option checked and defaulted. */
export interface ResolvedChange {
  model: string;
  tile: number;
  overlap: number;
  minArea: number;
  mask: ChangeMaskEncoding;
  resize: boolean;
}

export class ChangeService {
  constructor(
    readonly registry: ModelRegistry,
    readonly pool: InferencePool,
    /** For its image checks on raw frames. */
    private readonly detector: DetectService,
  ) {}

  /** The built graph of a change model: 404 unknown model, 422 wrong task or bad tile. */
  async spec(id: string, tile?: number): Promise<BuiltChange> {
    return this.registry.buildChange(id, this.registry.resolveTile(id, tile));
  }

  /** The request checked and defaulted: 404 unknown model, 422 wrong task or the first bad option. Shared by REST and streams. */
  resolve(req: ChangeRequest): ResolvedChange {
    const model = req.model ?? DEFAULT_CHANGE_MODEL;
    const tile = this.registry.resolveTile(model, req.tile);
    const overlap = req.overlap ?? DEFAULT_OVERLAP;
    if (!(Number.isInteger(overlap) && overlap >= 0 && overlap < tile)) throw invalidValue(`overlap must be an integer in [0, ${tile}) for tile ${tile}, got ${req.overlap}`);
    const minArea = req.minArea ?? DEFAULT_MIN_AREA;
    if (!(Number.isInteger(minArea) && minArea >= 0)) throw invalidValue(`minArea must be a non-negative integer, got ${req.minArea}`);
    const mask = req.mask ?? 'png';
    if (!MASK_ENCODINGS.includes(mask)) throw invalidValue(`mask must be one of ${MASK_ENCODINGS.join(', ')}, got '${String(mask).slice(0, 32)}'`);
    return { model, tile, overlap, minArea, mask, resize: req.resize === true };
  }

  /** Header-only size of an image (413 past the pixel limit, 400/415 for what is not an image). */
  private async size(image: ImageInput): Promise<[number, number]> {
    if (image.kind === 'encoded') {
      const info = await probeImage(image.bytes, { maxPixels: this.pool.config.maxPixels });
      return [info.width, info.height];
    }
    await this.detector.checkImage(image);
    return [image.width, image.height];
  }

  async changeRaw(before: Uint8Array | ImageInput | undefined, after: Uint8Array | ImageInput | undefined, req: ChangeRequest = {}): Promise<RawChangeResponse> {
    const { model: id, tile, ...opts } = this.resolve(req);
    const info = this.registry.info(id);
    if (!before || !after) throw badInput(`a change request needs two images, 'before' and 'after'; missing: ${[!before && 'before', !after && 'after'].filter(Boolean).join(', ')}`, 'missing_field');
    const asInput = (x: Uint8Array | ImageInput): ImageInput => (x instanceof Uint8Array ? { kind: 'encoded', bytes: x } : x);
    const [b, a] = [asInput(before), asInput(after)];
    const t0 = performance.now();
    const [[bw, bh], [aw, ah]] = await Promise.all([this.size(b), this.size(a)]);
    if ((bw !== aw || bh !== ah) && !opts.resize)
      throw invalidValue(`before is ${bw}×${bh} but after is ${aw}×${ah}; send images of one size, or resize=true to resize after to before's size`, 'size_mismatch');
    const probeMs = performance.now() - t0;
    const built = await this.registry.buildChange(id, tile);
    const r = await this.pool.change(specOf(built), b, a, opts);
    return {
      model: { id, trained: info.trained, input: [tile, tile] },
      width: r.width,
      height: r.height,
      changedFraction: r.changedFraction,
      regions: r.regions,
      mask: r.mask,
      tiles: r.tiles,
      timings: { ...r.timings, decode: probeMs + r.timings.decode },
    };
  }

  async change(before: Uint8Array | ImageInput | undefined, after: Uint8Array | ImageInput | undefined, req: ChangeRequest = {}): Promise<ChangeResponse> {
    const r = await this.changeRaw(before, after, req);
    const t1 = performance.now();
    const mask = r.mask instanceof Uint8Array ? Buffer.from(r.mask.buffer, r.mask.byteOffset, r.mask.byteLength).toString('base64') : r.mask;
    return { ...r, mask, timings: roundTimings({ ...r.timings, post: r.timings.post + performance.now() - t1 }) };
  }
}

export function specOf(b: BuiltChange): ChangeModelSpec {
  return { key: b.key, path: b.path, tile: b.tile, maxBatch: 1, tileBatch: b.tileBatch };
}
