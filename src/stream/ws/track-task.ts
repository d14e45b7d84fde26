/**
 * `track` on a stream: one LoRAT single-object tracker per stream. A frame whose header carries
 * `"init": [x1, y1, x2, y2]` (re)starts the tracker on that box (result: the box, score 1); later
 * frames are tracked (result: box and score, as `POST /v1/track/sessions/:id/frames` answers them,
 * less model and timings). A frame before any init, or a bad init box, is answered `bad_frame` and
 * the stream goes on; a bad re-init keeps the object tracked so far. `reset` forgets the object.
 *
 * Params: `{model?, adapter?}`. `adapter` names one of the model's registered LoRA adapters (`serve --adapter`):
 * the stream runs the model's unmerged graph with that adapter's factors — one session serves every adapter,
 * so streams on different adapters share it. An unknown adapter is refused at start (`unknown_adapter`, close 1008).
 */
import { badInput } from '../../errors.js';
import { DEFAULT_TRACKER } from '../../models/registry.js';
import { parseBox, TrackRun, type TrackAnswer, type TrackService } from '../../pipeline/track.js';
import { startModel, type TaskFrame, type TaskHandler, type TaskOutput, type TaskServices, type TaskStream } from './tasks.js';

/** What `track` puts in `result`: the frame size, the box in its pixels, and the score (1 on an init frame). */
export interface TrackStreamResult {
  image: { width: number; height: number };
  box: [number, number, number, number];
  score: number;
}

/** The start message's model and params as a checked tracker model id and adapter name. */
export function trackStreamModel(services: TaskServices, model: string | undefined, params: Readonly<Record<string, unknown>>): { id: string; adapter?: string } {
  const id = startModel('track', model, params, { strings: ['adapter'] }, DEFAULT_TRACKER);
  services.registry.requireTask(id, 'track');
  const adapter = params.adapter as string | undefined;
  if (adapter !== undefined) services.registry.requireAdapter(id, adapter);
  return { id, adapter };
}

class TrackStream implements TaskStream {
  private run: TrackRun;

  constructor(
    private readonly tracker: TrackService,
    first: TrackRun,
    readonly model: TaskStream['model'],
  ) {
    this.run = first;
  }

  async process(frame: TaskFrame): Promise<TaskOutput> {
    const { init } = frame.header;
    if (init === undefined && !this.run.initialized)
      throw badInput('send init first: the first frame (and the first after reset) needs "init": [x1, y1, x2, y2] in its header', 'not_initialized');
    const box = init === undefined ? undefined : parseBox(init);
    await this.tracker.check(frame.image);
    const a = box ? await this.run.init(frame.image, box) : await this.run.step(frame.image);
    return { result: resultOf(a), timings: a.timings };
  }

  reset(): void {
    this.run = new TrackRun(this.run.model, this.tracker.pool, this.run.adapter);
  }
}

function resultOf(a: TrackAnswer): TrackStreamResult {
  return { image: a.image, box: a.box, score: a.score };
}

export function trackTask(services: TaskServices): TaskHandler {
  return {
    task: 'track',
    async start(model, params) {
      const { id, adapter } = trackStreamModel(services, model, params);
      const run = await services.tracker.newRun(id, adapter);
      await services.tracker.pool.warmup(run.model);
      const { info } = run.model;
      return new TrackStream(services.tracker, run, { id: info.id, trained: info.trained, input: [info.input[0], info.input[1]] });
    },
  };
}
