/**
 * Change detection as a client sees it: `POST /v1/change` on a real server on a real port with the real
 * LEVIR-CD pairs (../shared/fixtures/change-levir), a tiled 1024² scene, care-cd, the hostile cases, and
 * `fovea eval change` as a child process. The models are seeded (untrained): nothing here assumes a right
 * mask; the tests check that the answer is consistent with itself (the returned mask, its changed fraction,
 * its regions) and that the CLI's metrics are exactly a recomputation from the endpoint's masks.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import sharp, { type OutputInfo } from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfig } from '../src/config.js';
import { confusion, rleToMask, scores, type ConfusionCounts, type Rle } from '../src/heads/change/index.js';
import * as ort from 'onnxruntime-node';
import { changeMask } from '../src/models/fsgnet.js';
import { buildCareCd } from '../src/models/care.js';
import { Params } from '../src/models/graph/params.js';
import { float32, type HostTensor } from '../src/models/graph/tensor.js';
import { ModelRegistry } from '../src/models/registry.js';
import { writeSafetensors } from './support/safetensors.js';
import { stitch, tileGrid } from '../src/pipeline/tiles.js';
import { buildApp } from '../src/stream/app.js';
import { pngHeaderOnly } from './support/images.js';
import { preloadAndListen } from './support/server.js';
import { connect, type StreamClient } from '../src/client/index.js';
import { expectOneAnswerPerFrameInOrder, readAnswers, until, type FrameAnswer } from './stream-helpers.js';

const LEVIR = fileURLToPath(new URL('../../shared/fixtures/change-levir/', import.meta.url));

interface Region {
  polygon: [number, number][];
  bbox: [number, number, number, number];
  area: number;
}
interface ChangeBody {
  model: { id: string; trained: boolean; input: number[] };
  width: number;
  height: number;
  changedFraction: number;
  regions: Region[];
  mask: string | Rle | null;
  tiles: number;
  timings: Record<string, number>;
}
interface ErrorBody {
  error: { code: string; message: string };
}

let app: FastifyInstance;
let base: string;
let names: string[] = [];
const pairs = new Map<string, { a: Buffer; b: Buffer; label: Buffer }>();
/** The endpoint's fsgnet masks per pair (0/1), for the CLI comparison. */
const masks = new Map<string, Uint8Array>();

beforeAll(async () => {
  names = (await readdir(`${LEVIR}A`)).filter((n) => n.endsWith('.png')).sort();
  for (const n of names) pairs.set(n, { a: await readFile(`${LEVIR}A/${n}`), b: await readFile(`${LEVIR}B/${n}`), label: await readFile(`${LEVIR}label/${n}`) });
  app = await buildApp({ ...defaultConfig(), port: 0, host: '127.0.0.1', logLevel: 'silent' as const, preload: ['fsgnet', 'care-cd'] });
  const address = await preloadAndListen(app);
  base = `http://127.0.0.1:${address.port}`;
});

afterAll(async () => {
  await app?.close();
});

function form(files: Record<string, Uint8Array>): FormData {
  const fd = new FormData();
  for (const [name, bytes] of Object.entries(files)) fd.append(name, new Blob([bytes], { type: 'image/png' }), `${name}.png`);
  return fd;
}

const change = (files: Record<string, Uint8Array>, query = ''): Promise<Response> => fetch(`${base}/v1/change${query}`, { method: 'POST', body: form(files) });

async function ok(res: Response): Promise<ChangeBody> {
  const text = await res.text();
  expect(res.status, text).toBe(200);
  return JSON.parse(text) as ChangeBody;
}

async function error(res: Response, status: number, code: string): Promise<void> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  expect((JSON.parse(text) as ErrorBody).error.code, text).toBe(code);
}

/** The 0/1 mask of a base64 PNG answer, checked to be width × height, single channel, 0/255. */
async function pngMask(b64: string, width: number, height: number): Promise<Uint8Array> {
  const png = Buffer.from(b64, 'base64');
  // IHDR: bit depth 8, colour type 0 (greyscale).
  expect([png[24], png[25]]).toEqual([8, 0]);
  const { data, info } = await sharp(png).toColourspace('b-w').raw().toBuffer({ resolveWithObject: true });
  expect([info.width, info.height, info.channels]).toEqual([width, height, 1]);
  const mask = new Uint8Array(width * height);
  let other = 0;
  for (let i = 0; i < mask.length; i++) {
    if (data[i] !== 0 && data[i] !== 255) other++;
    mask[i] = data[i] ? 1 : 0;
  }
  expect(other, 'mask PNG values other than 0 and 255').toBe(0);
  return mask;
}

/** The answer's regions and fraction agree with its mask. */
function checkConsistent(r: ChangeBody, mask: Uint8Array, minArea = 16): void {
  const changed = mask.reduce((n, v) => n + v, 0);
  expect(r.changedFraction).toBeCloseTo(changed / (r.width * r.height), 12);
  const areas = r.regions.reduce((n, g) => n + g.area, 0);
  expect(areas).toBeLessThanOrEqual(changed);
  for (const g of r.regions) {
    expect(g.area).toBeGreaterThanOrEqual(minArea);
    const [x1, y1, x2, y2] = g.bbox;
    expect(x1 >= 0 && y1 >= 0 && x2 <= r.width && y2 <= r.height && x1 < x2 && y1 < y2).toBe(true);
    expect(g.area).toBeLessThanOrEqual((x2 - x1) * (y2 - y1));
    // Every changed pixel inside a region's bbox count: the region's area can't exceed the changed pixels there.
    let inBox = 0;
    for (let y = y1; y < y2; y++) for (let x = x1; x < x2; x++) inBox += mask[y * r.width + x];
    expect(g.area).toBeLessThanOrEqual(inBox);
    for (const [x, y] of g.polygon) expect(x >= 0 && y >= 0 && x <= r.width && y <= r.height).toBe(true);
  }
}

function labelMask(label: { data: Buffer; info: OutputInfo }): Uint8Array {
  const n = label.info.width * label.info.height;
  const c = label.info.channels;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = label.data[i * c] > 0 ? 1 : 0;
  return out;
}


const solid = (width: number, height: number, v: number): Promise<Buffer> =>
  sharp({ create: { width, height, channels: 3, background: { r: v, g: v, b: v } } }).png().toBuffer();

/** care-cd tiles are 256²; a tile as the graph reads it: RGB/255 planes, zero outside the valid w×h corner. */
const T = 256;
const rawRgb = async (b: Buffer, w: number) => {
  const { data, info } = await sharp(b).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  expect(info.width).toBe(w);
  return data;
};
const plane = (rgb: Buffer, width: number, x: number, y: number, w: number, h: number): Float32Array => {
  const out = new Float32Array(3 * T * T);
  for (let yy = 0; yy < h; yy++) for (let xx = 0; xx < w; xx++) for (let c = 0; c < 3; c++) out[c * T * T + yy * T + xx] = rgb[((y + yy) * width + x + xx) * 3 + c] / 255;
  return out;
};
const runTile = async (session: ort.InferenceSession, rb: Buffer, ra: Buffer, width: number, x: number, y: number, w: number, h: number) => {
  const out = await session.run({ before: new ort.Tensor('float32', plane(rb, width, x, y, w, h), [1, 3, T, T]), after: new ort.Tensor('float32', plane(ra, width, x, y, w, h), [1, 3, T, T]) });
  return (out.logits.data as Float32Array).slice();
};

/**
 * Seeded graphs decide one class everywhere; a care-cd checkpoint made from the seeded values, with the
 * head's change bias moved to the median logit margin on a LEVIR pair, splits pixels both ways. Written
 * as a .safetensors under `dir`; returns its path.
 */
async function nonTrivialCareCd(dir: string): Promise<string> {
  const captured = new Map<string, HostTensor>();
  const proto = Params.prototype as unknown as { fetch: (this: Params, name: string, shape: readonly number[], init: unknown, buffer: boolean) => Float32Array };
  const fetchOrig = proto.fetch;
  proto.fetch = function (name, shape, init, buffer) {
    const v = fetchOrig.call(this, name, shape, init, buffer);
    captured.set(this.prefix ? `${this.prefix}.${name}` : name, float32([...shape], v.slice()));
    return v;
  };
  try {
    buildCareCd('S0', Params.seeded(0), { imageSize: 256 });
  } finally {
    proto.fetch = fetchOrig;
  }
  const bias = captured.get('head.classifier.bias');
  expect(bias?.shape).toEqual([2]);
  const p = pairs.get(names[2])!;
  const seeded = await ort.InferenceSession.create((await app.registry.buildChange('care-cd', 256)).path);
  const l = await runTile(seeded, await rawRgb(p.a, 256), await rawRgb(p.b, 256), 256, 0, 0, 256, 256);
  await seeded.release();
  const margins = Array.from({ length: T * T }, (_, i) => l[T * T + i] - l[i]).sort((x, y) => x - y);
  const b = bias!.data as Float32Array;
  b[1] -= margins[T * T / 2];
  const weights = join(dir, 'care-cd.safetensors');
  writeSafetensors(weights, captured);
  return weights;
}

describe('POST /v1/change with fsgnet on the LEVIR-CD pairs', () => {
  it('answers all 11 pairs: 256×256 masks, regions and changedFraction consistent with the mask', async () => {
    expect(names).toHaveLength(11);
    for (const n of names) {
      const p = pairs.get(n)!;
      const r = await ok(await change({ before: p.a, after: p.b }, '?model=fsgnet&mask=png'));
      expect(r.model).toEqual({ id: 'fsgnet', trained: false, input: [256, 256] });
      expect([r.width, r.height, r.tiles]).toEqual([256, 256, 1]);
      expect(typeof r.mask).toBe('string');
      const mask = await pngMask(r.mask as string, 256, 256);
      checkConsistent(r, mask);
      for (const k of ['decode', 'preprocess', 'infer', 'post']) expect(r.timings[k]).toBeGreaterThanOrEqual(0);
      masks.set(n, mask);
    }
  });

  it('mask=rle is the same mask as mask=png; mask=none is null with the same regions', async () => {
    const n = names[0];
    const p = pairs.get(n)!;
    const rle = await ok(await change({ before: p.a, after: p.b }, '?mask=rle'));
    const r = rle.mask as Rle;
    expect(r.size).toEqual([256, 256]);
    expect(rleToMask(r)).toEqual(masks.get(n));
    const none = await ok(await change({ before: p.a, after: p.b }, '?mask=none'));
    expect(none.mask).toBeNull();
    expect(none.regions).toEqual(rle.regions);
    expect(none.changedFraction).toBe(rle.changedFraction);
  });

  it('tiles a 1024×1024 scene built from the LEVIR images and answers at full size', async () => {
    const compose = (key: 'a' | 'b') =>
      sharp({ create: { width: 1024, height: 1024, channels: 3, background: { r: 0, g: 0, b: 0 } } })
        .composite(Array.from({ length: 16 }, (_, i) => ({ input: pairs.get(names[i % names.length])![key], left: (i % 4) * 256, top: Math.floor(i / 4) * 256 })))
        .png()
        .toBuffer();
    const [before, after] = await Promise.all([compose('a'), compose('b')]);
    const r = await ok(await change({ before, after }, '?model=fsgnet&overlap=32&minArea=16'));
    expect([r.width, r.height]).toEqual([1024, 1024]);
    expect(r.tiles).toBe(tileGrid(1024, 1024, 256, 32).length);
    checkConsistent(r, await pngMask(r.mask as string, 1024, 1024));
  });

  it('a 4096×4096 pair of PNGs over 30 MB each answers at full size, the whole process growing by less than 1.5 GiB', async () => {
    const compose = (key: 'a' | 'b') =>
      sharp({ create: { width: 4096, height: 4096, channels: 3, background: { r: 0, g: 0, b: 0 } }, limitInputPixels: false })
        .composite(Array.from({ length: 256 }, (_, i) => ({ input: pairs.get(names[i % names.length])![key], left: (i % 16) * 256, top: Math.floor(i / 16) * 256 })))
        .png()
        .toBuffer();
    const [before, after] = await Promise.all([compose('a'), compose('b')]);
    // Larger than a single image upload may be (bodyLimit): the change route's own per-file limit applies.
    expect(Math.min(before.length, after.length)).toBeGreaterThan(defaultConfig().bodyLimit);
    const rssKiB = () => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]);
    const start = rssKiB();
    let peak = start;
    const sampler = setInterval(() => (peak = Math.max(peak, rssKiB())), 10);
    let r: ChangeBody;
    try {
      r = await ok(await change({ before, after }, '?model=care-cd&mask=rle'));
    } finally {
      clearInterval(sampler);
    }
    expect([r.width, r.height]).toEqual([4096, 4096]);
    expect(r.tiles).toBe(tileGrid(4096, 4096, 256, 32).length);
    checkConsistent(r, rleToMask(r.mask as Rle));
    // Measured ~750 MiB here: the uploads as received and as copied to the worker (2 × 2 × 35 MB), two decoded
    // scenes (2 × 48 MiB), the blended logits, the mask and opencv's label image; tiles run one batch at a time,
    // never the whole scene (361 tiles as one batch would need several GiB for the inputs and activations).
    expect((peak - start) / 1024, 'RSS growth during the request, MiB').toBeLessThan(1536);
  }, 240_000);

  it('care-cd answers too', async () => {
    const p = pairs.get(names[1])!;
    const r = await ok(await change({ before: p.a, after: p.b }, '?model=care-cd&minArea=4'));
    expect(r.model).toEqual({ id: 'care-cd', trained: false, input: [256, 256] });
    expect([r.width, r.height]).toEqual([256, 256]);
    checkConsistent(r, await pngMask(r.mask as string, 256, 256), 4);
  });

  it('the tiled worker path equals a plain reference on a non-trivial model (--weights): tiles run alone, zero-padded, stitched', async () => {
    const p = pairs.get(names[2])!;
    const dir = await mkdtemp(join(tmpdir(), 'fovea-change-'));
    const weights = await nonTrivialCareCd(dir);
    const app2 = await buildApp({ ...defaultConfig(), port: 0, host: '127.0.0.1', logLevel: 'silent' as const, workers: 1, preload: [], weights: { 'care-cd': weights } }, new ModelRegistry({ cacheDir: join(dir, 'cache') }));
    try {
      await app2.listen({ port: 0, host: '127.0.0.1' });
      const port = (app2.server.address() as { port: number }).port;
      // A 400×200 scene: two tiles across (overlap 48), one zero-padded tile down.
      const crop = (x: Buffer) => sharp(x).resize(400, 200, { fit: 'fill' }).png().toBuffer();
      const [before, after] = await Promise.all([crop(p.a), crop(p.b)]);
      const res = await fetch(`http://127.0.0.1:${port}/v1/change?model=care-cd&overlap=48&mask=rle&minArea=0`, { method: 'POST', body: form({ before, after }) });
      const r = await ok(res);
      expect(r.model).toEqual({ id: 'care-cd', trained: true, input: [256, 256] });
      expect([r.width, r.height, r.tiles]).toEqual([400, 200, 2]);
      expect(r.changedFraction).toBeGreaterThan(0.02);
      expect(r.changedFraction).toBeLessThan(0.98);
      const [rb, ra] = await Promise.all([rawRgb(before, 400), rawRgb(after, 400)]);
      const session = await ort.InferenceSession.create((await app2.registry.buildChange('care-cd', 256)).path);
      const { mask } = await stitch(400, 200, { tile: T, overlap: 48 }, (x, y, w, h) => runTile(session, rb, ra, 400, x, y, w, h));
      await session.release();
      const got = rleToMask(r.mask as Rle);
      let differ = 0;
      for (let i = 0; i < mask.length; i++) if (mask[i] !== got[i]) differ++;
      // Batched runs (4 tiles a run) vs single ones may differ in the last float bits: allow a few argmax flips.
      expect(differ).toBeLessThanOrEqual(8);
      checkConsistent(r, got, 0);
      expect(r.regions.length).toBeGreaterThan(0);
    } finally {
      await app2.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('one tile of exactly the model input is the graph’s own argmax', async () => {
    const p = pairs.get(names[3])!;
    const r = await ok(await change({ before: p.a, after: p.b }, '?model=care-cd&mask=rle'));
    const raw = async (b: Buffer) => (await sharp(b).removeAlpha().raw().toBuffer({ resolveWithObject: true })).data;
    const toChw = (rgb: Buffer) => {
      const out = new Float32Array(3 * 256 * 256);
      for (let i = 0; i < 256 * 256; i++) for (let c = 0; c < 3; c++) out[c * 256 * 256 + i] = rgb[i * 3 + c] / 255;
      return out;
    };
    const session = await ort.InferenceSession.create((await app.registry.buildChange('care-cd', 256)).path);
    const out = await session.run({ before: new ort.Tensor('float32', toChw(await raw(p.a)), [1, 3, 256, 256]), after: new ort.Tensor('float32', toChw(await raw(p.b)), [1, 3, 256, 256]) });
    await session.release();
    expect(rleToMask(r.mask as Rle)).toEqual(changeMask(out.logits.data as Float32Array, 256, 256));
  });

  it('lists fsgnet and care-cd under task change, untrained', async () => {
    const res = await fetch(`${base}/v1/models`);
    const text = await res.text();
    expect(res.status, text).toBe(200);
    const body = JSON.parse(text) as unknown;
    const list = (Array.isArray(body) ? body : (body as { models: unknown[] }).models) as { id: string; task: string; trained: boolean; input: number[] }[];
    for (const id of ['fsgnet', 'care-cd']) expect(list.find((m) => m.id === id)).toMatchObject({ task: 'change', trained: false, input: [256, 256] });
  });
});

describe('POST /v1/change: hostile and edge cases', () => {
  it('different sizes are 422 size_mismatch; resize=true resizes after to before', async () => {
    const p = pairs.get(names[0])!;
    const small = await sharp(p.b).resize(200, 180).png().toBuffer();
    await error(await change({ before: p.a, after: small }), 422, 'size_mismatch');
    const r = await ok(await change({ before: p.a, after: small }, '?resize=true'));
    expect([r.width, r.height]).toEqual([256, 256]);
    checkConsistent(r, await pngMask(r.mask as string, 256, 256));
  });

  it('one image missing is 400', async () => {
    const p = pairs.get(names[0])!;
    await error(await change({ before: p.a }), 400, 'missing_field');
    await error(await change({ after: p.b }), 400, 'missing_field');
    await error(await change({ image: p.a }), 400, 'missing_field');
  });

  it('a corrupt PNG is 400, and the server goes on', async () => {
    const p = pairs.get(names[0])!;
    const res = await change({ before: p.a, after: p.b.subarray(0, Math.floor(p.b.length / 2)) });
    expect(res.status, await res.clone().text()).toBe(400);
    await error(await change({ before: Buffer.from('not an image at all'), after: p.b }), 400, 'undecodable_image');
    await ok(await change({ before: p.a, after: p.b }, '?mask=none'));
  });

  it('1×1 images give a valid answer (padded to the tile)', async () => {
    const [a, b] = await Promise.all([solid(1, 1, 10), solid(1, 1, 200)]);
    const r = await ok(await change({ before: a, after: b }, '?minArea=1'));
    expect([r.width, r.height, r.tiles]).toEqual([1, 1, 1]);
    const mask = await pngMask(r.mask as string, 1, 1);
    checkConsistent(r, mask, 1);
    expect(r.regions.length).toBe(mask[0]);
  });

  it('a file over the change route’s own per-file limit is 413 with the error shape, and the server goes on', async () => {
    const small = await buildApp({ ...defaultConfig(), port: 0, host: '127.0.0.1', logLevel: 'silent' as const, preload: [], workers: 1, changeFileLimit: 50_000 });
    try {
      const address = await preloadAndListen(small);
      const p = pairs.get(names[0])!;
      expect(p.a.length).toBeGreaterThan(50_000);
      const res = await fetch(`http://127.0.0.1:${address.port}/v1/change`, { method: 'POST', body: form({ before: p.a, after: p.b }) });
      const text = await res.text();
      expect(res.status, text).toBe(413);
      expect(JSON.parse(text) as ErrorBody, text).toEqual({ error: { code: 'body_too_large', message: expect.stringMatching(/too large/) } });
      const ok2 = await fetch(`http://127.0.0.1:${address.port}/v1/models`);
      expect(ok2.status).toBe(200);
    } finally {
      await small.close();
    }
  });

  it('a scene past the pixel limit is 413 from its header, without decoding', async () => {
    const huge = pngHeaderOnly(20_000, 20_000);
    await error(await change({ before: huge, after: huge }), 413, 'too_many_pixels');
  });

  it('a model of another task is 422 wrong_task; an unknown one 404', async () => {
    const p = pairs.get(names[0])!;
    await error(await change({ before: p.a, after: p.b }, '?model=leyolo-nano'), 422, 'wrong_task');
    await error(await change({ before: p.a, after: p.b }, '?model=nope'), 404, 'unknown_model');
  });

  it('bad tiling and encodings are 422; a non-multipart body is 415', async () => {
    const p = pairs.get(names[0])!;
    await error(await change({ before: p.a, after: p.b }, '?overlap=256'), 422, 'invalid_value');
    await error(await change({ before: p.a, after: p.b }, '?tile=100'), 422, 'invalid_value');
    await error(await change({ before: p.a, after: p.b }, '?mask=jpeg'), 422, 'invalid_value');
    await error(await fetch(`${base}/v1/change`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: p.a }), 415, 'unsupported_media_type');
  });

  it('the OpenAPI document has /v1/change', async () => {
    const doc = (await (await fetch(`${base}/docs`)).json()) as { paths: Record<string, unknown> };
    expect(doc.paths['/v1/change']).toBeDefined();
  });
});

describe('the change task on /v1/stream', () => {
  type Answer = FrameAnswer;
  // A server whose care-cd splits pixels both ways (nonTrivialCareCd): a seeded model's masks are all one
  // class, so equal answers would prove little.
  let server: FastifyInstance;
  let serverBase: string;
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fovea-change-stream-'));
    const weights = await nonTrivialCareCd(dir);
    server = await buildApp({ ...defaultConfig(), port: 0, host: '127.0.0.1', logLevel: 'silent' as const, workers: 1, preload: ['care-cd'], weights: { 'care-cd': weights } }, new ModelRegistry({ cacheDir: join(dir, 'cache') }));
    serverBase = `http://127.0.0.1:${(await preloadAndListen(server)).port}`;
  });
  afterAll(async () => {
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });
  const streamUrl = () => serverBase.replace('http', 'ws') + '/v1/stream';
  const allStreamsClosed = () => until(() => server.streams.size === 0, 'every stream to close');

  async function startChange(params: Record<string, unknown> = {}, model = 'care-cd'): Promise<StreamClient> {
    const client = await connect(streamUrl());
    const ready = await client.start('change', model, params);
    expect(ready.model).toEqual({ id: model, trained: true, input: [256, 256] });
    return client;
  }

  async function answer(client: StreamClient, frameId: number, send: (id: number) => void): Promise<Answer> {
    send(frameId);
    const { answers, other } = await readAnswers(client, 1);
    expect(other).toEqual([]);
    expect(answers[0].frameId).toBe(frameId);
    return answers[0];
  }
  const encoded = (client: StreamClient, bytes: Uint8Array, reference?: boolean) => (id: number) => client.sendEncoded(id, bytes, reference === undefined ? {} : { reference });

  function streamResult(a: Answer): Record<string, unknown> {
    if (a.type !== 'result') throw new Error(`expected a result, got ${JSON.stringify(a)}`);
    return a.result as unknown as Record<string, unknown>;
  }

  /** The REST answer for the same pair, less model, timings: what a stream frame's result must equal. */
  async function restResult(before: Uint8Array, after: Uint8Array, query = ''): Promise<Record<string, unknown>> {
    const sep = query ? '&' : '?';
    const res = await fetch(`${serverBase}/v1/change${query}${sep}model=care-cd`, { method: 'POST', body: form({ before, after }) });
    const { model: _m, timings: _t, ...rest } = await ok(res);
    return { reference: false, ...rest };
  }

  it('frames before a reference are bad_frame; the reference answers its size; later frames get exactly the REST answers against it', async () => {
    const client = await startChange({ mask: 'rle', minArea: 4 });
    const [p0, p1, p2] = [pairs.get(names[0])!, pairs.get(names[1])!, pairs.get(names[2])!];
    expect(await answer(client, 0, encoded(client, p0.b))).toMatchObject({ type: 'error', frameId: 0, code: 'bad_frame', message: expect.stringMatching(/reference first/) });
    expect(streamResult(await answer(client, 1, encoded(client, p0.a, true)))).toEqual({ reference: true, width: 256, height: 256 });
    const fractions: number[] = [];
    for (const [i, frame] of [p0.b, p1.b, p2.a, p0.a].entries()) {
      const got = streamResult(await answer(client, 2 + i, encoded(client, frame)));
      expect(got, `frame ${2 + i}`).toEqual(await restResult(p0.a, frame, '?mask=rle&minArea=4'));
      fractions.push(got.changedFraction as number);
    }
    // The masks compared are not trivial: some frames split their pixels both ways.
    expect(fractions.some((f) => f > 0.02 && f < 0.98), JSON.stringify(fractions)).toBe(true);
    // A new reference replaces the old one.
    streamResult(await answer(client, 6, encoded(client, p1.a, true)));
    expect(streamResult(await answer(client, 7, encoded(client, p1.b)))).toEqual(await restResult(p1.a, p1.b, '?mask=rle&minArea=4'));
    await client.close();
    await allStreamsClosed();
  });

  it('a raw rgb24 reference works like its encoded image; a frame of another size is bad_frame unless resize: true', async () => {
    const p = pairs.get(names[3])!;
    const raw = await sharp(p.a).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const client = await startChange({ mask: 'none' });
    expect(streamResult(await answer(client, 0, (id) => client.sendRaw(id, raw.data, raw.info.width, raw.info.height, { reference: true })))).toEqual({ reference: true, width: 256, height: 256 });
    expect(streamResult(await answer(client, 1, encoded(client, p.b)))).toEqual(await restResult(p.a, p.b, '?mask=none'));
    const small = await sharp(p.b).resize(200, 180).png().toBuffer();
    expect(await answer(client, 2, encoded(client, small))).toMatchObject({ type: 'error', code: 'bad_frame', message: expect.stringMatching(/200×180/) });
    expect(streamResult(await answer(client, 3, encoded(client, p.b)))).toMatchObject({ reference: false, width: 256 });
    await client.close();
    const resizing = await startChange({ mask: 'none', resize: true });
    streamResult(await answer(resizing, 0, encoded(resizing, p.a, true)));
    expect(streamResult(await answer(resizing, 1, encoded(resizing, small)))).toEqual(await restResult(p.a, small, '?mask=none&resize=true'));
    await resizing.close();
    await allStreamsClosed();
  });

  it('a broken reference is bad_frame and keeps the reference before it; reset forgets the reference', async () => {
    const p = pairs.get(names[4])!;
    const client = await startChange({ mask: 'none' });
    streamResult(await answer(client, 0, encoded(client, p.a, true)));
    const truncated = p.b.subarray(0, Math.floor(p.b.length / 2));
    expect(await answer(client, 1, encoded(client, truncated, true))).toMatchObject({ type: 'error', code: 'bad_frame' });
    expect(await answer(client, 2, encoded(client, Buffer.from('not an image'), true))).toMatchObject({ type: 'error', code: 'bad_frame' });
    expect(await answer(client, 3, (id) => client.sendRaw(id, new Uint8Array(10), 4, 4, { reference: true }))).toMatchObject({ type: 'error', code: 'bad_frame' });
    expect(await answer(client, 4, (id) => client.sendEncoded(id, p.a, { reference: 'yes' as unknown as boolean }))).toMatchObject({ type: 'error', code: 'bad_frame', message: expect.stringMatching(/reference must be true or false/) });
    expect(streamResult(await answer(client, 5, encoded(client, p.b)))).toEqual(await restResult(p.a, p.b, '?mask=none'));
    // A broken later frame is its own bad_frame; the reference stays.
    expect(await answer(client, 6, encoded(client, truncated))).toMatchObject({ type: 'error', code: 'bad_frame' });
    expect(await answer(client, 7, encoded(client, Buffer.alloc(0)))).toMatchObject({ type: 'error', code: 'bad_frame' });
    expect(streamResult(await answer(client, 8, encoded(client, p.b)))).toMatchObject({ reference: false, width: 256, height: 256 });
    client.reset();
    expect(await answer(client, 9, encoded(client, p.b))).toMatchObject({ type: 'error', code: 'bad_frame', message: expect.stringMatching(/reference first/) });
    expect(streamResult(await answer(client, 10, encoded(client, p.b, true)))).toEqual({ reference: true, width: 256, height: 256 });
    await client.close();
    await allStreamsClosed();
  });

  it('a burst of frames gets one answer per frame, in order', async () => {
    const client = await startChange({ mask: 'none' });
    const sent: number[] = [];
    client.sendEncoded(0, pairs.get(names[0])!.a, { reference: true });
    sent.push(0);
    for (let i = 1; i <= 10; i++) {
      client.sendEncoded(i, pairs.get(names[i % names.length])!.b);
      sent.push(i);
    }
    const { answers, other } = await readAnswers(client, sent.length, 60_000);
    expect(other).toEqual([]);
    expectOneAnswerPerFrameInOrder(sent, answers);
    expect(answers[0].type).toBe('result');
    expect(answers.at(-1)!.type).toBe('result');
    for (const a of answers.slice(1)) if (a.type !== 'result') expect(a).toMatchObject({ type: 'dropped', reason: 'superseded' });
    await client.close();
    await allStreamsClosed();
  });

  it('start refuses unknown params, bad values and models of another task: an error, then close 1008', async () => {
    async function refused(model: string | undefined, params: Record<string, unknown>): Promise<{ code: string; close: number }> {
      const client = await connect(streamUrl());
      const code = await client.start('change', model, params).then(
        () => 'none',
        (e: { code: string }) => e.code,
      );
      return { code, close: (await client.closed).code };
    }
    expect(await refused('fsgnet', { size: 256 })).toEqual({ code: 'invalid_value', close: 1008 });
    expect(await refused('fsgnet', { mask: 'jpeg' })).toEqual({ code: 'invalid_value', close: 1008 });
    expect(await refused('fsgnet', { overlap: 256 })).toEqual({ code: 'invalid_value', close: 1008 });
    expect(await refused('fsgnet', { tile: 100 })).toEqual({ code: 'invalid_value', close: 1008 });
    expect(await refused('fsgnet', { tile: '256' })).toEqual({ code: 'invalid_value', close: 1008 });
    expect(await refused('fsgnet', { resize: 'yes' })).toEqual({ code: 'invalid_value', close: 1008 });
    expect(await refused('leyolo-nano', {})).toEqual({ code: 'wrong_task', close: 1008 });
    expect(await refused('nope', {})).toEqual({ code: 'unknown_model', close: 1008 });
    await allStreamsClosed();
  });
});

describe('fovea eval change', () => {
  it('prints metrics equal to a recomputation from the endpoint’s masks, with trained: false', async () => {
    expect(masks.size).toBe(11);
    const cli = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
    const { stdout, stderr } = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) =>
      execFile(process.execPath, ['--import', 'tsx', cli, 'eval', 'change', '--model', 'fsgnet', '--data', LEVIR], { cwd: fileURLToPath(new URL('..', import.meta.url)), timeout: 60_000 }, (err, out, errOut) =>
        err ? reject(new Error(`${err.message}\n${errOut}`)) : resolve({ stdout: out, stderr: errOut }),
      ),
    );
    const out = JSON.parse(stdout) as {
      trained: boolean;
      note?: string;
      pairs: number;
      metrics: { f1: number; iou: number; precision: number; recall: number; oa: number };
      counts: ConfusionCounts;
      perPair: ({ name: string } & ConfusionCounts)[];
    };
    expect(out.trained).toBe(false);
    expect(out.note).toMatch(/no trained weights/);
    expect(stderr).toMatch(/no trained weights/);
    expect(out.pairs).toBe(11);
    const total: ConfusionCounts = { tp: 0, fp: 0, fn: 0, tn: 0 };
    for (const n of names) {
      const label = labelMask(await sharp(pairs.get(n)!.label).raw().toBuffer({ resolveWithObject: true }));
      const c = confusion(masks.get(n)!, label);
      expect(out.perPair.find((p) => p.name === n)).toMatchObject(c);
      for (const k of ['tp', 'fp', 'fn', 'tn'] as const) total[k] += c[k];
    }
    expect(out.counts).toEqual(total);
    const s = scores(total);
    expect(out.metrics).toEqual({ f1: s.f1, iou: s.iou, precision: s.precision, recall: s.recall, oa: s.oa });
  });
});
