/**
 * `.safetensors`: an 8-byte little-endian header length, a JSON header
 * `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {...}}`, then the tensors'
 * little-endian bytes (offsets relative to the end of the header).
 */
import type { FileHandle } from 'node:fs/promises';
import { numel } from '../graph/tensor.js';
import { CheckpointError } from './errors.js';
import type { StorageDType } from './tensors.js';
import { STORAGE_DTYPES, TorchTensor, decodeStorage } from './tensors.js';
import { lookup } from './reducers.js';
import { readAt } from './zip.js';

const DTYPES: Readonly<Record<string, StorageDType>> = {
  F16: 'float16', BF16: 'bfloat16', F32: 'float32', F64: 'float64', I64: 'int64', I32: 'int32', U8: 'uint8', BOOL: 'bool',
};
/** The format's own limit on the header (safetensors rejects larger ones). */
const MAX_HEADER = 100_000_000;
const READ_CONCURRENCY = 8;

interface HeaderEntry {
  readonly name: string;
  readonly dtype: StorageDType;
  readonly shape: number[];
  readonly begin: number;
  readonly end: number;
}

/** Whether the first bytes look like a safetensors header: a plausible length, then `{`. */
export function looksLikeSafetensors(head: Uint8Array, fileSize: number): boolean {
  if (head.length < 9 || head[8] !== 0x7b) return false;
  const n = Number(new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true));
  return n >= 2 && n <= fileSize - 8;
}

function parseHeader(json: string, dataSize: number): HeaderEntry[] {
  let header: unknown;
  try {
    header = JSON.parse(json);
  } catch {
    throw new CheckpointError('corrupt safetensors file: the JSON header does not parse');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new CheckpointError('corrupt safetensors file: the header is not a JSON object');
  const entries: HeaderEntry[] = [];
  for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') continue;
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = typeof e.dtype === 'string' ? lookup(DTYPES, e.dtype) : undefined;
    if (!dtype) throw new CheckpointError(`unsupported dtype ${String(e.dtype)} for tensor ${name}; supported: ${Object.keys(DTYPES).join(', ')}`);
    const shape = e.shape;
    const offs = e.data_offsets;
    const isInts = (x: unknown): x is number[] => Array.isArray(x) && x.every((d) => Number.isSafeInteger(d) && d >= 0);
    if (!isInts(shape) || !isInts(offs) || offs.length !== 2) throw new CheckpointError(`corrupt safetensors file: bad shape or data_offsets for ${name}`);
    const [begin, end] = offs;
    const need = numel(shape) * STORAGE_DTYPES[dtype].itemSize;
    if (end - begin !== need) throw new CheckpointError(`corrupt safetensors file: ${name} spans ${end - begin} bytes, its shape needs ${need}`);
    if (end > dataSize) throw new CheckpointError(`truncated safetensors file: ${name} ends at byte ${end} of a ${dataSize}-byte data section`);
    entries.push({ name, dtype, shape, begin, end });
  }
  return entries;
}

/** All tensors of a safetensors file, in header order, each read once by offset. */
export async function readSafetensors(file: FileHandle, fileSize: number): Promise<Map<string, TorchTensor>> {
  const lengthBytes = await readAt(file, 0, 8, 'safetensors header length');
  const headerLength = Number(new DataView(lengthBytes.buffer).getBigUint64(0, true));
  if (headerLength > MAX_HEADER || headerLength > fileSize - 8) throw new CheckpointError('truncated or corrupt safetensors file: the header length exceeds the file');
  const json = new TextDecoder().decode(await readAt(file, 8, headerLength, 'safetensors header'));
  const dataStart = 8 + headerLength;
  const entries = parseHeader(json, fileSize - dataStart);
  const out = new Map<string, TorchTensor>(entries.map((e) => [e.name, undefined as unknown as TorchTensor]));
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < entries.length) {
      const e = entries[next++];
      const n = numel(e.shape);
      const bytes = await readAt(file, dataStart + e.begin, e.end - e.begin, `tensor ${e.name}`);
      out.set(e.name, new TorchTensor(e.shape, e.dtype, undefined, decodeStorage(bytes, e.dtype, n)));
    }
  };
  await Promise.all(Array.from({ length: Math.min(READ_CONCURRENCY, entries.length) }, worker));
  return out;
}
