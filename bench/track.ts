/**
 * `fovea bench track`: per-frame latency of the LoRAT tracking path — search crop from a real 854×480 frame of
 * the tennis video (decoded once), `session.run` with z, x and the template mask, `decodeSearch` — for S-224 and
 * B-224, four builds each:
 *   fused ops + LoRA merged (what the server runs), plain ONNX ops + LoRA merged, fused + no LoRA (the DINOv2
 *   ViT as it is), fused + LoRA as graph inputs (unmerged, adapter factors fed every run);
 * and the achieved GFLOP/s of each build (2 × graph MACs / median `session.run`) against the practical peak of
 * this machine: a one-node ONNX MatMul built with the same Graph builder and run with the same session options,
 * at the size that runs fastest here (a few are tried first).
 *
 * Weights are seeded (untrained): this measures speed only; the tracker state is not advanced (every frame crops
 * the same search region) so that a meaningless box cannot walk the crop off the image.
 *
 * The builds of one variant are measured interleaved: each round runs one frame on every build and one MatMul,
 * in an order shuffled afresh each round (seeded), so a load change on the machine hits all of them alike and
 * the ratios compare like with like; ratios are also given paired (per round) with a bootstrap interval.
 * Graphs are built one at a time, written to a temporary folder with `saveModel` (B-224 is ~350 MB), loaded from
 * the path and the file deleted; so the variant's four sessions are alive together during its rounds (B-224:
 * peak RSS ~2.5 GB), and all are released before the next variant is built.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { LORAT_224, SingleObjectTracker, decodeSearch } from '../src/heads/track/lorat.js';
import { Graph } from '../src/models/graph/graph.js';
import type { StateDict } from '../src/models/graph/params.js';
import { mulberry32, Params } from '../src/models/graph/params.js';
import { saveModel, serializeModel } from '../src/models/graph/serialize.js';
import type { HostTensor } from '../src/models/graph/tensor.js';
import { float32 } from '../src/models/graph/tensor.js';
import { buildLoRAT, loraFeeds, variants, type BuildOptions, type LoRATVariant } from '../src/models/lorat.js';
import { VIT_LINEAR_INIT, adapterInputs } from '../src/models/vit.js';
import { cropInto, imageChannelMeans, type Box } from '../src/pipeline/crop.js';
import { decodeImage, type RgbImage } from '../src/pipeline/decode.js';
import type { ExecutionProvider } from '../src/pipeline/messages.js';
import { sessionOptions } from '../src/pipeline/session-options.js';
import { describeMachine, machine, projectRoot, quantile, round, summarize, writeResults, type Summary } from './stats.js';

export interface TrackBenchOptions {
  ep: ExecutionProvider;
  variants: LoRATVariant[];
  runs: number;
  warmup: number;
  threads: number;
  spin: boolean;
  /** The frame the template is cut from, and the frame every search crop is cut from. */
  templateFrame: string;
  searchFrame: string;
  /** The target in the template frame, [x1, y1, x2, y2] pixels. */
  box: Box;
}

/** The tennis player in frame 0 of the fixture video. */
const PLAYER_BOX: Box = [305, 112, 470, 362];

interface BuildSpec {
  id: string;
  label: string;
  options: BuildOptions;
}

const BUILDS: BuildSpec[] = [
  { id: 'fused-merged', label: 'fused ops, LoRA merged (served)', options: { lora: 'merged' } },
  { id: 'plain-merged', label: 'plain ONNX ops, LoRA merged', options: { lora: 'merged', plain: true } },
  { id: 'fused-none', label: 'fused ops, no LoRA (DINOv2 ViT)', options: { lora: 'none' } },
  { id: 'fused-inputs', label: 'fused ops, LoRA as inputs (unmerged)', options: { lora: 'inputs' } },
];

interface BuildResult {
  id: string;
  label: string;
  options: BuildOptions;
  /** Multiply-accumulates of one frame (batch 1), from the builder's shape rules. */
  macs: number;
  buildMs: number;
  sessionMs: number;
  crop: Summary;
  infer: Summary;
  decode: Summary;
  /** crop + infer + decode of each frame. */
  total: Summary;
  /** Fastest inference, ms. */
  inferMin: number;
  /** 2 × MACs / median infer. */
  gflops: number;
  /** gflops / the MatMul peak measured in the same rounds (medians). */
  ofPeak: number;
  /** The same from the fastest runs of each: the figure with the least interference from other processes. */
  bestGflops: number;
  bestOfPeak: number;
}

interface MatMulShape {
  m: number;
  k: number;
  n: number;
}

interface MatMulResult extends MatMulShape {
  macs: number;
  time: Summary;
  /** Fastest run, ms. */
  min: number;
  /** 2 × MACs / median. */
  gflops: number;
  /** 2 × MACs / fastest run: what the machine does when nothing else runs. */
  bestGflops: number;
}

interface Ratio {
  /** a / b of the median latencies. */
  ofMedians: number;
  /** Median over rounds of a_r / b_r (paired: both measured within the same round). */
  paired: number;
  /** 95 % bootstrap interval of `paired` (2000 resamples of the rounds, seeded). */
  pairedCI95: [number, number];
}

/** A seeded stream for the round order and the bootstrap, so a rerun makes the same choices. */
const rng = mulberry32;

function shuffled(n: number, rand: () => number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

function ratioOf(a: readonly number[], b: readonly number[], seed: number): Ratio {
  const per = a.map((t, k) => t / b[k]);
  const rand = rng(seed);
  const medians = Array.from({ length: 2000 }, () => quantile(Array.from(per, () => per[Math.floor(rand() * per.length)]), 0.5));
  return {
    ofMedians: round(quantile(a, 0.5) / quantile(b, 0.5), 4),
    paired: round(quantile(per, 0.5), 4),
    pairedCI95: [round(quantile(medians, 0.025), 4), round(quantile(medians, 0.975), 4)],
  };
}

interface VariantResult {
  variant: LoRATVariant;
  runs: number;
  builds: BuildResult[];
  /** The scan's best MatMul, measured again in this variant's rounds. */
  matmul: MatMulResult;
  ratios: {
    /** plain / fused inference: ≥ 1 means the fused build is no slower. */
    plainOverFused: Ratio;
    /** merged LoRA / DINOv2 ViT inference: the merge should cost nothing (within 2 %). */
    mergedOverNone: Ratio;
    /** unmerged (adapter inputs) / merged inference. */
    inputsOverMerged: Ratio;
    /** The served build's share of the MatMul peak. */
    servedOfPeak: number;
  };
}

// ---------------------------------------------------------------------------------------------
// Sessions.

/** A session with the project's options; on `--ep cuda` the CUDA provider or an error (a CPU fallback would write CPU figures under a CUDA label). */
async function createSession(model: string | Uint8Array, o: TrackBenchOptions): Promise<ort.InferenceSession> {
  const options = { ...sessionOptions(o.threads, o.spin), executionProviders: o.ep === 'cuda' ? ['cuda', 'cpu'] : ['cpu'] };
  try {
    return typeof model === 'string' ? await ort.InferenceSession.create(model, options) : await ort.InferenceSession.create(model, options);
  } catch (e) {
    if (o.ep !== 'cuda') throw e;
    throw new Error(`no CUDA execution provider (${(e as Error).message.split('\n')[0]}); install with ONNXRUNTIME_NODE_INSTALL=cuda12 npm ci on a CUDA host`, { cause: e });
  }
}

type Feeds = Record<string, ort.Tensor>;
const toTensor = (t: HostTensor): ort.Tensor => new ort.Tensor('float32', t.data as Float32Array, [...t.shape]);

/** A seeded adapter state dict for every adapter input of `g` (LoRAT's trunc_normal(.02) scale, no lora_alpha → scale 1). */
function seededAdapter(g: Graph, seed = 1): StateDict {
  const p = Params.seeded(seed);
  return new Map(adapterInputs(g).map((v) => [v.name, float32(v.shape as number[], p.param(v.name, v.shape as number[], VIT_LINEAR_INIT))]));
}

interface LoadedBuild {
  spec: BuildSpec;
  session: ort.InferenceSession;
  macs: number;
  buildMs: number;
  sessionMs: number;
  adapterFeeds: Feeds;
}

/** Build, write to `dir`, load; the graph and its host weights are garbage once this returns. */
async function load(variant: LoRATVariant, spec: BuildSpec, dir: string, o: TrackBenchOptions): Promise<LoadedBuild> {
  const t0 = performance.now();
  const g = buildLoRAT(variant, Params.seeded(0), spec.options);
  const macs = g.stats().totalMacs;
  const adapterFeeds = spec.options.lora === 'inputs' ? Object.fromEntries([...loraFeeds(seededAdapter(g), g)].map(([k, t]) => [k, toTensor(t)])) : {};
  const path = join(dir, `lorat-${variant}-${spec.id}.onnx`);
  saveModel(g.toModel({ variant, build: spec.id }), path);
  const buildMs = performance.now() - t0;
  const t1 = performance.now();
  const session = await createSession(path, o);
  const sessionMs = performance.now() - t1;
  rmSync(path, { force: true });
  rmSync(`${path}.data`, { force: true });
  return { spec, session, macs, buildMs, sessionMs, adapterFeeds };
}

// ---------------------------------------------------------------------------------------------
// The MatMul peak.

async function matmulSession(s: MatMulShape, o: TrackBenchOptions): Promise<{ session: ort.InferenceSession; feeds: Feeds; macs: number }> {
  const g = new Graph(`matmul-${s.m}x${s.k}x${s.n}`);
  const a = g.input('a', 'float32', [s.m, s.k]);
  // B is a weight (an initializer), as every Linear of the model is; A is fed, so nothing can be constant-folded.
  const b = g.initializer('b', float32([s.k, s.n], Params.seeded(0).param('b', [s.k, s.n], VIT_LINEAR_INIT)));
  g.output(g.op1('MatMul', [a, b]), 'y');
  const session = await createSession(serializeModel(g.toModel()), o);
  const input = Float32Array.from({ length: s.m * s.k }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
  return { session, feeds: { a: new ort.Tensor('float32', input, [s.m, s.k]) }, macs: g.stats().totalMacs };
}

const gflops = (macs: number, ms: number) => round((2 * macs) / ms / 1e6, 1);

/** Candidate sizes: square ones around the CPU's sweet spot, and the ViT-B MLP's own shapes (320 tokens). */
function candidates(ep: ExecutionProvider): MatMulShape[] {
  const square = (ep === 'cuda' ? [1024, 2048, 4096, 8192] : [512, 1024, 1536, 2048]).map((d) => ({ m: d, k: d, n: d }));
  return [...square, { m: 320, k: 768, n: 3072 }, { m: 320, k: 3072, n: 768 }];
}

/** All candidates in interleaved rounds (a load change hits them alike); the best median wins. */
async function scanMatMul(o: TrackBenchOptions, rounds = 12, warmup = 3): Promise<MatMulResult[]> {
  const shapes = candidates(o.ep);
  const sessions: Awaited<ReturnType<typeof matmulSession>>[] = [];
  try {
    for (const shape of shapes) sessions.push(await matmulSession(shape, o));
    const times = shapes.map(() => [] as number[]);
    for (let r = 0; r < warmup + rounds; r++)
      for (let j = 0; j < sessions.length; j++) {
        const i = (j + r) % sessions.length;
        const t = performance.now();
        await sessions[i].session.run(sessions[i].feeds);
        if (r >= warmup) times[i].push(performance.now() - t);
      }
    return shapes.map((shape, i) => matmulResult(shape, sessions[i].macs, times[i]));
  } finally {
    for (const s of sessions) await s.session.release();
  }
}

function matmulResult(shape: MatMulShape, macs: number, times: number[]): MatMulResult {
  const time = summarize(times);
  const min = Math.min(...times);
  return { m: shape.m, k: shape.k, n: shape.n, macs, time, min: round(min), gflops: gflops(macs, time.median), bestGflops: gflops(macs, min) };
}

// ---------------------------------------------------------------------------------------------
// The per-frame path.

interface Frames {
  template: RgbImage;
  search: RgbImage;
}

async function readFrames(o: TrackBenchOptions): Promise<Frames> {
  const limits = { maxPixels: 4096 * 4096 };
  return { template: await decodeImage(readFileSync(o.templateFrame), limits), search: await decodeImage(readFileSync(o.searchFrame), limits) };
}

interface Samples {
  crop: number[];
  infer: number[];
  decode: number[];
  total: number[];
}

const samples = (): Samples => ({ crop: [], infer: [], decode: [], total: [] });

async function benchVariant(variant: LoRATVariant, frames: Frames, peak: MatMulShape, o: TrackBenchOptions, dir: string): Promise<VariantResult> {
  const cfg = variants[variant];
  const geo = { ...LORAT_224, templateSize: cfg.templateSize, searchSize: cfg.searchSize, templateFeat: cfg.templateSize / cfg.vit.patch, searchFeat: cfg.searchSize / cfg.vit.patch };
  const tracker = new SingleObjectTracker(geo);
  const frameSize = [frames.template.width, frames.template.height] as const;
  const setup = tracker.init(frameSize, o.box, imageChannelMeans(frames.template));
  const z = new Float32Array(3 * geo.templateSize ** 2);
  cropInto(frames.template, setup.params, [geo.templateSize, geo.templateSize], tracker.padMean, z);
  // The search crop is written into the buffer behind `x`'s tensor: no copy per frame.
  const x = new Float32Array(3 * geo.searchSize ** 2);
  const feeds: Feeds = {
    z: new ort.Tensor('float32', z, [1, 3, geo.templateSize, geo.templateSize]),
    x: new ort.Tensor('float32', x, [1, 3, geo.searchSize, geo.searchSize]),
    z_feat_mask: new ort.Tensor('int64', setup.mask, [1, geo.templateFeat, geo.templateFeat]),
  };
  const searchSize = [frames.search.width, frames.search.height] as const;

  const loaded: LoadedBuild[] = [];
  const mm = await matmulSession(peak, o);
  try {
    for (const spec of BUILDS) {
      loaded.push(await load(variant, spec, dir, o));
      log(`  ${variant} ${spec.id}: built and written in ${(loaded.at(-1)!.buildMs / 1000).toFixed(1)} s, session in ${(loaded.at(-1)!.sessionMs / 1000).toFixed(1)} s`);
    }
    const per = loaded.map(samples);
    const mmTimes: number[] = [];
    let sink = 0;
    const frame = async (b: LoadedBuild, s: Samples | undefined) => {
      const t0 = performance.now();
      const adjusted = cropInto(frames.search, tracker.searchParams(), [geo.searchSize, geo.searchSize], tracker.padMean, x);
      const t1 = performance.now();
      const out = await b.session.run({ ...feeds, ...b.adapterFeeds });
      const t2 = performance.now();
      const r = decodeSearch(out.score_map.data as Float32Array, out.boxes.data as Float32Array, adjusted, searchSize, geo.windowPenalty, [geo.searchSize, geo.searchSize]);
      const t3 = performance.now();
      sink += r.index;
      if (s) s.crop.push(t1 - t0), s.infer.push(t2 - t1), s.decode.push(t3 - t2), s.total.push(t3 - t0);
    };
    const rounds = o.warmup + o.runs;
    const started = performance.now();
    const rand = rng(0x7eac);
    for (let r = 0; r < rounds; r++) {
      const measured = r >= o.warmup;
      // A fresh order each round (the MatMul is slot n): no build always runs first, or after the same neighbour.
      for (const i of shuffled(loaded.length + 1, rand)) {
        if (i === loaded.length) {
          const t = performance.now();
          await mm.session.run(mm.feeds);
          if (measured) mmTimes.push(performance.now() - t);
        } else await frame(loaded[i], measured ? per[i] : undefined);
      }
      if (r === 0) log(`  ${variant}: one round (${loaded.length} frames + 1 MatMul) takes ${((performance.now() - started) / 1000).toFixed(2)} s`);
    }
    if (sink < 0) log('unreachable');
    const matmul = matmulResult(peak, mm.macs, mmTimes);
    const builds: BuildResult[] = loaded.map((b, i) => {
      const s = per[i];
      const infer = summarize(s.infer);
      const g = gflops(b.macs, infer.median);
      const best = gflops(b.macs, Math.min(...s.infer));
      return {
        id: b.spec.id,
        label: b.spec.label,
        options: b.spec.options,
        macs: b.macs,
        buildMs: round(b.buildMs, 0),
        sessionMs: round(b.sessionMs, 0),
        crop: summarize(s.crop),
        infer,
        decode: summarize(s.decode),
        total: summarize(s.total),
        inferMin: round(Math.min(...s.infer)),
        gflops: g,
        ofPeak: round(g / matmul.gflops, 4),
        bestGflops: best,
        bestOfPeak: round(best / matmul.bestGflops, 4),
      };
    });
    const byId = (id: string) => loaded.findIndex((b) => b.spec.id === id);
    const ratio = (a: string, b: string): Ratio => ratioOf(per[byId(a)].infer, per[byId(b)].infer, 1);
    return {
      variant,
      runs: o.runs,
      builds,
      matmul,
      ratios: {
        plainOverFused: ratio('plain-merged', 'fused-merged'),
        mergedOverNone: ratio('fused-merged', 'fused-none'),
        inputsOverMerged: ratio('fused-inputs', 'fused-merged'),
        servedOfPeak: builds[byId('fused-merged')].ofPeak,
      },
    };
  } finally {
    for (const b of loaded) await b.session.release();
    await mm.session.release();
  }
}

// ---------------------------------------------------------------------------------------------
// Report.

const log = (s: string) => process.stderr.write(s + '\n');
const pct = (x: number, digits = 1) => `${(100 * x).toFixed(digits)} %`;
const signed = (x: number) => `${x >= 0 ? '+' : '−'}${Math.abs(100 * x).toFixed(1)} %`;
const mark = (ok: boolean) => (ok ? 'yes' : '**no**');

function markdown(o: TrackBenchOptions, r: TrackResults): string {
  const cell = (s: Summary) => `${s.median.toFixed(2)} / ${s.p95.toFixed(2)}`;
  const lines = [
    `# bench track — LoRAT ${o.variants.join(', ')}, ep ${o.ep}`,
    '',
    `Machine: ${describeMachine(r.machine)}; onnxruntime-node ${r.ort}; ${o.threads} intra-op threads, spinning ${o.spin ? 'on' : 'off'}, graph optimisation 'all'. ` +
      `Load average ${r.load.start.toFixed(2)} at the start, ${r.load.end.toFixed(2)} at the end; peak RSS ${r.maxRssMiB} MiB; ${(r.wallMs / 1000).toFixed(0)} s in all.`,
    '',
    `**Seeded weights (untrained): a speed benchmark only.** Template from \`${o.templateFrame.split('/').slice(-2).join('/')}\` around [${o.box.join(', ')}]; ` +
      `every frame crops the same search region from \`${o.searchFrame.split('/').slice(-2).join('/')}\` (${r.frame.width}×${r.frame.height}, decoded once), runs the graph, decodes. ` +
      `The builds of a variant run interleaved, one frame each per round with one MatMul, in a fresh (seeded) order each round; ${o.warmup} warm-up rounds, then ${o.runs} measured. Milliseconds, median / p95. ` +
      `GFLOP/s = 2 × graph MACs / median inference; the peak is a one-node ONNX MatMul [m×k]·[k×n] (B an initializer) built with the same Graph builder and session options, at the size that ran fastest in the scan below, measured again in the same rounds.`,
    '',
  ];
  for (const v of r.variants) {
    lines.push(
      `## ${v.variant}`,
      '',
      `MatMul peak in these rounds: ${v.matmul.gflops} GFLOP/s at the median, ${v.matmul.bestGflops} GFLOP/s in the fastest run ([${v.matmul.m}×${v.matmul.k}]·[${v.matmul.k}×${v.matmul.n}], ${cell(v.matmul.time)} ms). ${v.runs} measured rounds.`,
      '',
      '| build | crop | inference | decode | total per frame | GMAC / frame | GFLOP/s (median) | % of MatMul peak | fastest run: GFLOP/s, % of fastest MatMul |',
      '|---|---|---|---|---|---|---|---|---|',
      ...v.builds.map(
        (b) =>
          `| ${b.label} | ${cell(b.crop)} | ${cell(b.infer)} | ${cell(b.decode)} | ${cell(b.total)} | ${(b.macs / 1e9).toFixed(2)} | ${b.gflops.toFixed(1)} | ${pct(b.ofPeak)} | ${b.bestGflops.toFixed(1)}, ${pct(b.bestOfPeak)} |`,
      ),
      '',
    );
  }
  lines.push(
    '## The figures',
    '',
    'Inference latency ratios: the ratio of the medians, then the median of the per-round ratios (both builds measured in the same round) with its 95 % bootstrap interval.',
    '',
    '| variant | plain ops / fused (target: fused no slower, ≥ 1) | merged LoRA / DINOv2 ViT (target: within 2 %) | unmerged (LoRA inputs) / merged | served build, % of MatMul peak (target: > 50 %) |',
    '|---|---|---|---|---|',
    ...r.variants.map((v) => {
      const { plainOverFused: pf, mergedOverNone: mn, inputsOverMerged: im, servedOfPeak } = v.ratios;
      const ci = (x: Ratio, f: (y: number) => string) => `${f(x.ofMedians)}; paired ${f(x.paired)} [${f(x.pairedCI95[0])}, ${f(x.pairedCI95[1])}]`;
      const fixed = (y: number) => y.toFixed(3);
      const rel = (y: number) => signed(y - 1);
      // A verdict whose threshold lies inside the paired interval is noted: the rounds cannot tell it apart.
      const noisy = (x: Ratio, t: number) => (x.pairedCI95[0] <= t && t <= x.pairedCI95[1] ? ' (threshold inside the interval)' : '');
      return (
        `| ${v.variant} | ${ci(pf, fixed)} — ${mark(pf.ofMedians >= 1)}${noisy(pf, 1)} ` +
        `| ${ci(mn, rel)} — ${mn.ofMedians <= 1.02 ? (mn.ofMedians >= 0.98 ? 'yes' : 'yes (merged faster)') : '**no**'}${noisy(mn, 1.02)} ` +
        `| ${ci(im, rel)} ` +
        `| ${pct(servedOfPeak)} — ${mark(servedOfPeak > 0.5)} |`
      );
    }),
    '',
    'The merged and the DINOv2 builds are the same graph but for names and weight values (the adapter is folded into the weights), so any difference between them is measurement noise; "within 2 %" is met when the merged build is at most 2 % slower.',
    '',
    '## MatMul scan',
    '',
    `Interleaved rounds, ${r.matmulScan[0]?.time.n ?? 0} measured; the best median is the peak.`,
    '',
    '| m × k × n | median / p95 ms | GFLOP/s (median) | GFLOP/s (fastest run) |',
    '|---|---|---|---|',
    ...r.matmulScan.map((m) => `| ${m.m} × ${m.k} × ${m.n} | ${cell(m.time)} | ${m.gflops.toFixed(1)} | ${m.bestGflops.toFixed(1)} |`),
    '',
  );
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------

interface TrackResults {
  bench: 'track';
  machine: ReturnType<typeof machine>;
  ort: string;
  options: TrackBenchOptions;
  trained: false;
  frame: { width: number; height: number };
  load: { start: number; end: number };
  maxRssMiB: number;
  wallMs: number;
  matmulScan: MatMulResult[];
  peak: MatMulResult;
  variants: VariantResult[];
}

export async function benchTrack(o: TrackBenchOptions): Promise<{ results: TrackResults; markdown: string }> {
  const started = performance.now();
  const loadStart = loadavg()[0];
  const frames = await readFrames(o);
  log(`bench track: MatMul scan (${o.threads} threads)`);
  const matmulScan = await scanMatMul(o);
  const peak = matmulScan.reduce((a, b) => (b.gflops > a.gflops ? b : a));
  log(`  best: ${peak.m}×${peak.k}×${peak.n}, ${peak.gflops} GFLOP/s`);
  const dir = mkdtempSync(join(tmpdir(), 'fovea-bench-track-'));
  const out: VariantResult[] = [];
  try {
    for (const v of o.variants) {
      log(`bench track: ${v}`);
      out.push(await benchVariant(v, frames, peak, o, dir));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const results: TrackResults = {
    bench: 'track',
    machine: machine(),
    ort: ort.env.versions.common,
    options: o,
    trained: false,
    frame: { width: frames.search.width, height: frames.search.height },
    load: { start: round(loadStart, 2), end: round(loadavg()[0], 2) },
    maxRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    wallMs: round(performance.now() - started, 0),
    matmulScan,
    peak,
    variants: out,
  };
  return { results, markdown: markdown(o, results) };
}

function parseVariants(s: string): LoRATVariant[] {
  const vs = s.split(',').map((v) => v.trim()).filter(Boolean);
  for (const v of vs) if (!(v in variants)) throw new Error(`unknown LoRAT variant '${v}'; available: ${Object.keys(variants).join(', ')}`);
  return vs as LoRATVariant[];
}

function positiveInt(name: string, v: string | undefined, dflt: number, min = 1): number {
  const n = Number(v ?? dflt);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, got ${v}`);
  return n;
}

export async function runTrackBench(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      ep: { type: 'string' },
      variants: { type: 'string' },
      runs: { type: 'string' },
      warmup: { type: 'string' },
      threads: { type: 'string' },
      spin: { type: 'boolean' },
      json: { type: 'boolean' },
    },
  });
  if (values.ep && values.ep !== 'cpu' && values.ep !== 'cuda') throw new Error(`--ep must be cpu or cuda, got ${values.ep}`);
  const video = join(projectRoot(), '..', 'shared', 'fixtures', 'video-tennis');
  const o: TrackBenchOptions = {
    ep: values.ep === 'cuda' ? 'cuda' : 'cpu',
    variants: parseVariants(values.variants ?? 'S-224,B-224'),
    runs: positiveInt('runs', values.runs, 30),
    warmup: positiveInt('warmup', values.warmup, 5, 0),
    threads: positiveInt('threads', values.threads, cpus().length),
    spin: values.spin ?? process.env.FOVEA_ORT_SPIN === '1',
    templateFrame: join(video, '00000.jpg'),
    searchFrame: join(video, '00001.jpg'),
    box: PLAYER_BOX,
  };
  const { results, markdown: md } = await benchTrack(o);
  const paths = writeResults(`track-${o.ep}`, results, md);
  if (values.json) console.log(JSON.stringify(results, null, 2));
  else console.log(md + `\nwritten: ${paths.json}, ${paths.md}`);
}
