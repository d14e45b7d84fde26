/**
 * A small typed client for `/v1/stream` (specs/protocol.md):
 *
 * ```ts
 * const client = await connect('ws://localhost:8080/v1/stream');
 * const ready = await client.start('detect', 'leyolo-nano', { size: 640, track: true });
 * client.sendEncoded(1, jpegBytes);
 * for await (const msg of client.messages()) if (msg.type === 'result') console.log(msg.result);
 * ```
 *
 * Answers are read in arrival order by one consumer, through `messages()` (or `next()`). The client
 * buffers at most `highWaterMark` unread answers; past that it stops reading from the socket, so a
 * slow consumer pushes back on the server (which then drops results for it) instead of growing.
 */
import WebSocket from 'ws';
import {
  encodeFrame,
  type DetectStreamResult,
  type FrameHeader,
  type ReadyMessage,
  type ServerMessage,
  type StreamTask,
} from '../stream/ws/protocol.js';

export { CLOSE, encodeFrame } from '../stream/ws/protocol.js';
export type { DetectStreamResult, DropReason, DroppedMessage, ErrorMessage, FrameHeader, ReadyMessage, ResultMessage, ServerMessage, StageTimings, StreamTask } from '../stream/ws/protocol.js';

/** Header fields a frame may carry besides the ones the client sets (frameId, format, width, height). */
export interface FrameExtras {
  /** Your clock, ms, echoed in the answer (default: now, epoch ms). */
  ts?: number;
  /** `track`: the box to (re-)initialise on. */
  init?: FrameHeader['init'];
  /** `change`: make this frame the reference. */
  reference?: boolean;
  [extra: string]: unknown;
}

export interface CloseInfo {
  code: number;
  reason: string;
}

export interface ClientOptions {
  /** Unread answers buffered before the client stops reading from the socket (default 1024). */
  highWaterMark?: number;
  /** Answer the server's pings (default true; false only to test the server's idle timeout). */
  autoPong?: boolean;
  /** Connection timeout, ms (default 10 000). */
  handshakeTimeout?: number;
}

/** An `error` message the server sent in place of `ready`. */
export class StreamError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly frameId?: number,
  ) {
    super(`${code}: ${message}`);
    this.name = 'StreamError';
  }
}

/** The server's clock and this one are both epoch ms with a fraction: latency can be read across them on one host. */
const nowMs = (): number => performance.timeOrigin + performance.now();

export class StreamClient {
  /** Resolves when the socket has closed, with the close code and reason. */
  readonly closed: Promise<CloseInfo>;
  private readonly queue: ServerMessage[] = [];
  private waiter: ((m: ServerMessage | undefined) => void) | undefined;
  private done = false;
  private paused = false;
  private readonly highWaterMark: number;

  private constructor(
    /** The underlying `ws` socket, for what this client does not cover (pausing reads, sending arbitrary bytes). */
    readonly socket: WebSocket,
    opts: ClientOptions,
  ) {
    const ws = socket;
    this.highWaterMark = opts.highWaterMark ?? 1024;
    ws.on('message', (data, isBinary) => {
      if (isBinary) return; // the server sends text only
      this.push(JSON.parse(String(data)) as ServerMessage);
    });
    this.closed = new Promise((resolve) => {
      ws.once('close', (code, reason) => {
        this.done = true;
        this.wake(undefined);
        resolve({ code, reason: reason.toString('utf8') });
      });
    });
    ws.on('error', () => undefined); // a close always follows; `closed` reports it
  }

  /** Opens a stream connection (`ws://host:port/v1/stream`). */
  static connect(url: string, opts: ClientOptions = {}): Promise<StreamClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { autoPong: opts.autoPong ?? true, handshakeTimeout: opts.handshakeTimeout ?? 10_000 });
      const client = new StreamClient(ws, opts);
      const fail = (err: Error) => reject(err);
      ws.once('error', fail);
      ws.once('open', () => {
        ws.off('error', fail);
        resolve(client);
      });
    });
  }

  /**
   * Starts the stream; resolves with `ready`, or rejects with a `StreamError` when the server refuses
   * (unknown task or model, bad params, stream limit) and closes. Call before reading `messages()`.
   */
  async start(task: StreamTask, model?: string, params: Record<string, unknown> = {}): Promise<ReadyMessage> {
    this.socket.send(JSON.stringify({ type: 'start', task, ...(model === undefined ? {} : { model }), params }));
    const msg = await this.next();
    if (msg?.type === 'ready') return msg;
    if (msg?.type === 'error') throw new StreamError(msg.code, msg.message, msg.frameId);
    const closed = await this.closed;
    throw new StreamError('closed', `the stream closed (${closed.code} ${closed.reason}) before ready${msg ? `; got ${msg.type}` : ''}`);
  }

  /** Sends an encoded frame (JPEG, PNG or WebP bytes). `ts` defaults to now (epoch ms). */
  sendEncoded(frameId: number, bytes: Uint8Array, extra: FrameExtras = {}): void {
    this.socket.send(encodeFrame({ ts: nowMs(), ...extra, frameId }, bytes));
  }

  /** Sends a raw frame: packed RGB, row-major, `width × height × 3` bytes. */
  sendRaw(frameId: number, rgb: Uint8Array, width: number, height: number, extra: FrameExtras = {}): void {
    this.socket.send(encodeFrame({ ts: nowMs(), ...extra, frameId, format: 'rgb24', width, height }, rgb));
  }

  /** Forget tracker state: frames sent after this start fresh. */
  reset(): void {
    this.socket.send(JSON.stringify({ type: 'reset' }));
  }

  /** Ask the server to answer the frame in flight and close (1000); keep reading `messages()` to get the last answers. */
  stop(): void {
    this.socket.send(JSON.stringify({ type: 'stop' }));
  }

  /**
   * The next answer, or undefined once the socket has closed and every answer was read. `R` is the
   * task's `result` shape (detect's by default); the server's answer is not checked against it.
   */
  next<R = DetectStreamResult>(): Promise<ServerMessage<R> | undefined> {
    return this.shift() as Promise<ServerMessage<R> | undefined>;
  }

  private shift(): Promise<ServerMessage | undefined> {
    const m = this.queue.shift();
    if (m !== undefined) {
      if (this.paused && this.queue.length <= this.highWaterMark >> 1) {
        this.paused = false;
        this.socket.resume();
      }
      return Promise.resolve(m);
    }
    if (this.done) return Promise.resolve(undefined);
    if (this.waiter) return Promise.reject(new Error('StreamClient answers have one reader at a time'));
    return new Promise((resolve) => (this.waiter = resolve));
  }

  /** Every answer in arrival order until the socket closes. */
  async *messages<R = DetectStreamResult>(): AsyncGenerator<ServerMessage<R>, void, undefined> {
    for (;;) {
      const m = await this.next<R>();
      if (m === undefined) return;
      yield m;
    }
  }

  /** Bytes queued to send and not yet written to the socket. */
  get bufferedAmount(): number {
    return this.socket.bufferedAmount;
  }

  /** Closes the connection (1000 by default) and resolves when it is closed. */
  close(code = 1000, reason = ''): Promise<CloseInfo> {
    if (this.socket.readyState === WebSocket.CONNECTING || this.socket.readyState === WebSocket.OPEN) this.socket.close(code, reason);
    return this.closed;
  }

  /** Closes without a close handshake (as a crashed client would). */
  terminate(): void {
    this.socket.terminate();
  }

  private push(m: ServerMessage): void {
    if (this.waiter) return this.wake(m);
    this.queue.push(m);
    if (!this.paused && this.queue.length >= this.highWaterMark) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private wake(m: ServerMessage | undefined): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.(m);
  }
}

export const connect = (url: string, opts?: ClientOptions): Promise<StreamClient> => StreamClient.connect(url, opts);

