/** JSON schemas every route's answer shares: the model, the image size, the stage timings, the error shape. */
const ms = { type: 'number' } as const;

export const modelSchema = { type: 'object', properties: { id: { type: 'string' }, trained: { type: 'boolean' }, input: { type: 'array', items: { type: 'integer' } } } } as const;
export const imageSchema = { type: 'object', properties: { width: { type: 'integer' }, height: { type: 'integer' } } } as const;
export const timingsSchema = { type: 'object', properties: { decode: ms, preprocess: ms, infer: ms, post: ms } } as const;
export const errorSchema = {
  type: 'object',
  properties: { error: { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' } }, required: ['code', 'message'] } },
} as const;
