/**
 * `fovea bench change`: the change-detection pipeline as `POST /v1/change` runs it (decode both images, tile,
 * run, blend-stitch, regions, PNG mask; `ChangeService.changeRaw` on the server's own worker pool, without the
 * HTTP layer) for FSG-Net and care-cd on scenes of 256² (one tile), 1024² and 4096² (tiled, 256-pixel tiles with
 * 32 pixels of overlap), built from the real LEVIR-CD pairs (../shared/fixtures/change-levir: the 256² pairs
 * laid out in a grid); and CARE-S0's ImageNet classification latency at 224 against its published 0.7 GMACs.
 *
 * Weights are seeded (untrained): speed and memory only.
 *
 * Each configuration runs in a fresh child process, so one configuration's heap and ORT arena cannot hide or
 * inflate the next one's memory. In the child: the server's default configuration (one inference worker), the
 * model preloaded, one 256² pair through the pipeline as warm-up (the tile graph is the same at every scene
 * size), then the measured runs. Memory: RSS of the whole process (the worker thread and ORT included) just
 * before the first measured run is the baseline; the peak is the larger of VmRSS sampled every 5 ms and the
 * kernel's VmHWM (reset first through /proc/self/clear_refs); delta = peak − baseline. The input PNGs are
 * held before the baseline; the decoded scenes, logits, stitch buffers and mask are in the delta.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { defaultConfig } from '../src/config.js';
import { buildCare } from '../src/models/care.js';
import { Params } from '../src/models/graph/params.js';
import { serializeModel } from '../src/models/graph/serialize.js';
import { tileGrid } from '../src/pipeline/tiles.js';
import { sessionOptions } from '../src/pipeline/session-options.js';
import { buildApp, preload } from '../src/stream/app.js';
import { peakWindow, serveChild, spawnChild } from './memory.js';
import { describeMachine, machine, projectRoot, round, summarize, writeResults, type Summary } from './stats.js';

const MODELS = ['fsgnet', 'care-cd'] as const;
type ChangeModel = (typeof MODELS)[number];
const SIZES = [256, 1024, 4096] as const;
const TILE = 256;
const OVERLAP = 32;
/** Measured runs per scene side: fewer for the large scenes so the bench stays within minutes. */
const RUNS: Record<number, number> = { 256: 10, 1024: 3, 4096: 2 };
/** CARE-S0's ImageNet cost as the paper reports it, GMACs at 224 (specs/models-a.md §3). */
const CARE_S0_PUBLISHED_GMACS = 0.7;
const CLASSIFY_RUNS = 30;
const CLASSIFY_WARMUP = 5;

type Job = { kind: 'change'; model: ChangeModel; size: number; runs: number } | { kind: 'classify'; threads: number; runs: number; warmup: number };

interface Memory {
  baselineMiB: number;
  peakMiB: number;
  deltaMiB: number;
  /** VmHWM could be reset (else the peak is the sampled maximum only). */
  hwm: boolean;
}

interface ChangeRow {
  model: ChangeModel;
  size: number;
  tiles: number;
  runs: number;
  /** Wall time of one `changeRaw` call, ms. */
  latency: Summary;
  minMs: number;
  /** Medians of the pipeline's own stage timings, ms. */
  stages: { decode: number; preprocess: number; infer: number; post: number };
  /** Median inference time per tile, ms. */
  inferPerTileMs: number;
  memory: Memory;
  load: [number, number];
}

interface ClassifyRow {
  model: 'CARE-S0';
  size: 224;
  threads: number;
  graphGMacs: number;
  publishedGMacs: number;
  latency: Summary;
  minMs: number;
  /** Graph MACs / median latency. */
  gmacPerSecond: number;
}

const log = (s: string) => process.stderr.write(s + '\n');
const mib = (kib: number) => round(kib / 1024, 1);
const THIS_FILE = fileURLToPath(import.meta.url);
const LEVIR = join(projectRoot(), '..', 'shared', 'fixtures', 'change-levir');

/** A before/after scene of `size`² as PNGs: the LEVIR pairs in a grid, cycling through them. */
async function scene(size: number): Promise<{ before: Buffer; after: Buffer }> {
  const names = readdirSync(join(LEVIR, 'A'))
    .filter((n) => n.endsWith('.png'))
    .sort();
  const read = (dir: 'A' | 'B', i: number) => readFileSync(join(LEVIR, dir, names[i % names.length]));
  if (size === 256) return { before: read('A', 0), after: read('B', 0) };
  const per = size / 256;
  const compose = (dir: 'A' | 'B') =>
    sharp({ create: { width: size, height: size, channels: 3, background: { r: 0, g: 0, b: 0 } }, limitInputPixels: false })
      .composite(Array.from({ length: per * per }, (_, i) => ({ input: read(dir, i), left: (i % per) * 256, top: Math.floor(i / per) * 256 })))
      .png({ compressionLevel: 1 })
      .toBuffer();
  const [before, after] = await Promise.all([compose('A'), compose('B')]);
  return { before, after };
}

async function runChangeChild(j: Extract<Job, { kind: 'change' }>): Promise<ChangeRow> {
  const app = await buildApp({ ...defaultConfig(), port: 0, host: '127.0.0.1', logLevel: 'silent', preload: [j.model] });
  try {
    await preload(app);
    const req = { model: j.model, tile: TILE, overlap: OVERLAP, mask: 'png' as const };
    const warm = await scene(256);
    await app.changer.changeRaw(warm.before, warm.after, req);
    const { before, after } = await scene(j.size);
    const window = await peakWindow(5);
    const loadStart = loadavg()[0];
    const times: number[] = [];
    const stages: { decode: number[]; preprocess: number[]; infer: number[]; post: number[] } = { decode: [], preprocess: [], infer: [], post: [] };
    let tiles = 0;
    for (let r = 0; r < j.runs; r++) {
      const t0 = performance.now();
      const out = await app.changer.changeRaw(before, after, req);
      times.push(performance.now() - t0);
      tiles = out.tiles;
      for (const k of ['decode', 'preprocess', 'infer', 'post'] as const) stages[k].push(out.timings[k]);
    }
    const mem = await window.close();
    const median = (xs: number[]) => summarize(xs).median;
    return {
      model: j.model,
      size: j.size,
      tiles,
      runs: times.length,
      latency: summarize(times),
      minMs: round(Math.min(...times)),
      stages: { decode: median(stages.decode), preprocess: median(stages.preprocess), infer: median(stages.infer), post: median(stages.post) },
      inferPerTileMs: round(median(stages.infer) / tiles),
      memory: { baselineMiB: mib(mem.baselineKiB), peakMiB: mib(mem.peakKiB), deltaMiB: mib(mem.peakKiB - mem.baselineKiB), hwm: Number.isFinite(mem.hwmKiB) },
      load: [round(loadStart, 2), round(loadavg()[0], 2)],
    };
  } finally {
    await app.close();
  }
}

async function runClassifyChild(j: Extract<Job, { kind: 'classify' }>): Promise<ClassifyRow> {
  const g = buildCare('S0', Params.seeded(0), { imageSize: 224, output: 'logits' });
  const macs = g.stats().totalMacs;
  const session = await ort.InferenceSession.create(serializeModel(g.toModel()), sessionOptions(j.threads, false));
  const input = Float32Array.from({ length: 3 * 224 * 224 }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
  const feeds = { images: new ort.Tensor('float32', input, [1, 3, 224, 224]) };
  const times: number[] = [];
  for (let r = 0; r < j.warmup + j.runs; r++) {
    const t0 = performance.now();
    await session.run(feeds);
    if (r >= j.warmup) times.push(performance.now() - t0);
  }
  await session.release();
  const latency = summarize(times);
  return {
    model: 'CARE-S0',
    size: 224,
    threads: j.threads,
    graphGMacs: round(macs / 1e9),
    publishedGMacs: CARE_S0_PUBLISHED_GMACS,
    latency,
    minMs: round(Math.min(...times)),
    gmacPerSecond: round(macs / 1e9 / (latency.median / 1000), 1),
  };
}

export interface ChangeBenchResults {
  bench: 'change';
  machine: ReturnType<typeof machine>;
  ort: string;
  trained: false;
  tile: number;
  overlap: number;
  workers: number;
  threads: number;
  rows: (ChangeRow | { model: ChangeModel; size: number; skipped: string })[];
  classify: ClassifyRow | { skipped: string };
  wallMs: number;
}

export async function benchChange(o: { models: ChangeModel[]; sizes: number[]; threads: number }): Promise<ChangeBenchResults> {
  const started = performance.now();
  const rows: ChangeBenchResults['rows'] = [];
  for (const model of o.models)
    for (const size of o.sizes) {
      const runs = RUNS[size] ?? 2;
      log(`bench change: ${model} @ ${size}² (${tileGrid(size, size, TILE, OVERLAP).length} tiles, ${runs} runs)`);
      try {
        const r = await spawnChild<ChangeRow>(THIS_FILE, { kind: 'change', model, size, runs } satisfies Job, 15 * 60_000, `${model}@${size}`);
        log(`  median ${r.latency.median.toFixed(0)} ms (infer ${r.stages.infer.toFixed(0)} ms, ${r.inferPerTileMs.toFixed(1)} ms/tile), RSS +${r.memory.deltaMiB} MiB`);
        rows.push(r);
      } catch (e) {
        rows.push({ model, size, skipped: `failed: ${(e as Error).message}` });
      }
    }
  log('bench change: CARE-S0 classification at 224');
  let classify: ChangeBenchResults['classify'];
  try {
    classify = await spawnChild<ClassifyRow>(THIS_FILE, { kind: 'classify', threads: o.threads, runs: CLASSIFY_RUNS, warmup: CLASSIFY_WARMUP } satisfies Job, 5 * 60_000, 'care-s0');
  } catch (e) {
    classify = { skipped: `failed: ${(e as Error).message}` };
  }
  const config = defaultConfig();
  return {
    bench: 'change',
    machine: machine(),
    ort: ort.env.versions.common,
    trained: false,
    tile: TILE,
    overlap: OVERLAP,
    workers: config.workers,
    threads: o.threads,
    rows,
    classify,
    wallMs: round(performance.now() - started, 0),
  };
}

function markdown(r: ChangeBenchResults): string {
  const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
  const lines = r.rows.map((row) => {
    if ('skipped' in row) return `| ${row.model} | ${row.size}² | — | — | — | — | — | — | — | — | — | ${row.skipped} |`;
    const s = row.stages;
    return `| ${row.model} | ${row.size}² | ${row.tiles} | ${row.runs} | ${ms(row.latency.median)} | ${ms(row.minMs)} | ${ms(s.decode)} / ${ms(s.preprocess)} / ${ms(s.infer)} / ${ms(s.post)} | ${ms(row.inferPerTileMs)} | ${row.memory.baselineMiB} | ${row.memory.peakMiB} | **${row.memory.deltaMiB}** | load ${row.load[0]} → ${row.load[1]} |`;
  });
  const c = r.classify;
  const classify =
    'skipped' in c
      ? [`CARE-S0 classification: ${c.skipped}`]
      : [
          '| model | input | graph GMACs | published GMACs | runs | median ms | p95 ms | fastest ms | GMAC/s (graph MACs / median) |',
          '|---|---|---|---|---|---|---|---|---|',
          `| CARE-S0 | 224² | ${c.graphGMacs} | ${c.publishedGMacs} | ${c.latency.n} | ${ms(c.latency.median)} | ${ms(c.latency.p95)} | ${ms(c.minMs)} | ${c.gmacPerSecond} |`,
        ];
  return [
    '# bench change — FSG-Net and care-cd, tiled; CARE-S0 classification, CPU',
    '',
    `Machine: ${describeMachine(r.machine)}; onnxruntime-node ${r.ort}; the server's default configuration (${r.workers} inference worker, ${r.threads} intra-op threads, the project's \`sessionOptions\`). ${(r.wallMs / 1000).toFixed(0)} s in all.`,
    '',
    `**Seeded weights (untrained): a speed/memory benchmark only.** Each row: \`ChangeService.changeRaw\` — what \`POST /v1/change\` runs, without HTTP — on a before/after pair of PNGs made of the LEVIR-CD fixture pairs laid out in a grid (256² is one pair), ${r.tile}-pixel tiles with ${r.overlap} pixels of overlap, blended stitching, regions, PNG mask. ` +
      'Latency: wall time of the call, median over the runs (one 256² warm-up call first). Stages (medians, ms): decode (both images) / preprocess (tiling) / infer (all tiles) / post (stitch, regions, mask). ' +
      'Memory: fresh child process per row; baseline = RSS (the whole process, the worker thread and ORT included) before the first measured run, input PNGs already in memory; peak = max(VmRSS sampled every 5 ms, VmHWM reset before the runs); delta = peak − baseline.',
    '',
    '| model | scene | tiles | runs | median ms | fastest ms | decode / pre / infer / post ms | infer ms / tile | RSS baseline MiB | RSS peak MiB | RSS delta MiB | notes |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...lines,
    '',
    '## CARE-S0 classification latency',
    '',
    `\`buildCare('S0', seeded, { imageSize: 224, output: 'logits' })\`, batch 1, \`session.run\` alone (no decode), ${CLASSIFY_WARMUP} warm-up runs. Graph GMACs are the builder's count (convolutions, MatMuls, attention products); the paper reports 0.7 GMACs.`,
    '',
    ...classify,
    '',
  ].join('\n');
}

export async function runChangeBench(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { models: { type: 'string' }, sizes: { type: 'string' }, json: { type: 'boolean' } } });
  const models = (values.models ?? MODELS.join(',')).split(',') as ChangeModel[];
  for (const m of models) if (!MODELS.includes(m)) throw new Error(`--models takes ${MODELS.join(', ')}, got ${m}`);
  const sizes = (values.sizes ?? SIZES.join(',')).split(',').map(Number);
  for (const s of sizes) if (!Number.isInteger(s) || s < 256 || s % 256) throw new Error(`--sizes must be multiples of 256 (scenes are grids of the 256² LEVIR pairs), got ${s}`);
  // The pool's own split: the cores shared among the inference workers.
  const results = await benchChange({ models, sizes, threads: Math.max(1, Math.floor(cpus().length / defaultConfig().workers)) });
  const md = markdown(results);
  const paths = writeResults('change-cpu', results, md);
  if (values.json) console.log(JSON.stringify(results, null, 2));
  else console.log(md + `\nwritten: ${paths.json}, ${paths.md}`);
}

// `node bench/change.ts --child '<job json>'` (spawned by the parent): one configuration, one JSON line on stdout.
serveChild<Job>(THIS_FILE, (job) => (job.kind === 'change' ? runChangeChild(job) : runClassifyChild(job)));
