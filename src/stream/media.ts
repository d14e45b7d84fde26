/** The media types an image endpoint accepts: raw image bytes, or multipart with an `image` file. */
export const IMAGE_TYPES = ['image/jpeg', 'image/png', 'image/webp'] as const;
export const MULTIPART = 'multipart/form-data';

/** The media type of a `content-type` header, lower-cased and without parameters ('' when absent). */
export function mediaType(header: string | undefined): string {
  return (header ?? '').split(';')[0].trim().toLowerCase();
}

/** True for a media type an image endpoint can read. */
export function isImageMedia(type: string): boolean {
  return type === MULTIPART || (IMAGE_TYPES as readonly string[]).includes(type);
}
