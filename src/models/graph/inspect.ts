/**
 * Reading back just enough of a serialized ONNX model to count its parameters: the dims of each
 * graph initializer (ModelProto.graph = 7, GraphProto.initializer = 5, TensorProto.dims = 1).
 * A field walker, not a parser: everything else is skipped by wire type.
 */

interface Field {
  readonly field: number;
  readonly wire: number;
  /** For varints. */
  readonly value: number;
  /** For length-delimited fields. */
  readonly start: number;
  readonly end: number;
}

function varint(b: Uint8Array, pos: number): [number, number] {
  let v = 0;
  let mul = 1;
  for (;;) {
    if (pos >= b.length) throw new RangeError('truncated protobuf varint');
    const byte = b[pos++];
    v += (byte & 0x7f) * mul;
    if (byte < 0x80) return [v, pos];
    mul *= 128;
  }
}

function* fields(b: Uint8Array, start: number, end: number): Generator<Field> {
  let pos = start;
  while (pos < end) {
    const [tag, p] = varint(b, pos);
    pos = p;
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (wire === 0) {
      const [value, q] = varint(b, pos);
      pos = q;
      yield { field, wire, value, start: pos, end: pos };
    } else if (wire === 2) {
      const [len, q] = varint(b, pos);
      yield { field, wire, value: 0, start: q, end: q + len };
      pos = q + len;
    } else if (wire === 5) pos += 4;
    else if (wire === 1) pos += 8;
    else throw new RangeError(`unsupported protobuf wire type ${wire}`);
  }
}

/** Total elements over all initializers of the main graph. */
export function countInitializerElements(model: Uint8Array): number {
  let total = 0;
  for (const g of fields(model, 0, model.length)) {
    if (g.field !== 7 || g.wire !== 2) continue;
    for (const init of fields(model, g.start, g.end)) {
      if (init.field !== 5 || init.wire !== 2) continue;
      let n = 1;
      for (const f of fields(model, init.start, init.end)) {
        if (f.field !== 1) continue;
        if (f.wire === 0) n *= f.value;
        else {
          // Packed dims: a run of varints.
          for (let pos = f.start; pos < f.end; ) {
            const [d, next] = varint(model, pos);
            n *= d;
            pos = next;
          }
        }
      }
      total += n;
    }
  }
  return total;
}
