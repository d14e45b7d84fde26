/**
 * What a pickled call means, decided without running anything. Known reducers (torch's tensor
 * rebuilders, containers, a few builtins) are interpreted; an instantiation of any other class
 * becomes an inert PyObject record; a call of any other *function* (`posix.system`,
 * `builtins.eval`, `subprocess.check_output`, …) is refused with a CheckpointError naming it.
 */
import { CheckpointError } from './errors.js';
import type { UnpickleHooks } from './pickle.js';
import type { StorageDType } from './tensors.js';
import { SUPPORTED_DTYPES_TEXT, TorchStorage, TorchTensor } from './tensors.js';
import type { PyValue } from './values.js';
import { PyGlobal, PyObject, describe } from './values.js';

/** `torch.<Name>Storage` → element type (the storage classes persistent ids name). */
const STORAGE_CLASSES: Readonly<Record<string, StorageDType>> = {
  HalfStorage: 'float16',
  BFloat16Storage: 'bfloat16',
  FloatStorage: 'float32',
  DoubleStorage: 'float64',
  LongStorage: 'int64',
  IntStorage: 'int32',
  ByteStorage: 'uint8',
  UntypedStorage: 'uint8',
  BoolStorage: 'bool',
};

/** `torch.float16` and friends, as `_rebuild_tensor_v3` and pickled dtypes name them. */
const TORCH_DTYPES: Readonly<Record<string, StorageDType>> = {
  float16: 'float16', half: 'float16', bfloat16: 'bfloat16', float32: 'float32', float: 'float32',
  float64: 'float64', double: 'float64', int64: 'int64', long: 'int64', int32: 'int32', int: 'int32',
  uint8: 'uint8', bool: 'bool',
};

/**
 * Modules whose classes are never recorded even though constructing a record runs nothing: a
 * checkpoint that instantiates `subprocess.Popen` or `io.FileIO` is hostile, and saying so is
 * clearer than loading it.
 */
const DENIED_MODULES = new Set([
  'os', 'posix', 'nt', 'subprocess', 'sys', 'shutil', 'socket', 'importlib', 'runpy', 'pty', 'code', 'codeop',
  'pickle', '_pickle', 'marshal', 'ctypes', 'multiprocessing', 'webbrowser', 'asyncio', 'threading', 'signal',
  'io', '_io', 'tempfile', 'urllib', 'http', 'ftplib', 'smtplib', 'telnetlib', 'zipimport', 'pdb', 'bdb',
  'timeit', 'trace', 'profile', 'cProfile', 'platform', 'commands', 'popen2', 'glob', 'fileinput', 'operator',
  'functools', 'inspect', 'types', 'builtins', '__builtin__', 'exec', 'eval',
]);

type Reducer = (args: PyValue[], ctx: TorchContext) => PyValue;

/** A table lookup that a pickled name such as "constructor" or "__proto__" cannot steer onto Object.prototype. */
export function lookup<T>(table: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}

/** What the reader learns while unpickling: the storages and the tensors that view them. */
export class TorchContext {
  readonly storages = new Map<string, TorchStorage>();
  readonly tensors: TorchTensor[] = [];
}

function int(v: PyValue, what: string): number {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'boolean') return Number(v);
  throw new CheckpointError(`corrupt checkpoint: ${what} should be an integer, got ${describe(v)}`);
}

function intList(v: PyValue, what: string): number[] {
  if (!Array.isArray(v)) throw new CheckpointError(`corrupt checkpoint: ${what} should be a tuple, got ${describe(v)}`);
  return v.map((x) => int(x, what));
}

/** `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`. */
function rebuildTensor(args: PyValue[], ctx: TorchContext, dtype?: StorageDType): TorchTensor {
  const [storage, offset, size, stride, requiresGrad] = args;
  if (!(storage instanceof TorchStorage)) throw new CheckpointError(`corrupt checkpoint: a tensor is rebuilt from ${describe(storage)}, not a storage`);
  if (dtype && dtype !== storage.dtype) throw new CheckpointError(`unsupported checkpoint: tensor of ${dtype} over a ${storage.dtype} storage`);
  const t = new TorchTensor(intList(size, 'tensor size'), storage.dtype, {
    storage,
    offset: int(offset, 'storage offset'),
    stride: intList(stride, 'tensor stride'),
  });
  t.requiresGrad = requiresGrad === true;
  ctx.tensors.push(t);
  return t;
}

function asParameter(args: PyValue[]): PyValue {
  const [data, requiresGrad] = args;
  if (!(data instanceof TorchTensor)) throw new CheckpointError(`corrupt checkpoint: a Parameter wraps ${describe(data)}`);
  data.isParameter = true;
  data.requiresGrad = requiresGrad === true;
  return data;
}

function dtypeOf(v: PyValue): StorageDType {
  const name = v instanceof PyGlobal && v.module === 'torch' ? lookup(TORCH_DTYPES, v.name) : undefined;
  if (!name) throw new CheckpointError(`unsupported dtype ${describe(v)}; supported: ${SUPPORTED_DTYPES_TEXT}`);
  return name;
}

function pairsToMap(v: PyValue | undefined): Map<PyValue, PyValue> {
  const m = new Map<PyValue, PyValue>();
  if (v instanceof Map) for (const [k, x] of v) m.set(k, x);
  else if (Array.isArray(v)) for (const kv of v) if (Array.isArray(kv) && kv.length === 2) m.set(kv[0], kv[1]);
  return m;
}

const latin1Bytes = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff);

const record = (name: string): Reducer => (args) => new PyObject(name, args);

/** The reducers a checkpoint may call. Everything here only builds values; nothing is looked up or run. */
const KNOWN: Readonly<Record<string, Reducer>> = {
  'torch._utils._rebuild_tensor': (a, ctx) => rebuildTensor(a, ctx),
  'torch._utils._rebuild_tensor_v2': (a, ctx) => rebuildTensor(a, ctx),
  'torch._utils._rebuild_tensor_v3': (a, ctx) => rebuildTensor(a, ctx, dtypeOf(a[6] ?? null)),
  'torch._utils._rebuild_parameter': (a) => asParameter(a),
  'torch._utils._rebuild_parameter_with_state': (a) => asParameter(a),
  'torch._tensor._rebuild_from_type_v2': (a, ctx) => {
    // (func, new_type, args, state): a Tensor subclass; the values are what `func(*args)` rebuilds.
    const [fn, , inner] = a;
    if (!(fn instanceof PyGlobal) || !Array.isArray(inner)) throw new CheckpointError('corrupt checkpoint: bad _rebuild_from_type_v2 call');
    return callGlobal(fn, inner, ctx);
  },
  'collections.OrderedDict': (a) => pairsToMap(a[0]),
  'collections.defaultdict': () => new Map(), // (default_factory,): the items follow as SETITEMS
  'collections.Counter': (a) => pairsToMap(a[0]),
  'collections.deque': (a) => (Array.isArray(a[0]) ? [...a[0]] : []),
  'builtins.dict': (a) => pairsToMap(a[0]),
  'builtins.set': (a) => new Set(Array.isArray(a[0]) ? a[0] : []),
  'builtins.frozenset': (a) => new Set(Array.isArray(a[0]) ? a[0] : []),
  'builtins.list': (a) => (Array.isArray(a[0]) ? [...a[0]] : []),
  'builtins.tuple': (a) => (Array.isArray(a[0]) ? [...a[0]] : []),
  'builtins.bytes': (a) => (a[0] instanceof Uint8Array ? a[0] : Array.isArray(a[0]) ? Uint8Array.from(a[0] as number[]) : new Uint8Array(0)),
  'builtins.bytearray': (a) => (typeof a[0] === 'string' ? latin1Bytes(a[0]) : a[0] instanceof Uint8Array ? a[0] : new Uint8Array(0)),
  // Protocol 2 pickles Python 3 bytes as `_codecs.encode(latin-1 text, 'latin1')`.
  '_codecs.encode': (a) => (typeof a[0] === 'string' ? latin1Bytes(a[0]) : new Uint8Array(0)),
  'builtins.slice': record('builtins.slice'),
  'builtins.complex': record('builtins.complex'),
  'builtins.range': record('builtins.range'),
  'builtins.object': record('builtins.object'),
  'copyreg._reconstructor': (a) => new PyObject(a[0] instanceof PyGlobal ? a[0].qualifiedName : 'object', a.slice(1)),
  'types.SimpleNamespace': record('types.SimpleNamespace'),
  'datetime.datetime': record('datetime.datetime'),
  'datetime.date': record('datetime.date'),
  'datetime.time': record('datetime.time'),
  'datetime.timedelta': record('datetime.timedelta'),
  'datetime.timezone': record('datetime.timezone'),
  'torch.Size': (a) => (Array.isArray(a[0]) ? [...a[0]] : []),
  'torch.device': record('torch.device'),
  'torch.dtype': record('torch.dtype'),
  // numpy scalars and arrays (training metrics in some checkpoints) stay records of their raw state.
  'numpy.core.multiarray.scalar': record('numpy.core.multiarray.scalar'),
  'numpy._core.multiarray.scalar': record('numpy._core.multiarray.scalar'),
  'numpy.core.multiarray._reconstruct': record('numpy.core.multiarray._reconstruct'),
  'numpy._core.multiarray._reconstruct': record('numpy._core.multiarray._reconstruct'),
  'numpy.dtype': record('numpy.dtype'),
  'numpy.core.numeric._frombuffer': record('numpy.core.numeric._frombuffer'),
  'numpy._core.numeric._frombuffer': record('numpy._core.numeric._frombuffer'),
};

/** Python 2 module names, read as Python 3's (the renames of pickle's `_compat_pickle` that matter here). */
const PY2_MODULES: Readonly<Record<string, string>> = { __builtin__: 'builtins', copy_reg: 'copyreg' };

function canonical(g: PyGlobal): string {
  return `${lookup(PY2_MODULES, g.module) ?? g.module}.${g.name}`;
}

/** CapWords names are classes by Python convention; calling one builds an instance we can record. */
function looksLikeClass(g: PyGlobal): boolean {
  return /^_*[A-Z]/.test(g.name) && !DENIED_MODULES.has(g.module.split('.')[0]);
}

function callGlobal(fn: PyGlobal, args: PyValue[], ctx: TorchContext): PyValue {
  const known = lookup(KNOWN, canonical(fn));
  if (known) return known(args, ctx);
  if (looksLikeClass(fn)) return new PyObject(fn.qualifiedName, args);
  throw new CheckpointError(
    `refusing to load: the pickle calls ${fn.qualifiedName}, which is not a known tensor or container constructor ` +
      `(fovea never executes code from a checkpoint; a file that calls such functions is broken or hostile)`,
  );
}

/** A storage persistent id: `('storage', torch.HalfStorage, key, location, numel)`; the same key is one storage. */
function loadStorage(pid: PyValue, ctx: TorchContext): TorchStorage {
  if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) {
    throw new CheckpointError(`unsupported checkpoint: persistent id ${describe(pid)} is not a torch storage reference`);
  }
  const [, type, key, location, n] = pid;
  const dtype = type instanceof PyGlobal && type.module === 'torch' ? lookup(STORAGE_CLASSES, type.name) : undefined;
  if (!dtype) {
    const typeName = type instanceof PyGlobal ? type.qualifiedName : describe(type);
    throw new CheckpointError(`unsupported dtype: storage type ${typeName}; supported: ${SUPPORTED_DTYPES_TEXT}`);
  }
  const name = typeof key === 'string' ? key : String(int(key, 'storage key'));
  const existing = ctx.storages.get(name);
  if (existing) return existing;
  const s = new TorchStorage(name, dtype, int(n, 'storage size'), typeof location === 'string' ? location : 'cpu');
  ctx.storages.set(name, s);
  return s;
}

/** Hooks for the pickle machine that understand torch.save's conventions. */
export function torchHooks(ctx: TorchContext): UnpickleHooks {
  return {
    persistentLoad: (pid) => loadStorage(pid, ctx),
    call: (fn, args) => callGlobal(fn, args, ctx),
    construct: (cls, args) => {
      // NEWOBJ is `cls.__new__(cls)`: no __init__ runs, so any class may be recorded; containers become containers.
      const c = canonical(cls);
      if (c === 'collections.OrderedDict' || c === 'builtins.dict') return new Map();
      if (c === 'builtins.set') return new Set();
      if (c === 'builtins.list') return [];
      if (DENIED_MODULES.has(cls.module.split('.')[0]) && !c.startsWith('builtins.')) {
        throw new CheckpointError(`refusing to load: the pickle instantiates ${cls.qualifiedName}`);
      }
      return new PyObject(cls.qualifiedName, args);
    },
  };
}

