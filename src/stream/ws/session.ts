/**
 * One WebSocket connection = one stream (specs/protocol.md). The session owns everything that is
 * not the task's: the start handshake, frame checks on arrival, latest-frame-wins scheduling,
 * answers in frame order, backpressure, `reset`/`stop`, pings and the idle timeout.
 *
 * Memory per stream is bounded whatever the client does: at most one frame in flight and one
 * waiting (encoded bytes, decoded only when dispatched); answers held for order at most
 * `maxHeldAnswers`; the socket's send buffer at most `maxBufferedBytes` plus one result plus
 * another `maxBufferedBytes` of small answers (drops, errors) queued while it was over the bound —
 * past either limit the session stops reading from the socket (TCP pushes back on the client) until
 * things drain.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import { WebSocket, type RawData } from 'ws';
import { FoveaError } from '../../errors.js';
import { probeImage } from '../../pipeline/decode.js';
import { OrderedAnswers, type Place } from './answers.js';
import { readFrame, type ArrivedFrame, type FrameLimits } from './frames.js';
import { CLOSE, FrameError, STREAM_TASKS, splitFrame, type DropReason, type ServerMessage, type StreamTask } from './protocol.js';
import type { TaskOutput, TaskStream, TaskTable } from './tasks.js';

export interface StreamLimits extends FrameLimits {
  /**
   * Above this many bytes in the socket's send buffer, dispatch waits and frames and results are
   * dropped as `slow-consumer`; once answers queued while over it add up to this much again, reading pauses.
   */
  readonly maxBufferedBytes: number;
  /** Answers held for frame order (behind the frame in flight) before reading pauses. */
  readonly maxHeldAnswers: number;
  readonly pingIntervalMs: number;
  /** No pong and no message for this long closes the stream (1001); so does no `start` for this long (1008). */
  readonly idleTimeoutMs: number;
}

interface PendingFrame extends ArrivedFrame {
  readonly place: Place<Answer>;
  /** performance.now() at arrival, for latencyMs. */
  readonly arrived: number;
  /** Server clock (epoch ms) at arrival. */
  readonly receivedAt: number;
  /** `reset`s received before this frame: a frame of a newer epoch resets the task first. */
  readonly epoch: number;
}

/** A frame's answer as it waits in line: results are formatted when sent (latency, slow-consumer check). */
type Answer = { readonly kind: 'message'; readonly message: ServerMessage } | { readonly kind: 'result'; readonly frame: PendingFrame; readonly output: TaskOutput };

type Phase = 'awaiting-start' | 'starting' | 'running' | 'closed';

/** How often a paused or held-back stream looks at its send buffer again. */
const FLOW_POLL_MS = 20;
/** After sending a close frame, how long the peer gets to answer before the socket is destroyed. */
const CLOSE_GRACE_MS = 2_000;

export interface SessionStats {
  readonly id: string;
  readonly phase: Phase;
  readonly inFlight: boolean;
  readonly waiting: boolean;
  readonly heldAnswers: number;
  readonly bufferedAmount: number;
  readonly paused: boolean;
}

export class StreamSession {
  readonly id = randomUUID();
  private phase: Phase = 'awaiting-start';
  private stopping = false;
  private task: TaskStream | undefined;
  private inFlight: PendingFrame | undefined;
  private waiting: PendingFrame | undefined;
  private readonly answers = new OrderedAnswers<Answer>();
  private lastFrameId = -1;
  private epoch = 0;
  private appliedEpoch = 0;
  private readonly openedAt = performance.now();
  private lastSeen = performance.now();
  private paused = false;
  /** Bytes of answers queued while the send buffer was over its bound (reset once it is under). */
  private overflowBytes = 0;
  private readonly pingTimer: NodeJS.Timeout;
  private flowTimer: NodeJS.Timeout | undefined;
  private graceTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly socket: WebSocket,
    private readonly tasks: TaskTable,
    private readonly limits: StreamLimits,
    private readonly log: FastifyBaseLogger,
    private readonly onClosed: (s: StreamSession) => void,
  ) {
    socket.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    socket.on('pong', () => (this.lastSeen = performance.now()));
    socket.on('close', () => this.dispose());
    this.pingTimer = setInterval(() => this.heartbeat(), limits.pingIntervalMs);
  }

  stats(): SessionStats {
    return { id: this.id, phase: this.phase, inFlight: this.inFlight !== undefined, waiting: this.waiting !== undefined, heldAnswers: this.answers.held, bufferedAmount: this.socket.bufferedAmount, paused: this.paused };
  }

  // -------------------------------------------------------------------------------------------
  // Incoming

  private onMessage(data: RawData, isBinary: boolean): void {
    if (this.phase === 'closed') return;
    this.lastSeen = performance.now();
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    if (isBinary) this.onFrame(bytes);
    else this.onText(bytes.toString('utf8'));
    this.tick();
  }

  private onText(text: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch {
      return this.refuse('bad_message', 'a text message must be JSON: {"type": "start" | "reset" | "stop", ...}');
    }
    const type = msg !== null && typeof msg === 'object' && !Array.isArray(msg) ? (msg as { type?: unknown }).type : undefined;
    if (typeof type !== 'string') return this.refuse('bad_message', 'a text message must be a JSON object with a string "type"');
    if (this.stopping) return; // closing after `stop`: nothing more to do
    if (type === 'start') return this.onStart(msg as Record<string, unknown>);
    if (this.phase === 'awaiting-start') return this.refuse('not_started', `the first message must be {"type": "start", ...}; got "${type}"`);
    if (type === 'reset') this.epoch++;
    else if (type === 'stop') this.onStop();
    else this.refuse('unknown_type', `unknown message type "${type}"; expected start, reset or stop`);
  }

  /** An error that answers no frame: fatal before `start` (1008), otherwise the stream goes on. */
  private refuse(code: string, message: string): void {
    if (this.phase === 'awaiting-start') this.fail(code, message, CLOSE.policy);
    else this.send({ type: 'error', code, message });
  }

  private onStart(msg: Record<string, unknown>): void {
    if (this.phase !== 'awaiting-start') return this.send({ type: 'error', code: 'already_started', message: 'the stream has already been started; open another connection for another task' });
    const { task, model, params } = msg;
    if (typeof task !== 'string') return this.fail('bad_message', `start needs "task", one of ${STREAM_TASKS.join(', ')}`, CLOSE.policy);
    if (model !== undefined && typeof model !== 'string') return this.fail('bad_message', `"model" must be a string, got ${JSON.stringify(model)}`, CLOSE.policy);
    if (params !== undefined && (params === null || typeof params !== 'object' || Array.isArray(params)))
      return this.fail('bad_message', `"params" must be a JSON object, got ${JSON.stringify(params)}`, CLOSE.policy);
    if (!(STREAM_TASKS as readonly string[]).includes(task)) return this.fail('unknown_task', `unknown task '${task}'; the protocol's tasks are ${STREAM_TASKS.join(', ')}`, CLOSE.policy);
    const handler = this.tasks.get(task as StreamTask);
    if (!handler) return this.fail('unsupported_task', `task '${task}' is not served on streams yet; served: ${[...this.tasks.keys()].join(', ')}`, CLOSE.policy);
    this.phase = 'starting';
    handler.start(model, (params ?? {}) as Record<string, unknown>).then(
      (t) => {
        if (this.phase === 'closed') return;
        this.task = t;
        this.phase = 'running';
        this.send({ type: 'ready', streamId: this.id, model: t.model });
        this.tick();
      },
      (err: unknown) => {
        const e = asFoveaError(err, this.log);
        this.fail(e.code, e.message, e.status >= 500 ? CLOSE.internalError : CLOSE.policy);
      },
    );
  }

  private onStop(): void {
    this.stopping = true;
    if (this.waiting) this.drop(this.waiting, 'stopped');
    this.waiting = undefined;
  }

  private onFrame(bytes: Buffer): void {
    if (this.phase === 'awaiting-start') {
      const frameId = peekFrameId(bytes, this.limits.maxHeaderBytes);
      return this.fail('not_started', 'send {"type": "start", ...} and wait for "ready" before frames', CLOSE.policy, frameId);
    }
    const place = this.answers.open();
    let frame: ArrivedFrame;
    try {
      frame = readFrame(bytes, this.limits, this.lastFrameId);
    } catch (err) {
      const e = err instanceof FrameError ? err : new FrameError('bad_frame', String(err));
      if (e.frameId !== undefined && e.frameId > this.lastFrameId) this.lastFrameId = e.frameId;
      this.answers.fill(place, { kind: 'message', message: errorMessage(e.code, e.message, e.frameId) });
      return;
    }
    this.lastFrameId = frame.frameId;
    const now = performance.now();
    const pending: PendingFrame = { ...frame, place, arrived: now, receivedAt: performance.timeOrigin + now, epoch: this.epoch };
    if (this.stopping) return this.drop(pending, 'stopped');
    // The waiting frame is replaced; when the client is not reading its answers, that is why it waited.
    if (this.waiting) this.drop(this.waiting, this.overBuffer ? 'slow-consumer' : 'superseded');
    this.waiting = pending;
  }

  private drop(frame: PendingFrame, reason: DropReason): void {
    this.answers.fill(frame.place, { kind: 'message', message: { type: 'dropped', frameId: frame.frameId, reason } });
  }

  // -------------------------------------------------------------------------------------------
  // Scheduling and backpressure

  /** After anything happened: send what can be sent, dispatch what can run, adjust reading. */
  private tick(): void {
    if (this.phase === 'closed') return;
    this.answers.flush((a) => this.sendAnswer(a));
    this.dispatch();
    this.adjustFlow();
    if (this.stopping && this.phase === 'running' && !this.inFlight && this.answers.held === 0) this.close(CLOSE.normal, 'stopped');
  }

  private get overBuffer(): boolean {
    return this.socket.bufferedAmount > this.limits.maxBufferedBytes;
  }

  /** Latest frame wins: the waiting frame runs when nothing is in flight and the client is keeping up. */
  private dispatch(): void {
    const frame = this.waiting;
    if (this.phase !== 'running' || !this.task || this.inFlight || !frame || this.overBuffer) return;
    this.waiting = undefined;
    this.inFlight = frame;
    if (frame.epoch !== this.appliedEpoch) {
      this.task.reset();
      this.appliedEpoch = frame.epoch;
    }
    const task = this.task;
    void this.run(task, frame).then((answer) => {
      this.inFlight = undefined;
      if (this.phase === 'closed') return;
      this.answers.fill(frame.place, answer);
      this.tick();
    });
  }

  private async run(task: TaskStream, frame: PendingFrame): Promise<Answer> {
    try {
      // The stream's pixel limit for encoded frames, from the image header (no decode here).
      if (frame.image.kind === 'encoded') await probeImage(frame.image.bytes, { maxPixels: this.limits.maxFramePixels });
      return { kind: 'result', frame, output: await task.process({ header: frame.header, image: frame.image }) };
    } catch (err) {
      const e = asFoveaError(err, this.log);
      return { kind: 'message', message: errorMessage(frameErrorCode(e), e.message, frame.frameId) };
    }
  }

  private sendAnswer(a: Answer): void {
    if (a.kind === 'message') return this.send(a.message);
    const { frame, output } = a;
    if (this.overBuffer) return this.send({ type: 'dropped', frameId: frame.frameId, reason: 'slow-consumer' });
    const latencyMs = Math.round((performance.now() - frame.arrived) * 1000) / 1000;
    const ts = frame.ts === undefined ? {} : { ts: frame.ts };
    this.send({ type: 'result', frameId: frame.frameId, ...ts, receivedAt: frame.receivedAt, latencyMs, timings: output.timings, result: output.result });
  }

  /**
   * Stops reading while the answers queued over the send-buffer bound pass the bound again (until
   * then frames are still read and replace each other as `slow-consumer` drops) or the held answers
   * are over theirs; polls while paused or held back.
   */
  private adjustFlow(): void {
    if (!this.overBuffer) this.overflowBytes = 0;
    const over = this.overflowBytes > this.limits.maxBufferedBytes || this.answers.held > this.limits.maxHeldAnswers;
    if (over && !this.paused) this.socket.pause();
    else if (!over && this.paused) this.socket.resume();
    this.paused = over;
    const heldBack = this.waiting !== undefined && !this.inFlight && this.phase === 'running';
    if ((this.paused || heldBack) && !this.flowTimer) this.flowTimer = setInterval(() => this.tick(), FLOW_POLL_MS);
    else if (!(this.paused || heldBack) && this.flowTimer) this.clearFlowTimer();
  }

  private clearFlowTimer(): void {
    clearInterval(this.flowTimer);
    this.flowTimer = undefined;
  }

  // -------------------------------------------------------------------------------------------
  // Liveness and closing

  private heartbeat(): void {
    const now = performance.now();
    if (this.phase === 'awaiting-start' && now - this.openedAt > this.limits.idleTimeoutMs)
      return this.fail('start_timeout', `no start message within ${this.limits.idleTimeoutMs} ms`, CLOSE.policy);
    if (now - this.lastSeen > this.limits.idleTimeoutMs) return this.close(CLOSE.goingAway, 'idle timeout');
    if (this.socket.readyState === WebSocket.OPEN) this.socket.ping();
  }

  private send(msg: ServerMessage): void {
    if (this.socket.readyState !== WebSocket.OPEN) return;
    const text = JSON.stringify(msg);
    if (this.overBuffer) this.overflowBytes += text.length;
    this.socket.send(text, (err) => {
      if (err) this.log.debug({ err }, 'stream send failed');
    });
  }

  /** A fatal error: the error message, then close. */
  private fail(code: string, message: string, closeCode: number, frameId?: number): void {
    this.send(errorMessage(code, message, frameId));
    this.close(closeCode, code);
  }

  /** Sends a close frame (after what is queued) and gives the peer a moment to answer before destroying the socket. */
  private close(code: number, reason: string): void {
    if (this.phase === 'closed') return;
    if (this.socket.readyState === WebSocket.OPEN) this.socket.close(code, reason);
    this.dispose();
    this.graceTimer = setTimeout(() => this.socket.terminate(), CLOSE_GRACE_MS);
    this.graceTimer.unref();
    this.socket.once('close', () => clearTimeout(this.graceTimer));
  }

  /** Frees the stream's state at once; a result still in flight is ignored when it comes. */
  private dispose(): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    clearInterval(this.pingTimer);
    this.clearFlowTimer();
    if (this.paused) this.socket.resume(); // let the close handshake through
    this.paused = false;
    this.waiting = undefined;
    this.answers.clear();
    this.task?.reset();
    this.onClosed(this);
  }
}

function errorMessage(code: string, message: string, frameId?: number): ServerMessage {
  return frameId === undefined ? { type: 'error', code, message } : { type: 'error', frameId, code, message };
}

/** The frame id of a binary message that cannot be served, when its header names one. */
function peekFrameId(bytes: Uint8Array, maxHeaderBytes: number): number | undefined {
  try {
    const id = splitFrame(bytes, maxHeaderBytes).header.frameId;
    return typeof id === 'number' && Number.isSafeInteger(id) ? id : undefined;
  } catch {
    return undefined;
  }
}

function asFoveaError(err: unknown, log: FastifyBaseLogger): FoveaError {
  if (err instanceof FoveaError) return err;
  log.error({ err }, 'stream task failed');
  return new FoveaError(500, 'internal', 'internal error');
}

/** Protocol §5 codes for a frame that failed at dispatch: its input is at fault (bad_frame, too_large) or the server is (as is). */
function frameErrorCode(e: FoveaError): string {
  if (e.status === 413) return 'too_large';
  if (e.status === 400 || e.status === 415 || e.status === 422) return 'bad_frame';
  return e.code;
}
