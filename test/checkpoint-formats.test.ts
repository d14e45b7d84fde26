/**
 * Checkpoint formats against small files written by real PyTorch (scripts/make-checkpoint-fixtures.py):
 * every dtype, pickle protocols 2/4/5, strided views sharing one storage, whole pickled modules,
 * wrappers, re-zipped (deflated) archives, big-endian storages and safetensors.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import type { PyValue } from '../src/models/io/index.js';
import { PyObject, TorchTensor, batchNormEps, pyGet, readCheckpoint, readStateDict, stateDict } from '../src/models/io/index.js';
import { ZipArchive, crc32 } from '../src/models/io/zip.js';

const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/checkpoints/${name}`, import.meta.url));

interface ExpectedTensor {
  shape: number[];
  dtype: string;
  values: (number | string)[];
  sum: number | string;
}
type ExpectedDict = Record<string, ExpectedTensor>;
const expected = JSON.parse(readFileSync(fixture('expected.json'), 'utf8')) as Record<string, ExpectedDict | { keys: ExpectedDict; bn_eps?: Record<string, number> }>;
const dictOf = (name: string): ExpectedDict => {
  const e = expected[name];
  return ('keys' in e ? e.keys : e) as ExpectedDict;
};

/** JSON stores int64 as strings and infinities as "Infinity"; bring both back to what the reader yields. */
function expectedValues(e: ExpectedTensor): (number | bigint)[] {
  return e.values.map((v) => (e.dtype === 'int64' ? BigInt(v) : Number(v)));
}

function expectMatches(sd: ReadonlyMap<string, unknown>, want: ExpectedDict): void {
  expect([...sd.keys()]).toEqual(Object.keys(want));
  for (const [key, e] of Object.entries(want)) {
    const t = sd.get(key) as TorchTensor;
    expect(t, key).toBeInstanceOf(TorchTensor);
    expect(t.shape, key).toEqual(e.shape);
    expect(t.storageDtype, key).toBe(e.dtype);
    expect(Array.from(t.data as ArrayLike<number | bigint>), key).toEqual(expectedValues(e));
  }
}

describe('torch.save state dicts', () => {
  it.each(['dtypes.pt', 'dtypes-protocol4.pt', 'dtypes-protocol5.pt'])('%s: every dtype reads back with PyTorch’s values', async (file) => {
    const sd = await readStateDict(fixture(file));
    expectMatches(sd, dictOf('dtypes.pt'));
  });

  it('delivers floats as Float32Array (FP16/BF16 widened, FP64 narrowed), int64 as BigInt64Array, int32 as Int32Array, uint8/bool as Uint8Array', async () => {
    const sd = await readStateDict(fixture('dtypes.pt'));
    const kinds = Object.fromEntries([...sd].map(([k, t]) => [k, [t.dtype, t.data.constructor.name]]));
    expect(kinds).toMatchObject({
      half: ['float32', 'Float32Array'],
      bfloat: ['float32', 'Float32Array'],
      float: ['float32', 'Float32Array'],
      double: ['float32', 'Float32Array'],
      long: ['int64', 'BigInt64Array'],
      int: ['int32', 'Int32Array'],
      byte: ['uint8', 'Uint8Array'],
      bool: ['bool', 'Uint8Array'],
    });
  });

  it('keeps FP16 special values: subnormals, negative zero, ±infinity, the largest finite half', async () => {
    const sd = await readStateDict(fixture('dtypes.pt'));
    const half = sd.get('half')?.data as Float32Array;
    expect(half[2]).toBe(65504);
    expect(half[3]).toBe(2 ** -24);
    expect(Object.is(half[4], -0)).toBe(true);
    expect(Array.from(sd.get('half_inf')?.data as Float32Array)).toEqual([Infinity, -Infinity]);
  });

  it('keeps int64 values beyond 2^53 exactly', async () => {
    const sd = await readStateDict(fixture('dtypes.pt'));
    expect(Array.from(sd.get('long')?.data as BigInt64Array)).toContain(2n ** 53n + 1n);
    expect(Array.from(sd.get('long')?.data as BigInt64Array)).toContain(-(2n ** 62n) - 3n);
  });

  it('reads 0-d and empty tensors', async () => {
    const sd = await readStateDict(fixture('dtypes.pt'));
    expect(sd.get('scalar')?.shape).toEqual([]);
    expect(Array.from(sd.get('scalar')?.data as Float32Array)).toEqual([2.5]);
    expect(sd.get('empty')?.shape).toEqual([0, 3]);
    expect(sd.get('empty')?.data.length).toBe(0);
  });

  it('unwraps {"model": state_dict} and ignores the other entries', async () => {
    const ckpt = await readCheckpoint(fixture('wrapped.pt'));
    expect(pyGet(ckpt.root, 'epoch')).toBe(3);
    expectMatches(stateDict(ckpt.root), dictOf('wrapped.pt'));
  });

  it('reads big-endian storages when the archive says byteorder "big"', async () => {
    expectMatches(await readStateDict(fixture('bigendian.pt')), dictOf('dtypes.pt'));
  });

  it('reads an archive that a tool re-zipped with deflate', async () => {
    expectMatches(await readStateDict(fixture('deflated.pt')), dictOf('module.pt'));
  });
});

/** The entries of a zip, read with the reader under test (checked against the fixtures above). */
async function zipEntries(path: string): Promise<{ name: string; data: Uint8Array }[]> {
  const file = await open(path);
  try {
    const zip = await ZipArchive.open(file, (await file.stat()).size);
    const out: { name: string; data: Uint8Array }[] = [];
    await zip.readEach([...zip.entries.values()], (e, data) => out.push({ name: e.name, data: data.slice() }));
    return out;
  } finally {
    await file.close();
  }
}

/**
 * A ZIP64 archive written by hand with every size, offset and count in its 64-bit field (what a
 * checkpoint over 4 GiB has), so the ZIP64 paths run on a small file.
 */
function zip64(entries: { name: string; data: Uint8Array }[]): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const { name, data } of entries) {
    const n = Buffer.from(name);
    const local = Buffer.alloc(30 + n.length + 20);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(45, 4);
    local.writeUInt16LE(0x21, 12); // 1980-01-01
    local.writeUInt32LE(crc32(data), 14);
    local.writeUInt32LE(0xffffffff, 18);
    local.writeUInt32LE(0xffffffff, 22);
    local.writeUInt16LE(n.length, 26);
    local.writeUInt16LE(20, 28);
    n.copy(local, 30);
    local.writeUInt16LE(1, 30 + n.length);
    local.writeUInt16LE(16, 32 + n.length);
    local.writeBigUInt64LE(BigInt(data.length), 34 + n.length);
    local.writeBigUInt64LE(BigInt(data.length), 42 + n.length);
    const cd = Buffer.alloc(46 + n.length + 28);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE(45, 4);
    cd.writeUInt16LE(45, 6);
    cd.writeUInt16LE(0x21, 14);
    cd.writeUInt32LE(crc32(data), 16);
    cd.writeUInt32LE(0xffffffff, 20);
    cd.writeUInt32LE(0xffffffff, 24);
    cd.writeUInt16LE(n.length, 28);
    cd.writeUInt16LE(28, 30);
    cd.writeUInt32LE(0xffffffff, 42);
    n.copy(cd, 46);
    cd.writeUInt16LE(1, 46 + n.length);
    cd.writeUInt16LE(24, 48 + n.length);
    cd.writeBigUInt64LE(BigInt(data.length), 50 + n.length);
    cd.writeBigUInt64LE(BigInt(data.length), 58 + n.length);
    cd.writeBigUInt64LE(BigInt(offset), 66 + n.length);
    parts.push(local, Buffer.from(data));
    central.push(cd);
    offset += local.length + data.length;
  }
  const cdSize = central.reduce((a, b) => a + b.length, 0);
  const record = Buffer.alloc(56 + 20 + 22);
  record.writeUInt32LE(0x06064b50, 0);
  record.writeBigUInt64LE(44n, 4);
  record.writeUInt16LE(45, 12);
  record.writeUInt16LE(45, 14);
  record.writeBigUInt64LE(BigInt(entries.length), 24);
  record.writeBigUInt64LE(BigInt(entries.length), 32);
  record.writeBigUInt64LE(BigInt(cdSize), 40);
  record.writeBigUInt64LE(BigInt(offset), 48);
  record.writeUInt32LE(0x07064b50, 56); // locator
  record.writeBigUInt64LE(BigInt(offset + cdSize), 64);
  record.writeUInt32LE(1, 72);
  record.writeUInt32LE(0x06054b50, 76); // EOCD, every field deferring to ZIP64
  record.writeUInt16LE(0xffff, 84);
  record.writeUInt16LE(0xffff, 86);
  record.writeUInt32LE(0xffffffff, 88);
  record.writeUInt32LE(0xffffffff, 92);
  return Buffer.concat([...parts, ...central, record]);
}

describe('ZIP64 archives', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'fovea-zip64-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('reads a checkpoint whose sizes, offsets and entry count are all in ZIP64 records', async () => {
    const path = join(tmp, 'views64.pt');
    writeFileSync(path, zip64(await zipEntries(fixture('views.pt'))));
    expectMatches(await readStateDict(path), dictOf('views.pt'));
  });
});

describe('views sharing one storage', () => {
  afterEach(() => vi.restoreAllMocks());

  it('materialises transposes, slices with storage offsets and strided views like PyTorch', async () => {
    expectMatches(await readStateDict(fixture('views.pt')), dictOf('views.pt'));
  });

  it('reads the shared storage once and lets contiguous views share its memory', async () => {
    const readEach = vi.spyOn(ZipArchive.prototype, 'readEach');
    const sd = await readStateDict(fixture('views.pt'));
    const storageReads = readEach.mock.calls.flatMap(([entries]) => entries.map((e) => e.name)).filter((n) => n.includes('/data/'));
    expect(storageReads).toEqual(['views/data/0']);
    const base = sd.get('base')?.data as Float32Array;
    const row = sd.get('row')?.data as Float32Array;
    const transposed = sd.get('transposed')?.data as Float32Array;
    expect(row.buffer).toBe(base.buffer);
    expect(row.byteOffset - base.byteOffset).toBe(12 * 4);
    expect(transposed.buffer).not.toBe(base.buffer); // non-contiguous: gathered into its own array
  });
});

describe('pickled nn.Module trees', () => {
  it('walks a whole pickled nn.Sequential into the keys and values of its state_dict()', async () => {
    const ckpt = await readCheckpoint(fixture('module.pt'));
    expect((ckpt.root as PyObject).__class__).toBe('torch.nn.modules.container.Sequential');
    expectMatches(stateDict(ckpt.root), dictOf('module.pt'));
  });

  it('records module attributes: BatchNorm eps and the layer hyper-parameters', async () => {
    const ckpt = await readCheckpoint(fixture('module.pt'));
    expect(Object.fromEntries(batchNormEps(ckpt.root))).toEqual((expected['module.pt'] as { bn_eps: Record<string, number> }).bn_eps);
    expect(pyGet(ckpt.root, '0', 'kernel_size')).toEqual([3, 3]);
    expect(pyGet(ckpt.root, '1', 'momentum')).toBe(0.03);
    expect((pyGet(ckpt.root, '3.0') as PyObject).__class__).toBe('torch.nn.modules.flatten.Flatten');
  });

  it('skips None parameters and non-persistent buffers, as state_dict() does, for classes it cannot import', async () => {
    const ckpt = await readCheckpoint(fixture('user-module.pt'));
    expect((ckpt.root as PyObject).__class__).toBe('__main__.Scaled');
    const sd = stateDict(ckpt.root);
    expectMatches(sd, dictOf('user-module.pt'));
    expect(sd.has('unused')).toBe(false);
    expect(sd.has('scratch')).toBe(false);
    expect((sd.get('scale') as TorchTensor).isParameter).toBe(true);
  });

  it('prefixes keys when asked', async () => {
    const sd = stateDict((await readCheckpoint(fixture('wrapped.pt'))).root, { prefix: 'head.' });
    expect([...sd.keys()]).toEqual(['head.weight', 'head.bias']);
  });
});

describe('wrappers', () => {
  const t = (v: number): TorchTensor => new TorchTensor([1], 'float32', undefined, Float32Array.of(v));
  const dict = (entries: [string, PyValue][]): Map<PyValue, PyValue> => new Map(entries);

  it('prefers {"state_dict"}, then a non-None {"ema"}, then {"model"}', () => {
    const sd = dict([['w', t(1)]]);
    const ema = dict([['w', t(2)]]);
    expect(stateDict(dict([['state_dict', sd], ['model', ema]])).get('w')?.data[0]).toBe(1);
    expect(stateDict(dict([['model', sd], ['ema', ema]])).get('w')?.data[0]).toBe(2);
    expect(stateDict(dict([['model', sd], ['ema', null]])).get('w')?.data[0]).toBe(1);
  });

  it('flattens a wrapper as it is when unwrapping is off', () => {
    const keys = [...stateDict(dict([['model', dict([['w', t(1)]])]]), { unwrap: false }).keys()];
    expect(keys).toEqual(['model.w']);
  });

  it('says clearly when a value is not a state dict', () => {
    expect(() => stateDict(dict([['w', t(1)], ['note', 'hello']]))).toThrow(/entry note is a string, not a tensor/);
    expect(() => stateDict('text')).toThrow(/not a state dict/);
  });
});

describe('safetensors', () => {
  it('reads every dtype, in header order, ignoring __metadata__', async () => {
    const ckpt = await readCheckpoint(fixture('tensors.safetensors'));
    expect(ckpt.format).toBe('safetensors');
    expectMatches(stateDict(ckpt.root), dictOf('tensors.safetensors'));
  });
});
