/**
 * Checkpoint readers, without Python: PyTorch zip checkpoints (torch.save ≥ 1.6, pickled state
 * dicts or whole module trees), `.safetensors`, and plain pickles without tensors.
 *
 * ```ts
 * const ckpt = await readCheckpoint('LeYOLONano.pt');
 * const sd = stateDict(ckpt.root);                 // model.0.c.weight, …, model.35.dfl.conv.weight
 * const strides = pyGet(ckpt.root, 'model.stride'); // a TorchTensor [8, 16, 32]
 * const eps = batchNormEps(ckpt.root);             // 'model.0.bn' → 0.001
 * ```
 */
import { open } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { StateDict } from '../graph/params.js';
import { CheckpointError, asCheckpointError } from './errors.js';
import { unpickle } from './pickle.js';
import { TorchContext, torchHooks } from './reducers.js';
import { looksLikeSafetensors, readSafetensors } from './safetensors.js';
import type { StateDictOptions } from './state-dict.js';
import { stateDict } from './state-dict.js';
import { readTorchZip } from './torch-zip.js';
import type { PyValue } from './values.js';
import { readAt } from './zip.js';

export { CheckpointError } from './errors.js';
export type { StateDictOptions } from './state-dict.js';
export { WRAPPER_KEYS, batchNormEps, isModule, modules, parameterCount, stateDict } from './state-dict.js';
export type { StorageDType } from './tensors.js';
export { TorchTensor } from './tensors.js';
export type { PyDict, PySet, PyValue } from './values.js';
export { PyGlobal, PyObject, pyGet } from './values.js';

export type CheckpointFormat = 'torch-zip' | 'safetensors' | 'pickle';

export interface Checkpoint {
  readonly path: string;
  readonly format: CheckpointFormat;
  /** The unpickled object graph (a dict of name → tensor for safetensors). */
  readonly root: PyValue;
}

/** torch.save before 1.6 starts with a pickled magic number, 0x1950a86a20f9469cfc6c (LONG1 of 10 bytes). */
const LEGACY_MAGIC = Uint8Array.of(0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19);
const LEGACY_MESSAGE = 'legacy format, re-save with torch>=1.6 (the pre-zip torch.save format is not supported; in Python: torch.save(torch.load(f), f))';
const HEAD_BYTES = 512;

function startsWith(b: Uint8Array, prefix: Uint8Array, at = 0): boolean {
  return b.length >= at + prefix.length && prefix.every((x, i) => b[at + i] === x);
}

function detectFormat(head: Uint8Array, size: number): CheckpointFormat {
  if (startsWith(head, Uint8Array.of(0x50, 0x4b))) return 'torch-zip'; // "PK"
  if (head[0] === 0x80 && startsWith(head, LEGACY_MAGIC, 2)) throw new CheckpointError(LEGACY_MESSAGE);
  // torch.save before 0.4 wrote a tar archive ("ustar" at offset 257).
  if (startsWith(head, new TextEncoder().encode('ustar'), 257)) throw new CheckpointError(LEGACY_MESSAGE);
  if (looksLikeSafetensors(head, size)) return 'safetensors';
  if (head[0] === 0x80) return 'pickle';
  throw new CheckpointError('not a checkpoint: neither a PyTorch zip archive, a safetensors file nor a pickle (is the file complete?)');
}

/** Read a checkpoint file. Throws CheckpointError, naming the file, for anything wrong with its contents. */
export async function readCheckpoint(path: string | URL): Promise<Checkpoint> {
  const name = path instanceof URL ? fileURLToPath(path) : path;
  const file = await open(path, 'r');
  try {
    const { size } = await file.stat();
    if (size === 0) throw new CheckpointError('empty file');
    const format = detectFormat(await readAt(file, 0, Math.min(HEAD_BYTES, size)), size);
    let root: PyValue;
    if (format === 'torch-zip') root = await readTorchZip(file, size);
    else if (format === 'safetensors') root = await readSafetensors(file, size);
    else root = readPlainPickle(await readAt(file, 0, size));
    return { path: name, format, root };
  } catch (e) {
    throw asCheckpointError(e, name);
  } finally {
    await file.close();
  }
}

/** A pickle outside a zip archive holds no tensor storages; one that refers to storages is a legacy torch file. */
function readPlainPickle(bytes: Uint8Array): PyValue {
  const ctx = new TorchContext();
  const root = unpickle(bytes, torchHooks(ctx));
  if (ctx.storages.size > 0) throw new CheckpointError(LEGACY_MESSAGE);
  return root;
}

/** `stateDict((await readCheckpoint(path)).root, opts)`. */
export async function readStateDict(path: string | URL, opts?: StateDictOptions): Promise<StateDict> {
  const ckpt = await readCheckpoint(path);
  try {
    return stateDict(ckpt.root, opts);
  } catch (e) {
    throw asCheckpointError(e, ckpt.path);
  }
}
