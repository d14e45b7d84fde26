/**
 * `fovea bench detect`: the detect path on bus.jpg for LeYOLO-Nano at 320, 480 and 640 — decode,
 * pre-process, inference and post-process as the server measures them, the whole HTTP round trip
 * against a real server on a real port, and the bare `session.run` on a ready tensor.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { defaultConfig } from '../src/config.js';
import type { DetectResponse } from '../src/pipeline/detect.js';
import type { ExecutionProvider } from '../src/pipeline/messages.js';
import { buildApp } from '../src/stream/app.js';
import { sessionOptions } from '../src/pipeline/session-options.js';
import { describeMachine, machine, projectRoot, round, summarize, writeResults, type Summary } from './stats.js';

export interface DetectBenchOptions {
  ep: ExecutionProvider;
  runs: number;
  warmup: number;
  sizes: number[];
  image: string;
  model: string;
  /** Checkpoint for the model (the official one makes post-processing realistic); seeded when absent. */
  weights?: string;
}

interface SizeResult {
  size: number;
  decode: Summary;
  preprocess: Summary;
  infer: Summary;
  post: Summary;
  roundTrip: Summary;
  bareRun: Summary;
  /** (decode + pre-process + post-process) / bare session.run, medians. */
  overhead: number;
}

async function bareRun(path: string, size: number, threads: number, spin: boolean, ep: ExecutionProvider, runs: number, warmup: number): Promise<number[]> {
  const session = await ort.InferenceSession.create(path, { ...sessionOptions(threads, spin), executionProviders: ep === 'cuda' ? ['cuda', 'cpu'] : ['cpu'] });
  const input = new Float32Array(3 * size * size).fill(114 / 255);
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', input, [1, 3, size, size]) };
  const times: number[] = [];
  for (let i = 0; i < warmup + runs; i++) {
    const t = performance.now();
    await session.run(feeds);
    if (i >= warmup) times.push(performance.now() - t);
  }
  await session.release();
  return times;
}

export async function benchDetect(o: DetectBenchOptions): Promise<{ results: SizeResult[]; markdown: string }> {
  const image = readFileSync(o.image);
  const config = { ...defaultConfig(), ep: o.ep, port: 0, host: '127.0.0.1', logLevel: 'silent' as const, preload: [], weights: o.weights ? { [o.model]: o.weights } : {} };
  const app = await buildApp(config);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const results: SizeResult[] = [];
  try {
    for (const size of o.sizes) {
      const spec = await app.detector.spec(o.model, size);
      await app.pool.warmup(spec);
      const rows: DetectResponse[] = [];
      const trips: number[] = [];
      for (let i = 0; i < o.warmup + o.runs; i++) {
        const t = performance.now();
        const res = await fetch(`http://127.0.0.1:${port}/v1/detect?model=${o.model}&size=${size}`, { method: 'POST', body: image, headers: { 'content-type': 'image/jpeg' } });
        const body = (await res.json()) as DetectResponse;
        if (!res.ok) throw new Error(`detect failed: ${JSON.stringify(body)}`);
        if (i >= o.warmup) {
          trips.push(performance.now() - t);
          rows.push(body);
        }
      }
      const pick = (k: keyof DetectResponse['timings']) => summarize(rows.map((r) => r.timings[k]));
      const bare = summarize(await bareRun(spec.path, size, app.pool.config.intraOpThreads, app.pool.config.spin, o.ep, o.runs, o.warmup));
      const [decode, preprocess, infer, post] = [pick('decode'), pick('preprocess'), pick('infer'), pick('post')];
      results.push({ size, decode, preprocess, infer, post, roundTrip: summarize(trips), bareRun: bare, overhead: round((decode.median + preprocess.median + post.median) / bare.median, 4) });
    }
  } finally {
    await app.close();
  }
  return { results, markdown: table(o, results) };
}

function table(o: DetectBenchOptions, rs: SizeResult[]): string {
  const m = machine();
  const cell = (s: Summary) => `${s.median.toFixed(2)} / ${s.p95.toFixed(2)}`;
  const lines = [
    `# bench detect — ${o.model} (${o.weights ? `weights ${o.weights.split('/').pop()}` : 'seeded, untrained'}), ${o.image.split('/').pop()}, ep ${o.ep}`,
    '',
    `Machine: ${describeMachine(m)}; onnxruntime-node ${ort.env.versions.common}. ${o.runs} runs after ${o.warmup} warm-up, milliseconds, median / p95.`,
    '',
    '| size | decode | pre-process | inference | post-process | HTTP round trip | bare session.run | overhead (dec+pre+post)/bare |',
    '|---|---|---|---|---|---|---|---|',
    ...rs.map((r) => `| ${r.size} | ${cell(r.decode)} | ${cell(r.preprocess)} | ${cell(r.infer)} | ${cell(r.post)} | ${cell(r.roundTrip)} | ${cell(r.bareRun)} | ${(100 * r.overhead).toFixed(1)} % |`),
    '',
  ];
  return lines.join('\n');
}

export function defaultImage(): string {
  return join(projectRoot(), '..', 'shared', 'fixtures', 'images', 'bus.jpg');
}

/** The official Nano checkpoint where the repository's test fixtures sit beside it. */
export function defaultWeights(): string | undefined {
  const p = join(projectRoot(), '..', 'shared', 'fixtures', 'weights', 'LeYOLONano.pt');
  return existsSync(p) ? p : undefined;
}

export async function runDetectBench(o: DetectBenchOptions, json: boolean): Promise<void> {
  const { results, markdown } = await benchDetect(o);
  const paths = writeResults(`detect-${o.ep}`, { bench: 'detect', machine: machine(), ort: ort.env.versions.common, options: o, results }, markdown);
  if (json) console.log(JSON.stringify(results, null, 2));
  else console.log(markdown + `\nwritten: ${paths.json}, ${paths.md}`);
}
