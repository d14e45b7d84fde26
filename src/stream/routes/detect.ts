/** `POST /v1/detect`: a raw image body (image/jpeg|png|webp) or a multipart field `image`. */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { FoveaError, badInput, unsupportedMedia } from '../../errors.js';
import type { DetectRequest } from '../../pipeline/detect.js';
import { isImageMedia, mediaType } from '../media.js';
import { imageSchema, modelSchema, timingsSchema } from './schemas.js';

const querySchema = {
  type: 'object',
  properties: {
    model: { type: 'string', minLength: 1, maxLength: 64 },
    size: { type: 'integer', minimum: 32, maximum: 4096 },
    conf: { type: 'number', minimum: 0, maximum: 1 },
    iou: { type: 'number', minimum: 0, maximum: 1 },
    maxDet: { type: 'integer', minimum: 1, maximum: 10000 },
  },
  additionalProperties: false,
} as const;

const detectionSchema = {
  type: 'object',
  properties: {
    box: { type: 'array', items: { type: 'number' }, minItems: 4, maxItems: 4 },
    score: { type: 'number' },
    classId: { type: 'integer' },
    label: { type: 'string' },
    trackId: { type: 'integer' },
  },
  required: ['box', 'score', 'classId', 'label'],
} as const;

const responseSchema = {
  type: 'object',
  properties: {
    model: modelSchema,
    image: imageSchema,
    detections: { type: 'array', items: detectionSchema },
    timings: timingsSchema,
  },
} as const;

/**
 * The image bytes of a request: the raw body, or the multipart part named `image` (other files are
 * drained). Text fields of a multipart body go into `fields` when given (the first value of each name).
 */
export async function imageBytes(req: FastifyRequest, fields?: Map<string, string>): Promise<Buffer> {
  if (!req.isMultipart()) {
    const body = req.body;
    if (!Buffer.isBuffer(body) || body.length === 0) throw badInput('the request body is empty; send image bytes', 'empty_body');
    return body;
  }
  let image: Buffer | undefined;
  try {
    for await (const part of req.parts()) {
      if (part.type === 'file' && part.fieldname === 'image' && !image) image = await part.toBuffer();
      else if (part.type === 'file') part.file.resume();
      else if (fields && typeof part.value === 'string' && !fields.has(part.fieldname)) fields.set(part.fieldname, part.value);
    }
  } catch (err) {
    throw multipartError(err);
  }
  if (!image) throw badInput("multipart request has no file field named 'image'", 'missing_field');
  return image;
}

/**
 * busboy reports a malformed body (no boundary, cut-off parts) as a plain Error without a code: that
 * is the client's fault (400). fastify's own errors (file too large → 413) and ours pass through.
 */
export function multipartError(err: unknown): unknown {
  if (err instanceof FoveaError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.startsWith('FST_')) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return badInput(`malformed multipart body: ${detail}`, 'bad_multipart');
}

/**
 * Refuses a body that is neither an image nor multipart before it is read. Without this, fastify's
 * built-in text/plain and application/json parsers would accept it and the route would answer 400.
 */
export async function requireImageMedia(req: FastifyRequest): Promise<void> {
  const type = mediaType(req.headers['content-type']);
  if (type !== '' && !isImageMedia(type))
    throw unsupportedMedia(`content type '${type}' is not accepted; send image/jpeg, image/png, image/webp or multipart/form-data`);
}

export async function detectRoutes(app: FastifyInstance): Promise<void> {
  app.post('/detect', { onRequest: requireImageMedia, schema: { querystring: querySchema, response: { 200: responseSchema } } }, async (req) => {
    const image = await imageBytes(req);
    return app.detector.detect(image, req.query as DetectRequest);
  });
}
