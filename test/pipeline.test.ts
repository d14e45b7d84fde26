import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { FoveaError } from '../src/errors.js';
import { ModelRegistry } from '../src/models/registry.js';
import { DetectService, detectOptions } from '../src/pipeline/detect.js';
import { InferencePool } from '../src/pipeline/pool.js';

const bus = readFileSync(new URL('../../shared/fixtures/images/bus.jpg', import.meta.url));
const cacheDir = mkdtempSync(join(tmpdir(), 'fovea-cache-'));
afterAll(() => rmSync(cacheDir, { recursive: true, force: true }));

describe('inference workers', () => {
  it('asked for CUDA where the provider is not installed, warns clearly and runs on the CPU', async () => {
    const logs: string[] = [];
    const pool = new InferencePool({ ep: 'cuda', log: (level, m) => logs.push(`${level}: ${m}`) });
    try {
      const service = new DetectService(new ModelRegistry({ cacheDir }), pool);
      expect(await pool.warmup(await service.spec('leyolo-nano', 320))).toBe('cpu');
      expect(logs.join('\n')).toMatch(/warn: CUDA execution provider unavailable.*running on CPU/);
      const r = await service.detect(bus, { size: 320 });
      expect(r.image).toEqual({ width: 810, height: 1080 });
    } finally {
      await pool.close();
    }
  });

  it('a worker that dies fails only its own jobs, and a new worker takes over', async () => {
    const pool = new InferencePool({ log: () => undefined });
    try {
      const service = new DetectService(new ModelRegistry({ cacheDir }), pool);
      await pool.warmup(await service.spec('leyolo-nano', 320));
      const slots = (pool as unknown as { slots: Array<{ worker: { terminate(): Promise<number> } }> }).slots;
      const inflight = service.detect(bus, { size: 320 });
      await slots[0].worker.terminate();
      await expect(inflight).rejects.toMatchObject({ status: 503 });
      const r = await service.detect(bus, { size: 320 });
      expect(r.image.width).toBe(810);
    } finally {
      await pool.close();
    }
  });
});

describe('cross-stream batching', () => {
  it('jobs of the same model arriving together share one session.run, and each gets the answer it gets alone', async () => {
    const pool = new InferencePool({ log: () => undefined, maxBatch: 4, maxDelayMs: 50 });
    try {
      const service = new DetectService(new ModelRegistry({ cacheDir }), pool);
      const spec = await service.spec('leyolo-nano', 320);
      await pool.warmup(spec);
      const names = ['bus.jpg', 'zidane.jpg', 'cat.jpg', 'tennis.jpg', 'bus.jpg', 'zidane.jpg'];
      const images = names.map((n) => readFileSync(new URL(`../../shared/fixtures/images/${n}`, import.meta.url)));
      const opts = { conf: 0.0001, iou: 0.7, maxDet: 50 };
      const together = await Promise.all(images.map((b) => pool.detect(spec, { kind: 'encoded', bytes: b }, opts)));
      expect(Math.max(...together.map((r) => r.batchSize))).toBeGreaterThan(1);
      expect(Math.max(...together.map((r) => r.batchSize))).toBeLessThanOrEqual(4);
      for (let i = 0; i < images.length; i++) {
        const alone = await pool.detect(spec, { kind: 'encoded', bytes: images[i] }, opts);
        expect(alone.batchSize).toBe(1);
        expect([together[i].width, together[i].height]).toEqual([alone.width, alone.height]);
        expect(Array.from(together[i].classIds)).toEqual(Array.from(alone.classIds));
        together[i].boxes.forEach((v, k) => expect(Math.abs(v - alone.boxes[k])).toBeLessThan(1e-2));
      }
    } finally {
      await pool.close();
    }
  });
});

describe('raw rgb24 frames', () => {
  it('give the same detections as the encoded image they were decoded from, and a wrong size is a 400', async () => {
    const pool = new InferencePool({ log: () => undefined });
    try {
      const service = new DetectService(new ModelRegistry({ cacheDir }), pool);
      const { data, info } = await sharp(bus).raw().toBuffer({ resolveWithObject: true });
      const req = { size: 320, conf: 0.0001, maxDet: 20 };
      const raw = await service.detect({ kind: 'rgb24', data, width: info.width, height: info.height }, req);
      const encoded = await service.detect(bus, req);
      expect(raw.image).toEqual({ width: 810, height: 1080 });
      expect(raw.detections).toEqual(encoded.detections);
      await expect(service.detect({ kind: 'rgb24', data: data.subarray(1), width: info.width, height: info.height }, req)).rejects.toMatchObject({ status: 400, code: 'bad_raw_size' });
      await expect(service.detect({ kind: 'rgb24', data: new Uint8Array(0), width: 0, height: 5 }, req)).rejects.toMatchObject({ status: 400 });
      await expect(service.detect({ kind: 'rgb24', data: new Uint8Array(3), width: 50_000, height: 50_000 }, req)).rejects.toMatchObject({ status: 413 });
    } finally {
      await pool.close();
    }
  });
});

describe('model registry', () => {
  it('caches the built graph on disk: a second registry finds the same file without rebuilding', async () => {
    const a = await new ModelRegistry({ cacheDir }).build('leyolo-nano', 320);
    const before = readFileSync(a.path);
    const b = await new ModelRegistry({ cacheDir }).build('leyolo-nano', 320);
    expect(b.path).toBe(a.path);
    expect(Buffer.compare(readFileSync(b.path), before)).toBe(0);
  });

  it('refuses unknown models (404) and bad sizes (422)', () => {
    const r = new ModelRegistry({ cacheDir });
    expect(() => r.build('yolo-v99')).toThrow(expect.objectContaining({ status: 404 }));
    for (const s of [333, 0, 16, 4096]) expect(() => r.resolveSize('leyolo-nano', s)).toThrow(expect.objectContaining({ status: 422 }));
    expect(r.resolveSize('leyolo-nano', 480)).toBe(480);
  });

  it('detect options: defaults 0.25 / 0.7 / 300, and out-of-range values are 422', () => {
    expect(detectOptions({})).toEqual({ conf: 0.25, iou: 0.7, maxDet: 300 });
    for (const bad of [{ conf: 2 }, { iou: -1 }, { maxDet: 0 }, { maxDet: 1.5 }, { conf: Number.NaN }]) {
      expect(() => detectOptions(bad)).toThrow(FoveaError);
    }
  });
});
