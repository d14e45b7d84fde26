/**
 * Image decoding with sharp, shaped like `cv2.imread(path, cv2.IMREAD_COLOR)` (what the models'
 * reference pipelines use) but RGB: EXIF orientation applied, alpha dropped (not composited),
 * grey replicated to three channels. Every failure is a FoveaError a route can answer with.
 */
import sharp, { type Metadata, type OutputInfo } from 'sharp';
import { FoveaError, badInput, tooLarge, unsupportedMedia } from '../errors.js';

// Every frame is a new image: libvips' operation cache only holds on to memory here.
sharp.cache(false);

/** Packed 8-bit RGB, row-major HWC. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

export type ImageFormat = 'jpeg' | 'png' | 'webp';

export interface DecodeLimits {
  /** Largest width × height accepted, checked from the header before any pixel is decoded. */
  maxPixels: number;
}

export interface ImageInfo {
  /** Size after EXIF orientation, i.e. the size of the decoded image. */
  width: number;
  height: number;
  format: ImageFormat;
}

const FORMATS: ReadonlySet<string> = new Set<ImageFormat>(['jpeg', 'png', 'webp']);

const undecodable = (detail: string): FoveaError => badInput(`the body is not a decodable image: ${detail}`, 'undecodable_image');

/** Header-only look at the image: format, oriented size, and the pixel limit. */
export async function probeImage(buf: Uint8Array, limits: DecodeLimits): Promise<ImageInfo> {
  if (buf.length === 0) throw badInput('the request body is empty; send image bytes', 'empty_body');
  let meta: Metadata;
  try {
    // No pixel limit here: sharp's default would refuse big headers before our own 413 check can.
    meta = await sharp(buf, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw undecodable(sharpMessage(err));
  }
  const format = meta.format as string | undefined;
  if (format === undefined || !FORMATS.has(format)) {
    throw unsupportedMedia(`image format '${format ?? 'unknown'}' is not supported; send JPEG, PNG or WebP`);
  }
  if (!(meta.width !== undefined && meta.height !== undefined && meta.width > 0 && meta.height > 0)) {
    throw undecodable('the header has no image size');
  }
  const pixels = meta.width * meta.height;
  if (pixels > limits.maxPixels) {
    throw tooLarge(`image is ${meta.width}x${meta.height} = ${pixels} pixels; the limit is ${limits.maxPixels}`, 'too_many_pixels');
  }
  // EXIF orientations 5–8 include a quarter turn: the decoded image is the header's size transposed.
  const turned = meta.orientation !== undefined && meta.orientation >= 5 && meta.orientation <= 8;
  return turned
    ? { width: meta.height, height: meta.width, format: format as ImageFormat }
    : { width: meta.width, height: meta.height, format: format as ImageFormat };
}

/** Decode to packed RGB after the header checks of `probeImage`. */
export async function decodeImage(buf: Uint8Array, limits: DecodeLimits): Promise<RgbImage> {
  const info = await probeImage(buf, limits);
  let out: { data: Buffer; info: OutputInfo };
  try {
    // failOn 'truncated': a cut-off upload is an error, not a half-grey picture; lesser libjpeg
    // warnings (extraneous bytes and the like) still decode, as they do in cv2.imread.
    out = await sharp(buf, { failOn: 'truncated', limitInputPixels: limits.maxPixels })
      .rotate()
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
  } catch (err) {
    const message = sharpMessage(err);
    if (/pixel limit/i.test(message)) throw tooLarge(`image exceeds ${limits.maxPixels} pixels`, 'too_many_pixels');
    throw undecodable(message);
  }
  const { width, height, channels } = out.info;
  if (channels !== 3 || width !== info.width || height !== info.height) {
    throw undecodable(`decoded to ${width}x${height}x${channels}, expected ${info.width}x${info.height}x3`);
  }
  // A view on the Buffer's own memory: no copy of the pixels.
  return { data: new Uint8Array(out.data.buffer, out.data.byteOffset, out.data.byteLength), width, height };
}

function sharpMessage(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).trim().split('\n')[0];
}
