/**
 * Binary masks as COCO-style uncompressed RLE, and as PNG.
 *
 * RLE follows pycocotools (`pycocotools/mask.py`, `maskApi.c` rleEncode): the mask is read in
 * column-major (Fortran) order — down the first column, then the next — and `counts` alternates
 * run lengths of 0s and 1s, always starting with a run of 0s (so a mask whose first pixel is set
 * starts with a 0 count). `size` is [height, width]. pycocotools' docstring examples:
 * [0 0 1 1 1 0 1] → [2, 3, 1, 1] and [1 1 1 1 1 1 0] → [0, 6, 1]. Our masks are row-major
 * (width × height, nonzero = set), the transposition happens here.
 */
import sharp from 'sharp';

export interface Rle {
  size: [number, number];
  counts: number[];
}

function checkSize(what: string, length: number, width: number, height: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 0 || height < 0) throw new RangeError(`${what}: bad mask size ${width}×${height}`);
  if (length !== width * height) throw new RangeError(`${what}: mask has ${length} bytes, ${width}×${height} needs ${width * height}`);
}

/** Uncompressed COCO RLE of a row-major mask (nonzero = set). */
export function maskToRle(mask: Uint8Array, width: number, height: number): Rle {
  checkSize('maskToRle', mask.length, width, height);
  const counts: number[] = [];
  let current = 0;
  let run = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const v = mask[y * width + x] !== 0 ? 1 : 0;
      if (v !== current) {
        counts.push(run);
        current = v;
        run = 0;
      }
      run++;
    }
  }
  // pycocotools writes the last run too; an empty (0-pixel) mask has no runs at all.
  if (width * height > 0) counts.push(run);
  return { size: [height, width], counts };
}

/** The row-major 0/1 mask of an uncompressed COCO RLE; the runs must cover exactly height × width pixels. */
export function rleToMask(rle: Rle): Uint8Array {
  const [height, width] = rle.size;
  checkSize('rleToMask', height * width, width, height);
  const total = height * width;
  const mask = new Uint8Array(total);
  let k = 0;
  for (let r = 0; r < rle.counts.length; r++) {
    const n = rle.counts[r];
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`rleToMask: run ${r} is ${n}, not a count`);
    if (k + n > total) throw new RangeError(`rleToMask: runs cover more than ${height}×${width} pixels`);
    if (r % 2 === 1) {
      for (let i = k; i < k + n; i++) mask[(i % height) * width + Math.floor(i / height)] = 1;
    }
    k += n;
  }
  if (k !== total) throw new RangeError(`rleToMask: runs cover ${k} pixels, ${height}×${width} needs ${total}`);
  return mask;
}

/** An 8-bit greyscale PNG of the mask: 255 where set, 0 elsewhere. */
export async function maskToPng(mask: Uint8Array, width: number, height: number): Promise<Uint8Array> {
  checkSize('maskToPng', mask.length, width, height);
  if (width === 0 || height === 0) throw new RangeError('maskToPng: a PNG needs at least one pixel');
  const grey = Buffer.alloc(mask.length);
  for (let i = 0; i < mask.length; i++) grey[i] = mask[i] !== 0 ? 255 : 0;
  // 'b-w' keeps the PNG single-channel (colour type 0); sharp would otherwise write RGB.
  const png = await sharp(grey, { raw: { width, height, channels: 1 }, limitInputPixels: false }).toColourspace('b-w').png().toBuffer();
  return new Uint8Array(png.buffer, png.byteOffset, png.byteLength);
}
