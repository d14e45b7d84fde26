/**
 * What a stream task plugs into the stream machinery: validate the start message into per-stream
 * state (`start`), process one frame into the result JSON (`process`), forget state (`reset`).
 * The session does everything else (framing, order, latest-frame-wins, limits, timeouts), so a
 * new task (`track`, `change`, `classify`, `fewshot-detect`) is one handler added to the table.
 */
import { invalidValue } from '../../errors.js';
import type { ModelRegistry } from '../../models/registry.js';
import type { ChangeService } from '../../pipeline/change.js';
import type { ClassifyService } from '../../pipeline/classify.js';
import type { DetectService } from '../../pipeline/detect.js';
import type { ImageInput } from '../../pipeline/messages.js';
import type { TrackService } from '../../pipeline/track.js';
import type { FrameHeader, ModelDescription, StageTimings, StreamTask } from './protocol.js';

export interface TaskFrame {
  /** The whole header: task fields (`init`, `reference`) are the handler's to read. */
  readonly header: FrameHeader;
  /** Encoded bytes are decoded by `process` (on a worker), never before dispatch. */
  readonly image: ImageInput;
}

export interface TaskOutput {
  /** What the task's REST endpoint returns for one image (less model and timings). */
  readonly result: unknown;
  readonly timings: StageTimings;
}

/** One stream's state for one task. `process` is never called again before the previous call settles. */
export interface TaskStream {
  readonly model: ModelDescription;
  process(frame: TaskFrame): Promise<TaskOutput>;
  /** Forget tracker state / reference frame: the next frame starts fresh. */
  reset(): void;
}

export interface TaskHandler {
  readonly task: StreamTask;
  /**
   * Checks the start message's model and params as the task's REST endpoint checks its query, and
   * prepares the model (built and loaded, so the first frame is not slow). Throws a FoveaError.
   */
  start(model: string | undefined, params: Readonly<Record<string, unknown>>): Promise<TaskStream>;
}

/** What handlers may use: the app's shared services. */
export interface TaskServices {
  readonly registry: ModelRegistry;
  readonly detector: DetectService;
  readonly tracker: TrackService;
  readonly changer: ChangeService;
  readonly classifier: ClassifyService;
}

export type TaskTable = ReadonlyMap<StreamTask, TaskHandler>;

/** The JSON types of a task's start params: every key named here, and no other, is allowed. */
export interface ParamTypes {
  readonly numbers?: readonly string[];
  readonly booleans?: readonly string[];
  readonly strings?: readonly string[];
}

/**
 * The checks every task's start message shares: only the task's parameters (422 `invalid_value` naming
 * an unknown one), each of its JSON type, and one model named either as the start message's `model` or
 * as `params.model` (both only if they agree). Returns the model id, or `fallback` when none is named.
 */
export function startModel(task: string, model: string | undefined, params: Readonly<Record<string, unknown>>, types: ParamTypes, fallback: string): string {
  const typed: Array<[readonly string[], string, string]> = [
    [['model', ...(types.strings ?? [])], 'string', 'a string'],
    [types.numbers ?? [], 'number', 'a number'],
    [types.booleans ?? [], 'boolean', 'true or false'],
  ];
  const known = typed.flatMap(([keys]) => keys);
  for (const key of Object.keys(params)) if (!known.includes(key)) throw invalidValue(`unknown parameter '${key}' for task ${task}; known: ${known.join(', ')}`);
  for (const [keys, type, what] of typed)
    for (const key of keys) if (params[key] !== undefined && typeof params[key] !== type) throw invalidValue(`${key} must be ${what}, got ${JSON.stringify(params[key])}`);
  if (model !== undefined && params.model !== undefined && model !== params.model)
    throw invalidValue(`the start message names model '${model}' and params.model '${String(params.model)}'; give one`);
  return model ?? (params.model as string | undefined) ?? fallback;
}
