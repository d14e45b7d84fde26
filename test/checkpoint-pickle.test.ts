/**
 * The pickle machine on hand-assembled opcode streams: values come out as Python would build them,
 * and nothing is ever called — unknown functions are refused by name.
 */
import { describe, expect, it } from 'vitest';
import { CheckpointError } from '../src/models/io/errors.js';
import { unpickle } from '../src/models/io/pickle.js';
import { TorchContext, torchHooks } from '../src/models/io/reducers.js';
import { TorchStorage, TorchTensor } from '../src/models/io/tensors.js';
import type { PyValue } from '../src/models/io/values.js';
import { PyGlobal, PyObject, pyGet } from '../src/models/io/values.js';

/** A storage persistent id naming torch.<type>. */
const storageIdFor = (type: string): string => `(${str('storage')}ctorch\n${type}\n${str('0')}${str('cpu')}K\x01tQ`;

/** Assemble a pickle from opcode strings (latin-1) and byte arrays. */
function pickle(...parts: (string | number[])[]): Uint8Array {
  const bytes: number[] = [];
  for (const p of parts) {
    if (typeof p === 'string') for (const c of p) bytes.push(c.charCodeAt(0));
    else bytes.push(...p);
  }
  return Uint8Array.from(bytes);
}
const u32 = (n: number): number[] => [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff];
/** BINUNICODE: a 4-byte length, then UTF-8. */
const str = (s: string): string => {
  const utf8 = new TextEncoder().encode(s);
  return `X${String.fromCharCode(...u32(utf8.length), ...utf8)}`;
};

function load(bytes: Uint8Array, ctx = new TorchContext()): PyValue {
  return unpickle(bytes, torchHooks(ctx));
}

describe('pickle values', () => {
  it('decodes LONG1 as signed two’s complement, like Python', () => {
    expect(load(pickle('\x80\x02\x8a\x01\xff.'))).toBe(-1);
    expect(load(pickle('\x80\x02\x8a\x02\x00\x80.'))).toBe(-32768);
    expect(load(pickle('\x80\x02\x8a\x09', [0, 0, 0, 0, 0, 0, 0, 0, 1], '.'))).toBe(2n ** 64n);
  });

  it('reads protocol-0 text opcodes: INT, LONG, FLOAT, STRING, UNICODE, GET/PUT', () => {
    const v = load(pickle("(I42\nL-7L\nF0.25\nS'a\\nb'\nVcaf\\u00e9\np0\ng0\nt."));
    expect(v).toEqual([42, -7, 0.25, 'a\nb', 'café', 'café']);
  });

  it('builds dicts in insertion order, sets, tuples and lists, sharing memoised objects', () => {
    const v = load(pickle('\x80\x04\x95', [0, 0, 0, 0, 0, 0, 0, 0], '}\x94(\x8c\x01b\x94K\x01\x8c\x01a\x94]\x94(K\x02K\x03e\x8c\x01c\x94h\x03\x8c\x01s\x94\x8f\x94(K\x05\x90u.'));
    expect(v).toBeInstanceOf(Map);
    const d = v as Map<PyValue, PyValue>;
    expect([...d.keys()]).toEqual(['b', 'a', 'c', 's']);
    expect(d.get('a')).toEqual([2, 3]);
    expect(d.get('c')).toBe(d.get('a'));
    expect(d.get('s')).toEqual(new Set([5]));
  });

  it('keeps a class used as a value as a named global (torch.float16)', () => {
    const v = load(pickle('\x80\x02ctorch\nfloat16\n.'));
    expect(v).toBeInstanceOf(PyGlobal);
    expect((v as PyGlobal).qualifiedName).toBe('torch.float16');
  });

  it('turns NEWOBJ + BUILD of any class into an inert record of its state', () => {
    const v = load(pickle('\x80\x02cultralytics.nn.modules.conv\nConv\n)\x81}(', str('eps'), 'G', [0x3f, 0x50, 0x62, 0x4d, 0xd2, 0xf1, 0xa9, 0xfc], 'ub.'));
    expect(v).toBeInstanceOf(PyObject);
    expect((v as PyObject).__class__).toBe('ultralytics.nn.modules.conv.Conv');
    expect(pyGet(v, 'eps')).toBe(0.001);
  });

  it('records a REDUCE of a class (a SimpleNamespace subclass) instead of calling it', () => {
    const v = load(pickle('\x80\x02cultralytics.utils\nIterableSimpleNamespace\n)R}(', str('imgsz'), 'M\x80\x02ub.'));
    expect((v as PyObject).__class__).toBe('ultralytics.utils.IterableSimpleNamespace');
    expect(pyGet(v, 'imgsz')).toBe(640);
  });

  it('reads Python 3 bytes pickled with protocol 2 (_codecs.encode) and __builtin__ names', () => {
    expect(load(pickle('\x80\x02c_codecs\nencode\n', str('\u00ff\u0001'), str('latin1'), '\x86R.'))).toEqual(Uint8Array.of(255, 1));
    expect(load(pickle('\x80\x02c__builtin__\nset\n]K\x07a\x85R.'))).toEqual(new Set([7]));
  });

  it('keeps training metadata readable: datetimes as records, defaultdicts as dicts', () => {
    const when = load(pickle('\x80\x02cdatetime\ndatetime\nC\x0a', [7, 232, 4, 20, 20, 47, 35, 6, 114, 21], '\x85R.'));
    expect((when as PyObject).__class__).toBe('datetime.datetime');
    const counts = load(pickle('\x80\x02ccollections\ndefaultdict\nc__builtin__\nint\n\x85R', str('a'), 'K\x02s.'));
    expect(counts).toEqual(new Map([['a', 2]]));
  });
});

describe('tensors in pickles', () => {
  const storageId = (type: string, key: string, numel: number): string => `(${str('storage')}ctorch\n${type}\n${str(key)}${str('cpu')}K${String.fromCharCode(numel)}tQ`;

  it('rebuilds tensors over shared storages: one TorchStorage per key, views remembered', () => {
    const ctx = new TorchContext();
    // [_rebuild_tensor_v2(storage 0, 0, (2,), (1,), False, OrderedDict()), _rebuild_tensor_v2(storage 0, 1, (1,), (1,), ...)]
    const tensor = (offset: number, n: number): string =>
      `ctorch._utils\n_rebuild_tensor_v2\n(${storageId('FloatStorage', '0', 3)}K${String.fromCharCode(offset)}K${String.fromCharCode(n)}\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR`;
    const v = load(pickle('\x80\x02(', tensor(0, 2), tensor(1, 1), 'l.'), ctx) as PyValue[];
    expect(ctx.storages.size).toBe(1);
    expect(ctx.tensors).toHaveLength(2);
    expect(v[0]).toBeInstanceOf(TorchTensor);
    const storage = ctx.storages.get('0') as TorchStorage;
    storage.data = Float32Array.of(1, 2, 3);
    for (const t of ctx.tensors) t.materialise();
    expect(Array.from((v[0] as TorchTensor).data as Float32Array)).toEqual([1, 2]);
    expect(Array.from((v[1] as TorchTensor).data as Float32Array)).toEqual([2]);
  });

  it('refuses storage types outside FP16/BF16/FP32/FP64/INT64/INT32/UINT8/BOOL, naming the type', () => {
    expect(() => load(pickle('\x80\x02', storageId('ShortStorage', '0', 1), '.'))).toThrow(/unsupported dtype: storage type torch\.ShortStorage/);
  });
});

describe('refused calls', () => {
  const call = (module: string, name: string): Uint8Array => pickle(`\x80\x02c${module}\n${name}\n`, str('x'), '\x85R.');

  it.each([
    ['posix', 'system'],
    ['nt', 'system'],
    ['builtins', 'eval'],
    ['builtins', 'getattr'],
    ['__builtin__', 'exec'],
    ['subprocess', 'check_output'],
    ['subprocess', 'Popen'],
    ['torch', 'load'],
  ])('a REDUCE of %s.%s is refused with its name', (module, name) => {
    expect(() => load(call(module, name))).toThrow(CheckpointError);
    expect(() => load(call(module, name))).toThrow(new RegExp(`${module}\\.${name}`));
  });

  it('a global named like an Object.prototype member is just an unknown name', () => {
    expect(() => load(call('torch', 'constructor'))).toThrow(/torch\.constructor/);
    expect(() => load(pickle('\x80\x02', storageIdFor('constructor'), '.'))).toThrow(/unsupported dtype: storage type torch\.constructor/);
  });

  it('an INST opcode calling a function is refused as well', () => {
    expect(() => load(pickle(`(${str('echo')}iposix\nsystem\n.`))).toThrow(/posix\.system/);
  });

  it('NEWOBJ of a class from os/subprocess is refused', () => {
    expect(() => load(pickle('\x80\x02csubprocess\nPopen\n)\x81.'))).toThrow(/instantiates subprocess\.Popen/);
  });
});

describe('damaged pickles', () => {
  it('a pickle that ends early is reported as truncated', () => {
    expect(() => load(pickle('\x80\x02X\x10\x00\x00\x00abc'))).toThrow(/truncated pickle/);
    expect(() => load(pickle('\x80\x02}'))).toThrow(/truncated pickle/);
  });

  it('an unknown opcode is reported with its position', () => {
    expect(() => load(pickle('\x80\x02\xff.'))).toThrow(/unknown opcode 0xff at byte 2/);
  });

  it('a memo reference that was never stored is reported', () => {
    expect(() => load(pickle('\x80\x02h\x05.'))).toThrow(/memo entry 5 is not defined/);
  });
});
