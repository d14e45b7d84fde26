/** Element types, shapes and host tensors shared by the builder, the checkpoint readers and the params. */
import { TensorDataType } from './proto.js';

export type DType = 'float32' | 'float16' | 'float64' | 'int64' | 'int32' | 'int8' | 'uint8' | 'bool';
/** A static dimension, or a named symbolic one (the batch) that ONNX carries as `dim_param`. */
export type Dim = number | string;
export type Shape = readonly Dim[];

export type TypedData = Float32Array | Float64Array | BigInt64Array | Int32Array | Int8Array | Uint8Array | Uint16Array;

/** A tensor held on the host: an initializer, a constant or a checkpoint entry. */
export interface HostTensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: TypedData;
}

export const ONNX_DTYPE: Record<DType, TensorDataType> = {
  float32: TensorDataType.FLOAT,
  float16: TensorDataType.FLOAT16,
  float64: TensorDataType.DOUBLE,
  int64: TensorDataType.INT64,
  int32: TensorDataType.INT32,
  int8: TensorDataType.INT8,
  uint8: TensorDataType.UINT8,
  bool: TensorDataType.BOOL,
};

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function isStatic(shape: Shape): shape is readonly number[] {
  return shape.every((d) => typeof d === 'number');
}

export function shapeString(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function float32(shape: readonly number[], data?: Float32Array | readonly number[]): HostTensor {
  const n = numel(shape);
  const arr = data instanceof Float32Array ? data : data ? Float32Array.from(data) : new Float32Array(n);
  if (arr.length !== n) throw new RangeError(`float32 tensor ${shapeString(shape)} needs ${n} values, got ${arr.length}`);
  return { dtype: 'float32', shape: [...shape], data: arr };
}

export function int64(values: readonly number[], shape: readonly number[] = [values.length]): HostTensor {
  return { dtype: 'int64', shape: [...shape], data: BigInt64Array.from(values, (v) => BigInt(v)) };
}

/** Little-endian bytes of a host tensor, as ONNX raw_data wants them (x86 and ARM hosts are little-endian). */
export function rawBytes(t: HostTensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/** The values of an integer tensor as plain numbers (shape constants, axes). */
export function intValues(t: HostTensor): number[] {
  if (t.data instanceof BigInt64Array) return Array.from(t.data, (v) => Number(v));
  if (t.data instanceof Int32Array || t.data instanceof Int8Array || t.data instanceof Uint8Array) return Array.from(t.data);
  throw new TypeError(`expected an integer tensor, got ${t.dtype}`);
}
