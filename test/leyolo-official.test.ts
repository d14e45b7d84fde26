/**
 * The official LeYOLO-Nano checkpoint, read in TypeScript and run through the whole fovea pipeline
 * (sharp decode, fused letterbox, ORT in a worker, NMS, scale_boxes), against the detections the
 * official code prints. The reference numbers in test/reference/leyolo-nano-official.json were made
 * once, outside the project, by running the official repository (LilianHollard/LeYOLO 360a205, its
 * ultralytics 8.1.4 fork, torch FP32 CPU, square letterbox) — see scripts/official-leyolo-reference.md.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelRegistry } from '../src/models/registry.js';
import { DetectService, type DetectResponse } from '../src/pipeline/detect.js';
import { InferencePool } from '../src/pipeline/pool.js';

interface RefDetection {
  classId: number;
  label: string;
  score: number;
  box: [number, number, number, number];
}
const reference = JSON.parse(readFileSync(new URL('./reference/leyolo-nano-official.json', import.meta.url), 'utf8')) as {
  conf: number;
  results: Record<string, Record<string, RefDetection[]>>;
};
const CHECKPOINT = new URL('../../shared/fixtures/weights/LeYOLONano.pt', import.meta.url).pathname;
const image = (name: string) => readFileSync(new URL(`../../shared/fixtures/images/${name}`, import.meta.url));

function iou(a: readonly number[], b: readonly number[]): number {
  const w = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const h = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = w * h;
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter);
}

const cacheDir = mkdtempSync(join(tmpdir(), 'fovea-official-'));
const pool = new InferencePool({ log: () => undefined });
let service: DetectService;

beforeAll(async () => {
  const registry = new ModelRegistry({ cacheDir });
  await registry.useWeights('leyolo-nano', CHECKPOINT);
  service = new DetectService(registry, pool);
});
afterAll(async () => {
  await pool.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

/** Near the confidence threshold a 1e-3 difference may keep or drop a box; those are not required to match. */
const MARGIN = 0.01;

describe('LeYOLO-Nano with the official checkpoint matches the official detections', () => {
  const cases = Object.entries(reference.results).flatMap(([name, bySize]) => Object.keys(bySize).map((size) => [name, Number(size)] as const));

  it.each(cases)('%s at %i: same classes, boxes within IoU 0.85 (in practice ~1), scores within 0.05', async (name, size) => {
    const r: DetectResponse = await service.detect(image(name), { size, conf: reference.conf, iou: 0.7 });
    expect(r.model).toEqual({ id: 'leyolo-nano', trained: true, input: [size, size] });
    const official = reference.results[name][String(size)];
    const unmatched = [...r.detections];
    for (const ref of official) {
      const j = unmatched.findIndex((d) => d.classId === ref.classId && iou(d.box, ref.box) > 0.85);
      if (j < 0) {
        expect(ref.score, `${name}@${size}: official ${ref.label} ${ref.score} [${ref.box}] not found`).toBeLessThan(reference.conf + MARGIN);
        continue;
      }
      const d = unmatched.splice(j, 1)[0];
      expect(d.label).toBe(ref.label);
      expect(Math.abs(d.score - ref.score), `${name}@${size} ${ref.label}`).toBeLessThan(0.05);
      // Much tighter in fact: the pre-processing is OpenCV-exact, so only float rounding differs.
      expect(Math.abs(d.score - ref.score)).toBeLessThan(0.005);
      expect(iou(d.box, ref.box)).toBeGreaterThan(0.99);
    }
    for (const extra of unmatched) expect(extra.score, `${name}@${size}: extra ${extra.label} ${extra.score}`).toBeLessThan(reference.conf + MARGIN);
  });

  it('bus.jpg at 640 gives the six objects of the fixtures README in order', async () => {
    const r = await service.detect(image('bus.jpg'), { size: 640 });
    expect(r.detections.map((d) => d.label)).toEqual(['person', 'person', 'bus', 'person', 'person', 'skateboard']);
    const readme = [0.87, 0.83, 0.81, 0.74, 0.5, 0.49];
    r.detections.forEach((d, i) => expect(Math.abs(d.score - readme[i])).toBeLessThan(0.03));
  });
});
