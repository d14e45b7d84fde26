import { readFileSync } from 'node:fs';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { FoveaError } from '../src/errors.js';
import { decodeImage, probeImage } from '../src/pipeline/decode.js';
import { pngHeaderOnly } from './support/images.js';

const LIMITS = { maxPixels: 40_000_000 };
const fixture = (name: string): Buffer => readFileSync(new URL(`../../shared/fixtures/images/${name}`, import.meta.url));

/** Encode raw pixels with sharp; `channels` 1 (grey), 3 (RGB) or 4 (RGBA). */
const encode = (px: Uint8Array, width: number, height: number, channels: 1 | 3 | 4) =>
  sharp(px, { raw: { width, height, channels } });

/** The FoveaError a promise rejects with (fails the test if it resolves or rejects otherwise). */
async function rejection(p: Promise<unknown>): Promise<FoveaError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FoveaError);
  return err as FoveaError;
}


describe('decodeImage on the fixture photos', () => {
  it.each([
    ['bus.jpg', 810, 1080],
    ['zidane.jpg', 1280, 720],
  ])('decodes %s to %i×%i packed RGB', async (name, width, height) => {
    const buf = fixture(name);
    expect(await probeImage(buf, LIMITS)).toEqual({ width, height, format: 'jpeg' });
    const img = await decodeImage(buf, LIMITS);
    expect([img.width, img.height, img.data.length]).toEqual([width, height, width * height * 3]);
    expect(img.data).toBeInstanceOf(Uint8Array);
  });
});

describe('decodeImage shapes pixels like cv2.imread(IMREAD_COLOR), in RGB', () => {
  it('applies EXIF orientation 6 (rotate 90° clockwise): size swapped, left half moves to the top', async () => {
    // Stored 16 wide × 8 high: left half red, right half blue.
    const px = new Uint8Array(16 * 8 * 3);
    for (let i = 0; i < 16 * 8; i++) px.set(i % 16 < 8 ? [255, 0, 0] : [0, 0, 255], i * 3);
    const jpeg = await encode(px, 16, 8, 3).jpeg({ quality: 100 }).withMetadata({ orientation: 6 }).toBuffer();
    expect(await probeImage(jpeg, LIMITS)).toEqual({ width: 8, height: 16, format: 'jpeg' });
    const img = await decodeImage(jpeg, LIMITS);
    expect([img.width, img.height]).toEqual([8, 16]);
    const at = (x: number, y: number) => Array.from(img.data.subarray((y * 8 + x) * 3, (y * 8 + x) * 3 + 3));
    // JPEG is lossy and subsamples chroma: look away from the edge, with a tolerance.
    for (const [x, y] of [[1, 1], [6, 2], [3, 5]]) expect(at(x, y).map((v, c) => Math.abs(v - [255, 0, 0][c]) < 24)).toEqual([true, true, true]);
    for (const [x, y] of [[1, 14], [6, 13], [3, 10]]) expect(at(x, y).map((v, c) => Math.abs(v - [0, 0, 255][c]) < 24)).toEqual([true, true, true]);
  });

  it('drops alpha without compositing: an RGBA PNG gives back its RGB bytes exactly', async () => {
    const rgba = Uint8Array.from([200, 100, 50, 0, 10, 20, 30, 128, 1, 2, 3, 255, 250, 251, 252, 7]);
    const img = await decodeImage(await encode(rgba, 2, 2, 4).png().toBuffer(), LIMITS);
    expect(Array.from(img.data)).toEqual([200, 100, 50, 10, 20, 30, 1, 2, 3, 250, 251, 252]);
  });

  it('replicates a greyscale PNG into three equal channels', async () => {
    const grey = Uint8Array.from([0, 17, 128, 255, 42, 99]);
    const png = await encode(grey, 3, 2, 1).toColourspace('b-w').png().toBuffer();
    expect((await sharp(png).metadata()).channels).toBe(1);
    const img = await decodeImage(png, LIMITS);
    expect(Array.from(img.data)).toEqual(Array.from(grey).flatMap((v) => [v, v, v]));
  });

  it('decodes lossless WebP to the exact pixels', async () => {
    const px = Uint8Array.from({ length: 5 * 3 * 3 }, (_, i) => (i * 37) & 255);
    const webp = await encode(px, 5, 3, 3).webp({ lossless: true }).toBuffer();
    expect(await probeImage(webp, LIMITS)).toEqual({ width: 5, height: 3, format: 'webp' });
    expect(Array.from((await decodeImage(webp, LIMITS)).data)).toEqual(Array.from(px));
  });
});

describe('decodeImage and probeImage refuse bad input with the error a route answers', () => {
  const small = () => encode(new Uint8Array(8 * 8 * 3), 8, 8, 3);

  it('an empty body is 400 empty_body', async () => {
    expect(await rejection(decodeImage(new Uint8Array(0), LIMITS))).toMatchObject({ status: 400, code: 'empty_body' });
  });

  it('a truncated JPEG (bus.jpg cut in half) is 400 undecodable_image, not a half-grey picture', async () => {
    const bus = fixture('bus.jpg');
    const err = await rejection(decodeImage(bus.subarray(0, bus.length >> 1), LIMITS));
    expect(err).toMatchObject({ status: 400, code: 'undecodable_image' });
    expect(err.message).toMatch(/premature end|truncated/i);
  });

  it('random bytes are 400 undecodable_image', async () => {
    const bytes = Uint8Array.from({ length: 4096 }, (_, i) => (i * 2654435761) >>> 24);
    expect(await rejection(decodeImage(bytes, LIMITS))).toMatchObject({ status: 400, code: 'undecodable_image' });
  });

  it('text sent as an image is 400 undecodable_image', async () => {
    const text = new TextEncoder().encode('{"image": "not really"}\n');
    expect(await rejection(probeImage(text, LIMITS))).toMatchObject({ status: 400, code: 'undecodable_image' });
  });

  it.each(['gif', 'tiff'] as const)('a %s image is 415 unsupported_media_type', async (format) => {
    const buf = await small().toFormat(format).toBuffer();
    expect(await rejection(decodeImage(buf, LIMITS))).toMatchObject({ status: 415, code: 'unsupported_media_type' });
  });

  it('a 20000×20000 PNG is 413 too_many_pixels from its header alone', async () => {
    const png = pngHeaderOnly(20_000, 20_000);
    expect(png.length).toBeLessThan(2048);
    expect(await rejection(probeImage(png, LIMITS))).toMatchObject({ status: 413, code: 'too_many_pixels' });
    expect(await rejection(decodeImage(png, LIMITS))).toMatchObject({ status: 413, code: 'too_many_pixels' });
  });

  it('the pixel limit is the caller’s: bus.jpg is 413 under a 640×640 limit', async () => {
    const err = await rejection(decodeImage(fixture('bus.jpg'), { maxPixels: 640 * 640 }));
    expect(err).toMatchObject({ status: 413, code: 'too_many_pixels' });
    expect(err.message).toContain('810x1080');
  });
});
