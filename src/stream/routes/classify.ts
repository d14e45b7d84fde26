/**
 * ImageNet-1k classification and embeddings (ViG, DeiT); a raw image body (image/jpeg|png|webp) or a
 * multipart field `image`, as `/v1/detect`:
 * - `POST /v1/classify?model=vig-t&size=224&topK=5` → the top-k classes with softmax scores;
 * - `POST /v1/embed?model=vig-t&size=224` → the pooled features the classifier head reads.
 * `size` is the centre-crop side (a multiple of 16 from 224 to 2048); the image is first resized so its
 * shorter side is size/0.875, bicubic (the models' eval transform).
 */
import type { FastifyInstance } from 'fastify';
import { DEFAULT_CLASSIFIER, type ClassifyRequest } from '../../pipeline/classify.js';
import { imageBytes, requireImageMedia } from './detect.js';
import { errorSchema, imageSchema, modelSchema, timingsSchema } from './schemas.js';

const modelParam = { type: 'string', minLength: 1, maxLength: 64, default: DEFAULT_CLASSIFIER, description: 'a classify model (GET /v1/models): vig-t, vig-s, vig-b, deit-t, deit-s' } as const;
const sizeParam = { type: 'integer', minimum: 32, maximum: 4096, description: 'input side: a multiple of 16 from 224 to 2048 (default 224)' } as const;

const classifyQuery = {
  type: 'object',
  properties: { model: modelParam, size: sizeParam, topK: { type: 'integer', minimum: 1, maximum: 1000, default: 5 } },
  additionalProperties: false,
} as const;
const embedQuery = { type: 'object', properties: { model: modelParam, size: sizeParam }, additionalProperties: false } as const;

const common = {
  model: modelSchema,
  image: imageSchema,
  timings: timingsSchema,
} as const;

const classifySchema = {
  type: 'object',
  properties: {
    ...common,
    classes: {
      type: 'array',
      items: { type: 'object', properties: { classId: { type: 'integer' }, label: { type: 'string' }, score: { type: 'number', description: 'softmax probability' } }, required: ['classId', 'label', 'score'] },
    },
  },
  required: ['model', 'image', 'classes', 'timings'],
} as const;
const embedSchema = {
  type: 'object',
  properties: { ...common, embedding: { type: 'array', items: { type: 'number' }, description: 'pooled features (float32 values)' }, dim: { type: 'integer' } },
  required: ['model', 'image', 'embedding', 'dim', 'timings'],
} as const;

export async function classifyRoutes(app: FastifyInstance): Promise<void> {
  app.post('/classify', { onRequest: requireImageMedia, schema: { querystring: classifyQuery, response: { 200: classifySchema, '4xx': errorSchema } } }, async (req) => {
    const image = await imageBytes(req);
    return app.classifier.classify(image, req.query as ClassifyRequest);
  });
  app.post('/embed', { onRequest: requireImageMedia, schema: { querystring: embedQuery, response: { 200: embedSchema, '4xx': errorSchema } } }, async (req) => {
    const image = await imageBytes(req);
    return app.classifier.embed(image, req.query as ClassifyRequest);
  });
}
