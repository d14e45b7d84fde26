/**
 * `fovea bench vig`: ViG-T (gated linear attention through onnxruntime's fused LinearAttention kernel) against
 * DeiT-T (timm ViT-Ti/16, softmax attention through ORT's MultiHeadAttention) on the CPU at 224, 512, 1024 and
 * 2048 — latency and peak memory as the token count grows (196 → 16,384 tokens) — and, at 1024, ViG-T with the
 * chunkwise-parallel GLA graph at three chunk sizes (the chunk-size sweep).
 *
 * Weights are seeded (untrained): a speed/memory benchmark only; outputs are not checked.
 *
 * Each (model, size, chunk) runs in a fresh child process (this file with `--child`), so ORT's arena and the
 * allocator's free lists of one configuration cannot inflate or hide the next one's memory. The child builds the
 * graph, writes it to a temporary folder with `saveModel`, opens the session from the path (project session
 * options), deletes the file, then measures:
 *   - latency: `session.run` wall time, warm-up runs first, then a size-dependent number of measured runs;
 *   - memory: the process RSS just before the first (warm-up) run is the baseline; the peak is the larger of
 *     (a) VmRSS from /proc/self/status sampled every 2 ms by a worker thread while the runs are in flight and
 *     (b) VmHWM after the runs, the kernel's exact high-water mark, reset before the first run by writing 5 to
 *     /proc/self/clear_refs (where the kernel allows it). Delta = peak − baseline: what running the model costs
 *     on top of the loaded session (activations, ORT's CPU arena, MHA scratch).
 * ORT's arena statistics are not exposed by onnxruntime-node (no allocator/arena API in the JS binding), so the
 * arena is only seen through RSS.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import type { Graph } from '../src/models/graph/graph.js';
import { Params } from '../src/models/graph/params.js';
import { saveModel } from '../src/models/graph/serialize.js';
import { buildViG, variants as vigVariants, type GlaKernel } from '../src/models/vig.js';
import { buildViT, type ViTConfig } from '../src/models/vit.js';
import { sessionOptions } from '../src/pipeline/session-options.js';
import { peakWindow, serveChild, spawnChild } from './memory.js';
import { describeMachine, machine, projectRoot, round, summarize, writeResults, type Summary } from './stats.js';

/** timm `deit_tiny_patch16_224`: ViT-Ti/16, qkv fused with bias, LN eps 1e-6, no LayerScale, a class token. */
const DEIT_T: ViTConfig = { width: 192, depth: 12, heads: 3, patch: 16, mlpRatio: 4, layerScale: false, lnEps: 1e-6, qkv: 'fused', qkvBias: true };

/** 'DeiT-T (plain)': the same DeiT-T with plain ONNX attention (MatMul → Softmax → MatMul, the N² scores held), context only. */
type ModelId = 'ViG-T' | 'DeiT-T' | 'DeiT-T (plain)';
const SIZES = [224, 512, 1024, 2048] as const;
/** The serving path (the registry's): onnxruntime's fused kernel. The sweep runs the chunkwise graph. */
const MAIN_GLA: GlaKernel = 'fused';
const SWEEP_CHUNKS = [16, 32, 64] as const;
const SWEEP_SIZE = 1024;
/** Measured runs and warm-up runs per size: fewer at the large sizes so the bench stays within a few minutes. */
const RUNS: Record<number, { runs: number; warmup: number }> = { 224: { runs: 20, warmup: 3 }, 512: { runs: 10, warmup: 2 }, 1024: { runs: 9, warmup: 1 }, 2048: { runs: 3, warmup: 1 } };
/** Guards for a configuration: skip when the estimated attention scratch or one run would exceed these. */
const ATTN_MEMORY_BUDGET = 8 * 2 ** 30;
const RUN_BUDGET_MS = 60_000;
/** The whole bench: configurations not started by then are skipped. */
const TOTAL_BUDGET_MS = 6 * 60_000;

interface Job {
  model: ModelId;
  size: number;
  chunk?: number;
  runs: number;
  warmup: number;
  threads: number;
  /** ORT's pool threads spin between ops (`FOVEA_ORT_SPIN=1`); the project's default is off. */
  spin?: boolean;
}

interface ChildResult {
  model: ModelId;
  size: number;
  tokens: number;
  chunk?: number;
  nodes: number;
  params: number;
  /** Graph MACs from the builder's shape rules (batch 1; the contrib MultiHeadAttention is not counted). */
  graphMacs: number;
  buildMs: number;
  sessionMs: number;
  latency: Summary;
  minMs: number;
  warmupMs: number[];
  /** Measured runs stopped early because one exceeded the run budget. */
  truncated: boolean;
  /** Process CPU time (user + sys, all threads) per measured run, ms: ≈ wall × threads when the cores are ours alone. */
  cpuPerRunMs: number;
  /** 1-minute load average when the runs began and ended (other processes on the machine show here). */
  load: [number, number];
  memory: {
    baselineMiB: number;
    sampledPeakMiB: number;
    /** VmHWM after the runs; null when the high-water mark could not be reset (then it includes the build). */
    hwmMiB: number | null;
    peakMiB: number;
    deltaMiB: number;
    samples: number;
  };
}

interface Row {
  model: ModelId;
  size: number;
  tokens: number;
  chunk?: number;
  spin?: boolean;
  result?: ChildResult;
  skipped?: string;
}

const log = (s: string) => process.stderr.write(s + '\n');
const tokensOf = (model: ModelId, size: number) => (size / 16) ** 2 + (model === 'ViG-T' ? 0 : 1);
const mib = (kib: number) => round(kib / 1024, 1);

// ---------------------------------------------------------------------------------------------
// Child: one configuration in a fresh process.

function buildGraph(j: Job): Graph {
  // A chunk means the chunkwise graph; none, the fused kernel.
  if (j.model === 'ViG-T') return buildViG(vigVariants['ViG-T'], Params.seeded(0), { imageSize: j.size, gla: j.chunk ? 'chunkwise' : MAIN_GLA, chunk: j.chunk, output: 'features' });
  return buildViT(DEIT_T, Params.seeded(0), { imageSize: j.size, clsToken: true, plain: j.model === 'DeiT-T (plain)' });
}

async function runChild(j: Job): Promise<ChildResult> {
  const dir = mkdtempSync(join(tmpdir(), 'fovea-bench-vig-'));
  const t0 = performance.now();
  const loaded = await (async () => {
    try {
      const g = buildGraph(j);
      const stats = g.stats();
      const model = g.toModel({ bench: 'vig', model: j.model });
      const path = join(dir, 'model.onnx');
      saveModel(model, path);
      const buildMs = performance.now() - t0;
      const t1 = performance.now();
      const session = await ort.InferenceSession.create(path, sessionOptions(j.threads, j.spin === true));
      return { session, nodes: model.graph.nodes.length, params: stats.totalParams, graphMacs: stats.totalMacs, buildMs, sessionMs: performance.now() - t1 };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  })();
  const { session, nodes, params, graphMacs, buildMs, sessionMs } = loaded;
  const input = Float32Array.from({ length: 3 * j.size * j.size }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
  const feeds = { images: new ort.Tensor('float32', input, [1, 3, j.size, j.size]) };

  // Baseline: the loaded session, before any run has grown the arena.
  const window = await peakWindow(2);
  const loadStart = loadavg()[0];
  const warmupMs: number[] = [];
  const times: number[] = [];
  let cpuUs = 0;
  let truncated = false;
  for (let r = 0; r < j.warmup + j.runs; r++) {
    const c = process.cpuUsage();
    const t = performance.now();
    await session.run(feeds);
    const dt = performance.now() - t;
    const used = process.cpuUsage(c);
    if (r < j.warmup) warmupMs.push(round(dt, 1));
    else {
      times.push(dt);
      cpuUs += used.user + used.system;
    }
    // Guard: one run over budget → keep what we have (at least one measured run) and stop.
    if (dt > RUN_BUDGET_MS && times.length >= 1 && r < j.warmup + j.runs - 1) {
      truncated = true;
      break;
    }
    if (dt > RUN_BUDGET_MS && r === j.warmup - 1) {
      // The warm-up alone was over budget: time exactly one measured run.
      const c = process.cpuUsage();
      const t2 = performance.now();
      await session.run(feeds);
      times.push(performance.now() - t2);
      const used = process.cpuUsage(c);
      cpuUs += used.user + used.system;
      truncated = true;
      break;
    }
  }
  const mem = await window.close();
  await session.release();
  return {
    model: j.model,
    size: j.size,
    tokens: tokensOf(j.model, j.size),
    chunk: j.model === 'ViG-T' ? j.chunk : undefined,
    nodes,
    params,
    graphMacs,
    buildMs: round(buildMs, 0),
    sessionMs: round(sessionMs, 0),
    latency: summarize(times),
    minMs: round(Math.min(...times)),
    warmupMs,
    truncated,
    cpuPerRunMs: round(cpuUs / 1000 / times.length, 1),
    load: [round(loadStart, 2), round(loadavg()[0], 2)],
    memory: {
      baselineMiB: mib(mem.baselineKiB),
      sampledPeakMiB: mib(mem.sampledKiB),
      hwmMiB: Number.isFinite(mem.hwmKiB) ? mib(mem.hwmKiB) : null,
      peakMiB: mib(mem.peakKiB),
      deltaMiB: mib(mem.peakKiB - mem.baselineKiB),
      samples: mem.samples,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Parent: spawn one child per configuration.

const THIS_FILE = fileURLToPath(import.meta.url);

const spawnJob = (j: Job, timeoutMs: number) => spawnChild<ChildResult>(THIS_FILE, j, timeoutMs, `${j.model}@${j.size}`);

/** DeiT-T MACs per image (batch 1): 12·N·C² in the Linears plus 2·N²·C in QKᵀ and AV, per block. */
const deitMacs = (n: number) => DEIT_T.depth * (12 * n * DEIT_T.width ** 2 + 2 * n * n * DEIT_T.width);
/**
 * The attention scores of one layer if they were materialised, heads·N² floats: an upper bound for the guard.
 * ORT's CPU MultiHeadAttention has a flash-attention path (mlas_flashattn, tiled by the L2 size) that does not
 * hold them, so the measured RSS is far below this.
 */
const deitAttnBytes = (n: number) => DEIT_T.heads * n * n * 4;

export interface VigBenchOptions {
  threads: number;
  sizes: number[];
}

interface VigResults {
  bench: 'vig';
  machine: ReturnType<typeof machine>;
  ort: string;
  trained: false;
  threads: number;
  memoryMethod: string;
  load: { start: number; end: number };
  wallMs: number;
  rows: Row[];
  sweep: Row[];
  figures: Figure[];
}

interface Figure {
  name: string;
  target: string;
  /** From the medians: the figure as specified. */
  value: number | null;
  pass: boolean | null;
  /** The same from the fastest runs (least disturbed by other processes), for context; not the verdict. */
  fastest: number | null;
}

export async function benchVig(o: VigBenchOptions): Promise<VigResults> {
  const started = performance.now();
  const loadStart = loadavg()[0];
  const rows: Row[] = [];
  const left = () => TOTAL_BUDGET_MS - (performance.now() - started);
  const run = async (model: ModelId, size: number, chunk?: number, spin?: boolean): Promise<Row> => {
    const row: Row = { model, size, tokens: tokensOf(model, size), chunk: model === 'ViG-T' ? chunk : undefined, spin };
    const plan = RUNS[size] ?? { runs: 3, warmup: 1 };
    if (left() < 10_000) return { ...row, skipped: `the bench's ${TOTAL_BUDGET_MS / 60_000}-minute budget was spent` };
    log(`bench vig: ${model} @ ${size}${chunk ? ` chunk ${chunk}` : ''}${spin ? ' spinning' : ''} (${plan.warmup} warm-up + ${plan.runs} runs)`);
    try {
      const result = await spawnJob({ model, size, chunk, threads: o.threads, spin, ...plan }, Math.max(30_000, left()));
      log(`  median ${result.latency.median.toFixed(1)} ms, p95 ${result.latency.p95.toFixed(1)} ms, RSS +${result.memory.deltaMiB} MiB (build ${result.buildMs} ms, session ${result.sessionMs} ms)`);
      return { ...row, result };
    } catch (e) {
      return { ...row, skipped: `failed: ${(e as Error).message}` };
    }
  };

  const pair = async (size: number) => {
    rows.push(await run('ViG-T', size));
    const n = tokensOf('DeiT-T', size);
    const attn = deitAttnBytes(n);
    if (attn > ATTN_MEMORY_BUDGET) {
      rows.push({ model: 'DeiT-T', size, tokens: n, skipped: `skipped: attention scores, if materialised, ${(attn / 2 ** 30).toFixed(1)} GiB > ${ATTN_MEMORY_BUDGET / 2 ** 30} GiB budget` });
      return;
    }
    // Time estimate from the largest DeiT-T measured so far, scaled by the MAC count.
    const prev = rows.filter((r) => r.model === 'DeiT-T' && r.result).at(-1)?.result;
    const estimate = prev ? (prev.latency.median * deitMacs(n)) / deitMacs(prev.tokens) : 0;
    if (estimate > RUN_BUDGET_MS) {
      rows.push({
        model: 'DeiT-T',
        size,
        tokens: n,
        skipped:
          `skipped: estimated ${(estimate / 1000).toFixed(0)} s a run (DeiT-T @ ${prev!.size}: ${(prev!.latency.median / 1000).toFixed(2)} s × MAC ratio ${(deitMacs(n) / deitMacs(prev!.tokens)).toFixed(1)}) ` +
          `> ${RUN_BUDGET_MS / 1000} s budget; attention scores alone would be ${(attn / 2 ** 30).toFixed(1)} GiB`,
      });
      return;
    }
    rows.push(await run('DeiT-T', size));
  };

  // Small sizes and the sweep first: the 6-minute budget, if it runs out, cuts the largest (slowest) size.
  const sizes = [...o.sizes].sort((a, b) => a - b);
  for (const size of sizes.filter((s) => s <= SWEEP_SIZE)) await pair(size);
  const sweep: Row[] = [];
  if (o.sizes.includes(SWEEP_SIZE))
    for (const chunk of SWEEP_CHUNKS) sweep.push(await run('ViG-T', SWEEP_SIZE, chunk));
  // Context: DeiT-T with the N² attention scores held (plain ONNX ops), the attention the paper's figures compare with.
  if (o.sizes.includes(SWEEP_SIZE)) sweep.push(await run('DeiT-T (plain)', SWEEP_SIZE));
  // Context: both models with ORT's threads spinning between ops (FOVEA_ORT_SPIN=1), as on a host that only infers.
  if (o.sizes.includes(SWEEP_SIZE)) for (const model of ['ViG-T', 'DeiT-T'] as const) sweep.push(await run(model, SWEEP_SIZE, undefined, true));
  for (const size of sizes.filter((s) => s > SWEEP_SIZE)) await pair(size);

  return {
    bench: 'vig',
    machine: machine(),
    ort: ort.env.versions.common,
    trained: false,
    threads: o.threads,
    memoryMethod:
      'fresh child process per configuration; baseline = VmRSS after the session is created, before the first run; peak = max(VmRSS sampled every 2 ms by a worker thread during warm-up and measured runs, VmHWM reset via /proc/self/clear_refs before the first run); delta = peak − baseline. ORT arena statistics are not exposed by onnxruntime-node.',
    load: { start: round(loadStart, 2), end: round(loadavg()[0], 2) },
    wallMs: round(performance.now() - started, 0),
    rows,
    sweep,
    figures: figures(rows, sweep),
  };
}

function figures(rows: Row[], sweep: Row[]): Figure[] {
  const get = (m: ModelId, s: number) => rows.find((r) => r.model === m && r.size === s)?.result;
  const [v224, v1024, d1024] = [get('ViG-T', 224), get('ViG-T', 1024), get('DeiT-T', 1024)];
  const speed = v1024 && d1024 ? round(d1024.latency.median / v1024.latency.median, 2) : null;
  const speedMin = v1024 && d1024 ? round(d1024.minMs / v1024.minMs, 2) : null;
  const mem = v1024 && d1024 ? round(v1024.memory.deltaMiB / d1024.memory.deltaMiB, 3) : null;
  const tokenRatio = (1024 / 224) ** 2;
  const growth = v224 && v1024 ? round(v1024.latency.median / v224.latency.median, 2) : null;
  const growthMin = v224 && v1024 ? round(v1024.minMs / v224.minMs, 2) : null;
  // Context only: the same two ratios at 1024 with the chunkwise graph's fastest chunk, and the work ratio.
  const best = sweep.filter((r) => r.model === 'ViG-T' && r.chunk && r.result).sort((a, b) => a.result!.latency.median - b.result!.latency.median)[0]?.result;
  const plain = sweep.find((r) => r.model === 'DeiT-T (plain)')?.result;
  const [vSpin, dSpin] = (['ViG-T', 'DeiT-T'] as const).map((m) => sweep.find((r) => r.model === m && r.spin)?.result);
  const context: Figure[] = [];
  if (best && d1024)
    context.push(
      { name: `(context) speed-up at 1024 with the chunkwise graph, fastest chunk ${best.chunk}`, target: '≥ 3×', value: round(d1024.latency.median / best.latency.median, 2), pass: null, fastest: round(d1024.minMs / best.minMs, 2) },
      { name: `(context) peak memory at 1024 with the chunkwise graph, chunk ${best.chunk}`, target: '≤ 0.25', value: round(best.memory.deltaMiB / d1024.memory.deltaMiB, 3), pass: null, fastest: null },
    );
  if (vSpin && dSpin)
    context.push(
      { name: "(context) speed-up at 1024 with ORT's threads spinning between ops for both (FOVEA_ORT_SPIN=1)", target: '≥ 3×', value: round(dSpin.latency.median / vSpin.latency.median, 2), pass: null, fastest: round(dSpin.minMs / vSpin.minMs, 2) },
      { name: '(context) peak memory at 1024 with spinning on for both', target: '≤ 0.25', value: round(vSpin.memory.deltaMiB / dSpin.memory.deltaMiB, 3), pass: null, fastest: null },
    );
  if (v1024 && plain)
    context.push(
      { name: '(context) speed-up at 1024 against DeiT-T with plain attention (N² scores held)', target: '—', value: round(plain.latency.median / v1024.latency.median, 2), pass: null, fastest: round(plain.minMs / v1024.minMs, 2) },
      { name: '(context) peak memory at 1024: ViG-T / DeiT-T with plain attention', target: '—', value: round(v1024.memory.deltaMiB / plain.memory.deltaMiB, 3), pass: null, fastest: null },
    );
  if (v1024 && d1024)
    context.push({
      name: '(context) work at 1024: DeiT-T MACs / ViG-T graph MACs (the speed-up if both ran at the same MAC rate)',
      target: '—',
      value: round(deitMacs(d1024.tokens) / v1024.graphMacs, 2),
      pass: null,
      fastest: null,
    });
  return [
    { name: `speed-up at 1024: DeiT-T / ViG-T (${MAIN_GLA} GLA) latency`, target: '≥ 3×', value: speed, pass: speed === null ? null : speed >= 3, fastest: speedMin },
    { name: `peak memory at 1024: ViG-T (${MAIN_GLA} GLA) RSS delta / DeiT-T RSS delta`, target: '≤ 0.25', value: mem, pass: mem === null ? null : mem <= 0.25, fastest: null },
    {
      name: `ViG-T (${MAIN_GLA} GLA) latency growth 224 → 1024 (token ratio ${tokenRatio.toFixed(1)}×)`,
      target: `≤ 1.3 × ${tokenRatio.toFixed(1)} = ${(1.3 * tokenRatio).toFixed(1)}×`,
      value: growth,
      pass: growth === null ? null : growth <= 1.3 * tokenRatio,
      fastest: growthMin,
    },
    ...context,
  ];
}

// ---------------------------------------------------------------------------------------------
// Report: Markdown and an SVG plot.

function markdown(r: VigResults): string {
  const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
  const line = (row: Row) => {
    const x = row.result;
    const base = row.model === 'ViG-T' ? (row.chunk ? `ViG-T (chunkwise, chunk ${row.chunk})` : `ViG-T (${MAIN_GLA} GLA)`) : row.model;
    const label = row.spin ? `${base}, spinning` : base;
    if (!x) return `| ${label} | ${row.size} | ${row.tokens} | — | — | — | — | — | — | — | — | — | ${row.skipped} |`;
    const notes = [`${x.nodes} nodes`, `build ${(x.buildMs / 1000).toFixed(1)} s, session ${(x.sessionMs / 1000).toFixed(1)} s`, `warm-up ${x.warmupMs.map(ms).join(', ')} ms`];
    if (x.truncated) notes.push('stopped early: a run exceeded the 60 s budget');
    return `| ${label} | ${row.size} | ${row.tokens} | ${x.latency.n} | ${ms(x.latency.median)} | ${ms(x.latency.p95)} | ${ms(x.minMs)} | ${ms(x.cpuPerRunMs)} | ${x.load[0]} → ${x.load[1]} | ${x.memory.baselineMiB} | ${x.memory.peakMiB} | **${x.memory.deltaMiB}** | ${notes.join('; ')} |`;
  };
  const head = [
    '| model | size | tokens | runs | median ms | p95 ms | fastest ms | CPU ms / run | load avg | RSS baseline MiB | RSS peak MiB | RSS delta MiB | notes |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  return [
    `# bench vig — ViG-T vs DeiT-T, CPU`,
    '',
    `Machine: ${describeMachine(r.machine)}; onnxruntime-node ${r.ort}; ${r.threads} intra-op threads, spinning off, graph optimisation 'all' (the project's \`sessionOptions\`). ` +
      `Load average ${r.load.start} at the start, ${r.load.end} at the end; ${(r.wallMs / 1000).toFixed(0)} s in all.`,
    '',
    `**Seeded weights (untrained): a speed/memory benchmark only.** Batch 1, one synthetic image per size. ViG-T is \`buildViG(variants['ViG-T'], …, { output: 'features', gla })\`: the main rows use onnxruntime's fused \`com.microsoft.LinearAttention\` kernel (gated rule, per-key-channel decay; both directions), the sweep the chunkwise-parallel GLA graph; ` +
      `DeiT-T is \`buildViT\` with timm's deit_tiny_patch16_224 config (width 192, depth 12, 3 heads, patch 16, MLP ×4, LN eps 1e-6, fused qkv with bias, class token, no LayerScale), fused build (ORT \`MultiHeadAttention\`), output the normed tokens. ` +
      `Latency: \`session.run\` wall time, median / p95 over the measured runs (counts in the table; warm-up runs before them, not counted). ` +
      `Memory: ${r.memoryMethod} ` +
      `CPU ms / run is the process's user + sys time per measured run (≈ ${r.threads} × wall when nothing else competes for the cores); load avg is the 1-minute load when the configuration's runs began → ended: ` +
      `this machine is shared, and a load above ${r.threads} means other processes took CPU from the measured one (its median, not its CPU time, grows).`,
    '',
    ...head,
    ...r.rows.map(line),
    '',
    `## At ${SWEEP_SIZE}: ViG-T with the chunkwise GLA graph (chunk sweep), DeiT-T with plain attention, and both with spinning threads`,
    '',
    'DeiT-T (plain) is the same model built from plain ONNX ops (MatMul → Softmax → MatMul): it holds each layer\'s 3 × N² attention scores, as attention without a fused kernel does; the main DeiT-T rows use ORT\'s `MultiHeadAttention`, whose CPU kernel is a flash-attention loop that never holds them. Context only: the verdict compares with the faster, fused DeiT-T. The "spinning" rows run both models with ORT\'s pool threads spinning between ops (\`FOVEA_ORT_SPIN=1\`) instead of sleeping: the default is off so that a server\'s decoding keeps its cores, which costs a graph of many small ops (ViG-T: 664 nodes, DeiT-T: 166) a thread wake-up per op.',
    '',
    ...head,
    ...r.sweep.map(line),
    '',
    '## The figures',
    '',
    'Measured from the medians (the verdict); the fastest-run ratio is given for context only (least disturbed by other load).',
    '',
    '| figure | target | measured (medians) | met | from the fastest runs |',
    '|---|---|---|---|---|',
    ...r.figures.map((f) => `| ${f.name} | ${f.target} | ${f.value ?? '—'} | ${f.pass === null ? (f.value === null ? 'not measured' : '—') : f.pass ? 'yes' : '**no**'} | ${f.fastest ?? '—'} |`),
    '',
    '![latency vs tokens](vig-cpu.svg)',
    '',
  ].join('\n');
}

/** Latency vs tokens, log-log, both models and a slope-1 (∝ tokens) line through ViG-T's smallest point. */
function svg(r: VigResults): string {
  const [W, H, L, R, T, B] = [720, 460, 80, 190, 40, 60];
  const series = (['ViG-T', 'DeiT-T'] as const).map((m) => ({
    model: m,
    color: m === 'ViG-T' ? '#1f77b4' : '#d62728',
    pts: r.rows.filter((x) => x.model === m && x.result).map((x) => [x.tokens, x.result!.latency.median] as const),
  }));
  const all = series.flatMap((s) => s.pts);
  if (all.length === 0) return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}"><text x="20" y="40">no data</text></svg>\n`;
  const x0 = Math.log10(100);
  const x1 = Math.log10(Math.max(20_000, ...all.map((p) => p[0])));
  const y0 = Math.floor(Math.log10(Math.min(...all.map((p) => p[1]))));
  const y1 = Math.ceil(Math.log10(Math.max(...all.map((p) => p[1]))));
  const px = (t: number) => L + ((Math.log10(t) - x0) / (x1 - x0)) * (W - L - R);
  const py = (ms: number) => H - B - ((Math.log10(ms) - y0) / (y1 - y0)) * (H - T - B);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${L}" y="22" font-size="14" font-weight="bold">Latency vs tokens (log-log), CPU, batch 1 — seeded weights</text>`,
  ];
  for (let e = y0; e <= y1; e++) {
    const y = py(10 ** e);
    out.push(`<line x1="${L}" y1="${y}" x2="${W - R}" y2="${y}" stroke="#ddd"/>`, `<text x="${L - 8}" y="${y + 4}" text-anchor="end">${10 ** e >= 1000 ? `${10 ** (e - 3)} s` : `${10 ** e} ms`}</text>`);
  }
  for (const t of [196, 1024, 4096, 16384]) {
    const x = px(t);
    out.push(`<line x1="${x}" y1="${T}" x2="${x}" y2="${H - B}" stroke="#ddd"/>`, `<text x="${x}" y="${H - B + 18}" text-anchor="middle">${t}</text>`);
  }
  out.push(
    `<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#333"/>`,
    `<text x="${(L + W - R) / 2}" y="${H - 18}" text-anchor="middle">tokens (patch 16: 224, 512, 1024, 2048 px)</text>`,
    `<text transform="translate(18 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">median session.run latency</text>`,
  );
  // Reference: latency ∝ tokens from ViG-T's first point.
  const ref = series[0].pts[0];
  if (ref) {
    const xEnd = 10 ** x1;
    const yEnd = (ref[1] * xEnd) / ref[0];
    const clipX = yEnd > 10 ** y1 ? (ref[0] * 10 ** y1) / ref[1] : xEnd;
    out.push(`<line x1="${px(ref[0])}" y1="${py(ref[1])}" x2="${px(clipX)}" y2="${py((ref[1] * clipX) / ref[0])}" stroke="#555" stroke-dasharray="6 4"/>`);
  }
  for (const s of series) {
    if (s.pts.length === 0) continue;
    out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${s.pts.map(([t, m]) => `${px(t).toFixed(1)},${py(m).toFixed(1)}`).join(' ')}"/>`);
    for (const [t, m] of s.pts) out.push(`<circle cx="${px(t).toFixed(1)}" cy="${py(m).toFixed(1)}" r="4" fill="${s.color}"><title>${s.model}: ${t} tokens, ${m.toFixed(1)} ms</title></circle>`);
  }
  const lx = W - R + 14;
  out.push(
    `<line x1="${lx}" y1="${T + 10}" x2="${lx + 24}" y2="${T + 10}" stroke="#1f77b4" stroke-width="2"/><text x="${lx + 30}" y="${T + 14}">ViG-T (${MAIN_GLA} GLA)</text>`,
    `<line x1="${lx}" y1="${T + 30}" x2="${lx + 24}" y2="${T + 30}" stroke="#d62728" stroke-width="2"/><text x="${lx + 30}" y="${T + 34}">DeiT-T</text>`,
    `<line x1="${lx}" y1="${T + 50}" x2="${lx + 24}" y2="${T + 50}" stroke="#555" stroke-dasharray="6 4"/><text x="${lx + 30}" y="${T + 54}">∝ tokens (token ratio,</text><text x="${lx + 30}" y="${T + 68}">from ViG-T @ 224)</text>`,
  );
  const skipped = r.rows.filter((x) => !x.result);
  skipped.forEach((x, i) => out.push(`<text x="${lx}" y="${T + 100 + 16 * i}" fill="#888">${x.model} @ ${x.size}: skipped</text>`));
  out.push('</svg>');
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------

export async function runVigBench(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { threads: { type: 'string' }, sizes: { type: 'string' }, json: { type: 'boolean' } } });
  const threads = Number(values.threads ?? cpus().length);
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`--threads must be a positive integer, got ${values.threads}`);
  const sizes = (values.sizes ?? SIZES.join(',')).split(',').map(Number);
  for (const s of sizes) if (!Number.isInteger(s) || s <= 0 || s % 16) throw new Error(`--sizes must be positive multiples of 16, got ${s}`);
  const results = await benchVig({ threads, sizes });
  const md = markdown(results);
  const paths = writeResults('vig-cpu', results, md);
  const svgPath = join(projectRoot(), 'bench', 'results', 'vig-cpu.svg');
  writeFileSync(svgPath, svg(results));
  if (values.json) console.log(JSON.stringify(results, null, 2));
  else console.log(md + `\nwritten: ${paths.json}, ${paths.md}, ${svgPath}`);
}

// `node bench/vig.ts --child '<job json>'` (spawned by the parent): one configuration, one JSON line on stdout.
serveChild<Job>(THIS_FILE, runChild);
