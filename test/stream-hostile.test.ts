/**
 * `/v1/stream` against clients that misbehave: malformed frames, frames over the limits, a client
 * that floods, one that never reads, ones that vanish mid-frame. Throughout, a well-behaved stream
 * runs alongside and must keep getting results; after each case the server holds no state for the
 * bad client and its memory bounds (held answers, send buffer) were never exceeded.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import sharp from 'sharp';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, encodeFrame, type StreamClient } from '../src/client/index.js';
import type { SessionStats } from '../src/stream/ws/session.js';
import { type FrameAnswer, expectOneAnswerPerFrameInOrder, isFrameAnswer, readAnswers, readVideo, sleep, startServer, startedClient, until, type TestServer } from './stream-helpers.js';

const STREAM = {
  maxStreams: 8,
  maxFrameBytes: 2 * 1024 * 1024,
  maxFramePixels: 1_000_000,
  maxHeaderBytes: 1024,
  maxBufferedBytes: 256 * 1024,
  maxHeldAnswers: 32,
  pingIntervalMs: 200,
  idleTimeoutMs: 2_000,
};
/** ws may still deliver the messages of chunks it had read before a pause. */
const PAUSE_SLACK = 16;

let server: TestServer;
let video: Buffer[];
/** Tennis frames at half size (427×240 JPEG): cheap to send by the hundred. */
let small: Buffer[];

// ---------------------------------------------------------------------------------------------
// The well-behaved stream that runs alongside every case

const steady = { results: 0, other: [] as string[], running: true, done: Promise.resolve() };

async function runSteady(client: StreamClient): Promise<void> {
  for (let id = 1; steady.running; id++) {
    client.sendEncoded(id, video[id % video.length]);
    const [a] = (await readAnswers(client, 1)).answers;
    if (a.type === 'result' && a.frameId === id) steady.results++;
    else steady.other.push(JSON.stringify(a));
    await sleep(50);
  }
  await client.close();
}

/** The steady stream got three more results, and nothing but results so far. */
async function steadyKeepsGoing(): Promise<void> {
  const before = steady.results;
  await until(() => steady.results >= before + 3, 'the steady stream to get three more results', 15_000);
  expect(steady.other).toEqual([]);
}

/** Only the steady stream is left on the server. */
const onlySteadyLeft = () => until(() => server.app.streams.size === 1, 'the bad stream to be freed');

/** Samples every session's stats until stopped; `max` holds the largest held answers and send buffer seen. */
function sampleStats(): { stop: () => { heldAnswers: number; bufferedAmount: number; samples: number } } {
  const max = { heldAnswers: 0, bufferedAmount: 0, samples: 0 };
  const take = (s: SessionStats) => {
    max.heldAnswers = Math.max(max.heldAnswers, s.heldAnswers);
    max.bufferedAmount = Math.max(max.bufferedAmount, s.bufferedAmount);
  };
  const timer = setInterval(() => {
    server.app.streams.stats().forEach(take);
    max.samples++;
  }, 5);
  return {
    stop: () => {
      clearInterval(timer);
      return max;
    },
  };
}

beforeAll(async () => {
  [server, video] = await Promise.all([startServer(STREAM), readVideo()]);
  small = await Promise.all(video.map((f) => sharp(f).resize(427, 240).jpeg({ quality: 80 }).toBuffer()));
  steady.done = runSteady(await startedClient(server, { track: true }));
});

afterAll(async () => {
  steady.running = false;
  await steady.done;
  await server?.app.close();
});

// ---------------------------------------------------------------------------------------------
// Raw clients

/** A raw `ws` client that records every message; `waitFor(n)` resolves once n have arrived. */
async function rawClient(opts: WebSocket.ClientOptions = {}) {
  const ws = new WebSocket(server.url, opts);
  const got: Record<string, unknown>[] = [];
  ws.on('message', (d) => got.push(JSON.parse(String(d)) as Record<string, unknown>));
  ws.on('error', () => undefined);
  const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
  await new Promise((r) => ws.once('open', r));
  return { ws, got, closed, waitFor: (n: number) => until(() => got.length >= n, `${n} messages`, 15_000) };
}

/** A bare TCP connection upgraded to WebSocket by hand, for bytes no WebSocket library would send. */
async function rawUpgrade(): Promise<{ socket: net.Socket; received: () => string }> {
  const { port } = new URL(server.url);
  const socket = net.connect(Number(port), '127.0.0.1');
  let text = '';
  socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
  socket.on('error', () => undefined);
  await new Promise((r) => socket.once('connect', r));
  socket.write(
    `GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  await until(() => text.includes('\r\n\r\n'), 'the upgrade answer');
  expect(text).toMatch(/^HTTP\/1\.1 101/);
  return { socket, received: () => text };
}

/** A client-to-server WebSocket frame header (masked with a zero key, so the payload goes as is). */
function clientFrameHeader(opcode: number, length: number): Buffer {
  const head = Buffer.alloc(2 + 8 + 4);
  head[0] = 0x80 | opcode;
  head[1] = 0x80 | 127;
  head.writeBigUInt64BE(BigInt(length), 2);
  return head; // the mask key (last 4 bytes) is zero
}

// ---------------------------------------------------------------------------------------------

describe('malformed frames: an error answer each, and the stream goes on', () => {
  it('bad layout, bad header, garbage and wrong-size payloads, frames over the limits, ids that do not increase', async () => {
    const client = await startedClient(server);
    const jpeg = small[0];
    const header = (json: string) => {
      const h = Buffer.alloc(4);
      h.writeUInt32BE(Buffer.byteLength(json), 0);
      return Buffer.concat([h, Buffer.from(json)]);
    };
    const big = await sharp({ create: { width: 1200, height: 1000, channels: 3, background: '#404040' } }).jpeg().toBuffer();
    const cases: [string, () => Buffer, { frameId?: number; type: string; code?: string }][] = [
      ['header length past the message', () => Buffer.concat([Buffer.from([0, 0, 3, 232]), Buffer.from('{"frameId": 1}')]), { type: 'error', code: 'bad_frame' }],
      ['three bytes', () => Buffer.from([0, 0, 0]), { type: 'error', code: 'bad_frame' }],
      ['header not JSON', () => Buffer.concat([header('{frameId: 1'), jpeg]), { type: 'error', code: 'bad_frame' }],
      ['header a JSON array', () => Buffer.concat([header('[1]'), jpeg]), { type: 'error', code: 'bad_frame' }],
      ['header over maxHeaderBytes', () => Buffer.concat([header(JSON.stringify({ frameId: 1, pad: 'x'.repeat(2000) })), jpeg]), { type: 'error', code: 'bad_frame' }],
      ['no frameId', () => encodeFrame({ ts: 1 } as never, jpeg), { type: 'error', code: 'bad_frame' }],
      ['a fractional frameId', () => encodeFrame({ frameId: 1.5 }, jpeg), { type: 'error', code: 'bad_frame' }],
      ['a good frame', () => encodeFrame({ frameId: 10 }, jpeg), { frameId: 10, type: 'result' }],
      ['garbage payload', () => encodeFrame({ frameId: 11 }, randomBytes(5000)), { frameId: 11, type: 'error', code: 'bad_frame' }],
      ['empty payload', () => encodeFrame({ frameId: 12 }, new Uint8Array(0)), { frameId: 12, type: 'error', code: 'bad_frame' }],
      ['raw size mismatch', () => encodeFrame({ frameId: 13, format: 'rgb24', width: 10, height: 10 }, new Uint8Array(299)), { frameId: 13, type: 'error', code: 'bad_frame' }],
      ['raw without a size', () => encodeFrame({ frameId: 14, format: 'rgb24' }, new Uint8Array(300)), { frameId: 14, type: 'error', code: 'bad_frame' }],
      ['unknown format', () => encodeFrame({ frameId: 15, format: 'yuv420' as 'rgb24' }, jpeg), { frameId: 15, type: 'error', code: 'bad_frame' }],
      ['ts not a number', () => encodeFrame({ frameId: 16, ts: 'now' as unknown as number }, jpeg), { frameId: 16, type: 'error', code: 'bad_frame' }],
      ['payload over maxFrameBytes', () => encodeFrame({ frameId: 17 }, new Uint8Array(STREAM.maxFrameBytes + 1)), { frameId: 17, type: 'error', code: 'too_large' }],
      ['raw frame over maxFramePixels', () => encodeFrame({ frameId: 18, format: 'rgb24', width: 2000, height: 1000 }, new Uint8Array(3)), { frameId: 18, type: 'error', code: 'too_large' }],
      ['encoded frame over maxFramePixels (from its header)', () => encodeFrame({ frameId: 19 }, big), { frameId: 19, type: 'error', code: 'too_large' }],
      ['frameId equal to the last', () => encodeFrame({ frameId: 19 }, jpeg), { frameId: 19, type: 'error', code: 'bad_frame' }],
      ['frameId below the last', () => encodeFrame({ frameId: 3 }, jpeg), { frameId: 3, type: 'error', code: 'bad_frame' }],
      ['a good frame after all that', () => encodeFrame({ frameId: 20 }, jpeg), { frameId: 20, type: 'result' }],
    ];
    const ws = client.socket;
    for (const [name, make, want] of cases) {
      ws.send(make());
      const m = await client.next();
      expect(m, name).toMatchObject(want);
      if (want.frameId === undefined) expect(m, name).not.toHaveProperty('frameId');
      if (m?.type === 'error') expect(m.message.length, name).toBeGreaterThan(10);
    }
    await client.close();
    await steadyKeepsGoing();
    await onlySteadyLeft();
  });

  it('a message over twice the frame limit is not buffered: the connection closes 1009, the server stays up', async () => {
    const c = await rawClient();
    c.ws.send(JSON.stringify({ type: 'start', task: 'detect', model: 'leyolo-nano' }));
    await c.waitFor(1);
    c.ws.send(encodeFrame({ frameId: 1 }, new Uint8Array(2 * STREAM.maxFrameBytes + 4096)));
    expect(await c.closed).toBe(1009);
    await steadyKeepsGoing();
    await onlySteadyLeft();
  });
});

describe('protocol order violations', () => {
  it('a frame before start gets not_started (naming its frame) and close 1008', async () => {
    const c = await rawClient();
    c.ws.send(encodeFrame({ frameId: 5 }, small[0]));
    expect(await c.closed).toBe(1008);
    expect(c.got).toEqual([{ type: 'error', frameId: 5, code: 'not_started', message: expect.any(String) }]);
    await onlySteadyLeft();
  });

  it('a control message before start gets not_started and close 1008', async () => {
    const c = await rawClient();
    c.ws.send(JSON.stringify({ type: 'reset' }));
    expect(await c.closed).toBe(1008);
    expect(c.got).toMatchObject([{ type: 'error', code: 'not_started' }]);
    await onlySteadyLeft();
  });

  it('start twice: already_started, and the stream goes on', async () => {
    const client = await startedClient(server);
    client.socket.send(JSON.stringify({ type: 'start', task: 'detect', model: 'leyolo-nano' }));
    expect(await client.next()).toMatchObject({ type: 'error', code: 'already_started' });
    client.sendEncoded(1, small[1]);
    expect((await readAnswers(client, 1)).answers[0]).toMatchObject({ type: 'result', frameId: 1 });
    await client.close();
    await onlySteadyLeft();
  });
});

describe('clients that push too hard', () => {
  it('a flood of 300 frames sent at once: one answer each, in order, nearly all superseded; held answers stay bounded', async () => {
    const client = await startedClient(server, { track: true });
    const stats = sampleStats();
    const sent: number[] = [];
    for (let i = 0; i < 300; i++) {
      client.sendEncoded(i + 1, small[i % small.length]);
      sent.push(i + 1);
    }
    const { answers } = await readAnswers(client, sent.length, 60_000);
    const max = stats.stop();
    await client.close();
    expectOneAnswerPerFrameInOrder(sent, answers);
    const kinds = answers.map((a) => (a.type === 'dropped' ? a.reason : a.type));
    expect(kinds.filter((k) => k !== 'result' && k !== 'superseded')).toEqual([]);
    expect(kinds.at(-1)).toBe('result');
    expect(kinds.filter((k) => k === 'superseded').length).toBeGreaterThan(200);
    expect(max.samples).toBeGreaterThan(10);
    expect(max.heldAnswers).toBeLessThanOrEqual(STREAM.maxHeldAnswers + PAUSE_SLACK);
    await steadyKeepsGoing();
    await onlySteadyLeft();
  });

  it('a client that stops reading: frames are dropped as slow-consumer, the server stops reading it, its send buffer stays bounded, and once it reads it gets one answer per frame in order', async () => {
    // conf 0 and iou 1 keep every anchor (8400 detections, ~630 kB a result), so the kernel's socket
    // buffers (a few MB on loopback) fill after a handful of frames.
    const client = await startedClient(server, { conf: 0, iou: 1, maxDet: 10_000 });
    const ws = client.socket;
    ws.pause();
    const stats = sampleStats();
    const overBound = () => server.app.streams.stats().some((s) => s.bufferedAmount > STREAM.maxBufferedBytes);
    const sent: number[] = [];
    let id = 0;
    const deadline = Date.now() + 30_000;
    while (!overBound() && Date.now() < deadline) {
      client.sendEncoded(++id, small[id % small.length]);
      sent.push(id);
      await sleep(20);
    }
    expect(overBound(), 'the send buffer went over the bound').toBe(true);
    for (let k = 0; k < 30; k++) {
      client.sendEncoded(++id, small[id % small.length]);
      sent.push(id);
      await sleep(10);
    }
    // Empty frames, each answered with a small error: once those queued over the bound pass it again
    // (256 kB, ~2000 answers), the server stops reading this client.
    for (let k = 0; k < 3000; k++) {
      ws.send(encodeFrame({ frameId: ++id }, new Uint8Array(0)));
      sent.push(id);
    }
    client.sendEncoded(++id, small[0]);
    sent.push(id);
    await until(() => server.app.streams.stats().some((s) => s.paused), 'the server to stop reading the client');
    const max = stats.stop();
    ws.resume();
    const { answers } = await readAnswers(client, sent.length, 60_000);
    await client.close();
    expectOneAnswerPerFrameInOrder(sent, answers);
    const reasons = answers.flatMap((a) => (a.type === 'dropped' ? [a.reason] : []));
    expect(reasons).toContain('slow-consumer');
    const errors = answers.filter((a) => a.type === 'error');
    expect(errors.length).toBe(3000);
    for (const e of errors) expect(e).toMatchObject({ code: 'bad_frame' });
    expect(answers.at(-1)?.type).toBe('result'); // once the client reads again, the newest frame runs
    // One result may go out just under the bound; small answers queued over it are capped at the bound again.
    expect(max.bufferedAmount).toBeLessThanOrEqual(2 * STREAM.maxBufferedBytes + 700 * 1024);
    await steadyKeepsGoing();
    await onlySteadyLeft();
  });

  it('a client that never reads again is closed after the idle timeout (it cannot answer pings) and its state is freed', async () => {
    const c = await rawClient();
    c.ws.send(JSON.stringify({ type: 'start', task: 'detect', model: 'leyolo-nano' }));
    await c.waitFor(1);
    c.ws.pause();
    for (let i = 1; i <= 5; i++) c.ws.send(encodeFrame({ frameId: i }, small[i]));
    const t0 = performance.now();
    await until(() => server.app.streams.size === 1, 'the silent stream to be closed', 10_000);
    expect(performance.now() - t0).toBeGreaterThan(STREAM.idleTimeoutMs - 500);
    c.ws.terminate();
    await steadyKeepsGoing();
  });
});

describe('clients that vanish', () => {
  it('a client that disconnects with a frame in flight and one waiting: the server drops them and serves on', async () => {
    const client = await startedClient(server, { track: true });
    client.sendEncoded(1, video[0]);
    client.sendEncoded(2, video[1]);
    await until(() => server.app.streams.stats().some((s) => s.inFlight && s.waiting), 'a frame in flight and one waiting');
    client.terminate();
    await onlySteadyLeft();
    await steadyKeepsGoing();
    const again = await startedClient(server);
    again.sendEncoded(1, video[2]);
    expect((await readAnswers(again, 1)).answers[0].type).toBe('result');
    await again.close();
    await onlySteadyLeft();
  });

  it('a client that disconnects halfway through sending a frame: the server frees the stream and serves on', async () => {
    const { socket, received } = await rawUpgrade();
    const start = Buffer.from(JSON.stringify({ type: 'start', task: 'detect', model: 'leyolo-nano' }));
    socket.write(Buffer.concat([clientFrameHeader(0x1, start.length), start]));
    await until(() => received().includes('"ready"'), 'ready');
    const frame = encodeFrame({ frameId: 1 }, video[0]);
    socket.write(Buffer.concat([clientFrameHeader(0x2, frame.length), frame.subarray(0, frame.length >> 1)]));
    await sleep(100);
    socket.destroy();
    await onlySteadyLeft();
    await steadyKeepsGoing();
  });

  it('a client that sends half a frame and then nothing is closed by the idle timeout', async () => {
    const { socket, received } = await rawUpgrade();
    const start = Buffer.from(JSON.stringify({ type: 'start', task: 'detect', model: 'leyolo-nano' }));
    socket.write(Buffer.concat([clientFrameHeader(0x1, start.length), start]));
    await until(() => received().includes('"ready"'), 'ready');
    const frame = encodeFrame({ frameId: 1 }, video[0]);
    socket.write(Buffer.concat([clientFrameHeader(0x2, frame.length), frame.subarray(0, 1000)]));
    const closed = new Promise((r) => socket.once('close', r));
    await until(() => server.app.streams.size === 1, 'the stalled stream to be closed', 10_000);
    await closed;
    await steadyKeepsGoing();
  });
});

describe('after all of it', () => {
  it('the server still answers REST and streams, and every bad stream is gone', async () => {
    const res = await fetch(`${server.base}/healthz`);
    expect(res.status).toBe(200);
    expect(server.app.streams.size).toBe(1);
    const answers: FrameAnswer[] = [];
    const client: StreamClient = await connect(server.url);
    await client.start('detect', 'leyolo-nano');
    client.sendEncoded(1, video[5]);
    for await (const m of client.messages()) {
      if (isFrameAnswer(m)) answers.push(m);
      if (answers.length === 1) break;
    }
    expect(answers[0]).toMatchObject({ type: 'result', frameId: 1 });
    await client.close();
    expect(steady.results).toBeGreaterThan(20);
    expect(steady.other).toEqual([]);
  });
});
