/**
 * The REST server as a client sees it: a real fastify server on a real port, real HTTP (fetch, and
 * node:http / node:net where fetch cannot misbehave on purpose), real fixture photos, and the CLI
 * as a child process. The model is the seeded (untrained) LeYOLO-Nano graph, so nothing here
 * assumes a real detection: with conf=0.0001 it returns boxes, and the tests check what must hold
 * for any boxes (inside the image, sorted, labelled, capped) against values computed here.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { deflateSync } from 'node:zlib';
import type { FastifyInstance } from 'fastify';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfig } from '../src/config.js';
import { COCO80 } from '../src/heads/detect/labels.js';
import { buildApp } from '../src/stream/app.js';
import { preloadAndListen } from './support/server.js';

// ---------------------------------------------------------------------------------------------
// Fixtures and independent facts about them

const fixtureUrl = (name: string): URL => new URL(`../../shared/fixtures/images/${name}`, import.meta.url);
const FIXTURES = ['bus.jpg', 'zidane.jpg', 'cat.jpg', 'tennis.jpg'] as const;
type Fixture = (typeof FIXTURES)[number];
const images = {} as Record<Fixture, Buffer>;

/** The upright size of an encoded image, read by sharp from the header (EXIF quarter turns swap it). */
async function uprightSize(buf: Uint8Array): Promise<{ width: number; height: number }> {
  const m = await sharp(buf).metadata();
  const turned = m.orientation !== undefined && m.orientation >= 5;
  return turned ? { width: m.height, height: m.width } : { width: m.width, height: m.height };
}

/** CRC-32 (ISO-HDLC, the one PNG chunks carry), bit by bit: slow and obviously right. */
function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, data: Uint8Array): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'ascii');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

/**
 * A well-formed PNG whose IHDR claims width × height 8-bit RGB but whose IDAT holds a single row:
 * a few hundred bytes that would decode to gigabytes. A server must refuse it from the header.
 */
function pngClaiming(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // bit depth 8, colour type 2 (RGB), deflate, adaptive filter, no interlace
  const oneRow = deflateSync(Buffer.alloc(1 + width * 3));
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, pngChunk('IHDR', ihdr), pngChunk('IDAT', oneRow), pngChunk('IEND', Buffer.alloc(0))]);
}

// ---------------------------------------------------------------------------------------------
// The server and the client side

interface DetectionBody {
  box: number[];
  score: number;
  classId: number;
  label: string;
}
interface DetectBody {
  model: { id: string; trained: boolean; input: number[] };
  image: { width: number; height: number };
  detections: DetectionBody[];
  timings: Record<string, number>;
}

const config = { ...defaultConfig(), port: 0, host: '127.0.0.1', logLevel: 'silent' as const };
let app: FastifyInstance;
let port: number;
let base: string;

beforeAll(async () => {
  for (const name of FIXTURES) images[name] = await readFile(fixtureUrl(name));
  app = await buildApp(config);
  const address = await preloadAndListen(app);
  port = address.port;
  base = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  await app?.close();
});

const postImage = (body: Uint8Array, type: string, query = ''): Promise<Response> =>
  fetch(`${base}/v1/detect${query}`, { method: 'POST', headers: { 'content-type': type }, body });

function postForm(fields: Record<string, Blob | string>, query = ''): Promise<Response> {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (typeof value === 'string') form.append(name, value);
    else form.append(name, value, `${name}.bin`);
  }
  return fetch(`${base}/v1/detect${query}`, { method: 'POST', body: form });
}

const blob = (buf: Uint8Array, type: string): Blob => new Blob([new Uint8Array(buf)], { type });

async function detectOk(res: Response): Promise<DetectBody> {
  const text = await res.text();
  expect(res.status, text).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  return JSON.parse(text) as DetectBody;
}

/**
 * Everything a detect answer must satisfy for an image of the given size at the given input side:
 * exactly the documented keys, the real image size, trained false, boxes inside the image in
 * descending score order, labels from COCO by class id.
 */
function expectDetectAnswer(body: DetectBody, want: { width: number; height: number; input: number; conf?: number; maxDet?: number }): void {
  expect(Object.keys(body).sort()).toEqual(['detections', 'image', 'model', 'timings']);
  expect(body.model).toEqual({ id: 'leyolo-nano', trained: false, input: [want.input, want.input] });
  expect(body.image).toEqual({ width: want.width, height: want.height });
  expect(Object.keys(body.timings).sort()).toEqual(['decode', 'infer', 'post', 'preprocess']);
  for (const v of Object.values(body.timings)) expect(Number.isFinite(v) && v >= 0, `timing ${v}`).toBe(true);
  expect(Array.isArray(body.detections)).toBe(true);
  if (want.maxDet !== undefined) expect(body.detections.length).toBeLessThanOrEqual(want.maxDet);
  let previous = Infinity;
  for (const d of body.detections) {
    expect(Object.keys(d).sort()).toEqual(['box', 'classId', 'label', 'score']);
    expect(d.box).toHaveLength(4);
    const [x1, y1, x2, y2] = d.box;
    expect(0 <= x1 && x1 <= x2 && x2 <= want.width, `x of ${d.box} in [0, ${want.width}]`).toBe(true);
    expect(0 <= y1 && y1 <= y2 && y2 <= want.height, `y of ${d.box} in [0, ${want.height}]`).toBe(true);
    // Scores go out rounded to 4 decimals, so one just above conf may print as conf - 0.00005.
    expect(d.score).toBeGreaterThanOrEqual((want.conf ?? 0) - 5e-5);
    expect(d.score).toBeLessThanOrEqual(1);
    expect(d.score, 'detections sorted by descending score').toBeLessThanOrEqual(previous);
    previous = d.score;
    expect(Number.isInteger(d.classId) && d.classId >= 0 && d.classId < 80, `classId ${d.classId}`).toBe(true);
    expect(d.label).toBe(COCO80[d.classId]);
  }
}

/** The one error shape of DESIGN.md, and nothing else at the top level. */
async function expectError(res: Response, status: number): Promise<{ code: string; message: string }> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  const body = JSON.parse(text) as { error: { code: string; message: string } };
  expect(Object.keys(body)).toEqual(['error']);
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message']);
  expect(typeof body.error.code).toBe('string');
  expect(body.error.code.length).toBeGreaterThan(0);
  expect(typeof body.error.message).toBe('string');
  expect(body.error.message.length).toBeGreaterThan(0);
  return body.error;
}

/** After any abuse the server still serves a good request end to end (HTTP, worker, model). */
async function expectStillServing(): Promise<void> {
  const body = await detectOk(await postImage(images['cat.jpg'], 'image/jpeg', '?size=320&conf=0.0001&maxDet=5'));
  expectDetectAnswer(body, { width: 600, height: 400, input: 320, conf: 0.0001, maxDet: 5 });
}

// ---------------------------------------------------------------------------------------------

describe('POST /v1/detect with real photos', () => {
  it('sharp agrees with the fixture sizes the tests rely on (bus 810×1080, zidane 1280×720)', async () => {
    expect(await uprightSize(images['bus.jpg'])).toEqual({ width: 810, height: 1080 });
    expect(await uprightSize(images['zidane.jpg'])).toEqual({ width: 1280, height: 720 });
    expect(await uprightSize(images['cat.jpg'])).toEqual({ width: 600, height: 400 });
  });

  it.each(FIXTURES)('%s answers 200 with the documented shape and the real image size', async (name) => {
    const size = await uprightSize(images[name]);
    const body = await detectOk(await postImage(images[name], 'image/jpeg'));
    expectDetectAnswer(body, { ...size, input: 640, conf: 0.25 });
  });

  it('with conf=0.0001 the seeded model returns boxes inside the image, sorted by score, COCO-labelled, at most maxDet', async () => {
    const body = await detectOk(await postImage(images['zidane.jpg'], 'image/jpeg', '?conf=0.0001&maxDet=50'));
    expect(body.detections.length).toBeGreaterThan(0); // otherwise the checks below check nothing
    expectDetectAnswer(body, { width: 1280, height: 720, input: 640, conf: 0.0001, maxDet: 50 });
  });

  it('COCO80 is the ultralytics class list the labels are checked against', () => {
    expect(COCO80).toHaveLength(80);
    expect([COCO80[0], COCO80[5], COCO80[15], COCO80[79]]).toEqual(['person', 'bus', 'cat', 'toothbrush']);
  });

  it('maxDet keeps the top-scoring detections: maxDet=5 is the first five of maxDet=300', async () => {
    const all = await detectOk(await postImage(images['bus.jpg'], 'image/jpeg', '?conf=0.0001&maxDet=300'));
    const five = await detectOk(await postImage(images['bus.jpg'], 'image/jpeg', '?conf=0.0001&maxDet=5'));
    expect(all.detections.length).toBeGreaterThan(5);
    expect(five.detections).toEqual(all.detections.slice(0, 5));
  });

  it('size=320 runs the 320×320 graph and still reports boxes in original pixels', async () => {
    const body = await detectOk(await postImage(images['bus.jpg'], 'image/jpeg', '?size=320&conf=0.0001&maxDet=20'));
    expect(body.detections.length).toBeGreaterThan(0);
    expectDetectAnswer(body, { width: 810, height: 1080, input: 320, conf: 0.0001, maxDet: 20 });
  });

  it('a raw body and a multipart field `image` give the same answer for the same image', async () => {
    const raw = await detectOk(await postImage(images['tennis.jpg'], 'image/jpeg', '?conf=0.0001&maxDet=20'));
    const form = await detectOk(await postForm({ note: 'ignored', image: blob(images['tennis.jpg'], 'image/jpeg') }, '?conf=0.0001&maxDet=20'));
    expect(raw.detections.length).toBeGreaterThan(0);
    expect(form.image).toEqual(raw.image);
    expect(form.model).toEqual(raw.model);
    expect(form.detections).toEqual(raw.detections);
  });

  it('PNG and WebP bodies work; a lossless PNG of the decoded JPEG gives exactly the JPEG answer', async () => {
    const png = await sharp(images['bus.jpg']).png().toBuffer();
    const webp = await sharp(images['bus.jpg']).webp({ quality: 90 }).toBuffer();
    expect((await sharp(png).metadata()).format).toBe('png');
    expect((await sharp(webp).metadata()).format).toBe('webp');
    const q = '?conf=0.0001&maxDet=20';
    const fromJpeg = await detectOk(await postImage(images['bus.jpg'], 'image/jpeg', q));
    const fromPng = await detectOk(await postImage(png, 'image/png', q));
    const fromWebp = await detectOk(await postImage(webp, 'image/webp', q));
    for (const body of [fromJpeg, fromPng, fromWebp]) expectDetectAnswer(body, { width: 810, height: 1080, input: 640, conf: 0.0001, maxDet: 20 });
    expect(fromPng.detections).toEqual(fromJpeg.detections);
    expect(fromWebp.detections.length).toBeGreaterThan(0);
  });

  it('the media type is matched without case or parameters (IMAGE/JPEG; charset=x)', async () => {
    const body = await detectOk(await postImage(images['cat.jpg'], 'IMAGE/JPEG; charset=x', '?size=320'));
    expectDetectAnswer(body, { width: 600, height: 400, input: 320 });
  });

  it('an EXIF-rotated JPEG (orientation 6) reports its upright size', async () => {
    const stored = await sharp(images['cat.jpg']).withMetadata({ orientation: 6 }).jpeg().toBuffer();
    const m = await sharp(stored).metadata();
    expect([m.width, m.height, m.orientation]).toEqual([600, 400, 6]);
    const body = await detectOk(await postImage(stored, 'image/jpeg', '?size=320&conf=0.0001&maxDet=10'));
    expectDetectAnswer(body, { width: 400, height: 600, input: 320, conf: 0.0001, maxDet: 10 });
  });

  it('a 1×1 image is valid input: 200, image 1×1, any box inside it', async () => {
    const dot = await sharp({ create: { width: 1, height: 1, channels: 3, background: '#808080' } }).png().toBuffer();
    const body = await detectOk(await postImage(dot, 'image/png', '?conf=0.0001&maxDet=10'));
    expectDetectAnswer(body, { width: 1, height: 1, input: 640, conf: 0.0001, maxDet: 10 });
  });
});

describe('GET /v1/models and /healthz', () => {
  it('lists leyolo-nano (1 120 480 parameters) and leyolo-small, both untrained, with task, family, variant and input', async () => {
    const res = await fetch(`${base}/v1/models`);
    expect(res.status).toBe(200);
    const { models } = (await res.json()) as { models: Record<string, unknown>[] };
    const byId = new Map(models.map((m) => [m.id, m]));
    expect([...byId.keys()]).toEqual(expect.arrayContaining(['leyolo-nano', 'leyolo-small']));
    expect(byId.get('leyolo-nano')).toEqual({ id: 'leyolo-nano', task: 'detect', family: 'leyolo', variant: 'nano', params: 1120480, trained: false, input: [640, 640] });
    const small = byId.get('leyolo-small')!;
    expect(small).toMatchObject({ id: 'leyolo-small', task: 'detect', family: 'leyolo', variant: 'small', trained: false, input: [640, 640] });
    expect(small.params as number).toBeGreaterThan(1120480);
  });

  it('/healthz answers ok with the execution provider and the worker count', async () => {
    const res = await fetch(`${base}/healthz`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { status: string; ep: string; workers: number; inFlight: number };
    expect(body).toEqual({ status: 'ok', ep: 'cpu', workers: config.workers, inFlight: 0 });
  });
});

describe('GET /docs', () => {
  it('serves the OpenAPI document built from the route schemas', async () => {
    const res = await fetch(`${base}/docs`);
    expect(res.status).toBe(200);
    const doc = (await res.json()) as { openapi: string; paths: Record<string, Record<string, { parameters?: { name: string }[] }>> };
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/v1/detect', '/v1/models', '/healthz']));
    expect(doc.paths['/v1/detect'].post.parameters?.map((p) => p.name)).toEqual(expect.arrayContaining(['model', 'size', 'conf', 'iou', 'maxDet']));
  });
});

describe('bad input gets its status and the one error shape, and the server keeps serving', () => {
  const cases: { name: string; status: number; send: () => Promise<Response> }[] = [
    { name: 'an empty body → 400', status: 400, send: () => postImage(new Uint8Array(0), 'image/jpeg') },
    { name: 'a JPEG cut in half → 400', status: 400, send: () => postImage(images['bus.jpg'].subarray(0, images['bus.jpg'].length >> 1), 'image/jpeg') },
    { name: 'text sent as image/jpeg → 400', status: 400, send: () => postImage(Buffer.from('this is not a picture\n'.repeat(20)), 'image/jpeg') },
    { name: 'a JPEG sent as text/plain → 415', status: 415, send: () => postImage(images['cat.jpg'], 'text/plain') },
    { name: 'JSON sent as application/json → 415', status: 415, send: () => fetch(`${base}/v1/detect`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"image": "bus.jpg"}' }) },
    { name: 'a body of an unknown media type (image/gif) → 415', status: 415, send: () => postImage(images['cat.jpg'], 'image/gif') },
    { name: 'a PNG header claiming 20000×20000 pixels (a few hundred bytes) → 413', status: 413, send: () => postImage(pngClaiming(20000, 20000), 'image/png') },
    { name: 'a raw body over the 20 MiB byte limit → 413', status: 413, send: () => postImage(Buffer.alloc(config.bodyLimit + 1024 * 1024, 0xff), 'image/jpeg') },
    { name: 'a multipart image over the 20 MiB byte limit → 413', status: 413, send: () => postForm({ image: blob(Buffer.alloc(config.bodyLimit + 1024 * 1024, 0xff), 'image/jpeg') }) },
    { name: 'an unknown model → 404', status: 404, send: () => postImage(images['cat.jpg'], 'image/jpeg', '?model=no-such-model') },
    { name: 'conf=2 → 422', status: 422, send: () => postImage(images['cat.jpg'], 'image/jpeg', '?conf=2') },
    { name: 'conf=abc → 422', status: 422, send: () => postImage(images['cat.jpg'], 'image/jpeg', '?conf=abc') },
    { name: 'iou=-1 → 422', status: 422, send: () => postImage(images['cat.jpg'], 'image/jpeg', '?iou=-1') },
    { name: 'size=333 (not a multiple of 32) → 422', status: 422, send: () => postImage(images['cat.jpg'], 'image/jpeg', '?size=333') },
    { name: 'maxDet=0 → 422', status: 422, send: () => postImage(images['cat.jpg'], 'image/jpeg', '?maxDet=0') },
    { name: 'multipart without an `image` field → 400', status: 400, send: () => postForm({ picture: blob(images['cat.jpg'], 'image/jpeg'), note: 'x' }) },
    { name: 'multipart whose `image` is a text field, not a file → 400', status: 400, send: () => postForm({ image: 'bus.jpg' }) },
    {
      name: 'garbage under a multipart boundary that never appears → 400',
      status: 400,
      send: () => fetch(`${base}/v1/detect`, { method: 'POST', headers: { 'content-type': 'multipart/form-data; boundary=XyZ' }, body: 'garbage, not multipart at all' }),
    },
    {
      name: 'multipart without a boundary parameter → 400',
      status: 400,
      send: () => fetch(`${base}/v1/detect`, { method: 'POST', headers: { 'content-type': 'multipart/form-data' }, body: 'garbage' }),
    },
    { name: 'an unknown route → 404', status: 404, send: () => fetch(`${base}/v1/no-such-route`) },
    { name: 'GET on the POST-only /v1/detect → 404', status: 404, send: () => fetch(`${base}/v1/detect`) },
  ];

  it.each(cases)('$name', async ({ status, send }) => {
    await expectError(await send(), status);
    await expectStillServing();
  });

  it('the oversized PNG is refused from its header, without decoding 400 megapixels', async () => {
    const claim = pngClaiming(20000, 20000);
    expect(claim.length).toBeLessThan(2048);
    const t0 = performance.now();
    const error = await expectError(await postImage(claim, 'image/png'), 413);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(error.message).toMatch(/20000/);
  });

  it('the unknown model is named in the error', async () => {
    const error = await expectError(await postImage(images['cat.jpg'], 'image/jpeg', '?model=no-such-model'), 404);
    expect(error.message).toContain('no-such-model');
  });
});

// ---------------------------------------------------------------------------------------------
// Misbehaving clients: node:http and node:net, because fetch always sends what it promises

/** Starts a POST to /v1/detect that promises `declared` bytes, sends `sent` of them, then runs `finish`. */
function partialUpload(declared: number, sent: Uint8Array, contentType: string, finish: (req: http.ClientRequest) => void): Promise<void> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/v1/detect', headers: { 'content-type': contentType, 'content-length': declared } });
    req.on('error', () => resolve()); // the client's own socket error is expected
    req.on('close', () => resolve());
    req.on('response', (res) => res.resume());
    req.write(sent, () => setTimeout(() => finish(req), 100));
  });
}

/** Sends raw bytes over a socket, half-closes it, and resolves with whatever came back. */
function rawExchange(bytes: Uint8Array): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(port, '127.0.0.1', () => socket.end(bytes));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
}

interface RawResponse {
  status: number;
  body: string;
}

/** Splits HTTP/1.1 responses with a content-length off the front of `text`. */
function parseResponses(text: string): RawResponse[] {
  const out: RawResponse[] = [];
  let rest = text;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) return out;
    const head = rest.slice(0, end);
    const length = Number(/^content-length:\s*(\d+)/im.exec(head)?.[1] ?? NaN);
    if (!(rest.length >= end + 4 + length)) return out;
    out.push({ status: Number(head.slice(9, 12)), body: rest.slice(end + 4, end + 4 + length) });
    rest = rest.slice(end + 4 + length);
  }
}

/**
 * One raw HTTP/1.1 conversation: writes `first`, waits for one whole response, writes `then`, and
 * collects every response until the server closes the connection.
 */
function rawConversation(first: Uint8Array, then: Uint8Array): Promise<RawResponse[]> {
  return new Promise((resolve) => {
    let text = '';
    let sentThen = false;
    const socket = net.connect(port, '127.0.0.1', () => socket.write(first));
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      if (!sentThen && parseResponses(text).length === 1) {
        sentThen = true;
        socket.write(then);
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(parseResponses(text)));
  });
}

async function expectNothingInFlight(): Promise<void> {
  const body = (await (await fetch(`${base}/healthz`)).json()) as { inFlight: number };
  expect(body.inFlight).toBe(0);
}

describe('clients that misbehave on the wire', () => {
  it('a client that promises the whole JPEG, sends half and disconnects leaves the server serving', async () => {
    const bus = images['bus.jpg'];
    await partialUpload(bus.length, bus.subarray(0, bus.length >> 1), 'image/jpeg', (req) => req.destroy());
    await expectStillServing();
    await expectNothingInFlight();
  });

  it('a multipart upload cut off mid-file by a disconnect leaves the server serving', async () => {
    const boundary = 'fovea-test-boundary';
    const head = Buffer.from(`--${boundary}\r\ncontent-disposition: form-data; name="image"; filename="bus.jpg"\r\ncontent-type: image/jpeg\r\n\r\n`);
    const whole = Buffer.concat([head, images['bus.jpg'], Buffer.from(`\r\n--${boundary}--\r\n`)]);
    await partialUpload(whole.length, whole.subarray(0, head.length + 40_000), `multipart/form-data; boundary=${boundary}`, (req) => req.destroy());
    await expectStillServing();
    await expectNothingInFlight();
  });

  it('a content-length larger than the body, then end of stream, leaves the server serving', async () => {
    const cat = images['cat.jpg'];
    const head = `POST /v1/detect HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: image/jpeg\r\ncontent-length: ${cat.length * 2}\r\n\r\n`;
    const reply = await rawExchange(Buffer.concat([Buffer.from(head), cat]));
    // Whatever the server answers (or nothing), it must not be a success: the body never arrived whole.
    expect(reply).not.toMatch(/^HTTP\/1\.1 200/);
    await expectStillServing();
  });

  it('a content-length shorter than the body: the declared bytes are a truncated JPEG (400), the surplus is refused as malformed HTTP (400), both in the error shape', async () => {
    const bus = images['bus.jpg'];
    const half = bus.length >> 1;
    const head = `POST /v1/detect HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: image/jpeg\r\ncontent-length: ${half}\r\n\r\n`;
    const responses = await rawConversation(Buffer.concat([Buffer.from(head), bus.subarray(0, half)]), bus.subarray(half));
    expect(responses.map((r) => r.status)).toEqual([400, 400]);
    for (const r of responses) {
      const body = JSON.parse(r.body) as { error: { code: string; message: string } };
      expect(Object.keys(body)).toEqual(['error']);
      expect(Object.keys(body.error).sort()).toEqual(['code', 'message']);
    }
    await expectStillServing();
  });

  it('bytes that are not HTTP at all get 400 in the error shape', async () => {
    const [response, ...more] = parseResponses(await rawExchange(Buffer.from('HELLO THERE\r\n\r\n')));
    expect(more).toEqual([]);
    expect(response.status).toBe(400);
    const body = JSON.parse(response.body) as { error: { code: string; message: string } };
    expect(Object.keys(body)).toEqual(['error']);
    expect(body.error).toEqual({ code: 'bad_request', message: expect.stringMatching(/malformed HTTP request/) });
    await expectStillServing();
  });
});

describe('concurrency', () => {
  it('8 concurrent requests with different images each get the answer for their own image', async () => {
    const variants: { name: string; bytes: Buffer; type: string }[] = [];
    for (const name of FIXTURES) variants.push({ name, bytes: images[name], type: 'image/jpeg' });
    variants.push({ name: 'bus 405×540 png', bytes: await sharp(images['bus.jpg']).resize(405, 540).png().toBuffer(), type: 'image/png' });
    variants.push({ name: 'zidane 640×360 webp', bytes: await sharp(images['zidane.jpg']).resize(640, 360).webp().toBuffer(), type: 'image/webp' });
    variants.push({ name: 'cat 97×211 jpeg', bytes: await sharp(images['cat.jpg']).resize(97, 211, { fit: 'fill' }).jpeg().toBuffer(), type: 'image/jpeg' });
    variants.push({ name: 'tennis 1×1 png', bytes: await sharp(images['tennis.jpg']).resize(1, 1).png().toBuffer(), type: 'image/png' });
    const sizes = await Promise.all(variants.map((v) => uprightSize(v.bytes)));
    expect(new Set(sizes.map((s) => `${s.width}x${s.height}`)).size).toBe(8); // distinguishable answers

    const q = '?size=320&conf=0.0001&maxDet=10';
    // One at a time first: the reference each concurrent answer must equal.
    const alone: DetectBody[] = [];
    for (const v of variants) alone.push(await detectOk(await postImage(v.bytes, v.type, q)));
    const together = await Promise.all(variants.map(async (v) => detectOk(await postImage(v.bytes, v.type, q))));

    together.forEach((body, i) => {
      expectDetectAnswer(body, { ...sizes[i], input: 320, conf: 0.0001, maxDet: 10 });
      expect(body.detections, variants[i].name).toEqual(alone[i].detections);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// The CLI, as a child process

const projectRoot = fileURLToPath(new URL('..', import.meta.url));
const cliPath = fileURLToPath(new URL('../src/cli.ts', import.meta.url));

function runCli(args: string[], timeout = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', cliPath, ...args], { cwd: projectRoot, timeout, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('the CLI', () => {
  it('`models --json` lists the same models as GET /v1/models', async () => {
    const r = await runCli(['models', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const listed = JSON.parse(r.stdout) as Record<string, unknown>[];
    const served = ((await (await fetch(`${base}/v1/models`)).json()) as { models: Record<string, unknown>[] }).models;
    expect(listed.map((m) => m.id)).toEqual(expect.arrayContaining(['leyolo-nano', 'leyolo-small']));
    expect(listed.find((m) => m.id === 'leyolo-nano')).toMatchObject({ params: 1120480, trained: false, input: [640, 640] });
    expect(listed.map((m) => ({ id: m.id, task: m.task, family: m.family, variant: m.variant, params: m.params, trained: m.trained, input: m.input }))).toEqual(served);
  });

  it('`detect bus.jpg` prints the REST answer: same shape, same size, same detections', async () => {
    const bus = fileURLToPath(fixtureUrl('bus.jpg'));
    const r = await runCli(['detect', bus, '--conf', '0.0001', '--max-det', '10']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/no trained weights/);
    const printed = JSON.parse(r.stdout) as DetectBody;
    expectDetectAnswer(printed, { width: 810, height: 1080, input: 640, conf: 0.0001, maxDet: 10 });
    const served = await detectOk(await postImage(images['bus.jpg'], 'image/jpeg', '?conf=0.0001&maxDet=10'));
    expect(printed.detections.length).toBeGreaterThan(0);
    expect(printed.detections).toEqual(served.detections);
  });

  it('`detect --weights` with a missing file exits non-zero, naming the file', async () => {
    const r = await runCli(['detect', fileURLToPath(fixtureUrl('bus.jpg')), '--weights', 'no-such-checkpoint.pt']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/no-such-checkpoint\.pt/);
    expect(r.stdout).toBe('');
  });

  it('`detect --weights` with the official checkpoint prints trained detections; a checkpoint for another model is refused, naming keys', async () => {
    const ckpt = fileURLToPath(new URL('../../shared/fixtures/weights/LeYOLONano.pt', import.meta.url));
    const ok = await runCli(['detect', fileURLToPath(fixtureUrl('bus.jpg')), '--weights', ckpt]);
    expect(ok.code).toBe(0);
    const printed = JSON.parse(ok.stdout) as { model: { trained: boolean }; detections: { label: string }[] };
    expect(printed.model.trained).toBe(true);
    expect(printed.detections.map((d) => d.label)).toEqual(['person', 'person', 'bus', 'person', 'person', 'skateboard']);
    const wrong = await runCli(['detect', fileURLToPath(fixtureUrl('bus.jpg')), '--model', 'leyolo-small', '--weights', ckpt]);
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/checkpoint does not fit the model .*shape mismatches: model\.0\.c\.weight: checkpoint \[16, 3, 3, 3\], model \[24, 3, 3, 3\]/);
    expect(wrong.stdout).toBe('');
  });

  it('an unknown command exits non-zero and names it', async () => {
    const r = await runCli(['frobnicate']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/unknown command 'frobnicate'/);
  });
});
