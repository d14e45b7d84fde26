/** `GET /v1/models` and `GET /healthz`. */
import type { FastifyInstance } from 'fastify';

const modelSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    task: { type: 'string' },
    family: { type: 'string' },
    variant: { type: 'string' },
    params: { type: 'integer' },
    trained: { type: 'boolean' },
    input: { type: 'array', items: { type: 'integer' }, minItems: 2, maxItems: 2 },
    adapters: { type: 'array', items: { type: 'string' }, description: 'named LoRA adapters a tracker serves (adapter=NAME); absent when none' },
  },
  required: ['id', 'task', 'family', 'variant', 'params', 'trained', 'input'],
} as const;

export async function modelRoutes(app: FastifyInstance): Promise<void> {
  app.get('/v1/models', { schema: { response: { 200: { type: 'object', properties: { models: { type: 'array', items: modelSchema } } } } } }, async () => ({
    models: app.registry.list().map((m) => {
      const adapters = app.registry.adapterNames(m.id);
      return adapters.length ? { ...m, adapters } : m;
    }),
  }));

  app.get(
    '/healthz',
    { schema: { response: { 200: { type: 'object', properties: { status: { type: 'string' }, ep: { type: 'string' }, workers: { type: 'integer' }, inFlight: { type: 'integer' } } } } } },
    async () => ({ status: 'ok', ep: app.ep, workers: app.pool.size, inFlight: app.pool.inFlight }),
  );
}
