/**
 * The slice of ONNX's protobuf schema that fovea emits (onnx/onnx.proto, IR version 8), written
 * with a tiny protobuf encoder. Encoding only: fovea builds graphs, it never parses them.
 * Field numbers are the schema's; repeated scalars are written unpacked, which every proto2
 * parser accepts.
 */

export enum TensorDataType {
  FLOAT = 1,
  UINT8 = 2,
  INT8 = 3,
  INT32 = 6,
  INT64 = 7,
  BOOL = 9,
  FLOAT16 = 10,
  DOUBLE = 11,
}

export interface TensorProto {
  name: string;
  dims: readonly number[];
  dataType: TensorDataType;
  /** Little-endian element bytes (raw_data). Absent when the data lives in an external file. */
  raw?: Uint8Array;
  external?: { location: string; offset: number; length: number };
}

export interface DimProto {
  value?: number;
  param?: string;
}

export interface ValueInfoProto {
  name: string;
  elemType: TensorDataType;
  dims: readonly DimProto[];
}

export type AttributeProto =
  | { name: string; type: 'float'; f: number }
  | { name: string; type: 'int'; i: number }
  | { name: string; type: 'string'; s: string }
  | { name: string; type: 'tensor'; t: TensorProto }
  | { name: string; type: 'floats'; floats: readonly number[] }
  | { name: string; type: 'ints'; ints: readonly number[] }
  | { name: string; type: 'strings'; strings: readonly string[] };

export interface NodeProto {
  name: string;
  opType: string;
  domain: string;
  inputs: readonly string[];
  outputs: readonly string[];
  attributes: readonly AttributeProto[];
}

export interface GraphProto {
  name: string;
  nodes: readonly NodeProto[];
  initializers: readonly TensorProto[];
  inputs: readonly ValueInfoProto[];
  outputs: readonly ValueInfoProto[];
  valueInfo?: readonly ValueInfoProto[];
}

export interface ModelProto {
  irVersion: number;
  producerName: string;
  producerVersion: string;
  opsets: ReadonlyArray<{ domain: string; version: number }>;
  graph: GraphProto;
  metadata?: Readonly<Record<string, string>>;
}

const WIRE_VARINT = 0;
const WIRE_FIXED32 = 5;
const WIRE_LEN = 2;
const ATTR_TYPE = { float: 1, int: 2, string: 3, tensor: 4, floats: 6, ints: 7, strings: 8 } as const;
const utf8 = new TextEncoder();

/** Collects encoded chunks; nested messages are appended by reference, so large raw_data is never copied twice. */
class Writer {
  readonly parts: Uint8Array[] = [];
  length = 0;
  private scratch: number[] = [];

  private flushScratch(): void {
    if (this.scratch.length === 0) return;
    const bytes = Uint8Array.from(this.scratch);
    this.parts.push(bytes);
    this.length += bytes.length;
    this.scratch = [];
  }

  private rawVarint(v: number | bigint): void {
    // int64 fields: negatives are ten-byte two's complement.
    let x = BigInt.asUintN(64, BigInt(v));
    while (x >= 0x80n) {
      this.scratch.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    this.scratch.push(Number(x));
  }

  private tag(field: number, wire: number): void {
    this.rawVarint((field << 3) | wire);
  }

  varint(field: number, v: number): this {
    if (!Number.isSafeInteger(v)) throw new RangeError(`protobuf varint field ${field}: ${v} is not a safe integer`);
    this.tag(field, WIRE_VARINT);
    this.rawVarint(v);
    return this;
  }

  float(field: number, v: number): this {
    this.tag(field, WIRE_FIXED32);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.scratch.push(...b);
    return this;
  }

  bytes(field: number, data: Uint8Array): this {
    this.tag(field, WIRE_LEN);
    this.rawVarint(data.length);
    this.flushScratch();
    this.parts.push(data);
    this.length += data.length;
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, utf8.encode(s));
  }

  message(field: number, w: Writer): this {
    w.flushScratch();
    this.tag(field, WIRE_LEN);
    this.rawVarint(w.length);
    this.flushScratch();
    for (const p of w.parts) this.parts.push(p);
    this.length += w.length;
    return this;
  }

  finish(): Uint8Array {
    this.flushScratch();
    const out = new Uint8Array(this.length);
    let off = 0;
    for (const p of this.parts) {
      out.set(p, off);
      off += p.length;
    }
    return out;
  }
}

function tensorWriter(t: TensorProto): Writer {
  const w = new Writer();
  for (const d of t.dims) w.varint(1, d);
  w.varint(2, t.dataType);
  w.string(8, t.name);
  if (t.external) {
    const entry = (k: string, v: string) => new Writer().string(1, k).string(2, v);
    w.message(13, entry('location', t.external.location));
    w.message(13, entry('offset', String(t.external.offset)));
    w.message(13, entry('length', String(t.external.length)));
    w.varint(14, 1);
  } else {
    w.bytes(9, t.raw ?? new Uint8Array(0));
  }
  return w;
}

function valueInfoWriter(v: ValueInfoProto): Writer {
  const shape = new Writer();
  for (const d of v.dims) {
    const dim = new Writer();
    if (d.param !== undefined) dim.string(2, d.param);
    else dim.varint(1, d.value ?? 0);
    shape.message(1, dim);
  }
  const tensorType = new Writer().varint(1, v.elemType).message(2, shape);
  const type = new Writer().message(1, tensorType);
  return new Writer().string(1, v.name).message(2, type);
}

function attributeWriter(a: AttributeProto): Writer {
  const w = new Writer().string(1, a.name).varint(20, ATTR_TYPE[a.type]);
  switch (a.type) {
    case 'float': return w.float(2, a.f);
    case 'int': return w.varint(3, a.i);
    case 'string': return w.string(4, a.s);
    case 'tensor': return w.message(5, tensorWriter(a.t));
    case 'floats': a.floats.forEach((f) => w.float(7, f)); return w;
    case 'ints': a.ints.forEach((i) => w.varint(8, i)); return w;
    case 'strings': a.strings.forEach((s) => w.string(9, s)); return w;
  }
}

function nodeWriter(n: NodeProto): Writer {
  const w = new Writer();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, n.name).string(4, n.opType);
  for (const a of n.attributes) w.message(5, attributeWriter(a));
  if (n.domain) w.string(7, n.domain);
  return w;
}

function graphWriter(g: GraphProto): Writer {
  const w = new Writer();
  for (const n of g.nodes) w.message(1, nodeWriter(n));
  w.string(2, g.name);
  for (const t of g.initializers) w.message(5, tensorWriter(t));
  for (const v of g.inputs) w.message(11, valueInfoWriter(v));
  for (const v of g.outputs) w.message(12, valueInfoWriter(v));
  for (const v of g.valueInfo ?? []) w.message(13, valueInfoWriter(v));
  return w;
}

export function encodeModel(m: ModelProto): Uint8Array {
  const w = new Writer().varint(1, m.irVersion).string(2, m.producerName).string(3, m.producerVersion);
  w.message(7, graphWriter(m.graph));
  for (const o of m.opsets) w.message(8, new Writer().string(1, o.domain).varint(2, o.version));
  for (const [k, v] of Object.entries(m.metadata ?? {})) w.message(14, new Writer().string(1, k).string(2, v));
  return w.finish();
}
