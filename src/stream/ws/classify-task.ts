/**
 * `classify` on a stream: every frame gets what `POST /v1/classify` answers for it, less model and timings —
 * `{"image", "classes": [{"classId", "label", "score"}, ...]}`. Params: the REST query's, `{model?, size?,
 * topK?}`, checked at start by the same functions (so the same codes and messages). Frames of one stream may
 * be batched with other streams' frames of the same model on the worker.
 */
import { DEFAULT_CLASSIFIER, specOf, type ClassifyRequest, type ClassifyResponse } from '../../pipeline/classify.js';
import { startModel, type TaskFrame, type TaskHandler, type TaskOutput, type TaskServices, type TaskStream } from './tasks.js';

/** What `classify` puts in `result`. */
export type ClassifyStreamResult = Omit<ClassifyResponse, 'model' | 'timings'>;

/** The start message's model and params as a checked request (size resolved, topK in range), as POST /v1/classify checks its query. */
export function classifyStreamParams(services: TaskServices, model: string | undefined, params: Readonly<Record<string, unknown>>): Required<ClassifyRequest> {
  const id = startModel('classify', model, params, { numbers: ['size', 'topK'] }, DEFAULT_CLASSIFIER);
  return services.classifier.resolve({ ...(params as ClassifyRequest), model: id });
}

class ClassifyStream implements TaskStream {
  constructor(
    private readonly services: TaskServices,
    private readonly request: Required<ClassifyRequest>,
    readonly model: TaskStream['model'],
  ) {}

  async process(frame: TaskFrame): Promise<TaskOutput> {
    const { model: _model, timings, ...result } = await this.services.classifier.classify(frame.image, this.request);
    return { result: result satisfies ClassifyStreamResult, timings };
  }

  /** Nothing is carried from frame to frame. */
  reset(): void {}
}

export function classifyTask(services: TaskServices): TaskHandler {
  return {
    task: 'classify',
    async start(model, params) {
      const p = classifyStreamParams(services, model, params);
      const built = await services.classifier.spec(p.model, p.size);
      await services.classifier.pool.warmup(specOf(built));
      const info = services.registry.info(p.model);
      return new ClassifyStream(services, p, { id: p.model, trained: info.trained, input: [p.size, p.size] });
    },
  };
}
