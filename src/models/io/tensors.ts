/**
 * Tensors as checkpoints store them: typed storages (raw little-endian bytes) and strided views
 * onto them. Floating storages are widened or narrowed to Float32Array (what the graph builder
 * consumes); integer and boolean storages keep their width.
 */
import type { DType, HostTensor, TypedData } from '../graph/tensor.js';
import { numel } from '../graph/tensor.js';
import { CheckpointError } from './errors.js';

/** Element types a checkpoint may store. */
export type StorageDType = 'float16' | 'bfloat16' | 'float32' | 'float64' | 'int64' | 'int32' | 'uint8' | 'bool';

interface DTypeInfo {
  readonly itemSize: number;
  /** The HostTensor dtype the values are delivered as. */
  readonly hostDtype: DType;
}

export const STORAGE_DTYPES: Readonly<Record<StorageDType, DTypeInfo>> = {
  float16: { itemSize: 2, hostDtype: 'float32' },
  bfloat16: { itemSize: 2, hostDtype: 'float32' },
  float32: { itemSize: 4, hostDtype: 'float32' },
  float64: { itemSize: 8, hostDtype: 'float32' },
  int64: { itemSize: 8, hostDtype: 'int64' },
  int32: { itemSize: 4, hostDtype: 'int32' },
  uint8: { itemSize: 1, hostDtype: 'uint8' },
  bool: { itemSize: 1, hostDtype: 'bool' },
};

export const SUPPORTED_DTYPES_TEXT = Object.keys(STORAGE_DTYPES).join(', ');

/** Decoded storage arrays: one per storage, shared by every view of it. */
export type StorageData = Float32Array | BigInt64Array | Int32Array | Uint8Array;

/** A storage named by a pickle's persistent id: `('storage', torch.HalfStorage, key, location, numel)`. */
export class TorchStorage {
  /** Filled once by the reader after unpickling; every view of this storage slices the same array. */
  data: StorageData | undefined;
  constructor(
    readonly key: string,
    readonly dtype: StorageDType,
    readonly numel: number,
    readonly location: string,
  ) {}
  get byteLength(): number {
    return this.numel * STORAGE_DTYPES[this.dtype].itemSize;
  }
}

export interface TensorView {
  readonly storage: TorchStorage;
  readonly offset: number;
  readonly stride: readonly number[];
}

/** A tensor read from a checkpoint. It is a HostTensor; `storageDtype` says what the file held. */
export class TorchTensor implements HostTensor {
  readonly dtype: DType;
  private values: TypedData | undefined;
  /** True for an nn.Parameter (rebuilt through `_rebuild_parameter`). */
  isParameter = false;
  requiresGrad = false;
  constructor(
    readonly shape: readonly number[],
    readonly storageDtype: StorageDType,
    /** Where the values come from, until `materialise` (pickled tensors); absent for safetensors. */
    private view?: TensorView,
    values?: TypedData,
  ) {
    this.dtype = STORAGE_DTYPES[storageDtype].hostDtype;
    this.values = values;
  }

  get data(): TypedData {
    if (!this.values) throw new CheckpointError(`tensor ${JSON.stringify(this.shape)} was not read from its storage`);
    return this.values;
  }

  get numel(): number {
    return numel(this.shape);
  }

  /** Take this tensor's values from its (decoded) storage: a shared subarray when contiguous, a gather otherwise. */
  materialise(): void {
    const view = this.view;
    if (!view || this.values) return;
    const data = view.storage.data;
    if (!data) throw new CheckpointError(`storage ${view.storage.key} was not read`);
    this.values = viewValues(data, this.shape, view.stride, view.offset, view.storage.key);
    this.view = undefined;
  }
}

/** Bytes of a storage → its typed array. `bytes` must hold at least `n` items; big-endian files are swapped. */
export function decodeStorage(bytes: Uint8Array, dtype: StorageDType, n: number, bigEndian = false): StorageData {
  const size = STORAGE_DTYPES[dtype].itemSize;
  let b = bytes.subarray(0, n * size);
  if (bigEndian && size > 1) b = byteSwapped(b, size);
  // A typed-array view needs an aligned offset; storages read into fresh buffers are aligned, others are copied once.
  if (b.byteOffset % size !== 0) b = b.slice();
  switch (dtype) {
    case 'float16':
      return widenFloat16(new Uint16Array(b.buffer, b.byteOffset, n));
    case 'bfloat16': {
      const src = new Uint16Array(b.buffer, b.byteOffset, n);
      const out = new Float32Array(n);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = src[i] << 16;
      return out;
    }
    case 'float32':
      return new Float32Array(b.buffer, b.byteOffset, n);
    case 'float64':
      return Float32Array.from(new Float64Array(b.buffer, b.byteOffset, n));
    case 'int64':
      return new BigInt64Array(b.buffer, b.byteOffset, n);
    case 'int32':
      return new Int32Array(b.buffer, b.byteOffset, n);
    case 'uint8':
    case 'bool':
      return b;
  }
}

function byteSwapped(b: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i += size) for (let j = 0; j < size; j++) out[i + j] = b[i + size - 1 - j];
  return out;
}

let halfTable: Float32Array | undefined;

/** All 65536 half-precision values as float32, built once: widening is then one table lookup per element. */
function float16Table(): Float32Array {
  if (halfTable) return halfTable;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) t[h] = sign * frac * 2 ** -24;
    else if (exp === 31) t[h] = frac ? NaN : sign * Infinity;
    else t[h] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return (halfTable = t);
}

export function widenFloat16(src: Uint16Array): Float32Array {
  const table = float16Table();
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]];
  return out;
}

/** Row-major strides of a shape: what a contiguous tensor has. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

function isContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  const want = contiguousStrides(shape);
  // Dimensions of size 1 may carry any stride (PyTorch's own contiguity rule).
  return shape.every((d, i) => d === 1 || stride[i] === want[i]);
}

/** A view's values: a subarray of the storage when contiguous (no copy), else a strided gather. */
function viewValues(data: StorageData, shape: readonly number[], stride: readonly number[], offset: number, key: string): StorageData {
  const n = numel(shape);
  if (shape.length !== stride.length) throw new CheckpointError(`storage ${key}: view has ${shape.length} sizes but ${stride.length} strides`);
  if (n === 0) return data.subarray(0, 0);
  let last = offset;
  for (let i = 0; i < shape.length; i++) {
    if (stride[i] < 0 || !Number.isInteger(stride[i])) throw new CheckpointError(`storage ${key}: unsupported stride ${stride[i]}`);
    last += (shape[i] - 1) * stride[i];
  }
  if (offset < 0 || last >= data.length) {
    throw new CheckpointError(`storage ${key} holds ${data.length} elements, but a tensor view needs element ${last} (truncated or corrupt file)`);
  }
  if (isContiguous(shape, stride)) return offset === 0 && n === data.length ? data : data.subarray(offset, offset + n);
  return gather(data, shape, stride, offset, n);
}

function gather<T extends StorageData>(data: T, shape: readonly number[], stride: readonly number[], offset: number, n: number): T {
  const out = new (data.constructor as new (n: number) => T)(n);
  const rank = shape.length;
  const index = new Array<number>(rank).fill(0);
  let src = offset;
  for (let i = 0; i < n; i++) {
    out[i] = data[src];
    // Odometer over the indices, last dimension fastest; `src` follows the strides.
    for (let d = rank - 1; d >= 0; d--) {
      if (++index[d] < shape[d]) {
        src += stride[d];
        break;
      }
      src -= (shape[d] - 1) * stride[d];
      index[d] = 0;
    }
  }
  return out;
}
