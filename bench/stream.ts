/**
 * `fovea bench stream`: 1, 2, 4, 8 and 16 concurrent WebSocket streams, each sending 640×480 JPEG
 * frames at 30 fps against a real server process (LeYOLO-Nano at 320) — processed fps per stream and
 * in total, drop rate, client-side p50/p95 latency, the server's RSS over time — and, in the same run,
 * the same pipeline (decode, pre-process, infer, post) in a plain loop without the server, and what
 * cross-stream batching buys (16 streams with max batch 1).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { connect, type StreamClient } from '../src/client/index.js';
import { ModelRegistry } from '../src/models/registry.js';
import { DetectService } from '../src/pipeline/detect.js';
import { InferencePool } from '../src/pipeline/pool.js';
import { describeMachine, machine, projectRoot, quantile, round, writeResults } from './stats.js';
import { defaultWeights } from './detect.js';

interface RunResult {
  streams: number;
  maxBatch: number;
  seconds: number;
  sent: number;
  results: number;
  dropped: number;
  errors: number;
  /** Processed (answered with a result) frames per second. */
  fpsTotal: number;
  fpsPerStream: number;
  dropRate: number;
  latencyP50: number;
  latencyP95: number;
  /** Server RSS in MiB, sampled once a second. */
  rssMiB: number[];
}

const FPS = 30;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

/** The server as its own process, as a user runs it, so its memory is its own. */
async function startServer(port: number, weights: string | undefined, maxBatch: number): Promise<ChildProcess> {
  const here = fileURLToPath(import.meta.url);
  const ts = here.endsWith('.ts');
  const cli = ts ? join(projectRoot(), 'src', 'cli.ts') : join(projectRoot(), 'dist', 'src', 'cli.js');
  const args = [...(ts ? ['--import', 'tsx'] : []), cli, 'serve', '--host', '127.0.0.1', '--port', String(port), '--max-batch', String(maxBatch), '--log-level', 'warn'];
  if (weights) args.push('--weights', `leyolo-nano=${weights}`);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 600; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) return child;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill();
  throw new Error('the server did not start');
}

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return round(kb / 1024, 1);
}

async function frames(count: number): Promise<Uint8Array[]> {
  const dir = join(projectRoot(), '..', 'shared', 'fixtures', 'video-tennis');
  const names = readdirSync(dir).filter((f) => f.endsWith('.jpg')).sort().slice(0, count);
  return Promise.all(names.map((n) => sharp(join(dir, n)).resize(640, 480, { fit: 'fill' }).jpeg({ quality: 85 }).toBuffer()));
}

/** One stream: sends at 30 fps for `seconds`, reads every answer, and measures send → answer latency. */
async function runStream(url: string, jpegs: Uint8Array[], seconds: number): Promise<{ sent: number; results: number; dropped: number; errors: number; latencies: number[] }> {
  const client: StreamClient = await connect(url);
  await client.start('detect', 'leyolo-nano', { size: 320, track: false });
  const sentAt = new Map<number, number>();
  const latencies: number[] = [];
  let results = 0;
  let dropped = 0;
  let errors = 0;
  const reader = (async () => {
    for await (const m of client.messages()) {
      if (m.type === 'result') {
        results++;
        latencies.push(performance.now() - (sentAt.get(m.frameId) ?? performance.now()));
      } else if (m.type === 'dropped') dropped++;
      else if (m.type === 'error') errors++;
      if (m.type !== 'ready' && 'frameId' in m && m.frameId !== undefined) sentAt.delete(m.frameId);
    }
  })();
  const start = performance.now();
  let sent = 0;
  while (performance.now() - start < seconds * 1000) {
    const due = start + (sent * 1000) / FPS;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    sent++;
    sentAt.set(sent, performance.now());
    client.sendEncoded(sent, jpegs[sent % jpegs.length]);
  }
  client.stop();
  await reader;
  await client.close();
  return { sent, results, dropped, errors, latencies };
}

async function run(streams: number, maxBatch: number, seconds: number, jpegs: Uint8Array[], weights: string | undefined): Promise<RunResult> {
  const port = await freePort();
  const server = await startServer(port, weights, maxBatch);
  const rss: number[] = [rssMiB(server.pid!)];
  const sampler = setInterval(() => rss.push(rssMiB(server.pid!)), 1000);
  try {
    const per = await Promise.all(Array.from({ length: streams }, () => runStream(`ws://127.0.0.1:${port}/v1/stream`, jpegs, seconds)));
    const sum = (k: 'sent' | 'results' | 'dropped' | 'errors') => per.reduce((n, p) => n + p[k], 0);
    const lat = per.flatMap((p) => p.latencies);
    const results = sum('results');
    return {
      streams,
      maxBatch,
      seconds,
      sent: sum('sent'),
      results,
      dropped: sum('dropped'),
      errors: sum('errors'),
      fpsTotal: round(results / seconds, 1),
      fpsPerStream: round(results / seconds / streams, 1),
      dropRate: round(sum('dropped') / Math.max(1, sum('sent')), 3),
      latencyP50: round(quantile(lat, 0.5), 1),
      latencyP95: round(quantile(lat, 0.95), 1),
      rssMiB: rss,
    };
  } finally {
    clearInterval(sampler);
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
  }
}

/** The same pipeline, one frame after another, with no server and no sockets. */
async function plainLoop(seconds: number, jpegs: Uint8Array[], weights: string | undefined): Promise<number> {
  const registry = new ModelRegistry();
  if (weights) await registry.useWeights('leyolo-nano', weights);
  const pool = new InferencePool({ log: () => undefined });
  try {
    const service = new DetectService(registry, pool);
    for (let i = 0; i < 10; i++) await service.detectRaw(jpegs[i % jpegs.length], { size: 320 });
    let n = 0;
    const start = performance.now();
    while (performance.now() - start < seconds * 1000) await service.detectRaw(jpegs[n++ % jpegs.length], { size: 320 });
    return round(n / ((performance.now() - start) / 1000), 1);
  } finally {
    await pool.close();
  }
}

export async function runStreamBench(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { seconds: { type: 'string' }, streams: { type: 'string' }, weights: { type: 'string' }, seeded: { type: 'boolean' }, json: { type: 'boolean' } } });
  const seconds = Number(values.seconds ?? 20);
  const counts = (values.streams ?? '1,2,4,8,16').split(',').map(Number);
  const weights = values.seeded ? undefined : (values.weights ?? defaultWeights());
  if (weights && !existsSync(weights)) throw new Error(`no checkpoint at ${weights}`);
  const jpegs = await frames(70);
  const plain = await plainLoop(Math.min(seconds, 10), jpegs, weights);
  const runs: RunResult[] = [];
  for (const s of counts) runs.push(await run(s, 8, seconds, jpegs, weights));
  const top = Math.max(...counts);
  const unbatched = await run(top, 1, seconds, jpegs, weights);
  const m = machine();
  const interval = 1000 / FPS;
  const row = (r: RunResult) => {
    const saturated = r.fpsTotal < 0.95 * r.streams * FPS;
    return `| ${r.streams} | ${r.maxBatch} | ${r.fpsPerStream} | ${r.fpsTotal} | ${(100 * r.fpsTotal / plain).toFixed(0)} % | ${(100 * r.dropRate).toFixed(1)} % | ${r.latencyP50} / ${r.latencyP95}${!saturated && r.latencyP95 > 2 * interval ? ' ⚠' : ''} | ${saturated ? 'yes' : 'no'} | ${r.rssMiB[0]} → ${Math.max(...r.rssMiB)} → ${r.rssMiB[r.rssMiB.length - 1]} |`;
  };
  const md = [
    `# bench stream — LeYOLO-Nano at 320 (${weights ? 'official weights' : 'seeded'}), 640×480 JPEG at ${FPS} fps per stream, ${seconds} s`,
    '',
    `Machine: ${describeMachine(m)}. The server runs as its own process (\`fovea serve\`); clients in the bench process.`,
    '',
    `Plain loop (decode → pre-process → infer → post, one frame at a time, no server): **${plain} fps**.`,
    '',
    '| streams | max batch | fps per stream | fps total | of plain loop | dropped | latency p50 / p95 (ms) | saturated | server RSS MiB start → max → end |',
    '|---|---|---|---|---|---|---|---|---|',
    ...runs.map(row),
    row(unbatched),
    '',
    `Cross-stream batching at ${top} streams: ${runs.find((r) => r.streams === top)?.fpsTotal ?? '?'} fps with max batch 8 against ${unbatched.fpsTotal} fps with max batch 1.`,
    '',
  ].join('\n');
  const paths = writeResults('stream-cpu', { bench: 'stream', machine: m, fps: FPS, seconds, plainLoopFps: plain, runs, unbatched }, md);
  if (values.json) console.log(JSON.stringify({ plain, runs, unbatched }, null, 2));
  else console.log(md + `\nwritten: ${paths.json}, ${paths.md}`);
}
