/** The one error shape of DESIGN.md: `{"error": {"code", "message"}}` with an HTTP status. */
export type ErrorStatus = 400 | 404 | 413 | 415 | 422 | 429 | 500 | 503;

export class FoveaError extends Error {
  constructor(
    readonly status: ErrorStatus,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'FoveaError';
  }

  toJSON(): { error: { code: string; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

export const badInput = (message: string, code = 'bad_input') => new FoveaError(400, code, message);
export const notFound = (message: string, code = 'not_found') => new FoveaError(404, code, message);
export const tooLarge = (message: string, code = 'too_large') => new FoveaError(413, code, message);
export const unsupportedMedia = (message: string) => new FoveaError(415, 'unsupported_media_type', message);
export const invalidValue = (message: string, code = 'invalid_value') => new FoveaError(422, code, message);
export const overLimit = (message: string, code = 'over_limit') => new FoveaError(429, code, message);
export const unavailable = (message: string, code = 'unavailable') => new FoveaError(503, code, message);
