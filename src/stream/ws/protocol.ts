/**
 * The wire format of `/v1/stream` (specs/protocol.md, v1): the messages both sides send, the binary
 * frame layout `[u32 big-endian N][N bytes of UTF-8 JSON header][payload]`, and the close codes.
 * Pure: no sockets, no fastify, so the client imports it too.
 */

/** Task names of protocol §1. Only those with a handler are served; the others answer `unsupported_task`. */
export const STREAM_TASKS = ['detect', 'track', 'change', 'classify', 'fewshot-detect'] as const;
export type StreamTask = (typeof STREAM_TASKS)[number];

/** Close codes (RFC 6455 §7.4.1) the server uses. */
export const CLOSE = {
  /** `stop` honoured: the frame in flight was answered. */
  normal: 1000,
  /** Idle timeout (no pong, no message), or the server shutting down. */
  goingAway: 1001,
  /** A message over the transport limit (twice the frame byte limit): ws refuses to buffer it. */
  tooBig: 1009,
  /** Bad start, unknown task or model, or a message before `start`. */
  policy: 1008,
  /** The server failed to start the stream (a model that would not build or load). */
  internalError: 1011,
  /** The stream limit is reached: try again later. */
  tryAgainLater: 1013,
} as const;

// ---------------------------------------------------------------------------------------------
// Client → server

export interface StartMessage {
  type: 'start';
  task: string;
  model?: string;
  params?: Record<string, unknown>;
}
export type ControlMessage = StartMessage | { type: 'reset' } | { type: 'stop' };

/** The JSON header of a binary frame. Task-specific fields (`init`, `reference`) ride along. */
export interface FrameHeader {
  frameId: number;
  /** The client's clock, ms; echoed in the answer. */
  ts?: number;
  /** Raw frames: `rgb24` with `width` and `height`; absent for an encoded image (JPEG, PNG, WebP). */
  format?: 'rgb24';
  width?: number;
  height?: number;
  /** `track`: `[x1, y1, x2, y2]` on the first frame and whenever the client re-initialises. */
  init?: [number, number, number, number];
  /** `change`: this frame becomes the reference. */
  reference?: boolean;
  [extra: string]: unknown;
}

// ---------------------------------------------------------------------------------------------
// Server → client

export interface ModelDescription {
  id: string;
  trained: boolean;
  input: [number, number];
}

export interface StageTimings {
  decode: number;
  preprocess: number;
  infer: number;
  post: number;
}

export interface ReadyMessage {
  type: 'ready';
  streamId: string;
  model: ModelDescription;
}

export interface ResultMessage<R = unknown> {
  type: 'result';
  frameId: number;
  ts?: number;
  /** Server clock (epoch ms) when the frame arrived. */
  receivedAt: number;
  /** From the frame's arrival to the result's send, ms. */
  latencyMs: number;
  timings: StageTimings;
  result: R;
}

/**
 * `superseded`: a newer frame replaced it while it waited; `slow-consumer`: its result was ready
 * while the socket's send buffer was over the bound; `stopped`: it was waiting (or arrived) after `stop`.
 */
export type DropReason = 'superseded' | 'slow-consumer' | 'stopped';

export interface DroppedMessage {
  type: 'dropped';
  frameId: number;
  reason: DropReason;
}

export interface ErrorMessage {
  type: 'error';
  /** Present when the error answers a frame whose header named one. */
  frameId?: number;
  code: string;
  message: string;
}

export type ServerMessage<R = unknown> = ReadyMessage | ResultMessage<R> | DroppedMessage | ErrorMessage;

/** What `detect` puts in `result` (the REST answer's image and detections). */
export interface DetectStreamResult {
  image: { width: number; height: number };
  detections: { box: [number, number, number, number]; score: number; classId: number; label: string; trackId?: number }[];
}

// ---------------------------------------------------------------------------------------------
// Binary frames

const HEADER_LENGTH_BYTES = 4;

/** `[u32 BE N][N bytes of JSON header][payload]`, in one buffer (one copy of the payload). */
export function encodeFrame(header: FrameHeader, payload: Uint8Array): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const out = Buffer.allocUnsafe(HEADER_LENGTH_BYTES + json.length + payload.length);
  out.writeUInt32BE(json.length, 0);
  json.copy(out, HEADER_LENGTH_BYTES);
  out.set(payload, HEADER_LENGTH_BYTES + json.length);
  return out;
}

/** A frame split into its parts; `header` is whatever JSON object the client sent (checked later). */
export interface SplitFrame {
  header: Record<string, unknown>;
  payload: Uint8Array;
}

/** Why a binary message is not a frame; `frameId` when the header got far enough to name one. */
export class FrameError extends Error {
  constructor(
    readonly code: 'bad_frame' | 'too_large',
    message: string,
    readonly frameId?: number,
  ) {
    super(message);
    this.name = 'FrameError';
  }
}

/** Splits a binary message into header and payload; throws `FrameError` when the layout is wrong. */
export function splitFrame(message: Uint8Array, maxHeaderBytes: number): SplitFrame {
  if (message.length < HEADER_LENGTH_BYTES) throw new FrameError('bad_frame', `a frame needs a 4-byte header length, got ${message.length} bytes`);
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  const n = view.getUint32(0, false);
  if (n > maxHeaderBytes) throw new FrameError('bad_frame', `the frame header is ${n} bytes; the limit is ${maxHeaderBytes}`);
  if (HEADER_LENGTH_BYTES + n > message.length) throw new FrameError('bad_frame', `the header length ${n} runs past the end of the ${message.length}-byte message`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(message.subarray(HEADER_LENGTH_BYTES, HEADER_LENGTH_BYTES + n)));
  } catch (err) {
    throw new FrameError('bad_frame', `the frame header is not UTF-8 JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw new FrameError('bad_frame', 'the frame header must be a JSON object');
  return { header: header as Record<string, unknown>, payload: message.subarray(HEADER_LENGTH_BYTES + n) };
}
