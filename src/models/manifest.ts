/**
 * Brought-in ONNX models: a user drops an exported `.onnx` (say an ultralytics detection export with
 * output `[1, 4 + nc, N]`) into `models/` with a JSON manifest beside it. The manifest is checked
 * against the graph's real inputs and outputs at start, and a mismatch is refused, named.
 *
 * ```json
 * {"id": "my-yolo", "task": "detect", "file": "my-yolo.onnx",
 *  "input": {"name": "images", "size": [640, 640], "normalize": {"scale": 0.00392156862745098, "mean": [0, 0, 0], "std": [1, 1, 1]},
 *            "letterbox": {"pad": 114}},
 *  "labels": "coco80",
 *  "output": {"name": "output0", "layout": "xywh-scores"}}
 * ```
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { COCO80 } from '../heads/detect/labels.js';
import { countInitializerElements } from './graph/inspect.js';

export interface Normalize {
  readonly mean: readonly [number, number, number];
  readonly std: readonly [number, number, number];
}

export interface BroughtModel {
  readonly id: string;
  readonly task: 'detect';
  readonly path: string;
  readonly inputName: string;
  readonly outputName: string;
  readonly width: number;
  readonly height: number;
  readonly labels: readonly string[];
  readonly numAnchors: number;
  /** Images one run can take: 1 when the export fixed its batch dimension. */
  readonly maxBatch: number;
  /** Per-channel (x/255 − mean)/std; absent for plain /255. */
  readonly normalize?: Normalize;
  readonly params: number;
  readonly manifestPath: string;
}

export class ManifestError extends Error {
  override name = 'ManifestError';
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const isTriple = (v: unknown): v is [number, number, number] => Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x));

/** The manifest's own fields, checked before the graph is opened. */
function parseManifest(raw: unknown, where: string, dir: string): Omit<BroughtModel, 'numAnchors' | 'maxBatch' | 'params'> {
  const bad = (what: string): never => {
    throw new ManifestError(`${where}: ${what}`);
  };
  if (!isObject(raw)) return bad('not a JSON object');
  const { id, task, file, input, labels, output } = raw;
  if (typeof id !== 'string' || !/^[a-z0-9][a-z0-9._-]{0,63}$/.test(id)) bad(`"id" must be a lower-case name (a-z, 0-9, . _ -), got ${JSON.stringify(id)}`);
  if (task !== 'detect') bad(`"task" must be "detect" (the only task brought-in graphs serve so far), got ${JSON.stringify(task)}`);
  if (typeof file !== 'string' || !file.endsWith('.onnx')) bad('"file" must name the .onnx file');
  const path = isAbsolute(file as string) ? (file as string) : join(dir, file as string);
  if (!existsSync(path)) bad(`the graph file ${path} does not exist`);
  if (!isObject(input)) return bad('"input" must be an object');
  const size = input.size;
  if (!Array.isArray(size) || size.length !== 2 || !size.every((d) => Number.isInteger(d) && d > 0)) bad('"input.size" must be [width, height] in pixels');
  const [width, height] = size as [number, number];
  const norm = input.normalize;
  let normalize: Normalize | undefined;
  if (norm !== undefined) {
    if (!isObject(norm)) return bad('"input.normalize" must be an object');
    if (norm.scale !== undefined && Math.abs((norm.scale as number) - 1 / 255) > 1e-9) bad('"input.normalize.scale" must be 1/255 (pixels are read as 0..1)');
    const mean = norm.mean ?? [0, 0, 0];
    const std = norm.std ?? [1, 1, 1];
    if (!isTriple(mean) || !isTriple(std) || std.some((s) => s <= 0)) bad('"input.normalize.mean" and ".std" must be three numbers each, std > 0');
    const m = mean as [number, number, number];
    const s = std as [number, number, number];
    if (m.some((v) => v !== 0) || s.some((v) => v !== 1)) normalize = { mean: m, std: s };
  }
  const lb = input.letterbox;
  if (lb !== undefined && (!isObject(lb) || (lb.pad !== undefined && lb.pad !== 114))) bad('"input.letterbox" must be {"pad": 114} (the ultralytics letterbox)');
  const labelList = labels === 'coco80' ? COCO80 : labels;
  if (!Array.isArray(labelList) || labelList.length === 0 || !labelList.every((l) => typeof l === 'string')) bad('"labels" must be "coco80" or a list of class names');
  if (output !== undefined && !isObject(output)) bad('"output" must be an object');
  const out = (output ?? {}) as Json;
  if (out.layout !== undefined && out.layout !== 'xywh-scores') bad('"output.layout" must be "xywh-scores" ([B, 4 + nc, N]: xywh in input pixels, then class scores)');
  return {
    id: id as string,
    task: 'detect',
    path,
    inputName: typeof input.name === 'string' ? input.name : '',
    outputName: typeof out.name === 'string' ? out.name : '',
    width,
    height,
    labels: labelList as string[],
    normalize,
    manifestPath: where,
  };
}

type TensorMeta = { name: string; isTensor: true; type: string; shape: ReadonlyArray<number | string> };
const tensorMeta = (m: ort.InferenceSession.ValueMetadata): TensorMeta | undefined => (m.isTensor ? (m as TensorMeta) : undefined);

/** Opens the graph and checks the manifest against its real input and output. */
async function checkGraph(m: ReturnType<typeof parseManifest>): Promise<BroughtModel> {
  const bad = (what: string): never => {
    throw new ManifestError(`${m.manifestPath}: the manifest does not fit ${m.path}: ${what}`);
  };
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(m.path);
  } catch (e) {
    return bad(`onnxruntime cannot load it (${(e as Error).message.split('\n')[0]})`);
  }
  try {
    const inputs = session.inputMetadata.map(tensorMeta).filter((x): x is TensorMeta => !!x);
    const outputs = session.outputMetadata.map(tensorMeta).filter((x): x is TensorMeta => !!x);
    if (inputs.length !== 1) bad(`it has ${inputs.length} tensor inputs (${inputs.map((i) => i.name).join(', ')}); one image input is needed`);
    const inp = inputs[0];
    if (m.inputName && inp.name !== m.inputName) bad(`input "${m.inputName}" not found; the graph's input is "${inp.name}"`);
    if (inp.type !== 'float32') bad(`input "${inp.name}" is ${inp.type}, not float32`);
    const [b, c, h, w] = inp.shape;
    if (inp.shape.length !== 4 || c !== 3) bad(`input "${inp.name}" has shape [${inp.shape}], expected [batch, 3, height, width]`);
    if ((typeof h === 'number' && h !== m.height) || (typeof w === 'number' && w !== m.width)) bad(`input "${inp.name}" is ${w}×${h}, the manifest says ${m.width}×${m.height}`);
    const out = m.outputName ? outputs.find((o) => o.name === m.outputName) : outputs[0];
    if (!out) return bad(`output "${m.outputName}" not found; the graph's outputs are ${outputs.map((o) => o.name).join(', ')}`);
    const [, rows, n] = out.shape;
    if (out.shape.length !== 3 || typeof rows !== 'number' || typeof n !== 'number') bad(`output "${out.name}" has shape [${out.shape}], expected [batch, 4 + classes, anchors] with static sizes`);
    if (rows !== 4 + m.labels.length) bad(`output "${out.name}" has ${rows} rows, but 4 + ${m.labels.length} labels = ${4 + m.labels.length}`);
    return { ...m, inputName: inp.name, outputName: out.name, numAnchors: n as number, maxBatch: typeof b === 'number' ? b : 8, params: countInitializerElements(readFileSync(m.path)) };
  } finally {
    await session.release();
  }
}

/** Every `*.json` manifest in `dir` (the build cache folder is skipped); throws on the first that does not fit. */
export async function loadManifests(dir: string): Promise<BroughtModel[]> {
  if (!existsSync(dir)) return [];
  const found: BroughtModel[] = [];
  for (const name of readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
    const where = join(dir, name);
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(where, 'utf8'));
    } catch (e) {
      throw new ManifestError(`${where}: not valid JSON (${(e as Error).message})`);
    }
    found.push(await checkGraph(parseManifest(raw, where, dir)));
  }
  return found;
}
