/**
 * `fovea bench import`: how long it takes to go from the official LeYOLO-Nano `.pt` to a graph ready
 * for a session — read the checkpoint, map and fold, build, serialize — with an empty build cache
 * (cold) and with the graph already cached (a second start).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Params } from '../src/models/graph/params.js';
import { serializeModel } from '../src/models/graph/serialize.js';
import { readStateDict } from '../src/models/io/index.js';
import { buildLeYolo } from '../src/models/leyolo.js';
import { ModelRegistry } from '../src/models/registry.js';
import { describeMachine, machine, projectRoot, summarize, writeResults, type Summary } from './stats.js';

async function timed<T>(f: () => Promise<T> | T): Promise<[T, number]> {
  const t = performance.now();
  const r = await f();
  return [r, performance.now() - t];
}

export async function runImportBench(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { weights: { type: 'string' }, runs: { type: 'string' }, size: { type: 'string' }, json: { type: 'boolean' } } });
  const weights = values.weights ?? join(projectRoot(), '..', 'shared', 'fixtures', 'weights', 'LeYOLONano.pt');
  const runs = Number(values.runs ?? 10);
  const size = Number(values.size ?? 640);
  const stages = { read: [] as number[], build: [] as number[], serialize: [] as number[] };
  const cold: number[] = [];
  const cached: number[] = [];
  let firstCold = 0;
  for (let i = 0; i < runs; i++) {
    const cacheDir = mkdtempSync(join(tmpdir(), 'fovea-bench-import-'));
    try {
      const [, coldMs] = await timed(async () => new ModelRegistry({ cacheDir }).useWeights('leyolo-nano', weights).then(() => undefined));
      if (i === 0) firstCold = coldMs;
      cold.push(coldMs);
      const [, cachedMs] = await timed(async () => new ModelRegistry({ cacheDir }).useWeights('leyolo-nano', weights).then(() => undefined));
      cached.push(cachedMs);
    } finally {
      rmSync(cacheDir, { recursive: true, force: true });
    }
    const [sd, readMs] = await timed(() => readStateDict(weights));
    const [g, buildMs] = await timed(() => buildLeYolo('nano', size, Params.fromStateDict(sd)));
    const [, serMs] = await timed(() => serializeModel(g.toModel()));
    stages.read.push(readMs);
    stages.build.push(buildMs);
    stages.serialize.push(serMs);
  }
  const rows: Array<[string, Summary]> = [
    ['cold: digest + read + build + write (empty cache)', summarize(cold)],
    ['cached: digest + cache hit (second start)', summarize(cached)],
    ['  read checkpoint (zip + pickle + FP16 → FP32)', summarize(stages.read)],
    ['  map, fold BatchNorm, build graph', summarize(stages.build)],
    ['  serialize ModelProto', summarize(stages.serialize)],
  ];
  const m = machine();
  const md = [
    `# bench import — LeYOLO-Nano from the official .pt, size ${size}`,
    '',
    `Machine: ${describeMachine(m)}. ${runs} runs in one process (the first cold run, JIT included: ${firstCold.toFixed(1)} ms), milliseconds.`,
    '',
    '| step | median | p95 |',
    '|---|---|---|',
    ...rows.map(([name, s]) => `| ${name} | ${s.median.toFixed(1)} | ${s.p95.toFixed(1)} |`),
    '',
  ].join('\n');
  const paths = writeResults('import', { bench: 'import', machine: m, size, runs, firstColdMs: firstCold, results: Object.fromEntries(rows) }, md);
  if (values.json) console.log(JSON.stringify(Object.fromEntries(rows), null, 2));
  else console.log(md + `\nwritten: ${paths.json}, ${paths.md}`);
}
