/**
 * Named LoRA adapters on one loaded tracker session (issue #5 items 3 and 6): a server started with a LoRAT-S-224
 * checkpoint and two adapter files; streams and REST sessions pick an adapter by name. Checked here: the two
 * adapters give different boxes; the same adapter gives the same boxes over REST and over a stream; adapter a1
 * served from the shared unmerged session gives what a graph with a1 merged at build gives (same crops, same
 * decode); switching adapters loads no session; unknown and mismatched adapters are refused.
 *
 * The checkpoint is generated here, not the seeded build: the seeded DINOv2 LayerScale is 1e-5, so in a seeded
 * model the blocks (and any adapter on them) barely move the output. Graphs are cached in a temporary folder.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type StreamClient } from '../src/client/index.js';
import { defaultConfig } from '../src/config.js';
import { Params, type StateDict } from '../src/models/graph/params.js';
import { saveModel } from '../src/models/graph/serialize.js';
import { float32, type HostTensor } from '../src/models/graph/tensor.js';
import { buildLoRAT, loraFeeds, loraInputShapes } from '../src/models/lorat.js';
import { ModelRegistry, type BuiltTracker } from '../src/models/registry.js';
import { TrackRun } from '../src/pipeline/track.js';
import { buildApp } from '../src/stream/app.js';
import type { TrackStreamResult } from '../src/stream/ws/index.js';
import { VIDEO_SIZE, readAnswers, until } from './stream-helpers.js';
import { prng } from './support/random.js';
import { writeSafetensors } from './support/safetensors.js';
import { preloadAndListen } from './support/server.js';

type Box = [number, number, number, number];
const MODEL = 'lorat-s224';
const FRAMES = 6;
/** The tennis player on frame 0, as the official LeYOLO-Nano checkpoint detects him (test/track-api.test.ts). */
const PLAYER: Box = [309.65, 113.91, 468.93, 359.31];

const dir = mkdtempSync(join(tmpdir(), 'fovea-adapters-'));
const cacheDir = join(dir, 'cache');
const video: Buffer[] = [];
let app: Awaited<ReturnType<typeof buildApp>>;
let baseUrl: string;
let streamUrl: string;

// ---------------------------------------------------------------------------------------------
// Adapter files


/**
 * Seeded LoRA factors for every adapter input of S-224, uniform in ±bound. With bound 0.06 at r 64, s·B·A is
 * of the order of the seeded weights themselves (std .02): enough to move the boxes, not to blow up the net.
 */
function randomAdapter(seed: number, opts: { bound?: number; rank?: number; alpha?: number; extra?: Record<string, readonly number[]> } = {}): Map<string, HostTensor> {
  const rnd = prng(seed);
  const bound = opts.bound ?? 0.06;
  const sd = new Map<string, HostTensor>();
  const shapes = loraInputShapes('S-224').map((v) => ({ name: v.name, shape: v.shape as number[] }));
  for (const [name, shape] of Object.entries(opts.extra ?? {})) shapes.push({ name, shape: [...shape] });
  for (const { name, shape } of shapes) {
    const s = opts.rank === undefined ? shape : name.endsWith('.A') ? [opts.rank, shape[1]] : [shape[0], opts.rank];
    const n = s.reduce((a, b) => a * b, 1);
    sd.set(name, float32(s, Float32Array.from({ length: n }, () => (2 * rnd() - 1) * bound)));
  }
  if (opts.alpha !== undefined) sd.set('lora_alpha', float32([], [opts.alpha]));
  return sd;
}

/**
 * A whole LoRAT-S-224 checkpoint (LoRAT names, adapters inside): Linear weights ±√(3/fan-in), LayerScale and norm
 * weights around 1, small biases and embeddings, a box head biased to target-sized boxes; its own LoRA factors
 * small, lora_alpha 64.
 */
function randomCheckpoint(seed: number): StateDict {
  // The keys: an unmerged build's (no merge to compute), plus the LoRA factors and their scaling.
  const probe = Params.seeded(0);
  buildLoRAT('S-224', probe, { lora: 'inputs' });
  const keys = [...probe.requested(), ...loraInputShapes('S-224').map((v) => ({ key: v.name, shape: v.shape as number[] })), { key: 'lora_alpha', shape: [] }, { key: 'use_rslora', shape: [] }];
  const rnd = prng(seed);
  const u = (b: number) => (2 * rnd() - 1) * b;
  const sd = new Map<string, HostTensor>();
  for (const { key, shape } of keys) {
    const n = shape.reduce((a, b) => a * b, 1);
    const gen =
      key === 'lora_alpha' ? () => 64
      : key === 'use_rslora' ? () => 0
      : /\.lora\.[AB]$/.test(key) ? () => u(0.02)
      // ltrb = sigmoid(about −1.95) = 1/8 of the search crop (4× the target's side) each way: target-sized boxes.
      : key === 'head.reg_mlp.layers.2.bias' ? () => -1.95 + u(0.1)
      : key === 'head.reg_mlp.layers.2.weight' ? () => u(0.1 * Math.sqrt(3 / shape[1]))
      : /(ls[12]\.gamma|norm\d?\.weight)$/.test(key) ? () => 0.8 + u(0.2)
      : key.endsWith('bias') ? () => u(0.02)
      : shape.length >= 2 && key !== 'pos_embed' && key !== 'token_type_embed' ? () => u(Math.sqrt(3 / shape.slice(1).reduce((a, b) => a * b, 1)))
      : () => u(0.1);
    sd.set(key, float32([...shape], Float32Array.from({ length: n }, gen)));
  }
  return sd;
}

/** a1: lora_alpha 32 (scaling 0.5, folded into B by the registry); a2: other factors, no alpha (scaling 1). */
const a1 = randomAdapter(1, { alpha: 32 });
const a2 = randomAdapter(2);
let base: StateDict;
const paths = { base: join(dir, 'lorat-s224.safetensors'), a1: join(dir, 'a1.safetensors'), a2: join(dir, 'a2.safetensors') };

beforeAll(async () => {
  base = randomCheckpoint(11);
  writeSafetensors(paths.base, base);
  writeSafetensors(paths.a1, a1);
  writeSafetensors(paths.a2, a2);
  for (let i = 0; i < FRAMES; i++) video.push(await readFile(new URL(`../../shared/fixtures/video-tennis/${String(i).padStart(5, '0')}.jpg`, import.meta.url)));
  const defaults = defaultConfig();
  app = await buildApp(
    {
      ...defaults,
      port: 0,
      host: '127.0.0.1',
      logLevel: 'silent',
      workers: 2,
      preload: [MODEL],
      weights: { [MODEL]: paths.base },
      adapters: { [MODEL]: { a1: paths.a1, a2: paths.a2 } },
    },
    new ModelRegistry({ cacheDir }),
  );
  const address = await preloadAndListen(app);
  baseUrl = `http://127.0.0.1:${address.port}`;
  streamUrl = `ws://127.0.0.1:${address.port}/v1/stream`;
}, 120_000);

afterAll(async () => {
  await app?.close();
  rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Clients

interface TrackBody {
  sessionId?: string;
  box: Box;
  score: number;
}

async function restRun(adapter: string | undefined): Promise<TrackStreamResult[]> {
  const form = new FormData();
  form.append('image', new Blob([new Uint8Array(video[0])], { type: 'image/jpeg' }), 'frame.jpg');
  form.append('box', JSON.stringify(PLAYER));
  const res = await fetch(`${baseUrl}/v1/track/sessions?model=${MODEL}${adapter ? `&adapter=${adapter}` : ''}`, { method: 'POST', body: form });
  const created = (await res.json()) as TrackBody;
  expect(res.status, JSON.stringify(created)).toBe(201);
  const out: TrackStreamResult[] = [];
  for (let i = 1; i < FRAMES; i++) {
    const r = await fetch(`${baseUrl}/v1/track/sessions/${created.sessionId}/frames`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: new Uint8Array(video[i]) });
    const a = (await r.json()) as TrackBody & { image: TrackStreamResult['image'] };
    expect(r.status, JSON.stringify(a)).toBe(200);
    out.push({ image: a.image, box: a.box, score: a.score });
  }
  expect((await fetch(`${baseUrl}/v1/track/sessions/${created.sessionId}`, { method: 'DELETE' })).status).toBe(204);
  return out;
}

async function streamRun(params: Record<string, unknown>): Promise<TrackStreamResult[]> {
  const client: StreamClient = await connect(streamUrl);
  await client.start('track', MODEL, params);
  client.sendEncoded(0, video[0], { init: PLAYER });
  const out: TrackStreamResult[] = [];
  // One frame at a time: a burst could drop superseded frames.
  for (let i = 0; i < FRAMES; i++) {
    if (i > 0) client.sendEncoded(i, video[i]);
    const { answers } = await readAnswers(client, 1);
    const a = answers[0];
    if (a.type !== 'result') throw new Error(`frame ${i}: ${JSON.stringify(a)}`);
    if (i > 0) out.push(a.result as unknown as TrackStreamResult);
  }
  await client.close();
  return out;
}

/** A run of TrackRun on `model` with the app's pool: the REST and stream path without the transport. */
async function directRun(model: BuiltTracker): Promise<TrackStreamResult[]> {
  const run = new TrackRun(model, app.pool);
  await run.init({ kind: 'encoded', bytes: video[0] }, PLAYER);
  const out: TrackStreamResult[] = [];
  for (let i = 1; i < FRAMES; i++) {
    const a = await run.step({ kind: 'encoded', bytes: video[i] });
    out.push({ image: a.image, box: a.box, score: a.score });
  }
  return out;
}

const worstBox = (a: TrackStreamResult[], b: TrackStreamResult[]) => Math.max(...a.flatMap((r, i) => r.box.map((v, k) => Math.abs(v - b[i].box[k]))));

/** S-224 with a1 merged at build: the checkpoint with its LoRA factors and lora_alpha replaced by a1's. */
function mergedWithA1(path: string): void {
  const g = buildLoRAT('S-224', Params.fromStateDict(new Map([...base, ...a1])), { lora: 'merged' });
  saveModel(g.toModel(), path);
}

// ---------------------------------------------------------------------------------------------

describe('named adapters on one loaded LoRAT session', () => {
  const results: Record<string, TrackStreamResult[]> = {};

  it('GET /v1/models lists the adapters of lorat-s224 (and none for the other models)', async () => {
    const { models } = (await (await fetch(`${baseUrl}/v1/models`)).json()) as { models: { id: string; adapters?: string[] }[] };
    expect(models.find((m) => m.id === MODEL)?.adapters).toEqual(['a1', 'a2']);
    for (const m of models) if (m.id !== MODEL) expect(m.adapters, m.id).toBeUndefined();
  });

  it('every worker loaded the merged and the unmerged session once and holds both adapters', async () => {
    const unmerged = await app.registry.buildTracker(MODEL, { adapters: true });
    const merged = await app.registry.buildTracker(MODEL);
    expect(unmerged.adapters).toBe(true);
    expect(unmerged.key).not.toBe(merged.key);
    const stats = await app.pool.stats();
    expect(stats).toHaveLength(2);
    for (const s of stats) {
      expect(s.loads).toBe(2);
      expect([...s.sessions].sort()).toEqual([merged.key, unmerged.key].sort());
      expect(s.adapters).toEqual({ [unmerged.key]: ['a1', 'a2'] });
    }
  });

  it('streams with adapter a1 and a2 on the same frames give different boxes; each gives what a REST session with that adapter gives; no session is loaded', async () => {
    const before = await app.pool.stats();
    // Two streams at once, one per adapter: the same session serves both (two workers, each with its own copy).
    [results.a1, results.a2] = await Promise.all([streamRun({ adapter: 'a1' }), streamRun({ adapter: 'a2' })]);
    const [restA1, restA2] = await Promise.all([restRun('a1'), restRun('a2')]);
    for (const r of [...results.a1, ...results.a2]) {
      expect(r.image).toEqual(VIDEO_SIZE);
      expect(r.box.every(Number.isFinite)).toBe(true);
    }
    expect(worstBox(results.a1, restA1)).toBeLessThanOrEqual(1e-3);
    expect(worstBox(results.a2, restA2)).toBeLessThanOrEqual(1e-3);
    results.a1.forEach((r, i) => expect(r.score).toBeCloseTo(restA1[i].score, 3));
    expect(worstBox(results.a1, results.a2)).toBeGreaterThan(1);
    // The merged graph (no adapter) is another tracker again.
    results.none = await streamRun({});
    expect(worstBox(results.none, results.a1)).toBeGreaterThan(1);
    const after = await app.pool.stats();
    expect(after.map((s) => s.loads)).toEqual(before.map((s) => s.loads));
  });

  it('a1 from the shared session equals a1 merged at build: the raw score map and boxes within 1e-5, and the tracked boxes', async () => {
    const refPath = join(dir, 'lorat-s224-a1-merged.onnx');
    mergedWithA1(refPath);
    const unmerged = await app.registry.buildTracker(MODEL, { adapters: true });

    // Raw outputs, one input, two plain ORT sessions.
    const rnd = prng(7);
    const z = Float32Array.from({ length: 3 * 112 * 112 }, () => 2 * rnd() - 1);
    const x = Float32Array.from({ length: 3 * 224 * 224 }, () => 2 * rnd() - 1);
    const mask = BigInt64Array.from({ length: 64 }, (_, i) => (i % 8 >= 2 && i % 8 < 6 && i >= 16 && i < 48 ? 1n : 0n));
    const inputs = {
      z: new ort.Tensor('float32', z, [1, 3, 112, 112]),
      x: new ort.Tensor('float32', x, [1, 3, 224, 224]),
      z_feat_mask: new ort.Tensor('int64', mask, [1, 8, 8]),
    };
    const feeds = Object.fromEntries([...loraFeeds(a1, loraInputShapes('S-224'))].map(([k, t]) => [k, new ort.Tensor('float32', t.data as Float32Array, [...t.shape])]));
    const ref = await (await ort.InferenceSession.create(refPath)).run(inputs);
    const shared = await (await ort.InferenceSession.create(unmerged.path)).run({ ...inputs, ...feeds });
    const worst = (a: ort.Tensor, b: ort.Tensor) => (a.data as Float32Array).reduce((m, v, i) => Math.max(m, Math.abs(v - (b.data as Float32Array)[i])), 0);
    expect(worst(shared.score_map, ref.score_map)).toBeLessThan(1e-5);
    expect(worst(shared.boxes, ref.boxes)).toBeLessThan(1e-5);

    // The whole tracking path (crops, run, decode, state) on the merged graph, through the same pool.
    const merged = await app.registry.buildTracker(MODEL);
    const reference = await directRun({ ...merged, key: 'test:lorat-s224-a1-merged', path: refPath });
    // Boxes are rounded to 0.01 px in answers: a last-digit float difference may round the other way.
    expect(worstBox(reference, results.a1)).toBeLessThanOrEqual(0.01 + 1e-6);
    reference.forEach((r, i) => expect(r.score).toBeCloseTo(results.a1[i].score, 3));
  });

  it('a worker restarted after a crash gets the adapters again', async () => {
    const slots = (app.pool as unknown as { slots: { worker: { terminate(): Promise<number> } }[] }).slots;
    await slots[0].worker.terminate();
    // The pool starts a new worker on the exit event; ask until both answer with both adapters.
    let stats: Awaited<ReturnType<typeof app.pool.stats>> = [];
    for (let i = 0; i < 200 && !(stats.length === 2 && stats.every((s) => Object.values(s.adapters)[0]?.length === 2)); i++) {
      await new Promise((r) => setTimeout(r, 50));
      stats = await app.pool.stats().catch(() => []);
    }
    for (const s of stats) expect(Object.values(s.adapters)).toEqual([['a1', 'a2']]);
    // Both workers answer a1 as before.
    const again = await Promise.all([restRun('a1'), restRun('a1')]);
    for (const r of again) expect(worstBox(r, results.a1)).toBeLessThanOrEqual(1e-3);
  });
});

describe('adapter errors', () => {
  it('an unknown adapter: 404 unknown_adapter over REST, naming the ones there are', async () => {
    const form = new FormData();
    form.append('image', new Blob([new Uint8Array(video[0])], { type: 'image/jpeg' }), 'frame.jpg');
    form.append('box', JSON.stringify(PLAYER));
    const res = await fetch(`${baseUrl}/v1/track/sessions?model=${MODEL}&adapter=tennis-lora`, { method: 'POST', body: form });
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(res.status).toBe(404);
    expect(body.error.code).toBe('unknown_adapter');
    expect(body.error.message).toMatch(/tennis-lora.*available: a1, a2/);
    expect(app.tracker.size).toBe(0);
  });

  it('an unknown adapter over a stream: unknown_adapter at start, then close 1008; a non-string adapter is invalid_value', async () => {
    async function refused(params: Record<string, unknown>) {
      const client = await connect(streamUrl);
      const r = await client.start('track', MODEL, params).then(
        (ready) => ({ code: 'none', message: JSON.stringify(ready) }),
        (e: { code: string; message: string }) => ({ code: e.code, message: e.message }),
      );
      return { ...r, close: (await client.closed).code };
    }
    const unknown = await refused({ adapter: 'tennis-lora' });
    expect(unknown).toMatchObject({ code: 'unknown_adapter', close: 1008 });
    expect(unknown.message).toMatch(/tennis-lora/);
    expect(await refused({ adapter: 3 })).toMatchObject({ code: 'invalid_value', close: 1008 });
    await until(() => app.streams.size === 0, 'every stream to close');
  });

  it('an adapter file that does not fit is refused at start, naming the key: wrong rank, a foreign block, a non-LoRA key', async () => {
    const registry = new ModelRegistry({ cacheDir });
    const write = (name: string, sd: Map<string, HostTensor>) => {
      const path = join(dir, name);
      writeSafetensors(path, sd);
      return path;
    };
    const wrongRank = write('r32.safetensors', randomAdapter(3, { rank: 32 }));
    await expect(registry.addAdapter(MODEL, 'r32', wrongRank)).rejects.toThrow(/adapter 'r32' .* does not fit lorat-s224: .*blocks\.0\.attn\.qkv\.q\.lora\.A: adapter \[32, 384\], graph \[64, 384\]/);
    const foreign = write('foreign.safetensors', randomAdapter(4, { extra: { 'blocks.12.attn.proj.lora.A': [64, 384] } }));
    await expect(registry.addAdapter(MODEL, 'foreign', foreign)).rejects.toThrow(/unexpected blocks\.12\.attn\.proj\.lora\.A/);
    const head = write('head.safetensors', randomAdapter(5, { extra: { 'head.cls_mlp.layers.0.weight': [384, 384] } }));
    await expect(registry.addAdapter(MODEL, 'head', head)).rejects.toThrow(/not LoRA factors: head\.cls_mlp\.layers\.0\.weight/);
    expect(registry.adapterNames(MODEL)).toEqual([]);
    // The server refuses to start with it.
    await expect(buildApp({ ...defaultConfig(), logLevel: 'silent', preload: [], adapters: { [MODEL]: { r32: wrongRank } } }, new ModelRegistry({ cacheDir }))).rejects.toThrow(/blocks\.0\.attn\.qkv\.q\.lora\.A: adapter \[32, 384\]/);
  });

  it('names, duplicates and models are checked', async () => {
    const registry = new ModelRegistry({ cacheDir });
    await registry.useWeights(MODEL, paths.base); // the app's cached graphs
    await expect(registry.addAdapter(MODEL, 'Bad Name', paths.a1)).rejects.toThrow(/adapter name must match/);
    await expect(registry.addAdapter('leyolo-nano', 'a1', paths.a1)).rejects.toMatchObject({ code: 'wrong_task' });
    await expect(registry.addAdapter('lorat-xl', 'a1', paths.a1)).rejects.toMatchObject({ code: 'unknown_model' });
    await registry.addAdapter(MODEL, 'a1', paths.a1);
    await expect(registry.addAdapter(MODEL, 'a1', paths.a2)).rejects.toThrow(/already has an adapter named 'a1'/);
    await expect(registry.useWeights(MODEL, paths.a1)).rejects.toThrow(/give its weights first/);
    expect(registry.adapterNames(MODEL)).toEqual(['a1']);
    expect(registry.adapterNames('lorat-b224')).toEqual([]);
  });
});
