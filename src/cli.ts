#!/usr/bin/env node
/** `fovea serve | detect | classify | embed | eval | models | build | bench`. */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { defaultConfig, type ServerConfig } from './config.js';
import { FoveaError } from './errors.js';
import { CheckpointMismatchError } from './models/graph/params.js';
import { CheckpointError } from './models/io/index.js';
import { ManifestError } from './models/manifest.js';
import { ChangeMetrics, confusion, rleToMask, type Rle } from './heads/change/index.js';
import { DEFAULT_CHANGE_MODEL, DEFAULT_MODEL, ModelRegistry, projectRoot } from './models/registry.js';
import { ChangeService } from './pipeline/change.js';
import { decodeImage } from './pipeline/decode.js';
import { ClassifyService, DEFAULT_CLASSIFIER } from './pipeline/classify.js';
import { DetectService } from './pipeline/detect.js';
import type { ExecutionProvider } from './pipeline/messages.js';
import { InferencePool } from './pipeline/pool.js';
import { buildApp, preload } from './stream/app.js';

const USAGE = `usage:
  fovea serve [--port 8080] [--host 0.0.0.0] [--ep cpu|cuda] [--workers N] [--weights MODEL=PATH]... [--adapter MODEL:NAME=PATH]... [--max-batch 8] [--max-delay 1] [--log-level info]
  fovea detect IMAGE [--model leyolo-nano] [--size 640] [--conf 0.25] [--iou 0.7] [--max-det 300] [--weights PATH] [--ep cpu|cuda]
  fovea classify IMAGE [--model vig-t] [--size 224] [--top-k 5] [--weights PATH] [--ep cpu|cuda]
  fovea embed IMAGE [--model vig-t] [--size 224] [--weights PATH] [--ep cpu|cuda]
  fovea eval change [--model fsgnet] [--weights PATH] [--data ../shared/fixtures/change-levir] [--tile 256] [--overlap 32] [--ep cpu|cuda]
  fovea models [--json]
  fovea build MODEL [--size 640] [--weights PATH]
  fovea bench detect|stream|import|adapters|track|vig|change [options]`;

class UsageError extends Error {}

const num = (v: string | undefined, name: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got '${v}'`);
  return n;
};

const ep = (v: string | undefined): ExecutionProvider | undefined => {
  if (v === undefined || v === 'cpu' || v === 'cuda') return v;
  throw new UsageError(`--ep must be cpu or cuda, got '${v}'`);
};

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'silent'] as const;
const logLevel = (v: string | undefined): ServerConfig['logLevel'] | undefined => {
  if (v === undefined) return undefined;
  const found = LOG_LEVELS.find((l) => l === v);
  if (!found) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got '${v}'`);
  return found;
};

/** `--weights MODEL=PATH` (serve) into a map; a bare PATH applies to the default model. */
function weightsMap(list: string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const w of list ?? []) {
    const eq = w.indexOf('=');
    if (eq > 0) out[w.slice(0, eq)] = w.slice(eq + 1);
    else out[DEFAULT_MODEL] = w;
  }
  return out;
}

/** `--adapter MODEL:NAME=PATH` (serve, repeatable) into model id → name → path. */
function adaptersMap(list: string[] | undefined): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  for (const a of list ?? []) {
    const m = /^([^:=]+):([^=]+)=(.+)$/.exec(a);
    if (!m) throw new UsageError(`--adapter takes MODEL:NAME=PATH (e.g. lorat-b224:tennis=tennis.safetensors), got '${a}'`);
    const [, model, name, path] = m;
    out[model] ??= {};
    if (out[model][name] !== undefined) throw new UsageError(`--adapter ${model}:${name} is given twice`);
    out[model][name] = path;
  }
  return out;
}

async function serve(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { port: { type: 'string' }, host: { type: 'string' }, ep: { type: 'string' }, workers: { type: 'string' }, weights: { type: 'string', multiple: true }, adapter: { type: 'string', multiple: true }, 'max-batch': { type: 'string' }, 'max-delay': { type: 'string' }, 'log-level': { type: 'string' } } });
  const base = defaultConfig();
  const config: ServerConfig = {
    ...base,
    port: num(values.port, 'port') ?? base.port,
    host: values.host ?? base.host,
    ep: ep(values.ep) ?? base.ep,
    workers: num(values.workers, 'workers') ?? base.workers,
    weights: weightsMap(values.weights),
    adapters: adaptersMap(values.adapter),
    maxBatch: num(values['max-batch'], 'max-batch') ?? base.maxBatch,
    maxDelayMs: num(values['max-delay'], 'max-delay') ?? base.maxDelayMs,
    logLevel: logLevel(values['log-level']) ?? base.logLevel,
  };
  const app = await buildApp(config);
  await preload(app);
  await app.listen({ port: config.port, host: config.host });
  const stop = () => void app.close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

async function detect(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { model: { type: 'string' }, size: { type: 'string' }, conf: { type: 'string' }, iou: { type: 'string' }, 'max-det': { type: 'string' }, weights: { type: 'string' }, ep: { type: 'string' } },
  });
  if (positionals.length !== 1) throw new UsageError('detect takes one IMAGE path');
  const registry = new ModelRegistry();
  await registry.addManifests();
  if (values.weights) await registry.useWeights(values.model ?? DEFAULT_MODEL, values.weights);
  const pool = new InferencePool({ ep: ep(values.ep) ?? 'cpu', log: (level, m) => console.error(`${level}: ${m}`) });
  try {
    const service = new DetectService(registry, pool);
    const r = await service.detect(readFileSync(positionals[0]), {
      model: values.model,
      size: num(values.size, 'size'),
      conf: num(values.conf, 'conf'),
      iou: num(values.iou, 'iou'),
      maxDet: num(values['max-det'], 'max-det'),
    });
    if (!r.model.trained) console.error(`note: ${r.model.id} has no trained weights: these outputs come from a seeded graph, not predictions`);
    console.log(JSON.stringify(r, null, 2));
  } finally {
    await pool.close();
  }
}

/** `fovea classify IMAGE`: the same JSON as `POST /v1/classify`. */
/** `fovea classify` and `fovea embed`: one image through the service behind `POST /v1/classify` / `/v1/embed`, printed as its JSON. */
async function classifyCommand(command: 'classify' | 'embed', args: string[]): Promise<void> {
  const options = { model: { type: 'string' }, size: { type: 'string' }, weights: { type: 'string' }, ep: { type: 'string' } } as const;
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: command === 'classify' ? { ...options, 'top-k': { type: 'string' } } : options });
  if (positionals.length !== 1) throw new UsageError(`${command} takes one IMAGE path`);
  const model = values.model ?? DEFAULT_CLASSIFIER;
  const registry = new ModelRegistry();
  await registry.addManifests();
  registry.requireTask(model, 'classify');
  if (values.weights) await registry.useWeights(model, values.weights);
  const pool = new InferencePool({ ep: ep(values.ep) ?? 'cpu', log: (level, m) => console.error(`${level}: ${m}`) });
  try {
    const service = new ClassifyService(registry, pool, new DetectService(registry, pool));
    const image = readFileSync(positionals[0]);
    const req = { model, size: num(values.size, 'size') };
    const topK = 'top-k' in values ? (values['top-k'] as string | undefined) : undefined;
    const r = command === 'classify' ? await service.classify(image, { ...req, topK: num(topK, 'top-k') }) : await service.embed(image, req);
    if (!r.model.trained) console.error(`note: ${r.model.id} has no trained weights: these outputs come from a seeded graph, not predictions`);
    console.log(JSON.stringify(r, null, 2));
  } finally {
    await pool.close();
  }
}

/**
 * `fovea eval change`: every pair `A/NAME`, `B/NAME` with its `label/NAME` under `--data` through the same path as
 * `POST /v1/change` (tiled, stitched argmax masks); TP/FP/FN/TN summed over all pixels of all pairs, then
 * precision, recall, F1, IoU (change class) and OA as FSG-Net's eval.py computes them (heads/change/metrics.ts).
 * Prints JSON with the per-pair counts; a seeded (untrained) model says so in `trained` and `note`.
 */
async function evaluate(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { model: { type: 'string' }, weights: { type: 'string' }, data: { type: 'string' }, tile: { type: 'string' }, overlap: { type: 'string' }, ep: { type: 'string' } },
  });
  if (positionals.length !== 1 || positionals[0] !== 'change') throw new UsageError('eval takes one task: change');
  const model = values.model ?? DEFAULT_CHANGE_MODEL;
  const data = resolve(values.data ?? join(projectRoot(), '..', 'shared', 'fixtures', 'change-levir'));
  for (const sub of ['A', 'B', 'label']) if (!existsSync(join(data, sub))) throw new UsageError(`--data ${data} has no ${sub}/ folder (expected A/, B/, label/)`);
  const names = readdirSync(join(data, 'A')).filter((n) => /\.(png|jpe?g|webp)$/i.test(n)).sort();
  if (names.length === 0) throw new UsageError(`--data ${data}: A/ holds no images`);
  for (const n of names) for (const sub of ['B', 'label']) if (!existsSync(join(data, sub, n))) throw new UsageError(`--data ${data}: ${sub}/${n} is missing`);
  const registry = new ModelRegistry();
  await registry.addManifests();
  registry.requireTask(model, 'change');
  if (values.weights) await registry.useWeights(model, values.weights);
  const pool = new InferencePool({ ep: ep(values.ep) ?? 'cpu', log: (level, m) => console.error(`${level}: ${m}`) });
  try {
    const service = new ChangeService(registry, pool, new DetectService(registry, pool));
    const metrics = new ChangeMetrics();
    const pairs = [];
    let info: { id: string; trained: boolean; input: [number, number] } | undefined;
    for (const name of names) {
      const r = await service.changeRaw(readFileSync(join(data, 'A', name)), readFileSync(join(data, 'B', name)), {
        model,
        tile: num(values.tile, 'tile'),
        overlap: num(values.overlap, 'overlap'),
        mask: 'rle',
      });
      info = r.model;
      const pred = rleToMask(r.mask as Rle);
      const label = await decodeImage(readFileSync(join(data, 'label', name)), { maxPixels: pool.config.maxPixels });
      if (label.width !== r.width || label.height !== r.height) throw new UsageError(`label/${name} is ${label.width}×${label.height}, the pair is ${r.width}×${r.height}`);
      const binary = new Uint8Array(label.width * label.height);
      for (let i = 0; i < binary.length; i++) binary[i] = label.data[3 * i] > 0 ? 1 : 0;
      metrics.add(pred, binary);
      pairs.push({ name, width: r.width, height: r.height, changedFraction: r.changedFraction, ...confusion(pred, binary) });
    }
    const scores = metrics.result();
    const out = {
      task: 'change',
      model: info,
      trained: info!.trained,
      data,
      pairs: pairs.length,
      tile: info!.input[0],
      overlap: num(values.overlap, 'overlap') ?? 32,
      metrics: { f1: scores.f1, iou: scores.iou, precision: scores.precision, recall: scores.recall, oa: scores.oa },
      counts: { tp: scores.tp, fp: scores.fp, fn: scores.fn, tn: scores.tn },
      perPair: pairs,
      ...(info!.trained ? {} : { note: `${model} has no trained weights: these scores measure a seeded (untrained) graph, not the model; give --weights PATH for real figures` }),
    };
    if (!info!.trained) console.error(`note: ${out.note}`);
    console.log(JSON.stringify(out, null, 2));
  } finally {
    await pool.close();
  }
}

async function models(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' } } });
  const registry = new ModelRegistry();
  await registry.addManifests();
  const list = registry.list();
  if (values.json) return console.log(JSON.stringify(list, null, 2));
  console.log(['id', 'task', 'family', 'variant', 'params', 'trained', 'input'].join('\t'));
  for (const m of list) console.log([m.id, m.task, m.family, m.variant, m.params, m.trained, m.input.join('x')].join('\t'));
}

async function build(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { size: { type: 'string' }, weights: { type: 'string' } } });
  if (positionals.length !== 1) throw new UsageError('build takes one MODEL id');
  const registry = new ModelRegistry();
  await registry.addManifests();
  if (values.weights) await registry.useWeights(positionals[0], values.weights);
  const id = positionals[0];
  const task = registry.info(id).task;
  const b =
    task === 'track' ? await registry.buildTracker(id)
    : task === 'classify' ? await registry.buildClassifier(id, num(values.size, 'size'))
    : task === 'change' ? await registry.buildChange(id, num(values.size, 'size'))
    : await registry.build(id, num(values.size, 'size'));
  console.log(JSON.stringify({ id: b.info.id, path: b.path, params: b.info.params, trained: b.info.trained }));
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'serve': return serve(rest);
    case 'detect': return detect(rest);
    case 'classify':
    case 'embed':
      return classifyCommand(cmd, rest);
    case 'eval': return evaluate(rest);
    case 'models': return models(rest);
    case 'build': return build(rest);
    case 'bench': {
      const { runBench } = await import('../bench/index.js');
      return runBench(rest);
    }
    case undefined:
    case 'help':
    case '--help':
      console.log(USAGE);
      return;
    default:
      throw new UsageError(`unknown command '${cmd}'`);
  }
}

main(process.argv.slice(2)).catch((e: unknown) => {
  if (e instanceof UsageError) console.error(`fovea: ${e.message}\n${USAGE}`);
  else if (e instanceof FoveaError) console.error(`fovea: ${e.code}: ${e.message}`);
  else if (e instanceof CheckpointError || e instanceof CheckpointMismatchError || e instanceof ManifestError) console.error(`fovea: ${e.message}`);
  else if ((e as NodeJS.ErrnoException).code === 'ENOENT') console.error(`fovea: ${(e as Error).message}`);
  else if (e instanceof TypeError && (e as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) console.error(`fovea: ${e.message}\n${USAGE}`);
  else console.error(e);
  process.exit(2);
});
