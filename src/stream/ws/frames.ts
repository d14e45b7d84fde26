/**
 * A binary message checked as a frame on arrival: layout, header fields, frame id order, byte and
 * pixel limits, raw size. Nothing is decoded here: an encoded image stays bytes until dispatch.
 */
import type { ImageInput } from '../../pipeline/messages.js';
import { FrameError, splitFrame, type FrameHeader } from './protocol.js';

export interface FrameLimits {
  /** Largest payload (encoded image or rgb24 bytes). */
  readonly maxFrameBytes: number;
  /** Largest width × height of a frame (raw: from the header here; encoded: from the image header at dispatch). */
  readonly maxFramePixels: number;
  /** Largest JSON header. */
  readonly maxHeaderBytes: number;
}

export interface ArrivedFrame {
  readonly frameId: number;
  readonly ts?: number;
  readonly header: FrameHeader;
  readonly image: ImageInput;
}

/**
 * Reads one binary message as a frame. `lastFrameId` is the highest id accepted so far on the
 * stream: ids must increase. Throws `FrameError` (with the frame id once the header named a valid one).
 */
export function readFrame(message: Uint8Array, limits: FrameLimits, lastFrameId: number): ArrivedFrame {
  const { header, payload } = splitFrame(message, limits.maxHeaderBytes);
  const frameId = header.frameId;
  if (typeof frameId !== 'number' || !Number.isSafeInteger(frameId) || frameId < 0)
    throw new FrameError('bad_frame', `the header needs "frameId", a non-negative integer; got ${JSON.stringify(frameId) ?? 'nothing'}`);
  if (frameId <= lastFrameId) throw new FrameError('bad_frame', `frameId must increase: got ${frameId} after ${lastFrameId}`, frameId);
  const fail = (code: 'bad_frame' | 'too_large', message: string): never => {
    throw new FrameError(code, message, frameId);
  };
  const ts = header.ts;
  if (ts !== undefined && (typeof ts !== 'number' || !Number.isFinite(ts))) fail('bad_frame', `"ts" must be a number (client clock, ms); got ${JSON.stringify(ts)}`);
  if (payload.length > limits.maxFrameBytes) fail('too_large', `the frame payload is ${payload.length} bytes; the limit is ${limits.maxFrameBytes}`);
  return { frameId, ts: ts as number | undefined, header: header as FrameHeader, image: frameImage(header, payload, limits, fail) };
}

function frameImage(header: Record<string, unknown>, payload: Uint8Array, limits: FrameLimits, fail: (code: 'bad_frame' | 'too_large', m: string) => never): ImageInput {
  const { format, width: w, height: h } = header;
  if (format === undefined) {
    if (payload.length === 0) fail('bad_frame', 'the frame has no payload; send an encoded image (JPEG, PNG, WebP) or rgb24 bytes');
    return { kind: 'encoded', bytes: payload };
  }
  if (format !== 'rgb24') fail('bad_frame', `unknown frame format ${JSON.stringify(format)}; the only raw format is "rgb24" (omit "format" for JPEG, PNG, WebP)`);
  if (!(typeof w === 'number' && typeof h === 'number' && Number.isSafeInteger(w) && Number.isSafeInteger(h) && w > 0 && h > 0))
    fail('bad_frame', `an rgb24 frame needs "width" and "height", positive integers; got ${JSON.stringify(w)}×${JSON.stringify(h)}`);
  const [width, height] = [w as number, h as number];
  if (width * height > limits.maxFramePixels) fail('too_large', `the frame is ${width}×${height} = ${width * height} pixels; the limit is ${limits.maxFramePixels}`);
  if (payload.length !== width * height * 3) fail('bad_frame', `an rgb24 frame of ${width}×${height} needs ${width * height * 3} bytes, got ${payload.length}`);
  return { kind: 'rgb24', data: payload, width, height };
}
