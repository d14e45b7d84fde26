import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { IMAGENET1K, topK } from '../src/heads/classify/index.js';
import { IMAGENET_MEAN, IMAGENET_STD } from '../src/pipeline/crop.js';
import { classifyGeometry, classifyInto, resizeCropU8 } from '../src/pipeline/classify-preprocess.js';
import type { RgbImage } from '../src/pipeline/decode.js';
import { prng } from './support/random.js';

/** The same integer pattern the reference script draws: (x²·3 + 5y + xy + 71c) mod 256. */
function pattern(w: number, h: number): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) data[(y * w + x) * 3 + c] = (x * x * 3 + y * 5 + x * y + c * 71) % 256;
  return { data, width: w, height: h };
}

/*
 * Expected bytes from Debian's Pillow 9.4 + torchvision 0.14 (python3-pil, python3-torchvision), computed with
 *   im = Image.frombytes('RGB', (w, h), pattern(w, h))
 *   T.Compose([T.Resize(int(s / 0.875), interpolation=BICUBIC), T.CenterCrop(s)])(im).tobytes()
 * (hex for the 8×8 crops, sha256 for the larger ones).
 */
const PIL = [
  { w: 23, h: 17, s: 8, hex: '3c83cf7ec46faa4355507ea79a81677994a44d9e739961854d94d997d73d9a5a754b9d9f9e616071835d7f757b8995685eae98aaa42c8344926da38b906b8781a9728866a96e6f7e70be9dbb81393f5aaa8d8b4d5859937a6782728a67ab6aa682ca4dd537546078c7acb178817f80ab726a7690827d8f719ac734a547735391a2956b626b92b0738c8492539c6f9982af8725a4328f5bb0a69d6369757a7a706d77a39070a263a2ba9f396848a17abe6cad7c8b90a667936da5637f72799b58' },
  { w: 6, h: 7, s: 8, hex: '024990034a91074e950d549b165da42269b03077be448bd2064d94074e950b5299135aa11c63aa286fb6377ec54b92d90a51980c539a10579e185fa62269b02e75bc3e85cc539ae10d549b0f569d155ca31d64ab276eb5347bc2448bd159a0f111589f135aa11960a72168af2c73ba3a81c94a91dd5fa6c2145ba2175ea51d64ab256cb33178bf3f86d04f96ed66ad69175ea51b62a92269b02a71b8367dc4458cd6569df36db4701b62a91f66ad266db43077be3c83ca4b92dc5da4fa74bb7b' },
  { w: 640, h: 480, s: 224, sha256: 'f6f480b9997f0117d49aa5913748d7219822fe51ba763a3c22cb75d5771ade39' },
  { w: 480, h: 640, s: 224, sha256: '5d42e6e1d1963b62b07986765ad1da634324fad3c0915eefb38f193e0c3ec27c' },
  { w: 301, h: 999, s: 320, sha256: 'e076caa017ba5462cb1744c67b30362980c238fd8d01f1918faf2026d77b4e8d' },
] as const;

describe('classification pre-processing (Resize S/0.875 bicubic → CenterCrop S, as torchvision on PIL)', () => {
  it('resizes the shorter side to S/0.875 and centres the crop with Python rounding', () => {
    expect(classifyGeometry(640, 480, 224)).toMatchObject({ resizeWidth: 341, resizeHeight: 256, left: 58, top: 16 });
    expect(classifyGeometry(480, 640, 224)).toMatchObject({ resizeWidth: 256, resizeHeight: 341, left: 16, top: 58 });
    // (10 − 8)/2 = 1; (9 − 8)/2 = 0.5 rounds to 0 (half to even)
    expect(classifyGeometry(6, 7, 8)).toMatchObject({ resizeWidth: 9, resizeHeight: 10, left: 0, top: 1 });
    expect(classifyGeometry(23, 17, 8)).toMatchObject({ resizeWidth: 12, resizeHeight: 9, left: 2, top: 0 });
  });

  for (const c of PIL) {
    it(`${c.w}×${c.h} → ${c.s}: the bytes equal Pillow's antialiased bicubic (${c.w > c.s ? 'downscale' : 'upscale'})`, () => {
      const bytes = resizeCropU8(pattern(c.w, c.h), classifyGeometry(c.w, c.h, c.s));
      if ('hex' in c) expect(Buffer.from(bytes).toString('hex')).toBe(c.hex);
      else expect(createHash('sha256').update(bytes).digest('hex')).toBe(c.sha256);
    });
  }

  it('writes NCHW (b/255 − mean)/std of the same bytes into a reused buffer at an offset', () => {
    const img = pattern(23, 17);
    const geom = classifyGeometry(23, 17, 8);
    const bytes = resizeCropU8(img, geom);
    const out = new Float32Array(10 + 2 * 3 * 64).fill(NaN);
    classifyInto(img, geom, out, 10 + 3 * 64);
    classifyInto(img, geom, out, 10);
    for (let i = 0; i < 64; i++)
      for (let c = 0; c < 3; c++) {
        const want = (bytes[3 * i + c] / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        expect(out[10 + c * 64 + i]).toBeCloseTo(want, 5);
        expect(out[10 + 3 * 64 + c * 64 + i]).toBe(out[10 + c * 64 + i]);
      }
    expect(Number.isNaN(out[9])).toBe(true);
  });
});

describe('classify head', () => {
  it('has the 1000 ImageNet-1k names in class-id order', () => {
    expect(IMAGENET1K.length).toBe(1000);
    expect([IMAGENET1K[0], IMAGENET1K[281], IMAGENET1K[999]]).toEqual(['tench', 'tabby', 'toilet tissue']);
  });

  it('topK equals a plain stable sort of softmax probabilities (seeded random logits with ties)', () => {
    const seed = 7;
    const r = prng(seed);
    for (let trial = 0; trial < 50; trial++) {
      const n = 1 + Math.floor(r() * 40);
      // Coarse values so ties are common.
      const logits = Float32Array.from({ length: n }, () => Math.round((r() * 2 - 1) * 6) / 2);
      const k = 1 + Math.floor(r() * (n + 3));
      const max = Math.max(...logits);
      const sum = logits.reduce((s, v) => s + Math.exp(v - max), 0);
      const plain = [...logits].map((v, i) => ({ i, p: Math.exp(v - max) / sum })).sort((a, b) => b.p - a.p || a.i - b.i).slice(0, k);
      const t = topK(logits, k);
      expect([...t.classIds], `seed ${seed} trial ${trial}`).toEqual(plain.map((x) => x.i));
      plain.forEach((x, j) => expect(t.scores[j]).toBeCloseTo(x.p, 6));
    }
  });

  it('reads one row of a batch and refuses k < 1', () => {
    const batch = Float32Array.from([0, 1, 2, 9, 8, 7]);
    expect([...topK(batch, 2, 3, 3).classIds]).toEqual([0, 1]);
    expect(() => topK(batch, 0)).toThrow(RangeError);
  });
});
