/**
 * The graph under construction: typed value handles with static shapes, initializers, nodes in the
 * default and `com.microsoft` domains, and the bookkeeping for parameter and MAC counts. `toModel()`
 * turns it into an ONNX ModelProto; `serialize.ts` writes it out.
 */
import type { AttributeProto, ModelProto, NodeProto, TensorProto, ValueInfoProto } from './proto.js';
import type { AttrValue, Attrs } from './shapes.js';
import { ShapeError, shapeRule } from './shapes.js';
import type { DType, HostTensor, Shape } from './tensor.js';
import { ONNX_DTYPE, numel, rawBytes, shapeString } from './tensor.js';

export const DEFAULT_OPSET = 17;
export const MS_DOMAIN = 'com.microsoft';

/** A handle on a tensor in the graph: its name, element type and (static or symbolic) shape. */
export interface Value {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: Shape;
}

/** Float-valued ONNX attributes; every other plain number is written as an int. */
const FLOAT_ATTRS = new Set(['alpha', 'beta', 'gamma', 'epsilon', 'momentum', 'scale', 'spatial_scale', 'cubic_coeff_a', 'extrapolation_value', 'value_float', 'ratio', 'lambd', 'bias', 'mask_filter_value']);

export interface OpOptions {
  domain?: string;
  /** Number of outputs (default 1). */
  outputs?: number;
  /** Node name; the default is `<opType>_<n>`. */
  name?: string;
}

interface NodeRecord {
  readonly proto: NodeProto;
  readonly macs: number;
}

export interface GraphStats {
  /** Multiply-accumulates per op type, for one batch item. */
  readonly macs: Readonly<Record<string, number>>;
  /** Initializer elements, per op type of their first consumer. */
  readonly params: Readonly<Record<string, number>>;
  readonly totalMacs: number;
  readonly totalParams: number;
}

export class Graph {
  private readonly nodes: NodeRecord[] = [];
  private readonly inits = new Map<string, HostTensor>();
  private readonly values = new Map<string, Value>();
  private readonly inputs: Value[] = [];
  private readonly outputs: Value[] = [];
  private readonly counters = new Map<string, number>();

  constructor(
    readonly name: string,
    readonly opset = DEFAULT_OPSET,
  ) {}

  private fresh(prefix: string): string {
    const n = this.counters.get(prefix) ?? 0;
    this.counters.set(prefix, n + 1);
    return `${prefix}_${n}`;
  }

  private register(v: Value): Value {
    if (this.values.has(v.name)) throw new ShapeError(`graph ${this.name}: the name ${v.name} is already used`);
    this.values.set(v.name, v);
    return v;
  }

  input(name: string, dtype: DType, shape: Shape): Value {
    const v = this.register({ name, dtype, shape: [...shape] });
    this.inputs.push(v);
    return v;
  }

  /** Marks a graph output; a public name (`output0`) is given through an Identity so inner names stay free. */
  output(v: Value, name?: string): Value {
    const out = name && name !== v.name ? this.op1('Identity', [v], {}, { name }) : v;
    this.outputs.push(out);
    return out;
  }

  /** A weight or constant stored in the model. Names are kept (the official module path) for readable graphs. */
  initializer(name: string, t: HostTensor): Value {
    const unique = this.values.has(name) ? this.fresh(name) : name;
    this.inits.set(unique, t);
    return this.register({ name: unique, dtype: t.dtype, shape: [...t.shape] });
  }

  constant(t: HostTensor, hint = 'const'): Value {
    return this.initializer(this.fresh(hint), t);
  }

  /** Host data behind a value, when it is an initializer. */
  constantData(v: Value): HostTensor | undefined {
    return this.inits.get(v.name);
  }

  /** Emits one node; shapes and MACs come from the op's rule, and a mismatch throws here, naming the node. */
  op(opType: string, inputs: readonly (Value | null)[], attrs: Attrs = {}, opts: OpOptions = {}): Value[] {
    const domain = opts.domain ?? '';
    const rule = shapeRule(opType, domain);
    const name = opts.name ?? this.fresh(opType);
    if (!rule) throw new ShapeError(`${name}: no shape rule for ${domain ? domain + '.' : ''}${opType}`);
    for (const x of inputs) if (x && this.values.get(x.name) !== x) throw new ShapeError(`${name}: input ${x.name} is not a value of graph ${this.name}`);
    let result;
    try {
      result = rule(inputs.map((x) => x && { dtype: x.dtype, shape: x.shape, constant: this.inits.get(x.name) }), attrs);
    } catch (e) {
      if (e instanceof ShapeError) throw new ShapeError(`${name} (${opType} of ${inputs.map((x) => (x ? shapeString(x.shape) : '∅')).join(', ')}): ${e.message}`);
      throw e;
    }
    const n = opts.outputs ?? result.outputs.length;
    const outs = result.outputs.slice(0, n).map((o, i) => this.register({ name: n === 1 ? name : `${name}:${i}`, dtype: o.dtype, shape: o.shape }));
    const proto: NodeProto = {
      name,
      opType,
      domain,
      inputs: inputs.map((x) => (x ? x.name : '')),
      outputs: outs.map((o) => o.name),
      attributes: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    };
    this.nodes.push({ proto, macs: result.macs });
    return outs;
  }

  /** Single-output shorthand for `op`. */
  op1(opType: string, inputs: readonly (Value | null)[], attrs: Attrs = {}, opts: OpOptions = {}): Value {
    return this.op(opType, inputs, attrs, opts)[0];
  }

  stats(): GraphStats {
    const macs: Record<string, number> = {};
    const params: Record<string, number> = {};
    const counted = new Set<string>();
    for (const { proto, macs: m } of this.nodes) {
      const key = proto.domain ? `${proto.domain}.${proto.opType}` : proto.opType;
      macs[key] = (macs[key] ?? 0) + m;
      for (const i of proto.inputs) {
        const t = this.inits.get(i);
        // A shared initializer (the anchor table feeds two ops) counts once, for its first consumer.
        if (!t || counted.has(i)) continue;
        counted.add(i);
        params[key] = (params[key] ?? 0) + numel(t.shape);
      }
    }
    const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);
    return { macs, params, totalMacs: sum(macs), totalParams: sum(params) };
  }

  get inputValues(): readonly Value[] {
    return this.inputs;
  }

  get outputValues(): readonly Value[] {
    return this.outputs;
  }

  toModel(metadata: Record<string, string> = {}): ModelProto {
    const usesMs = this.nodes.some((n) => n.proto.domain === MS_DOMAIN);
    const initializers: TensorProto[] = [...this.inits].map(([name, t]) => ({ name, dims: t.shape, dataType: ONNX_DTYPE[t.dtype], raw: rawBytes(t) }));
    return {
      irVersion: 8,
      producerName: 'fovea',
      producerVersion: '0.1.0',
      opsets: [{ domain: '', version: this.opset }, ...(usesMs ? [{ domain: MS_DOMAIN, version: 1 }] : [])],
      graph: {
        name: this.name,
        nodes: this.nodes.map((n) => n.proto),
        initializers,
        inputs: this.inputs.map(valueInfo),
        outputs: this.outputs.map(valueInfo),
      },
      metadata,
    };
  }
}

function valueInfo(v: Value): ValueInfoProto {
  return { name: v.name, elemType: ONNX_DTYPE[v.dtype], dims: v.shape.map((d) => (typeof d === 'number' ? { value: d } : { param: d })) };
}

function attribute(name: string, v: AttrValue): AttributeProto {
  if (name === 'to' && typeof v === 'string') return { name, type: 'int', i: ONNX_DTYPE[v as DType] };
  if (typeof v === 'number') return FLOAT_ATTRS.has(name) || !Number.isInteger(v) ? { name, type: 'float', f: v } : { name, type: 'int', i: v };
  if (typeof v === 'string') return { name, type: 'string', s: v };
  if (Array.isArray(v)) {
    if (v.every((x) => typeof x === 'string')) return { name, type: 'strings', strings: v as readonly string[] };
    const nums = v as readonly number[];
    return FLOAT_ATTRS.has(name) || nums.some((x) => !Number.isInteger(x)) ? { name, type: 'floats', floats: nums } : { name, type: 'ints', ints: nums };
  }
  const t = v as HostTensor;
  return { name, type: 'tensor', t: { name: '', dims: t.shape, dataType: ONNX_DTYPE[t.dtype], raw: rawBytes(t) } };
}
