/**
 * ImageNet classification and embeddings (ViG-T, DeiT-T) as a client sees them: `/v1/classify` and
 * `/v1/embed` on a real server on a real port with the fixture photos, and the CLI as a child process.
 * The models are seeded (untrained), so nothing here assumes a right label: the tests check the answer's
 * shape, that the server's logits are exactly what the built graph gives on the kernel's tensor, and the
 * errors. DeiT's builder is checked against timm's parameter counts.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfig } from '../src/config.js';
import { IMAGENET1K } from '../src/heads/classify/index.js';
import { build as buildDeiT, parameterCount, variants as deitVariants } from '../src/models/deit.js';
import { Graph } from '../src/models/graph/graph.js';
import { Params } from '../src/models/graph/params.js';
import { specOf } from '../src/pipeline/classify.js';
import { classifyGeometry, classifyInto } from '../src/pipeline/classify-preprocess.js';
import { decodeImage } from '../src/pipeline/decode.js';
import { buildApp } from '../src/stream/app.js';
import { preloadAndListen } from './support/server.js';
import sharp from 'sharp';
import { connect } from '../src/client/index.js';

const fixtureUrl = (name: string): URL => new URL(`../../shared/fixtures/images/${name}`, import.meta.url);
const images: Record<string, Buffer> = {};

interface ModelField {
  id: string;
  trained: boolean;
  input: number[];
}
interface ClassifyBody {
  model: ModelField;
  image: { width: number; height: number };
  classes: { classId: number; label: string; score: number }[];
  timings: Record<string, number>;
}
interface EmbedBody {
  model: ModelField;
  image: { width: number; height: number };
  embedding: number[];
  dim: number;
  timings: Record<string, number>;
}
interface ErrorBody {
  error: { code: string; message: string };
}

let app: FastifyInstance;
let base: string;

beforeAll(async () => {
  for (const name of ['cat.jpg', 'bus.jpg', 'zidane.jpg']) images[name] = await readFile(fixtureUrl(name));
  app = await buildApp({ ...defaultConfig(), port: 0, host: '127.0.0.1', logLevel: 'silent' as const, preload: ['vig-t', 'care-s0', 'deit-t'] });
  const address = await preloadAndListen(app);
  base = `http://127.0.0.1:${address.port}`;
});

afterAll(async () => {
  await app?.close();
});

const post = (path: string, body: Uint8Array, type = 'image/jpeg'): Promise<Response> => fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': type }, body });

async function ok<T>(res: Response): Promise<T> {
  const text = await res.text();
  expect(res.status, text).toBe(200);
  return JSON.parse(text) as T;
}

async function error(res: Response, status: number, code: string): Promise<void> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  expect((JSON.parse(text) as ErrorBody).error.code, text).toBe(code);
}

describe('DeiT on the shared ViT trunk', () => {
  it("has timm's parameter counts: DeiT-T 5,717,416 and DeiT-S 22,050,664", () => {
    for (const [name, timm] of [['DeiT-T', 5_717_416], ['DeiT-S', 22_050_664]] as const) {
      const p = Params.seeded(0);
      buildDeiT(new Graph('deit'), deitVariants[name], p, { imageSize: 224 });
      expect(p.parameterCount(), name).toBe(timm);
      expect(parameterCount(deitVariants[name]), name).toBe(timm);
    }
  });

  it('asks for timm key names, and at 320 keeps the class-token row of pos_embed and resizes the grid', () => {
    const p = Params.seeded(0);
    const g = new Graph('deit');
    buildDeiT(g, deitVariants['DeiT-T'], p, { imageSize: 320 });
    const keys = p.requested().map((r) => r.key);
    expect(keys).toEqual(expect.arrayContaining(['cls_token', 'pos_embed', 'patch_embed.proj.weight', 'blocks.11.attn.qkv.weight', 'blocks.0.attn.proj.bias', 'blocks.0.mlp.fc2.weight', 'norm.weight', 'head.bias']));
    expect(p.requested().find((r) => r.key === 'pos_embed')!.shape).toEqual([1, 197, 192]);
    expect(() => buildDeiT(new Graph('deit'), deitVariants['DeiT-T'], Params.seeded(0), { imageSize: 230 })).toThrow(RangeError);
  });
});

describe('POST /v1/classify', () => {
  for (const model of ['vig-t', 'care-s0', 'deit-t']) {
    it(`${model} on cat.jpg: top-5 ImageNet classes, softmax scores in descending order, trained false`, async () => {
      const body = await ok<ClassifyBody>(await post(`/v1/classify?model=${model}&topK=5`, images['cat.jpg']));
      expect(Object.keys(body).sort()).toEqual(['classes', 'image', 'model', 'timings']);
      expect(body.model).toEqual({ id: model, trained: false, input: [224, 224] });
      const { width, height } = await decodeImage(images['cat.jpg'], { maxPixels: 1e8 });
      expect(body.image).toEqual({ width, height });
      expect(body.classes.length).toBe(5);
      let previous = Infinity;
      for (const c of body.classes) {
        expect(Object.keys(c).sort()).toEqual(['classId', 'label', 'score']);
        expect(c.label).toBe(IMAGENET1K[c.classId]);
        expect(c.score).toBeGreaterThan(0);
        expect(c.score).toBeLessThanOrEqual(previous);
        previous = c.score;
      }
      expect(new Set(body.classes.map((c) => c.classId)).size).toBe(5);
      expect(Object.keys(body.timings).sort()).toEqual(['decode', 'infer', 'post', 'preprocess']);
    });
  }

  it('defaults to vig-t, top 5; multipart works too', async () => {
    const form = new FormData();
    form.append('image', new Blob([new Uint8Array(images['bus.jpg'])], { type: 'image/jpeg' }), 'bus.jpg');
    const body = await ok<ClassifyBody>(await fetch(`${base}/v1/classify?topK=3`, { method: 'POST', body: form }));
    expect(body.model.id).toBe('vig-t');
    expect(body.classes.length).toBe(3);
  });

  it('runs at a larger size (deit-t at 320: pos_embed resized)', async () => {
    const body = await ok<ClassifyBody>(await post('/v1/classify?model=deit-t&size=320&topK=2', images['zidane.jpg']));
    expect(body.model).toEqual({ id: 'deit-t', trained: false, input: [320, 320] });
    expect(body.classes.length).toBe(2);
  });

  it("the server's logits equal a direct ORT run of the same graph on the kernel's tensor, and its scores their softmax", async () => {
    for (const model of ['vig-t', 'care-s0', 'deit-t']) {
      const built = await app.classifier.spec(model, 224);
      const served = await app.pool.classify(specOf(built), { kind: 'encoded', bytes: images['cat.jpg'] }, 'logits');
      const img = await decodeImage(images['cat.jpg'], { maxPixels: 1e8 });
      const input = new Float32Array(3 * 224 * 224);
      classifyInto(img, classifyGeometry(img.width, img.height, 224), input);
      const session = await ort.InferenceSession.create(built.path);
      const direct = (await session.run({ images: new ort.Tensor('float32', input, [1, 3, 224, 224]) })).logits.data as Float32Array;
      await session.release();
      expect(served.values.length).toBe(1000);
      let err = 0;
      for (let i = 0; i < 1000; i++) err = Math.max(err, Math.abs(served.values[i] - direct[i]));
      expect(err, model).toBeLessThan(1e-5);
      const body = await ok<ClassifyBody>(await post(`/v1/classify?model=${model}&topK=1000`, images['cat.jpg']));
      const max = Math.max(...direct);
      const sum = direct.reduce((s, v) => s + Math.exp(v - max), 0);
      for (const c of body.classes) expect(c.score).toBeCloseTo(Math.exp(direct[c.classId] - max) / sum, 6);
      expect([...direct].map((v, i) => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1])[0][1]).toBe(body.classes[0].classId);
    }
  });
});

describe('POST /v1/embed', () => {
  // ViG-T and DeiT-T pool 192 channels; CARE-S0's heads read a 1024-d vector (`cls_dim`).
  for (const [model, dim] of [['vig-t', 192], ['care-s0', 1024], ['deit-t', 192]] as const) {
    it(`${model}: a ${dim}-float pooled embedding`, async () => {
      const body = await ok<EmbedBody>(await post(`/v1/embed?model=${model}`, images['cat.jpg']));
      expect(Object.keys(body).sort()).toEqual(['dim', 'embedding', 'image', 'model', 'timings']);
      expect(body.model).toEqual({ id: model, trained: false, input: [224, 224] });
      expect(body.dim).toBe(dim);
      expect(body.embedding.length).toBe(dim);
      for (const v of body.embedding) {
        expect(Number.isFinite(v)).toBe(true);
        expect(Math.fround(v)).toBe(v);
      }
    });
  }
});

describe('classify and embed errors', () => {
  for (const path of ['/v1/classify', '/v1/embed']) {
    it(`${path}: wrong task 422, bad size 422, unknown model 404`, async () => {
      await error(await post(`${path}?model=leyolo-nano`, images['cat.jpg']), 422, 'wrong_task');
      await error(await post(`${path}?model=lorat-s224`, images['cat.jpg']), 422, 'wrong_task');
      await error(await post(`${path}?size=225`, images['cat.jpg']), 422, 'invalid_value');
      await error(await post(`${path}?size=208`, images['cat.jpg']), 422, 'invalid_value');
      await error(await post(`${path}?size=4000`, images['cat.jpg']), 422, 'invalid_value');
      await error(await post(`${path}?model=nope`, images['cat.jpg']), 404, 'unknown_model');
    });

    it(`${path}: missing, corrupt and unsupported images as /v1/detect`, async () => {
      await error(await post(path, new Uint8Array(0)), 400, 'empty_body');
      await error(await post(path, images['cat.jpg'].subarray(0, 600)), 400, 'undecodable_image');
      await error(await post(path, Buffer.from('not an image at all')), 400, 'undecodable_image');
      await error(await post(path, Buffer.from('hello'), 'text/plain'), 415, 'unsupported_media_type');
      await error(await fetch(`${base}${path}`, { method: 'POST', body: new FormData() }), 400, 'missing_field');
    });
  }

  it('care-s0 takes sides that are multiples of its stride 32: 256 runs, 240 (a multiple of 16) is 422', async () => {
    const body = await ok<ClassifyBody>(await post('/v1/classify?model=care-s0&size=256&topK=1', images['cat.jpg']));
    expect(body.model).toEqual({ id: 'care-s0', trained: false, input: [256, 256] });
    await error(await post('/v1/classify?model=care-s0&size=240', images['cat.jpg']), 422, 'invalid_value');
  });

  it('a classify model on /v1/detect is the wrong task; topK out of range is 422', async () => {
    await error(await post('/v1/detect?model=vig-t', images['cat.jpg']), 422, 'wrong_task');
    await error(await post('/v1/classify?topK=0', images['cat.jpg']), 422, 'invalid_value');
  });
});

describe('the classify task on /v1/stream', () => {
  const streamUrl = () => base.replace('http', 'ws') + '/v1/stream';

  it('every frame gets the REST answer for it (less model and timings), encoded or raw', async () => {
    const client = await connect(streamUrl());
    const ready = await client.start('classify', 'care-s0', { topK: 3 });
    expect(ready.model).toEqual({ id: 'care-s0', trained: false, input: [224, 224] });
    const raw = await sharp(images['zidane.jpg']).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    client.sendEncoded(0, images['cat.jpg']);
    const first = await client.next();
    client.sendRaw(1, raw.data, raw.info.width, raw.info.height);
    const second = await client.next();
    for (const [m, bytes, id] of [[first, images['cat.jpg'], 0], [second, images['zidane.jpg'], 1]] as const) {
      expect(m).toMatchObject({ type: 'result', frameId: id });
      const { model: _m, timings: _t, ...rest } = await ok<ClassifyBody>(await post('/v1/classify?model=care-s0&topK=3', bytes));
      expect((m as { result: unknown }).result).toEqual(rest);
    }
    await client.close();
  });

  it('broken frames are bad_frame (undecodable, truncated, empty, raw of the wrong size) and the stream goes on', async () => {
    const client = await connect(streamUrl());
    await client.start('classify', 'vig-t', { topK: 1 });
    const next = async (id: number) => {
      const m = await client.next();
      expect(m).toMatchObject({ frameId: id });
      return m;
    };
    client.sendEncoded(0, Buffer.from('not an image at all'));
    expect(await next(0)).toMatchObject({ type: 'error', code: 'bad_frame' });
    client.sendEncoded(1, images['cat.jpg'].subarray(0, 600));
    expect(await next(1)).toMatchObject({ type: 'error', code: 'bad_frame' });
    client.sendEncoded(2, new Uint8Array(0));
    expect(await next(2)).toMatchObject({ type: 'error', code: 'bad_frame' });
    client.sendRaw(3, new Uint8Array(10), 64, 64);
    expect(await next(3)).toMatchObject({ type: 'error', code: 'bad_frame' });
    client.sendEncoded(4, images['cat.jpg']);
    expect(await next(4)).toMatchObject({ type: 'result', result: { classes: [expect.objectContaining({ label: expect.any(String) })] } });
    await client.close();
  });

  it('start checks params as the REST query is checked: an error, then close 1008', async () => {
    for (const [model, params, code] of [
      ['vig-t', { topK: 0 }, 'invalid_value'],
      ['vig-t', { size: 225 }, 'invalid_value'],
      ['vig-t', { conf: 0.5 }, 'invalid_value'],
      ['vig-t', { size: '224' }, 'invalid_value'],
      ['fsgnet', {}, 'wrong_task'],
      ['nope', {}, 'unknown_model'],
    ] as const) {
      const client = await connect(streamUrl());
      const got = await client.start('classify', model, params).then(
        () => 'none',
        (e: { code: string }) => e.code,
      );
      expect(got, JSON.stringify(params)).toBe(code);
      expect((await client.closed).code).toBe(1008);
    }
  });
});

describe('catalogue and docs', () => {
  it('GET /v1/models lists vig-t/s/b, care-s0/s1/s2 and deit-t/s as untrained classify models at 224', async () => {
    const { models } = await ok<{ models: { id: string; task: string; family: string; params: number; trained: boolean; input: number[] }[] }>(await fetch(`${base}/v1/models`));
    // CARE's counts are checked module by module against a hand count in care.test.ts.
    const want = { 'vig-t': 5_834_536, 'vig-s': 22_615_144, 'vig-b': 89_022_184, 'care-s0': 7_340_000, 'care-s1': 9_602_424, 'care-s2': 19_481_288, 'deit-t': 5_717_416, 'deit-s': 22_050_664 };
    for (const [id, params] of Object.entries(want))
      expect(models.find((m) => m.id === id), id).toMatchObject({ task: 'classify', family: id.split('-')[0], params, trained: false, input: [224, 224] });
  });

  it('OpenAPI documents both endpoints with their query parameters', async () => {
    const doc = await ok<{ paths: Record<string, { post?: { parameters?: { name: string }[] } }> }>(await fetch(`${base}/docs`));
    expect(doc.paths['/v1/classify'].post!.parameters!.map((p) => p.name).sort()).toEqual(['model', 'size', 'topK']);
    expect(doc.paths['/v1/embed'].post!.parameters!.map((p) => p.name).sort()).toEqual(['model', 'size']);
  });
});

describe('the CLI', () => {
  async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const file = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
    return new Promise((resolve) =>
      execFile(process.execPath, ['--import', 'tsx', file, ...args], { cwd: fileURLToPath(new URL('..', import.meta.url)), timeout: 60_000, maxBuffer: 16 * 2 ** 20 }, (err, stdout, stderr) =>
        resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr }),
      ),
    );
  }

  it('`classify cat.jpg --model deit-t --top-k 3` prints the REST answer', async () => {
    const r = await cli('classify', fileURLToPath(fixtureUrl('cat.jpg')), '--model', 'deit-t', '--top-k', '3');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/no trained weights/);
    const printed = JSON.parse(r.stdout) as ClassifyBody;
    const served = await ok<ClassifyBody>(await post('/v1/classify?model=deit-t&topK=3', images['cat.jpg']));
    expect(printed.model).toEqual(served.model);
    expect(printed.image).toEqual(served.image);
    expect(printed.classes.map((c) => c.classId)).toEqual(served.classes.map((c) => c.classId));
    printed.classes.forEach((c, i) => expect(c.score).toBeCloseTo(served.classes[i].score, 6));
  });

  it('`embed zidane.jpg --model care-s0 --size 256` prints the /v1/embed answer; --top-k is not an embed option', async () => {
    const zidane = fileURLToPath(fixtureUrl('zidane.jpg'));
    const r = await cli('embed', zidane, '--model', 'care-s0', '--size', '256');
    expect(r.code, r.stderr).toBe(0);
    const printed = JSON.parse(r.stdout) as EmbedBody;
    const served = await ok<EmbedBody>(await post('/v1/embed?model=care-s0&size=256', images['zidane.jpg']));
    expect(printed.model).toEqual({ id: 'care-s0', trained: false, input: [256, 256] });
    expect([printed.dim, printed.embedding.length]).toEqual([1024, 1024]);
    expect(Math.max(...printed.embedding.map((v, i) => Math.abs(v - served.embedding[i])))).toBeLessThan(1e-5);
    const bad = await cli('embed', zidane, '--top-k', '3');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/top-k/);
  });
});
