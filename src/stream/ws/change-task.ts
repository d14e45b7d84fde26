/**
 * `change` on a stream: a camera watching a scene against a reference frame. A frame whose header
 * carries `"reference": true` becomes the stream's reference (decoded and checked once, kept as RGB so
 * later frames do not decode it again); every later frame is compared with it as `POST /v1/change`
 * compares `before` (the reference) with `after` (the frame). A frame before any reference is answered
 * `bad_frame` (`no_reference` in the message) and the stream goes on; so is a frame whose size differs
 * from the reference's, unless `resize: true`. `reset` forgets the reference.
 *
 * Params: the REST query's — `{model?, tile?, overlap?, minArea?, mask?, resize?}` — checked at start by
 * the same functions. Memory: one decoded reference per stream, at most the server's pixel limit × 3 bytes.
 */
import { badInput } from '../../errors.js';
import { decodeImage } from '../../pipeline/decode.js';
import { specOf, type ChangeRegionJson, type ChangeRequest, type ResolvedChange } from '../../pipeline/change.js';
import { DEFAULT_CHANGE_MODEL } from '../../models/registry.js';
import type { ImageInput } from '../../pipeline/messages.js';
import type { Rle } from '../../heads/change/index.js';
import { startModel, type TaskFrame, type TaskHandler, type TaskOutput, type TaskServices, type TaskStream } from './tasks.js';

/** What `change` puts in `result`: on a reference frame its size; on a later frame the REST answer (less model and timings). */
export type ChangeStreamResult =
  | { reference: true; width: number; height: number }
  | { reference: false; width: number; height: number; changedFraction: number; regions: ChangeRegionJson[]; mask: string | Rle | null; tiles: number };

type RgbInput = Extract<ImageInput, { kind: 'rgb24' }>;

/** The start message's model and params as a checked change request (tile resolved, options in range), as POST /v1/change checks its query. */
export function changeStreamParams(services: TaskServices, model: string | undefined, params: Readonly<Record<string, unknown>>): ResolvedChange {
  const id = startModel('change', model, params, { numbers: ['tile', 'overlap', 'minArea'], booleans: ['resize'], strings: ['mask'] }, DEFAULT_CHANGE_MODEL);
  return services.changer.resolve({ ...(params as ChangeRequest), model: id });
}

class ChangeStream implements TaskStream {
  private reference: RgbInput | undefined;

  constructor(
    private readonly services: TaskServices,
    private readonly request: ResolvedChange,
    readonly model: TaskStream['model'],
  ) {}

  async process(frame: TaskFrame): Promise<TaskOutput> {
    const { reference } = frame.header;
    if (reference !== undefined && typeof reference !== 'boolean') throw badInput(`reference must be true or false, got ${JSON.stringify(reference).slice(0, 40)}`, 'bad_header');
    if (reference === true) return this.setReference(frame.image);
    if (!this.reference) throw badInput('send a reference first: the first frame (and the first after reset) needs "reference": true in its header', 'no_reference');
    const { model: _model, timings, ...rest } = await this.services.changer.change(this.reference, frame.image, this.request);
    const result: ChangeStreamResult = { reference: false, ...rest };
    return { result, timings };
  }

  /** Decodes (or checks) the frame fully now, so a broken reference is refused here, not on every later frame. */
  private async setReference(image: ImageInput): Promise<TaskOutput> {
    const t0 = performance.now();
    let rgb: RgbInput;
    if (image.kind === 'encoded') {
      const d = await decodeImage(image.bytes, { maxPixels: this.services.changer.pool.config.maxPixels });
      rgb = { kind: 'rgb24', data: d.data, width: d.width, height: d.height };
    } else {
      await this.services.detector.checkImage(image);
      // A copy: the frame's bytes may be a view into the whole socket message.
      rgb = { kind: 'rgb24', data: new Uint8Array(image.data), width: image.width, height: image.height };
    }
    this.reference = rgb;
    const decode = Math.round((performance.now() - t0) * 1000) / 1000;
    const result: ChangeStreamResult = { reference: true, width: rgb.width, height: rgb.height };
    return { result, timings: { decode, preprocess: 0, infer: 0, post: 0 } };
  }

  reset(): void {
    this.reference = undefined;
  }
}

export function changeTask(services: TaskServices): TaskHandler {
  return {
    task: 'change',
    async start(model, params) {
      const p = changeStreamParams(services, model, params);
      const built = await services.changer.spec(p.model, p.tile);
      await services.changer.pool.warmup(specOf(built));
      const info = services.registry.info(p.model);
      return new ChangeStream(services, p, { id: p.model, trained: info.trained, input: [p.tile, p.tile] });
    },
  };
}
