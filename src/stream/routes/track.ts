/**
 * Single-object tracking sessions (LoRAT):
 * - `POST /v1/track/sessions?model=lorat-b224[&adapter=NAME]`, multipart with a file `image` and a text field `box`
 *   (JSON `[x1, y1, x2, y2]` in image pixels) → 201 with the session id; `adapter` names one of the model's
 *   registered LoRA adapters (`serve --adapter`; unknown → 404 `unknown_adapter`);
 * - `POST /v1/track/sessions/:id/frames`, a raw image body (image/jpeg|png|webp) or multipart `image`
 *   → the box and score on that frame;
 * - `DELETE /v1/track/sessions/:id` → 204.
 * Idle sessions expire (`config.track.idleMs`); after that, like after DELETE, the id answers 404.
 */
import type { FastifyInstance } from 'fastify';
import { badInput, invalidValue } from '../../errors.js';
import { DEFAULT_TRACKER } from '../../models/registry.js';
import { parseBox, type Box } from '../../pipeline/track.js';
import { imageBytes, requireImageMedia } from './detect.js';
import { errorSchema, imageSchema, modelSchema, timingsSchema } from './schemas.js';

const createQuery = {
  type: 'object',
  properties: {
    model: { type: 'string', minLength: 1, maxLength: 64, default: DEFAULT_TRACKER },
    adapter: { type: 'string', minLength: 1, maxLength: 64, description: "one of the model's LoRA adapters (GET /v1/models lists them); omitted: the model's own weights" },
  },
  additionalProperties: false,
} as const;

const sessionParams = {
  type: 'object',
  properties: { id: { type: 'string', minLength: 1 } },
  required: ['id'],
} as const;

const box = { type: 'array', items: { type: 'number' }, minItems: 4, maxItems: 4, description: '[x1, y1, x2, y2] in image pixels' } as const;
const answerProperties = {
  box,
  score: { type: 'number', description: 'sigmoid of the score at the chosen cell; 1 on the init frame' },
  model: modelSchema,
  image: imageSchema,
  timings: timingsSchema,
} as const;


const createdSchema = { type: 'object', properties: { sessionId: { type: 'string' }, ...answerProperties }, required: ['sessionId', 'box', 'model', 'image'] } as const;
const frameSchema = { type: 'object', properties: answerProperties, required: ['box', 'score', 'model', 'image'] } as const;

/** The multipart `box` field: JSON `[x1, y1, x2, y2]` (400 when absent, 422 `invalid_box` when wrong). */
function boxField(text: string | undefined): Box {
  if (text === undefined) throw badInput("multipart request has no text field named 'box' (JSON [x1, y1, x2, y2])", 'missing_field');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalidValue(`box must be JSON [x1, y1, x2, y2], got ${JSON.stringify(text.slice(0, 80))}`, 'invalid_box');
  }
  return parseBox(value);
}

export async function trackRoutes(app: FastifyInstance): Promise<void> {
  app.post(
    '/track/sessions',
    { onRequest: requireImageMedia, schema: { querystring: createQuery, response: { 201: createdSchema, '4xx': errorSchema } } },
    async (req, reply) => {
      const fields = new Map<string, string>();
      const image = await imageBytes(req, fields);
      const { model, adapter } = req.query as { model: string; adapter?: string };
      app.registry.requireTask(model, 'track'); // 404 unknown_model, 422 wrong_task — before the box: the model is the resource
      if (adapter !== undefined) app.registry.requireAdapter(model, adapter); // 404 unknown_adapter
      const session = await app.tracker.create({ kind: 'encoded', bytes: image }, boxField(fields.get('box')), model, adapter);
      return reply.status(201).send(session);
    },
  );

  app.post(
    '/track/sessions/:id/frames',
    { onRequest: requireImageMedia, schema: { params: sessionParams, response: { 200: frameSchema, '4xx': errorSchema } } },
    async (req) => {
      const { id } = req.params as { id: string };
      const image = await imageBytes(req);
      return app.tracker.frame(id, { kind: 'encoded', bytes: image });
    },
  );

  app.delete('/track/sessions/:id', { schema: { params: sessionParams, response: { 204: { type: 'null' }, '4xx': errorSchema } } }, async (req, reply) => {
    app.tracker.delete((req.params as { id: string }).id);
    return reply.status(204).send();
  });
}
