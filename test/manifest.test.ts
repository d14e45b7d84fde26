import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countInitializerElements } from '../src/models/graph/inspect.js';
import { Params } from '../src/models/graph/params.js';
import { serializeModel } from '../src/models/graph/serialize.js';
import { buildLeYolo } from '../src/models/leyolo.js';
import { ManifestError, loadManifests } from '../src/models/manifest.js';
import { ModelRegistry } from '../src/models/registry.js';
import { DetectService } from '../src/pipeline/detect.js';
import { InferencePool } from '../src/pipeline/pool.js';

const CHECKPOINT = new URL('../../shared/fixtures/weights/LeYOLONano.pt', import.meta.url).pathname;
const bus = readFileSync(new URL('../../shared/fixtures/images/bus.jpg', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'fovea-manifest-'));
const cacheDir = join(root, 'cache');
let exported = '';

const manifest = (over: Record<string, unknown> = {}, input: Record<string, unknown> = {}) => ({
  id: 'my-nano',
  task: 'detect',
  file: 'exported.onnx',
  input: { name: 'images', size: [320, 320], letterbox: { pad: 114 }, normalize: { scale: 1 / 255, mean: [0, 0, 0], std: [1, 1, 1] }, ...input },
  labels: 'coco80',
  output: { name: 'output0', layout: 'xywh-scores' },
  ...over,
});

/** A models/ folder holding the exported graph and one manifest. */
function modelsDir(m: unknown, name = 'case'): string {
  const dir = mkdtempSync(join(root, `${name}-`));
  copyFileSync(exported, join(dir, 'exported.onnx'));
  writeFileSync(join(dir, 'my-nano.json'), typeof m === 'string' ? m : JSON.stringify(m));
  return dir;
}

beforeAll(async () => {
  // "An exported .onnx": the official Nano at 320, as a user would bring it from another tool.
  const registry = new ModelRegistry({ cacheDir });
  await registry.useWeights('leyolo-nano', CHECKPOINT);
  exported = (await registry.build('leyolo-nano', 320)).path;
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('brought-in ONNX models with a manifest', () => {
  it('are served like a built model and give the same detections', async () => {
    const registry = new ModelRegistry({ cacheDir });
    await registry.useWeights('leyolo-nano', CHECKPOINT);
    const [info] = await registry.addManifests(modelsDir(manifest()));
    expect(info).toMatchObject({ id: 'my-nano', task: 'detect', family: 'onnx', trained: true, input: [320, 320], numClasses: 80 });
    const pool = new InferencePool({ log: () => undefined });
    try {
      const service = new DetectService(registry, pool);
      const brought = await service.detect(bus, { model: 'my-nano' });
      const built = await service.detect(bus, { model: 'leyolo-nano', size: 320 });
      expect(brought.model).toEqual({ id: 'my-nano', trained: true, input: [320, 320] });
      expect(brought.detections.length).toBeGreaterThan(0);
      expect(brought.detections).toEqual(built.detections);
      await expect(service.detect(bus, { model: 'my-nano', size: 640 })).rejects.toMatchObject({ status: 422 });
    } finally {
      await pool.close();
    }
  });

  it('count their parameters from the graph’s initializers', async () => {
    const [m] = await loadManifests(modelsDir(manifest()));
    const sd = Params.seeded(0);
    const g = buildLeYolo('nano', 320, sd);
    expect(m.params).toBe(g.stats().totalParams);
    expect(countInitializerElements(serializeModel(g.toModel()))).toBe(g.stats().totalParams);
  });

  it.each([
    ['a wrong input size', manifest({}, { size: [640, 640] }), /input "images" is 320×320, the manifest says 640×640/],
    ['a label list that does not fit the output rows', manifest({ labels: ['a', 'b', 'c'] }), /output "output0" has 84 rows, but 4 \+ 3 labels = 7/],
    ['an input name the graph does not have', manifest({}, { name: 'pixels' }), /input "pixels" not found; the graph's input is "images"/],
    ['an output name the graph does not have', manifest({ output: { name: 'boxes' } }), /output "boxes" not found; the graph's outputs are output0/],
    ['a missing graph file', manifest({ file: 'nope.onnx' }), /nope\.onnx does not exist/],
    ['an unsupported task', manifest({ task: 'segment' }), /"task" must be "detect"/],
    ['an unsupported letterbox pad', manifest({}, { letterbox: { pad: 0 } }), /letterbox/],
    ['invalid JSON', '{"id": ', /not valid JSON/],
  ])('are refused at start with the mismatch named: %s', async (_name, m, message) => {
    const dir = modelsDir(m);
    await expect(loadManifests(dir)).rejects.toThrow(ManifestError);
    await expect(loadManifests(dir)).rejects.toThrow(message);
  });

  it('a file that is not an ONNX graph is refused', async () => {
    const dir = modelsDir(manifest());
    writeFileSync(join(dir, 'exported.onnx'), 'not a graph');
    await expect(loadManifests(dir)).rejects.toThrow(/onnxruntime cannot load it/);
  });

  it('an id that clashes with a built-in model is refused', async () => {
    const registry = new ModelRegistry({ cacheDir });
    await expect(registry.addManifests(modelsDir(manifest({ id: 'leyolo-nano' })))).rejects.toThrow(/already taken/);
  });
});
