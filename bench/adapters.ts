/**
 * `fovea bench adapters`: the DoRA merge at d_out = d_in = 8192, r = 384 (DESIGN "Fused ops" 3) — time and
 * extra memory of the factored kernel in src/models/adapters.ts against a dense reference that materialises
 * s·B·A as a float32 d_out×d_in matrix first (what PEFT's merge does), plus the kernel's 'direct' row norm.
 *
 * Every path merges in place into the same pre-touched copy of W, so "extra" is everything a path needs
 * besides W. It is reported three ways: counted (the bytes the path allocates explicitly), the growth of
 * process.memoryUsage().arrayBuffers over the call, and the peak RSS over the call, sampled every
 * millisecond from a worker thread (the merge blocks the main thread), minus the RSS before it.
 */
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Worker } from 'node:worker_threads';
import { adapterScratchBytes, loraScale, mergeDora, mergeLora, type LoraDims } from '../src/models/adapters.js';
import { describeMachine, machine, round, summarize, writeResults, type Summary } from './stats.js';

export interface AdaptersBenchOptions {
  dOut: number;
  dIn: number;
  rank: number;
  /** Runs of the factored kernel; the direct and dense paths take their own (fewer) runs. */
  runs: number;
  directRuns: number;
  denseRuns: number;
  seed: number;
}

type PathName = 'factored' | 'direct' | 'dense';

interface PathResult {
  path: PathName;
  description: string;
  timeMs: Summary;
  countedBytes: number;
  /** Largest growth of process.memoryUsage().arrayBuffers over one call. */
  arrayBufferBytes: number;
  /** Largest peak-RSS growth over one call. */
  peakRssBytes: number;
}

const descriptions: Record<PathName, string> = {
  factored: 'factored norm (P = W·Aᵀ per row block, G = A·Aᵀ)',
  direct: "'direct' norm (summed from each formed row)",
  dense: 'dense s·B·A in float32, then W + ΔW, row norms',
};

/** The dense reference: materialise ΔW = s·B·A (float32, d_out×d_in), then merge row by row in place. */
function denseDora(W: Float32Array, A: Float32Array, B: Float32Array, m: Float32Array, s: number, dims: LoraDims): void {
  const { dOut, dIn } = dims;
  const delta = mergeLora(new Float32Array(dOut * dIn), A, B, s, dims, { inPlace: true });
  for (let i = 0; i < dOut; i++) {
    const o = i * dIn;
    let sq = 0;
    for (let j = 0; j < dIn; j++) {
      const v = W[o + j] + delta[o + j];
      sq += v * v;
    }
    const f = sq > 0 ? m[i] / Math.sqrt(sq) : 0;
    for (let j = 0; j < dIn; j++) W[o + j] = f * (W[o + j] + delta[o + j]);
  }
}

const countedBytes = (path: PathName, dims: LoraDims): number =>
  path === 'dense' ? dims.dOut * dims.dIn * 4 + adapterScratchBytes('lora', dims) : adapterScratchBytes('dora', dims, { norm: path });

/** A worker that keeps the process's peak RSS in a shared slot while the main thread is busy. */
class RssSampler {
  private readonly peak = new BigInt64Array(new SharedArrayBuffer(8));
  private readonly worker: Worker;
  readonly ready: Promise<void>;

  constructor() {
    const source = `
      const { parentPort, workerData } = require('node:worker_threads');
      const peak = new BigInt64Array(workerData);
      setInterval(() => {
        const rss = BigInt(process.memoryUsage.rss());
        let seen = Atomics.load(peak, 0);
        while (rss > seen) { const prev = Atomics.compareExchange(peak, 0, seen, rss); if (prev === seen) break; seen = prev; }
      }, 1);
      parentPort.postMessage('ready');`;
    this.worker = new Worker(source, { eval: true, workerData: this.peak.buffer });
    this.ready = new Promise((resolve) => this.worker.once('message', () => resolve()));
  }

  reset(): number {
    const rss = process.memoryUsage.rss();
    Atomics.store(this.peak, 0, BigInt(rss));
    return rss;
  }

  read(): number {
    return Math.max(Number(Atomics.load(this.peak, 0)), process.memoryUsage.rss());
  }

  stop(): Promise<number> {
    return this.worker.terminate();
  }
}

/** A full collection between runs keeps one run's garbage out of the next one's baseline. */
function collector(): () => void {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed) return exposed;
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as unknown;
  return typeof gc === 'function' ? (gc as () => void) : () => {};
}

function uniform(seed: number, n: number, scale: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0; // mulberry32
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = (2 * (((t ^ (t >>> 14)) >>> 0) / 4294967296) - 1) * scale;
  }
  return out;
}

/** Largest per-row ‖x_i − y_i‖ / ‖y_i‖ between two merged weights. */
function worstRowDifference(x: Float32Array, y: Float32Array, dOut: number, dIn: number): number {
  let worst = 0;
  for (let i = 0; i < dOut; i++) {
    let diff = 0;
    let norm = 0;
    for (let o = i * dIn, end = o + dIn; o < end; o++) {
      diff += (x[o] - y[o]) ** 2;
      norm += y[o] ** 2;
    }
    worst = Math.max(worst, norm > 0 ? Math.sqrt(diff / norm) : Math.sqrt(diff));
  }
  return worst;
}

export async function benchAdapters(o: AdaptersBenchOptions): Promise<{ results: PathResult[]; worstRowDifference: number; loadavg: { before: number[]; after: number[] }; markdown: string }> {
  const dims: LoraDims = { dOut: o.dOut, dIn: o.dIn, rank: o.rank };
  const before = loadavg().map((x) => round(x, 2));
  const gc = collector();
  const W0 = uniform(o.seed, dims.dOut * dims.dIn, 1 / Math.sqrt(dims.dIn));
  const A = uniform(o.seed + 1, dims.rank * dims.dIn, 1 / Math.sqrt(dims.dIn));
  const B = uniform(o.seed + 2, dims.dOut * dims.rank, 0.05);
  const m = uniform(o.seed + 3, dims.dOut, 0.5).map((x) => 1 + x);
  const s = loraScale(2 * dims.rank, dims.rank);
  const work = new Float32Array(W0.length);
  const kept: Partial<Record<PathName, Float32Array>> = {};
  // JIT warm-up on a small shape, so the first timed run is not also the compile.
  const small = { dOut: 24, dIn: 1100, rank: 7 };
  mergeDora(uniform(1, 24 * 1100, 1), uniform(2, 7 * 1100, 1), uniform(3, 24 * 7, 1), uniform(4, 24, 1), 0.5, small, { norm: 'direct' });
  mergeDora(uniform(1, 24 * 1100, 1), uniform(2, 7 * 1100, 1), uniform(3, 24 * 7, 1), uniform(4, 24, 1), 0.5, small);

  const sampler = new RssSampler();
  await sampler.ready;
  const samples: Record<PathName, { ms: number[]; arrayBuffers: number[]; rss: number[] }> = { factored: { ms: [], arrayBuffers: [], rss: [] }, direct: { ms: [], arrayBuffers: [], rss: [] }, dense: { ms: [], arrayBuffers: [], rss: [] } };
  const wanted: Record<PathName, number> = { factored: o.runs, direct: o.directRuns, dense: o.denseRuns };
  try {
    // Rounds interleave the paths so that a noisy stretch of the machine hits all of them.
    for (let pass = 0; pass < Math.max(o.runs, o.directRuns, o.denseRuns); pass++) {
      for (const path of ['factored', 'direct', 'dense'] as const) {
        if (pass >= wanted[path]) continue;
        work.set(W0);
        gc();
        const buffers = process.memoryUsage().arrayBuffers;
        const rss = sampler.reset();
        const t = performance.now();
        if (path === 'dense') denseDora(work, A, B, m, s, dims);
        else mergeDora(work, A, B, m, s, dims, { inPlace: true, norm: path });
        samples[path].ms.push(performance.now() - t);
        samples[path].arrayBuffers.push(process.memoryUsage().arrayBuffers - buffers);
        samples[path].rss.push(sampler.read() - rss);
        if (pass === 0) kept[path] = work.slice();
      }
    }
  } finally {
    await sampler.stop();
  }
  const results = (['factored', 'direct', 'dense'] as const)
    .filter((path) => wanted[path] > 0)
    .map((path): PathResult => ({
      path,
      description: descriptions[path],
      timeMs: summarize(samples[path].ms),
      countedBytes: countedBytes(path, dims),
      arrayBufferBytes: Math.max(...samples[path].arrayBuffers),
      peakRssBytes: Math.max(...samples[path].rss),
    }));
  const difference = kept.factored && kept.dense ? worstRowDifference(kept.factored, kept.dense, dims.dOut, dims.dIn) : NaN;
  const load = { before, after: loadavg().map((x) => round(x, 2)) };
  return { results, worstRowDifference: difference, loadavg: load, markdown: table(o, results, difference, load) };
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

function table(o: AdaptersBenchOptions, rs: PathResult[], difference: number, load: { before: number[]; after: number[] }): string {
  const dense = rs.find((r) => r.path === 'dense');
  const factored = rs.find((r) => r.path === 'factored');
  const ratio = (key: 'countedBytes' | 'arrayBufferBytes' | 'peakRssBytes') => (dense && factored ? `${((100 * factored[key]) / dense[key]).toFixed(1)} %` : 'n/a');
  const lines = [
    `# bench adapters — DoRA merge, d_out ${o.dOut}, d_in ${o.dIn}, r ${o.rank}`,
    '',
    `Machine: ${describeMachine(machine())}; load average ${load.before.join(' / ')} before, ${load.after.join(' / ')} after.`,
    `Runs: factored ${o.runs}, direct ${o.directRuns}, dense ${o.denseRuns} (fewer for the other paths to keep the bench short), interleaved; time in ms, median / p95.`,
    'Extra memory is what a merge needs besides W (every path merges in place): counted = bytes the path allocates explicitly;',
    'ArrayBuffers = growth of process.memoryUsage().arrayBuffers over the call; peak RSS = largest RSS sampled every 1 ms from a worker during the call, minus RSS before it (largest over runs).',
    '',
    '| path | time (ms) | counted extra | ArrayBuffers | peak RSS |',
    '|---|---|---|---|---|',
    ...rs.map((r) => `| ${r.description} | ${r.timeMs.median.toFixed(0)} / ${r.timeMs.p95.toFixed(0)} (n ${r.timeMs.n}) | ${mib(r.countedBytes)} | ${mib(r.arrayBufferBytes)} | ${mib(r.peakRssBytes)} |`),
    '',
    `Factored extra memory as a share of dense: counted ${ratio('countedBytes')}, ArrayBuffers ${ratio('arrayBufferBytes')}, peak RSS ${ratio('peakRssBytes')} (target: under 10 %).`,
    `Largest per-row relative difference, factored vs dense result: ${difference.toExponential(2)}.`,
    '',
  ];
  return lines.join('\n');
}

export async function runAdaptersBench(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    allowPositionals: true,
    strict: false,
    options: { runs: { type: 'string' }, 'direct-runs': { type: 'string' }, 'dense-runs': { type: 'string' }, d: { type: 'string' }, rank: { type: 'string' }, seed: { type: 'string' }, json: { type: 'boolean' } },
  });
  const int = (name: string, fallback: number, min: number): number => {
    const raw = values[name];
    const x = typeof raw === 'string' ? Number(raw) : fallback;
    if (!Number.isInteger(x) || x < min) throw new Error(`--${name} must be an integer ≥ ${min}, got ${String(raw)}`);
    return x;
  };
  const d = int('d', 8192, 1);
  const o: AdaptersBenchOptions = { dOut: d, dIn: d, rank: int('rank', 384, 1), runs: int('runs', 3, 1), directRuns: int('direct-runs', 2, 0), denseRuns: int('dense-runs', 2, 0), seed: int('seed', 2024, 0) };
  const { results, worstRowDifference, loadavg, markdown } = await benchAdapters(o);
  const paths = writeResults('adapters', { bench: 'adapters', machine: machine(), options: o, loadavg, results, worstRowDifference }, markdown);
  if (values.json === true) console.log(JSON.stringify(results, null, 2));
  else console.log(markdown + `\nwritten: ${paths.json}, ${paths.md}`);
}
