/**
 * `detect` on a stream: the REST endpoint's parameters (model, size, conf, iou, maxDet, checked by
 * the same functions) plus `track`. With `track: true` each stream owns a ByteTracker, and the
 * detections that belong to a confirmed track carry its `trackId`.
 */
import { invalidValue } from '../../errors.js';
import { toJson } from '../../heads/detect/index.js';
import { ByteTracker, LOW_SCORE_FLOOR } from '../../heads/track/index.js';
import { DEFAULT_MODEL } from '../../models/registry.js';
import { detectOptions, roundTimings, type DetectRequest } from '../../pipeline/detect.js';
import type { DetectStreamResult } from './protocol.js';
import { startModel, type TaskFrame, type TaskHandler, type TaskOutput, type TaskServices, type TaskStream } from './tasks.js';

export interface DetectStreamParams extends Required<DetectRequest> {
  track: boolean;
}

/**
 * The start message's model and params as a checked request. JSON carries types, so numbers must be
 * numbers and `track` a boolean; ranges and the size rule are checked by `detectOptions` and
 * `registry.resolveSize`, exactly as for `POST /v1/detect`.
 */
export function detectStreamParams(services: TaskServices, model: string | undefined, params: Readonly<Record<string, unknown>>): DetectStreamParams {
  const id = startModel('detect', model, params, { numbers: ['size', 'conf', 'iou', 'maxDet'], booleans: ['track'] }, DEFAULT_MODEL);
  const info = services.registry.info(id);
  if (info.task !== 'detect') throw invalidValue(`model '${id}' serves task '${info.task}', not detect`);
  const size = services.registry.resolveSize(id, params.size as number | undefined);
  const { conf, iou, maxDet } = detectOptions(params as DetectRequest);
  return { model: id, size, conf, iou, maxDet, track: params.track === true };
}

class DetectStream implements TaskStream {
  private readonly tracker: ByteTracker | undefined;
  /** What the detector is asked for: with a tracker, boxes down to ByteTrack's low-score floor. */
  private readonly request: DetectRequest;

  constructor(
    private readonly services: TaskServices,
    private readonly params: DetectStreamParams,
    private readonly labels: readonly string[],
    readonly model: TaskStream['model'],
  ) {
    const { model: id, size, conf, iou, maxDet } = params;
    // ByteTrack's second association keeps tracks alive through boxes scoring between 0.1 and the
    // activation threshold (conf), so the detector must return them.
    this.tracker = params.track ? new ByteTracker({ trackActivationThreshold: conf }) : undefined;
    this.request = { model: id, size, iou, maxDet, conf: this.tracker ? Math.min(conf, LOW_SCORE_FLOOR) : conf };
  }

  async process(frame: TaskFrame): Promise<TaskOutput> {
    const r = await this.services.detector.detectRaw(frame.image, this.request);
    const t1 = performance.now();
    const detections = this.tracker ? this.tracker.update(r.detections) : r.detections;
    const result: DetectStreamResult = { image: r.image, detections: toJson(detections, this.labels) };
    return { result, timings: roundTimings({ ...r.timings, post: r.timings.post + performance.now() - t1 }) };
  }

  reset(): void {
    this.tracker?.reset();
  }
}

export function detectTask(services: TaskServices): TaskHandler {
  return {
    task: 'detect',
    async start(model, params) {
      const p = detectStreamParams(services, model, params);
      const built = await services.registry.build(p.model, p.size);
      await services.detector.pool.warmup(await services.detector.spec(p.model, p.size));
      const info = services.registry.info(p.model);
      return new DetectStream(services, p, built.labels, { id: p.model, trained: info.trained, input: [built.width, built.height] });
    },
  };
}
