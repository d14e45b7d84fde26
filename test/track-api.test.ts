/**
 * Single-object tracking as a client sees it: `/v1/track/sessions` (REST) and the `track` task of
 * `/v1/stream`, on a real server on a real port with real clients and the real tennis video. The
 * tracker is the seeded (untrained) LoRAT-S-224, so nothing here assumes it follows the player: the
 * tests check what must hold for any tracker (one answer per frame, boxes inside the image, scores
 * in [0, 1], `trained: false`, the errors), and that REST and stream give the same answers. The
 * initial box is the player as the official LeYOLO-Nano checkpoint detects him on frame 0.
 */
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type ServerMessage, type StreamClient } from '../src/client/index.js';
import { defaultConfig } from '../src/config.js';
import { buildApp } from '../src/stream/app.js';
import type { TrackStreamResult } from '../src/stream/ws/index.js';
import { CHECKPOINT, VIDEO_SIZE, expectOneAnswerPerFrameInOrder, readAnswers, sleep, until, type FrameAnswer } from './stream-helpers.js';
import { preloadAndListen } from './support/server.js';

type Box = [number, number, number, number];
const MODEL = 'lorat-s224';
const FRAMES = 15;
const TRACK = { maxSessions: 3, idleMs: 1_500 };
const BODY_LIMIT = 2 * 1024 * 1024;

interface TrackBody {
  sessionId?: string;
  box: Box;
  score: number;
  model: { id: string; trained: boolean; input: [number, number] };
  image: { width: number; height: number };
  timings: Record<string, number>;
}
interface ErrorBody {
  error: { code: string; message: string };
}

let app: Awaited<ReturnType<typeof buildApp>>;
let base: string;
let streamUrl: string;
const video: Buffer[] = [];
/** The largest person LeYOLO-Nano (official weights) finds on frame 0: the tennis player ([309.65, 113.91, 468.93, 359.31] when written). */
let player: Box;

beforeAll(async () => {
  const defaults = defaultConfig();
  const config = {
    ...defaults,
    port: 0,
    host: '127.0.0.1',
    logLevel: 'silent' as const,
    bodyLimit: BODY_LIMIT,
    weights: { 'leyolo-nano': CHECKPOINT },
    preload: [MODEL],
    track: TRACK,
    stream: { ...defaults.stream, pingIntervalMs: 500, idleTimeoutMs: 5_000 },
  };
  app = await buildApp(config);
  const address = await preloadAndListen(app);
  base = `http://127.0.0.1:${address.port}`;
  streamUrl = `ws://127.0.0.1:${address.port}/v1/stream`;
  for (let i = 0; i < FRAMES; i++) video.push(await readFile(new URL(`../../shared/fixtures/video-tennis/${String(i).padStart(5, '0')}.jpg`, import.meta.url)));

  const res = await fetch(`${base}/v1/detect`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: video[0] });
  const { detections } = (await res.json()) as { detections: { box: Box; label: string }[] };
  const area = (b: Box) => (b[2] - b[0]) * (b[3] - b[1]);
  const people = detections.filter((d) => d.label === 'person').sort((a, b) => area(b.box) - area(a.box));
  if (people.length === 0) throw new Error('LeYOLO-Nano found no person on frame 0');
  player = people[0].box;
});

afterAll(async () => {
  await app?.close();
});

// ---------------------------------------------------------------------------------------------
// Clients

const blob = (buf: Uint8Array, type = 'image/jpeg'): Blob => new Blob([new Uint8Array(buf)], { type });

/** `POST /v1/track/sessions` as multipart; `box` is sent as given (a string) or as JSON. */
function create(fields: { image?: Blob; box?: unknown }, query = `?model=${MODEL}`): Promise<Response> {
  const form = new FormData();
  if (fields.image) form.append('image', fields.image, 'frame.jpg');
  if (fields.box !== undefined) form.append('box', typeof fields.box === 'string' ? fields.box : JSON.stringify(fields.box));
  return fetch(`${base}/v1/track/sessions${query}`, { method: 'POST', body: form });
}

const postFrame = (id: string, body: Uint8Array | FormData, type = 'image/jpeg'): Promise<Response> =>
  fetch(`${base}/v1/track/sessions/${encodeURIComponent(id)}/frames`, { method: 'POST', ...(body instanceof FormData ? { body } : { headers: { 'content-type': type }, body }) });

const remove = (id: string): Promise<Response> => fetch(`${base}/v1/track/sessions/${encodeURIComponent(id)}`, { method: 'DELETE' });

async function ok(res: Response, status = 200): Promise<TrackBody> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  return JSON.parse(text) as TrackBody;
}

async function expectError(res: Response, status: number, code?: string): Promise<ErrorBody['error']> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  const body = JSON.parse(text) as ErrorBody;
  expect(Object.keys(body)).toEqual(['error']);
  expect(typeof body.error.message).toBe('string');
  if (code) expect(body.error.code, text).toBe(code);
  return body.error;
}

async function newSession(box: Box = player, frame = video[0]): Promise<string> {
  return (await ok(await create({ image: blob(frame), box }), 201)).sessionId!;
}

/** Inside the 854×480 frame, non-empty. */
function expectBoxInImage(box: Box): void {
  const [x1, y1, x2, y2] = box;
  expect(box.every(Number.isFinite), JSON.stringify(box)).toBe(true);
  expect(0 <= x1 && x1 < x2 && x2 <= VIDEO_SIZE.width, `x of ${JSON.stringify(box)}`).toBe(true);
  expect(0 <= y1 && y1 < y2 && y2 <= VIDEO_SIZE.height, `y of ${JSON.stringify(box)}`).toBe(true);
}

const round2 = (v: number) => Math.round(v * 100) / 100;

// ---------------------------------------------------------------------------------------------
// REST

/** Frame answers of the REST run (frames 1…14 after init on frame 0), for the stream to match. */
const restAnswers: TrackBody[] = [];

describe('REST tracking sessions on the tennis video', () => {
  it('the initial box is a person box inside frame 0, from the official detector', () => {
    expectBoxInImage(player);
    expect((player[2] - player[0]) * (player[3] - player[1])).toBeGreaterThan(2_000);
  });

  it('create answers 201 with the session id, the box, the untrained model and the image size; every frame gets a box inside the image and a score in [0, 1]; DELETE answers 204, then the id is 404', async () => {
    const created = await ok(await create({ image: blob(video[0]), box: player }), 201);
    expect(created.sessionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(created.box).toEqual(player.map(round2));
    expect(created.score).toBe(1);
    expect(created.model).toEqual({ id: MODEL, trained: false, input: [224, 224] });
    expect(created.image).toEqual(VIDEO_SIZE);
    const id = created.sessionId!;

    for (let i = 1; i < FRAMES; i++) {
      // Frame 7 goes as multipart (with a stray field, ignored); the others as raw JPEG bodies.
      let body: Uint8Array | FormData = video[i];
      if (i === 7) {
        body = new FormData();
        body.append('note', 'ignored');
        body.append('image', blob(video[i]), 'frame.jpg');
      }
      const a = await ok(await postFrame(id, body));
      expect(Object.keys(a).sort()).toEqual(['box', 'image', 'model', 'score', 'timings']);
      expectBoxInImage(a.box);
      expect(a.score >= 0 && a.score <= 1, `score ${a.score}`).toBe(true);
      expect(a.model).toEqual({ id: MODEL, trained: false, input: [224, 224] });
      expect(a.image).toEqual(VIDEO_SIZE);
      expect(Object.keys(a.timings).sort()).toEqual(['decode', 'infer', 'post', 'preprocess']);
      expect(a.timings.infer).toBeGreaterThan(0);
      restAnswers.push(a);
    }

    const deleted = await remove(id);
    expect(deleted.status).toBe(204);
    expect(await deleted.text()).toBe('');
    await expectError(await postFrame(id, video[1]), 404, 'unknown_session');
    await expectError(await remove(id), 404, 'unknown_session');
  });

  it('a session idle for longer than the configured idle time has expired: its frames answer 404', async () => {
    const id = await newSession();
    await ok(await postFrame(id, video[1]));
    await sleep(TRACK.idleMs + 200);
    await expectError(await postFrame(id, video[2]), 404, 'unknown_session');
    await expectError(await remove(id), 404, 'unknown_session');
  });

  it('a session in use does not expire', async () => {
    const id = await newSession();
    for (let i = 1; i <= 3; i++) {
      await sleep(TRACK.idleMs * 0.6);
      await ok(await postFrame(id, video[i]));
    }
    expect((await remove(id)).status).toBe(204);
  });

  it(`more than ${TRACK.maxSessions} sessions at once → 429 too_many_sessions; deleting one makes room`, async () => {
    const ids: string[] = [];
    for (let i = 0; i < TRACK.maxSessions; i++) ids.push(await newSession());
    await expectError(await create({ image: blob(video[0]), box: player }), 429, 'too_many_sessions');
    expect((await remove(ids.pop()!)).status).toBe(204);
    ids.push(await newSession());
    for (const id of ids) expect((await remove(id)).status).toBe(204);
    expect(app.tracker.size).toBe(0);
  });

  it('creates sent at once still respect the session limit', async () => {
    const answers = await Promise.all(Array.from({ length: TRACK.maxSessions + 2 }, () => create({ image: blob(video[0]), box: player })));
    const statuses = answers.map((r) => r.status).sort();
    expect(statuses).toEqual([...Array(TRACK.maxSessions).fill(201), 429, 429]);
    for (const r of answers) if (r.status === 201) expect((await remove(((await r.json()) as TrackBody).sessionId!)).status).toBe(204);
    expect(app.tracker.size).toBe(0);
  });
});

describe('REST errors: the one error shape', () => {
  it('a missing image or box field → 400 missing_field; a raw body cannot carry the box → 400', async () => {
    expect((await expectError(await create({ box: player }), 400, 'missing_field')).message).toMatch(/image/);
    expect((await expectError(await create({ image: blob(video[0]) }), 400, 'missing_field')).message).toMatch(/box/);
    const raw = await fetch(`${base}/v1/track/sessions?model=${MODEL}`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: video[0] });
    expect((await expectError(raw, 400, 'missing_field')).message).toMatch(/box/);
  });

  it('a box that is not JSON, not four numbers, empty (x1 ≥ x2 or y1 ≥ y2) or off the image → 422 invalid_box', async () => {
    const bad: unknown[] = ['[10, 20, 30', 'player', '', [10, 20, 30], [10, 20, 30, 40, 50], ['10', 20, 30, 40], { x1: 1 }, null, [100, 50, 100, 80], [300, 50, 200, 80], [100, 80, 200, 80], [900, 10, 1000, 100], [-60, -60, -10, -10], [10, 500, 100, 600]];
    for (const box of bad) {
      const e = await expectError(await create({ image: blob(video[0]), box }), 422, 'invalid_box');
      expect(e.message, JSON.stringify(box)).toMatch(/box/);
    }
    expect(app.tracker.size).toBe(0);
  });

  it('an unknown model → 404 unknown_model; a detection model → 422 wrong_task; an adapter the model does not have → 404 unknown_adapter', async () => {
    const unknown = await expectError(await create({ image: blob(video[0]), box: player }, '?model=lorat-xl'), 404, 'unknown_model');
    expect(unknown.message).toMatch(/lorat-s224/);
    const wrong = await expectError(await create({ image: blob(video[0]), box: player }, '?model=leyolo-nano'), 422, 'wrong_task');
    expect(wrong.message).toMatch(/leyolo-nano.*detect/);
    const adapter = await expectError(await create({ image: blob(video[0]), box: player }, `?model=${MODEL}&adapter=tennis-lora`), 404, 'unknown_adapter');
    expect(adapter.message).toMatch(/tennis-lora.*has none/);
  });

  it('an unknown session → 404 unknown_session, for frames and DELETE', async () => {
    await expectError(await postFrame('no-such-session', video[1]), 404, 'unknown_session');
    await expectError(await remove('no-such-session'), 404, 'unknown_session');
  });

  it('bad images as in detect: undecodable → 400, wrong media type → 415, over the byte limit → 413, empty → 400', async () => {
    const garbage = Buffer.from('this is not a JPEG at all, just text bytes');
    await expectError(await create({ image: blob(garbage), box: player }), 400);
    const id = await newSession();
    await expectError(await postFrame(id, garbage), 400);
    await expectError(await postFrame(id, video[1], 'text/plain'), 415, 'unsupported_media_type');
    await expectError(await postFrame(id, video[1], 'image/gif'), 415, 'unsupported_media_type');
    await expectError(await postFrame(id, Buffer.alloc(BODY_LIMIT + 1024, 0xff)), 413);
    await expectError(await postFrame(id, Buffer.alloc(0)), 400);
    const noImage = new FormData();
    noImage.append('box', JSON.stringify(player));
    await expectError(await postFrame(id, noImage), 400, 'missing_field');
    const created = await fetch(`${base}/v1/track/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ box: player }) });
    await expectError(created, 415, 'unsupported_media_type');
    // The session survives its bad frames.
    const a = await ok(await postFrame(id, video[1]));
    expectBoxInImage(a.box);
    expect((await remove(id)).status).toBe(204);
  });

  it('the routes are in the OpenAPI document with their schemas', async () => {
    const doc = (await (await fetch(`${base}/docs`)).json()) as { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> };
    expect(Object.keys(doc.paths['/v1/track/sessions'].post.responses)).toContain('201');
    expect(Object.keys(doc.paths['/v1/track/sessions/{id}/frames'].post.responses)).toContain('200');
    expect(Object.keys(doc.paths['/v1/track/sessions/{id}'].delete.responses)).toContain('204');
  });
});

// ---------------------------------------------------------------------------------------------
// Streams

type TrackMessage = ServerMessage<TrackStreamResult>;

async function startTrack(params: Record<string, unknown> = {}): Promise<StreamClient> {
  const client = await connect(streamUrl);
  const ready = await client.start('track', MODEL, params);
  expect(ready).toEqual({ type: 'ready', streamId: expect.stringMatching(/^[0-9a-f-]{36}$/), model: { id: MODEL, trained: false, input: [224, 224] } });
  return client;
}

/** Sends one frame and reads its answer. */
async function answer(client: StreamClient, frameId: number, image: Uint8Array, init?: unknown): Promise<FrameAnswer> {
  client.sendEncoded(frameId, image, init === undefined ? {} : { init: init as Box });
  const { answers, other } = await readAnswers(client, 1);
  expect(other).toEqual([]);
  expect(answers[0].frameId).toBe(frameId);
  return answers[0];
}

function trackResult(a: FrameAnswer | TrackMessage): TrackStreamResult {
  if (a.type !== 'result') throw new Error(`expected a result, got ${JSON.stringify(a)}`);
  return a.result as unknown as TrackStreamResult;
}

const allStreamsClosed = () => until(() => app.streams.size === 0, 'every stream to close');

describe('the track task on /v1/stream', () => {
  it('frames before init are bad_frame and the stream goes on; init answers the box with score 1; later frames get the REST answers', async () => {
    const client = await startTrack();
    const first = await answer(client, 0, video[0]);
    expect(first).toMatchObject({ type: 'error', frameId: 0, code: 'bad_frame', message: expect.stringMatching(/init first/) });
    const badInit = await answer(client, 1, video[0], [50, 50, 40, 90]);
    expect(badInit).toMatchObject({ type: 'error', frameId: 1, code: 'bad_frame', message: expect.stringMatching(/box/) });

    expect(trackResult(await answer(client, 2, video[0], player))).toEqual({ image: VIDEO_SIZE, box: player.map(round2), score: 1 });
    for (let i = 1; i < FRAMES; i++) {
      const r = trackResult(await answer(client, 2 + i, video[i]));
      expect(Object.keys(r).sort()).toEqual(['box', 'image', 'score']);
      expectBoxInImage(r.box);
      expect(r.score >= 0 && r.score <= 1).toBe(true);
      // The same tracker on the same frames from the same box: the REST session's answers.
      if (restAnswers.length === FRAMES - 1) {
        const rest = restAnswers[i - 1];
        expect(r.box, `frame ${i}`).toEqual(rest.box);
        expect(r.score, `frame ${i}`).toBeCloseTo(rest.score, 3);
      }
    }
    await client.close();
    await allStreamsClosed();
  });

  it('a burst of frames gets one answer per frame, in order (results or superseded drops)', async () => {
    const client = await startTrack();
    const sent: number[] = [];
    client.sendEncoded(0, video[0], { init: player });
    sent.push(0);
    for (let i = 1; i < FRAMES; i++) {
      client.sendEncoded(i, video[i]);
      sent.push(i);
    }
    const { answers, other } = await readAnswers(client, sent.length);
    expect(other).toEqual([]);
    expectOneAnswerPerFrameInOrder(sent, answers);
    expect(answers[0].type).toBe('result');
    expect(answers.at(-1)!.type).toBe('result');
    for (const a of answers) {
      if (a.type === 'result') expectBoxInImage(trackResult(a).box);
      else expect(a).toMatchObject({ type: 'dropped', reason: 'superseded' });
    }
    await client.close();
    await allStreamsClosed();
  });

  it('reset forgets the object: the next frame needs init again', async () => {
    const client = await startTrack();
    expect(trackResult(await answer(client, 0, video[0], player)).score).toBe(1);
    trackResult(await answer(client, 1, video[1]));
    client.reset();
    expect(await answer(client, 2, video[2])).toMatchObject({ type: 'error', code: 'bad_frame', message: expect.stringMatching(/init first/) });
    // A new init on a later frame, then tracking from there.
    const box: Box = [400, 150, 480, 300];
    expect(trackResult(await answer(client, 3, video[3], box))).toEqual({ image: VIDEO_SIZE, box, score: 1 });
    expectBoxInImage(trackResult(await answer(client, 4, video[4])).box);
    // A bad re-init is a frame error; the object tracked so far is kept.
    expect(await answer(client, 5, video[5], [1000, 10, 1100, 50])).toMatchObject({ type: 'error', code: 'bad_frame', message: expect.stringMatching(/overlap/) });
    expectBoxInImage(trackResult(await answer(client, 6, video[6])).box);
    await client.close();
    await allStreamsClosed();
  });

  it('start refuses an unknown adapter (this server registers none), unknown params and models: an error, then close 1008', async () => {
    async function refused(model: string | undefined, params: Record<string, unknown>): Promise<{ code: string; close: number; message: string }> {
      const client = await connect(streamUrl);
      const r = await client.start('track', model, params).then(
        (ready) => ({ code: 'none', message: JSON.stringify(ready) }),
        (e: { code: string; message: string }) => ({ code: e.code, message: e.message }),
      );
      return { ...r, close: (await client.closed).code };
    }
    const adapter = await refused(MODEL, { adapter: 'tennis-lora' });
    expect(adapter).toMatchObject({ code: 'unknown_adapter', close: 1008 });
    expect(adapter.message).toMatch(/tennis-lora.*lorat-s224.*has none/);
    expect(await refused(MODEL, { adapter: 3 })).toMatchObject({ code: 'invalid_value', close: 1008 });
    expect(await refused(MODEL, { size: 224 })).toMatchObject({ code: 'invalid_value', close: 1008 });
    expect(await refused('lorat-xl', {})).toMatchObject({ code: 'unknown_model', close: 1008 });
    expect(await refused('leyolo-small', {})).toMatchObject({ code: 'wrong_task', close: 1008 });
    expect(await refused(MODEL, { model: 'lorat-l224' })).toMatchObject({ code: 'invalid_value', close: 1008 });
    await allStreamsClosed();
  });

  it('the detect stream still works next to it', async () => {
    const tracking = await startTrack();
    const detecting = await connect(streamUrl);
    await detecting.start('detect', 'leyolo-nano');
    tracking.sendEncoded(0, video[0], { init: player });
    detecting.sendEncoded(0, video[0]);
    const [t, d] = await Promise.all([readAnswers(tracking, 1), readAnswers(detecting, 1)]);
    expect(trackResult(t.answers[0]).score).toBe(1);
    const det = d.answers[0];
    if (det.type !== 'result') throw new Error(`expected a detect result, got ${JSON.stringify(det)}`);
    const boxes = det.result.detections.filter((x) => x.label === 'person').map((x) => x.box);
    expect(boxes).toContainEqual(player);
    await Promise.all([tracking.close(), detecting.close()]);
    await allStreamsClosed();
  });
});
