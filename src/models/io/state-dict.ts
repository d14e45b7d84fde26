/**
 * Flattening an unpickled checkpoint into a state dict with PyTorch's key names, whether it holds a
 * dict of tensors or a whole pickled nn.Module tree, and reading module attributes such as
 * BatchNorm's eps that a state dict does not carry.
 */
import type { StateDict } from '../graph/params.js';
import { CheckpointError } from './errors.js';
import { TorchTensor } from './tensors.js';
import type { PyDict, PyValue } from './values.js';
import { PyObject, describe, stringEntries } from './values.js';

/** Keys under which training frameworks wrap the weights, tried in this order. */
export const WRAPPER_KEYS = ['state_dict', 'ema', 'model'] as const;

export interface StateDictOptions {
  /** Prefix for every key (`'model.'`); default none. */
  readonly prefix?: string;
  /**
   * Unwrap `{'state_dict': …}`, `{'ema': …}` (when not None) and `{'model': …}`, in that order, like
   * ultralytics' `ckpt.get('ema') or ckpt['model']`; default true. Set false to flatten the dict as it is.
   */
  readonly unwrap?: boolean;
}

/** An nn.Module record: a PyObject whose state has the `_parameters` / `_buffers` / `_modules` dicts. */
export function isModule(v: PyValue | undefined): v is PyObject & { state: PyDict } {
  return v instanceof PyObject && v.state instanceof Map && v.state.get('_modules') instanceof Map && v.state.get('_parameters') instanceof Map;
}

/** The module's `__dict__` entry `name` as a dict (empty when absent). */
function slot(m: PyObject & { state: PyDict }, name: string): PyDict {
  const d = m.state.get(name);
  return d instanceof Map ? d : new Map();
}

/** The same walk as `nn.Module.state_dict()`: own parameters, persistent buffers, then children, skipping None. */
function walkModule(m: PyObject & { state: PyDict }, prefix: string, out: Map<string, TorchTensor>): void {
  const nonPersistent = m.state.get('_non_persistent_buffers_set');
  for (const [name, p] of stringEntries(slot(m, '_parameters'))) {
    if (p === null) continue;
    if (!(p instanceof TorchTensor)) throw new CheckpointError(`corrupt checkpoint: parameter ${prefix}${name} is ${describe(p)}`);
    out.set(prefix + name, p);
  }
  for (const [name, b] of stringEntries(slot(m, '_buffers'))) {
    if (b === null || (nonPersistent instanceof Set && nonPersistent.has(name))) continue;
    if (!(b instanceof TorchTensor)) throw new CheckpointError(`corrupt checkpoint: buffer ${prefix}${name} is ${describe(b)}`);
    out.set(prefix + name, b);
  }
  for (const [name, child] of stringEntries(slot(m, '_modules'))) {
    if (child === null) continue;
    if (!isModule(child)) throw new CheckpointError(`corrupt checkpoint: submodule ${prefix}${name} is ${describe(child)}`);
    walkModule(child, `${prefix}${name}.`, out);
  }
}

/** A dict of tensors; nested dicts and modules flatten with dotted prefixes. */
function walkDict(d: PyDict, prefix: string, out: Map<string, TorchTensor>): void {
  for (const [key, v] of d) {
    if (v === null) continue;
    const name = `${prefix}${typeof key === 'string' ? key : String(key)}`;
    if (v instanceof TorchTensor) out.set(name, v);
    else if (isModule(v)) walkModule(v, `${name}.`, out);
    else if (v instanceof Map) walkDict(v, `${name}.`, out);
    else throw new CheckpointError(`not a state dict: entry ${name} is ${describe(v)}, not a tensor`);
  }
}

function unwrapped(v: PyValue): PyValue {
  let cur = v;
  for (let depth = 0; depth < 4 && cur instanceof Map; depth++) {
    if ([...cur.values()].every((x) => x === null || x instanceof TorchTensor)) return cur;
    const key = WRAPPER_KEYS.find((k) => {
      const inner = (cur as PyDict).get(k);
      return inner instanceof Map || isModule(inner);
    });
    if (!key) return cur;
    cur = cur.get(key) as PyValue;
  }
  return cur;
}

/**
 * The state dict of a checkpoint value: a dict of tensors (possibly wrapped), or a pickled
 * nn.Module (`stateDict(pyGet(ckpt.root, 'model'))` for an ultralytics checkpoint gives
 * `model.0.c.weight`, … exactly as `model.state_dict()` does). Tensors are shared, not copied.
 */
export function stateDict(obj: PyValue, opts: StateDictOptions = {}): StateDict {
  const prefix = opts.prefix ?? '';
  const root = opts.unwrap === false ? obj : unwrapped(obj);
  const out = new Map<string, TorchTensor>();
  if (isModule(root)) walkModule(root, prefix, out);
  else if (root instanceof Map) walkDict(root, prefix, out);
  else if (root instanceof TorchTensor) throw new CheckpointError('not a state dict: the checkpoint is a single tensor');
  else throw new CheckpointError(`not a state dict: the checkpoint holds ${describe(root)}, not a dict of tensors or an nn.Module`);
  return out;
}

/** The number of elements of the tensors that are nn.Parameters (what `sum(p.numel() for p in model.parameters())` counts). */
export function parameterCount(sd: StateDict): number {
  let n = 0;
  for (const t of sd.values()) if (t instanceof TorchTensor && t.isParameter) n += t.numel;
  return n;
}

/** Every nn.Module record under `root` with its dotted path (the path prefixes the state-dict keys). */
export function* modules(root: PyValue, prefix = ''): Generator<[string, PyObject & { state: PyDict }]> {
  const top = isModule(root) ? root : unwrapped(root);
  if (!isModule(top)) return;
  yield [prefix, top];
  for (const [name, child] of stringEntries(slot(top, '_modules'))) {
    if (isModule(child)) yield* modules(child, prefix ? `${prefix}.${name}` : name);
  }
}

/**
 * BatchNorm eps by module path (`'model.0.bn' → 0.001`), read from the pickled module records
 * (ultralytics initialises every BatchNorm with eps 1e-3, PyTorch's default is 1e-5). Empty when the
 * checkpoint is a bare state dict, which does not record eps.
 */
export function batchNormEps(root: PyValue, prefix = ''): Map<string, number> {
  const out = new Map<string, number>();
  for (const [path, m] of modules(root, prefix)) {
    const eps = m.state.get('eps');
    if (/BatchNorm\dd$|SyncBatchNorm$/.test(m.__class__) && typeof eps === 'number') out.set(path, eps);
  }
  return out;
}
