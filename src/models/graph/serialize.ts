/**
 * Writing built models. Initializers go in as raw little-endian bytes; when they would push the
 * protobuf past its 2 GiB limit (or when asked), they move to a side file beside the model with
 * ONNX's external-data entries (location, offset, length), which ORT resolves relative to the model path.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
import type { ModelProto, TensorProto } from './proto.js';
import { encodeModel } from './proto.js';

/** protobuf's hard limit is 2 GiB; keep a margin for the graph itself. */
export const PROTOBUF_LIMIT = 2 ** 31 - 64 * 2 ** 20;
/** ONNX's external-data loader reads aligned blocks fastest; 4 KiB is what onnx's own saver uses for large tensors. */
const ALIGN = 4096;

export interface SaveOptions {
  /** Force external data for initializers of at least this many bytes (default: only past the protobuf limit). */
  externalThreshold?: number;
}

export function initializerBytes(m: ModelProto): number {
  return m.graph.initializers.reduce((s, t) => s + (t.raw?.length ?? 0), 0);
}

/** The whole model in memory, for `InferenceSession.create(bytes)`; refuses what protobuf cannot hold. */
export function serializeModel(m: ModelProto): Uint8Array {
  if (initializerBytes(m) > PROTOBUF_LIMIT) throw new RangeError(`model ${m.graph.name} is over 2 GiB: save it to a file with external data`);
  return encodeModel(m);
}

/** Writes `path` and, when needed, `path + '.data'`; returns whether external data was used. */
export function saveModel(m: ModelProto, path: string, opts: SaveOptions = {}): { external: boolean; bytes: number } {
  const threshold = opts.externalThreshold ?? (initializerBytes(m) > PROTOBUF_LIMIT ? 1024 : Infinity);
  const dataPath = `${path}.data`;
  let fd: number | undefined;
  let offset = 0;
  const initializers: TensorProto[] = m.graph.initializers.map((t) => {
    if (!t.raw || t.raw.length < threshold) return t;
    fd ??= openSync(dataPath, 'w');
    offset = Math.ceil(offset / ALIGN) * ALIGN;
    writeSync(fd, t.raw, 0, t.raw.length, offset);
    const external = { location: basename(dataPath), offset, length: t.raw.length };
    offset += t.raw.length;
    return { name: t.name, dims: t.dims, dataType: t.dataType, external };
  });
  if (fd !== undefined) closeSync(fd);
  const bytes = encodeModel({ ...m, graph: { ...m.graph, initializers } });
  const out = openSync(path, 'w');
  try {
    writeSync(out, bytes);
  } finally {
    closeSync(out);
  }
  return { external: fd !== undefined, bytes: bytes.length + offset };
}
