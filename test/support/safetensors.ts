import { writeFileSync } from 'node:fs';
import type { HostTensor } from '../../src/models/graph/tensor.js';

/** A little-endian safetensors file of float32 (and int64) tensors: 8-byte header length, JSON header, data. */
export function writeSafetensors(path: string, tensors: ReadonlyMap<string, HostTensor>): void {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, t] of tensors) {
    const bytes = t.data.length * (t.dtype === 'int64' ? 8 : 4);
    header[name] = { dtype: t.dtype === 'int64' ? 'I64' : 'F32', shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const text = JSON.stringify(header);
  const json = Buffer.from(text.padEnd(Math.ceil(text.length / 8) * 8, ' '));
  const out = Buffer.alloc(8 + json.length + offset);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(out, 8);
  let at = 8 + json.length;
  for (const t of tensors.values()) {
    const view = new DataView(out.buffer, out.byteOffset + at, t.data.byteLength);
    if (t.dtype === 'int64') (t.data as BigInt64Array).forEach((v, i) => view.setBigInt64(8 * i, v, true));
    else (t.data as Float32Array).forEach((v, i) => view.setFloat32(4 * i, v, true));
    at += t.data.byteLength;
  }
  writeFileSync(path, out);
}
