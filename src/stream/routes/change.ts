/**
 * Change detection on a pair of images of one scene (FSG-Net, care-cd):
 * `POST /v1/change?model=fsgnet&tile=256&overlap=32&minArea=16&mask=png&resize=false`, a multipart body
 * with the files `before` and `after` (JPEG, PNG or WebP, the same size unless `resize=true`, which
 * resizes `after` to `before`'s size). Scenes larger than the tile are tiled with overlap and blended;
 * smaller ones are zero-padded to the tile. The answer: the changed fraction, the changed regions as
 * polygons (components of at least `minArea` pixels) and the mask as a base64 PNG, a COCO RLE or null.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { unsupportedMedia } from '../../errors.js';
import { DEFAULT_CHANGE_MODEL, DEFAULT_MIN_AREA, DEFAULT_OVERLAP, type ChangeRequest } from '../../pipeline/change.js';
import { mediaType } from '../media.js';
import { multipartError } from './detect.js';
import { errorSchema, modelSchema, timingsSchema } from './schemas.js';

const querySchema = {
  type: 'object',
  properties: {
    model: { type: 'string', minLength: 1, maxLength: 64, default: DEFAULT_CHANGE_MODEL, description: 'a change model (GET /v1/models): fsgnet, care-cd' },
    tile: { type: 'integer', minimum: 1, maximum: 4096, description: 'tile side: a multiple of 32 from 64 to 1024 (default 256)' },
    overlap: { type: 'integer', minimum: 0, maximum: 4096, default: DEFAULT_OVERLAP, description: 'minimum overlap of neighbouring tiles, below the tile side' },
    minArea: { type: 'integer', minimum: 0, maximum: 1_000_000_000, default: DEFAULT_MIN_AREA, description: 'smallest region (pixels) reported' },
    mask: { type: 'string', enum: ['png', 'rle', 'none'], default: 'png', description: 'mask encoding: base64 PNG (255 = change), COCO RLE, or none' },
    resize: { type: 'boolean', default: false, description: "resize 'after' to 'before''s size when they differ" },
  },
  additionalProperties: false,
} as const;

const point = { type: 'array', items: { type: 'number' }, minItems: 2, maxItems: 2 } as const;
const responseSchema = {
  type: 'object',
  properties: {
    model: modelSchema,
    width: { type: 'integer' },
    height: { type: 'integer' },
    changedFraction: { type: 'number', description: 'changed pixels / all pixels' },
    regions: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          polygon: { type: 'array', items: point, description: 'outer contour [x, y] vertices, simplified' },
          bbox: { type: 'array', items: { type: 'integer' }, minItems: 4, maxItems: 4, description: '[x1, y1, x2, y2], exclusive end' },
          area: { type: 'integer', description: 'pixels of the component' },
        },
        required: ['polygon', 'bbox', 'area'],
      },
    },
    mask: {
      description: "base64 PNG (mask=png), COCO uncompressed RLE {size: [h, w], counts} (mask=rle), or null (mask=none)",
      anyOf: [
        { type: 'string' },
        { type: 'object', properties: { size: { type: 'array', items: { type: 'integer' } }, counts: { type: 'array', items: { type: 'integer' } } }, required: ['size', 'counts'] },
        { type: 'null' },
      ],
    },
    tiles: { type: 'integer', description: 'tiles the scene was cut into' },
    timings: timingsSchema,
  },
  required: ['model', 'width', 'height', 'changedFraction', 'regions', 'mask', 'timings'],
} as const;

/** Only multipart bodies: a change request carries two images. */
async function requireMultipart(req: FastifyRequest): Promise<void> {
  const type = mediaType(req.headers['content-type']);
  if (type !== 'multipart/form-data') throw unsupportedMedia(`content type '${type || 'none'}' is not accepted; send multipart/form-data with the files 'before' and 'after'`);
}

/** The first file part named `before` and the first named `after`, each at most `fileSize` bytes; other parts are drained. */
async function pairBytes(req: FastifyRequest, fileSize: number): Promise<{ before?: Buffer; after?: Buffer }> {
  const out: { before?: Buffer; after?: Buffer } = {};
  try {
    for await (const part of req.parts({ limits: { fileSize } })) {
      if (part.type === 'file' && (part.fieldname === 'before' || part.fieldname === 'after') && !out[part.fieldname]) out[part.fieldname] = await part.toBuffer();
      else if (part.type === 'file') part.file.resume();
    }
  } catch (err) {
    throw multipartError(err);
  }
  return out;
}

export async function changeRoutes(app: FastifyInstance): Promise<void> {
  app.post('/change', { onRequest: requireMultipart, schema: { querystring: querySchema, response: { 200: responseSchema, '4xx': errorSchema } } }, async (req) => {
    const { before, after } = await pairBytes(req, app.config.changeFileLimit);
    return app.changer.change(before, after, req.query as ChangeRequest);
  });
}
