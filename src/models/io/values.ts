/**
 * The JavaScript shapes of unpickled Python values. Nothing here runs Python code: a pickled
 * object becomes an inert record of its class name, constructor arguments and BUILD state.
 *
 * | Python                      | here                                  |
 * |-----------------------------|---------------------------------------|
 * | None, bool, str, float      | null, boolean, string, number         |
 * | int                         | number (bigint beyond 2^53)           |
 * | bytes, bytearray            | Uint8Array                            |
 * | list, tuple, torch.Size     | PyValue[]                             |
 * | dict, OrderedDict           | Map (insertion order kept, like Python) |
 * | set, frozenset              | Set                                   |
 * | torch.Tensor, nn.Parameter  | TorchTensor                           |
 * | any other object            | PyObject {__class__, args, state}     |
 * | a class or function itself  | PyGlobal {module, name}               |
 */
import { TorchStorage, TorchTensor } from './tensors.js';

export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PyValue[]
  | PyDict
  | PySet
  | PyObject
  | PyGlobal
  | TorchTensor
  | TorchStorage;

export type PyDict = Map<PyValue, PyValue>;
export type PySet = Set<PyValue>;

/** A reference to a module-level name (`torch.float16`, a class used as a value). */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

/** An instance of a class fovea does not interpret: its class name, constructor arguments and BUILD state. */
export class PyObject {
  /** `state` of `__setstate__`/BUILD: for an nn.Module, its `__dict__` (`_parameters`, `_modules`, `eps`, …). */
  state: PyValue = null;
  /** Items appended or set on list/dict subclasses (APPENDS/SETITEMS on the object). */
  listItems?: PyValue[];
  dictItems?: PyDict;
  constructor(
    readonly __class__: string,
    readonly args: readonly PyValue[] = [],
  ) {}
}

export function isDict(v: PyValue | undefined): v is PyDict {
  return v instanceof Map;
}

/** The entries of a dict whose keys are strings, in order (other keys are skipped). */
export function* stringEntries(d: PyDict): Generator<[string, PyValue]> {
  for (const [k, v] of d) if (typeof k === 'string') yield [k, v];
}

/**
 * One attribute step the way Python would resolve it: a dict key, a list index, an object's
 * `__dict__` entry, or (for an nn.Module record) a child module, parameter or buffer.
 */
function step(v: PyValue, name: string): PyValue | undefined {
  if (v instanceof Map) return v.get(name);
  if (Array.isArray(v)) return /^\d+$/.test(name) ? v[Number(name)] : undefined;
  if (v instanceof PyObject) {
    const st = v.state;
    if (!(st instanceof Map)) return undefined;
    if (st.has(name)) return st.get(name);
    for (const slot of ['_modules', '_parameters', '_buffers']) {
      const d = st.get(slot);
      if (d instanceof Map && d.has(name)) return d.get(name);
    }
  }
  return undefined;
}

/**
 * Follow a path of attribute names through an object graph; each argument may itself be dotted.
 * `pyGet(ckpt.root, 'model', 'stride')` or `pyGet(ckpt.root, 'model.model.0.bn.eps')`.
 * Returns undefined when a step does not exist.
 */
export function pyGet(v: PyValue | undefined, ...path: string[]): PyValue | undefined {
  let cur = v;
  for (const part of path.flatMap((p) => p.split('.'))) {
    if (cur === undefined || cur === null) return undefined;
    cur = step(cur, part);
  }
  return cur;
}

/** A short human description of a value's type, for error messages. */
export function describe(v: PyValue | undefined): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'None';
  if (v instanceof Uint8Array) return 'bytes';
  if (Array.isArray(v)) return 'a list/tuple';
  if (v instanceof Map) return 'a dict';
  if (v instanceof Set) return 'a set';
  if (v instanceof PyObject) return `a ${v.__class__} object`;
  if (v instanceof PyGlobal) return `the global ${v.qualifiedName}`;
  if (v instanceof TorchTensor) return `a ${v.storageDtype} tensor of shape [${v.shape.join(', ')}]`;
  if (v instanceof TorchStorage) return `storage ${v.key}`;
  return `a ${typeof v}`;
}
