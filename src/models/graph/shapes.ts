/**
 * Static shape inference and multiply-accumulate counts, one rule per op type. A rule sees the input
 * values (and the host data of constant inputs, for shape tensors), so a wrong reshape or an
 * incompatible concat fails while the graph is being built, naming the op.
 */
import type { DType, Dim, HostTensor, Shape } from './tensor.js';
import { intValues, isStatic, numel, shapeString } from './tensor.js';

export type AttrValue = number | string | readonly number[] | readonly string[] | HostTensor;
export type Attrs = Readonly<Record<string, AttrValue>>;

export interface RuleInput {
  readonly dtype: DType;
  readonly shape: Shape;
  /** Host data when the input is an initializer or constant. */
  readonly constant?: HostTensor;
}

export interface RuleOutput {
  readonly outputs: ReadonlyArray<{ dtype: DType; shape: Shape }>;
  readonly macs: number;
}

export type ShapeRule = (inputs: readonly (RuleInput | null)[], attrs: Attrs) => RuleOutput;

export class ShapeError extends Error {
  override name = 'ShapeError';
}

const fail = (msg: string): never => {
  throw new ShapeError(msg);
};

/** Symbolic dims count as one item when counting MACs (costs are per batch element). */
const size = (shape: Shape) => numel(shape.map((d) => (typeof d === 'number' ? d : 1)));
const req = (x: RuleInput | null, what: string): RuleInput => x ?? fail(`missing input ${what}`);
const normAxis = (axis: number, rank: number) => {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) fail(`axis ${axis} out of range for rank ${rank}`);
  return a;
};
const ints = (a: AttrValue | undefined, dflt: readonly number[]): readonly number[] =>
  a === undefined ? dflt : Array.isArray(a) ? (a as readonly number[]) : fail(`expected ints, got ${String(a)}`);
const int = (a: AttrValue | undefined, dflt: number): number => (a === undefined ? dflt : typeof a === 'number' ? a : fail('expected int'));
const same = (x: RuleInput): RuleOutput => ({ outputs: [{ dtype: x.dtype, shape: x.shape }], macs: 0 });
const constInts = (x: RuleInput | null, what: string): number[] =>
  x?.constant ? intValues(x.constant) : fail(`${what} must be a constant known at build time`);

export function broadcast(a: Shape, b: Shape): Dim[] {
  const rank = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da === db || db === 1) out.push(da);
    else if (da === 1) out.push(db);
    else fail(`cannot broadcast ${shapeString(a)} with ${shapeString(b)}`);
  }
  return out;
}

const elementwise: ShapeRule = (ins) => {
  const present = ins.filter((x): x is RuleInput => x !== null);
  const shape = present.slice(1).reduce<Shape>((s, x) => broadcast(s, x.shape), present[0].shape);
  return { outputs: [{ dtype: present[0].dtype, shape }], macs: 0 };
};

const compare: ShapeRule = (ins, attrs) => {
  const r = elementwise(ins, attrs);
  return { outputs: [{ dtype: 'bool', shape: r.outputs[0].shape }], macs: 0 };
};

function windowOut(inp: number, k: number, s: number, d: number, p0: number, p1: number, ceil: boolean): number {
  const span = inp + p0 + p1 - d * (k - 1) - 1;
  const o = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
  return o > 0 ? o : fail(`window k${k} s${s} leaves no output on a dimension of ${inp}`);
}

/** Conv, MaxPool, AveragePool: NC + spatial dims, explicit pads only (builders compute them). */
function spatial(x: RuleInput, attrs: Attrs, kernel: readonly number[]): Dim[] {
  const nsp = x.shape.length - 2;
  if (kernel.length !== nsp) fail(`kernel ${shapeString(kernel)} does not match input ${shapeString(x.shape)}`);
  if (attrs.auto_pad !== undefined && attrs.auto_pad !== 'NOTSET') fail('auto_pad is not supported: give explicit pads');
  const strides = ints(attrs.strides, kernel.map(() => 1));
  const dil = ints(attrs.dilations, kernel.map(() => 1));
  const pads = ints(attrs.pads, [...kernel.map(() => 0), ...kernel.map(() => 0)]);
  const ceil = int(attrs.ceil_mode, 0) === 1;
  return x.shape.slice(2).map((d, i) =>
    typeof d === 'number' ? windowOut(d, kernel[i], strides[i], dil[i], pads[i], pads[i + nsp], ceil) : fail('spatial dims must be static'),
  );
}

const conv: ShapeRule = (ins, attrs) => {
  const x = req(ins[0], 'X');
  const w = req(ins[1], 'W');
  const group = int(attrs.group, 1);
  const [cout, cinPerGroup, ...k] = w.shape as number[];
  if (x.shape[1] !== cinPerGroup * group) fail(`Conv: input has ${x.shape[1]} channels, weight ${shapeString(w.shape)} with group ${group} needs ${cinPerGroup * group}`);
  if (cout % group !== 0) fail(`Conv: ${cout} output channels not divisible by group ${group}`);
  const b = ins[2];
  if (b && (b.shape.length !== 1 || b.shape[0] !== cout)) fail(`Conv: bias ${shapeString(b.shape)} must be [${cout}]`);
  const sp = spatial(x, attrs, ints(attrs.kernel_shape, k));
  const shape = [x.shape[0], cout, ...sp];
  return { outputs: [{ dtype: x.dtype, shape }], macs: size(shape) * cinPerGroup * numel(k) };
};

const convTranspose: ShapeRule = (ins, attrs) => {
  const x = req(ins[0], 'X');
  const w = req(ins[1], 'W');
  const group = int(attrs.group, 1);
  const [cin, coutPerGroup, ...k] = w.shape as number[];
  if (x.shape[1] !== cin) fail(`ConvTranspose: input has ${x.shape[1]} channels, weight wants ${cin}`);
  const nsp = k.length;
  const strides = ints(attrs.strides, k.map(() => 1));
  const pads = ints(attrs.pads, [...k.map(() => 0), ...k.map(() => 0)]);
  const outPad = ints(attrs.output_padding, k.map(() => 0));
  const sp = x.shape.slice(2).map((d, i) => ((d as number) - 1) * strides[i] + k[i] - pads[i] - pads[i + nsp] + outPad[i]);
  const shape = [x.shape[0], coutPerGroup * group, ...sp];
  return { outputs: [{ dtype: x.dtype, shape }], macs: size(x.shape) * coutPerGroup * numel(k) };
};

const pool: ShapeRule = (ins, attrs) => {
  const x = req(ins[0], 'X');
  const sp = spatial(x, attrs, ints(attrs.kernel_shape, []));
  return { outputs: [{ dtype: x.dtype, shape: [x.shape[0], x.shape[1], ...sp] }], macs: 0 };
};

const globalPool: ShapeRule = (ins) => {
  const x = req(ins[0], 'X');
  return { outputs: [{ dtype: x.dtype, shape: [x.shape[0], x.shape[1], ...x.shape.slice(2).map(() => 1)] }], macs: 0 };
};

const concat: ShapeRule = (ins, attrs) => {
  const xs = ins.map((x, i) => req(x, `#${i}`));
  const rank = xs[0].shape.length;
  const axis = normAxis(int(attrs.axis, 0), rank);
  let total = 0;
  for (const x of xs) {
    if (x.shape.length !== rank || x.shape.some((d, i) => i !== axis && d !== xs[0].shape[i]))
      fail(`Concat on axis ${axis}: ${xs.map((v) => shapeString(v.shape)).join(' + ')} differ off the axis`);
    const d = x.shape[axis];
    total += typeof d === 'number' ? d : fail('Concat axis must be static');
  }
  const shape = [...xs[0].shape];
  shape[axis] = total;
  return { outputs: [{ dtype: xs[0].dtype, shape }], macs: 0 };
};

/** Reshape with a constant target: 0 copies the input dim (how symbolic batch dims pass through), -1 is inferred. */
const reshape: ShapeRule = (ins) => {
  const x = req(ins[0], 'data');
  const target = constInts(ins[1], 'Reshape shape');
  const out: Dim[] = target.map((t, i) => (t === 0 ? x.shape[i] ?? fail('Reshape 0 past input rank') : t));
  const known = size(out.filter((d) => d !== -1));
  const sym = (s: Shape) => s.filter((d) => typeof d === 'string').sort().join(',');
  if (sym(out) !== sym(x.shape)) fail(`Reshape ${shapeString(x.shape)} → ${shapeString(out)} moves symbolic dims`);
  const total = size(x.shape);
  const inferred = out.filter((d) => d === -1).length;
  if (inferred > 1) fail('Reshape: more than one -1');
  if (inferred === 1) {
    if (total % known !== 0) fail(`Reshape ${shapeString(x.shape)} → ${shapeString(target)}: ${total} is not divisible by ${known}`);
    out[out.indexOf(-1)] = total / known;
  } else if (known !== total) fail(`Reshape ${shapeString(x.shape)} (${total}) → ${shapeString(out)} (${known}) changes the element count`);
  return { outputs: [{ dtype: x.dtype, shape: out }], macs: 0 };
};

const transpose: ShapeRule = (ins, attrs) => {
  const x = req(ins[0], 'data');
  const perm = ints(attrs.perm, x.shape.map((_, i) => x.shape.length - 1 - i));
  if (perm.length !== x.shape.length || new Set(perm).size !== perm.length) fail(`Transpose perm ${shapeString(perm)} for ${shapeString(x.shape)}`);
  return { outputs: [{ dtype: x.dtype, shape: perm.map((p) => x.shape[p]) }], macs: 0 };
};

const matmul: ShapeRule = (ins) => {
  const a = req(ins[0], 'A');
  const b = req(ins[1], 'B');
  if (a.shape.length < 2 || b.shape.length < 2) fail('MatMul operands need rank ≥ 2 (reshape vectors first)');
  const [m, k] = a.shape.slice(-2);
  const [k2, n] = b.shape.slice(-2);
  if (k !== k2) fail(`MatMul ${shapeString(a.shape)} × ${shapeString(b.shape)}: inner dims differ`);
  const batch = broadcast(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const shape = [...batch, m, n];
  return { outputs: [{ dtype: a.dtype, shape }], macs: size(shape) * (typeof k === 'number' ? k : 1) };
};

const gemm: ShapeRule = (ins, attrs) => {
  const a = req(ins[0], 'A');
  const b = req(ins[1], 'B');
  const [m, k] = int(attrs.transA, 0) ? [a.shape[1], a.shape[0]] : [a.shape[0], a.shape[1]];
  const [k2, n] = int(attrs.transB, 0) ? [b.shape[1], b.shape[0]] : [b.shape[0], b.shape[1]];
  if (k !== k2) fail(`Gemm inner dims differ: ${k} vs ${k2}`);
  return { outputs: [{ dtype: a.dtype, shape: [m, n] }], macs: size([m, n]) * (k as number) };
};

const softmaxLike: ShapeRule = (ins, attrs) => {
  const x = req(ins[0], 'input');
  normAxis(int(attrs.axis, -1), x.shape.length);
  return same(x);
};

const reduce: ShapeRule = (ins, attrs) => {
  const x = req(ins[0], 'data');
  const rank = x.shape.length;
  const axesIn = ins[1] ? constInts(ins[1], 'axes') : ints(attrs.axes, x.shape.map((_, i) => i));
  const axes = new Set(axesIn.map((a) => normAxis(a, rank)));
  const keep = int(attrs.keepdims, 1) === 1;
  const shape = x.shape.flatMap((d, i) => (axes.has(i) ? (keep ? [1] : []) : [d]));
  return { outputs: [{ dtype: x.dtype, shape }], macs: 0 };
};

const slice: ShapeRule = (ins) => {
  const x = req(ins[0], 'data');
  const starts = constInts(ins[1], 'starts');
  const ends = constInts(ins[2], 'ends');
  const axes = ins[3] ? constInts(ins[3], 'axes') : starts.map((_, i) => i);
  const steps = ins[4] ? constInts(ins[4], 'steps') : starts.map(() => 1);
  const shape = [...x.shape];
  axes.forEach((a0, i) => {
    const a = normAxis(a0, x.shape.length);
    const d = x.shape[a];
    if (typeof d !== 'number') return fail('Slice on a symbolic dim');
    if (steps[i] !== 1) fail('Slice supports step 1 only');
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
    shape[a] = Math.max(0, clamp(ends[i]) - clamp(starts[i]));
  });
  return { outputs: [{ dtype: x.dtype, shape }], macs: 0 };
};

const split: ShapeRule = (ins, attrs) => {
  const x = req(ins[0], 'input');
  const axis = normAxis(int(attrs.axis, 0), x.shape.length);
  const parts = constInts(ins[1], 'split');
  if (parts.reduce((s, v) => s + v, 0) !== x.shape[axis]) fail(`Split sizes ${shapeString(parts)} do not sum to ${String(x.shape[axis])}`);
  return {
    outputs: parts.map((p) => {
      const shape = [...x.shape];
      shape[axis] = p;
      return { dtype: x.dtype, shape };
    }),
    macs: 0,
  };
};

/** Resize with constant scales (or sizes); only whole output sizes are accepted. */
const resize: ShapeRule = (ins) => {
  const x = req(ins[0], 'X');
  let shape: Dim[];
  if (ins[3]) shape = constInts(ins[3], 'sizes');
  else {
    const sc = ins[2]?.constant?.data;
    if (!(sc instanceof Float32Array)) return fail('Resize needs constant scales or sizes');
    shape = x.shape.map((d, i) => (sc[i] === 1 ? d : typeof d === 'number' ? d * sc[i] : fail('Resize on a symbolic dim')));
    if (shape.some((d) => typeof d === 'number' && !Number.isInteger(d))) fail(`Resize scales give fractional sizes ${shapeString(shape)}`);
  }
  return { outputs: [{ dtype: x.dtype, shape }], macs: 0 };
};

const unsqueeze: ShapeRule = (ins) => {
  const x = req(ins[0], 'data');
  const rank = x.shape.length + constInts(ins[1], 'axes').length;
  const axes = new Set(constInts(ins[1], 'axes').map((a) => normAxis(a, rank)));
  const shape: Dim[] = [];
  let j = 0;
  for (let i = 0; i < rank; i++) shape.push(axes.has(i) ? 1 : x.shape[j++]);
  return { outputs: [{ dtype: x.dtype, shape }], macs: 0 };
};

const squeeze: ShapeRule = (ins) => {
  const x = req(ins[0], 'data');
  const axes = new Set(constInts(ins[1], 'axes').map((a) => normAxis(a, x.shape.length)));
  for (const a of axes) if (x.shape[a] !== 1) fail(`Squeeze axis ${a} of ${shapeString(x.shape)} is not 1`);
  return { outputs: [{ dtype: x.dtype, shape: x.shape.filter((_, i) => !axes.has(i)) }], macs: 0 };
};

const gather: ShapeRule = (ins, attrs) => {
  const x = req(ins[0], 'data');
  const idx = req(ins[1], 'indices');
  const axis = normAxis(int(attrs.axis, 0), x.shape.length);
  return { outputs: [{ dtype: x.dtype, shape: [...x.shape.slice(0, axis), ...idx.shape, ...x.shape.slice(axis + 1)] }], macs: 0 };
};

const flatten: ShapeRule = (ins, attrs) => {
  const x = req(ins[0], 'input');
  const axis = int(attrs.axis, 1);
  return { outputs: [{ dtype: x.dtype, shape: [size(x.shape.slice(0, axis)), size(x.shape.slice(axis))] }], macs: 0 };
};

const cast: ShapeRule = (ins, attrs) => {
  const x = req(ins[0], 'input');
  const to = attrs.to;
  const dtype = typeof to === 'string' ? (to as DType) : fail('Cast needs `to` as a DType name');
  return { outputs: [{ dtype, shape: x.shape }], macs: 0 };
};

const where: ShapeRule = (ins) => {
  const [c, a, b] = [req(ins[0], 'cond'), req(ins[1], 'X'), req(ins[2], 'Y')];
  return { outputs: [{ dtype: a.dtype, shape: broadcast(broadcast(c.shape, a.shape), b.shape) }], macs: 0 };
};

/** CumSum along a constant axis (scalar or 1-element tensor); `exclusive` and `reverse` leave the shape alone. */
const cumSum: ShapeRule = (ins) => {
  const x = req(ins[0], 'x');
  const axis = constInts(ins[1], 'CumSum axis');
  if (axis.length !== 1) fail('CumSum axis must hold one value');
  normAxis(axis[0], x.shape.length);
  return same(x);
};

/** Pad with constant pads [b₀…b₍ᵣ₋₁₎, e₀…e₍ᵣ₋₁₎] over every axis (opset < 18: no `axes` input); symbolic dims take no padding. */
const pad: ShapeRule = (ins) => {
  const x = req(ins[0], 'data');
  const pads = constInts(ins[1], 'Pad pads');
  const rank = x.shape.length;
  if (ins[3]) fail('Pad with an axes input is not supported: give pads for every axis');
  if (pads.length !== 2 * rank) fail(`Pad needs ${2 * rank} pads for rank ${rank}, got ${pads.length}`);
  const shape = x.shape.map((d, i) => {
    const [b, e] = [pads[i], pads[i + rank]];
    if (typeof d !== 'number') return b === 0 && e === 0 ? d : fail(`Pad on the symbolic dim ${d}`);
    return d + b + e > 0 ? d + b + e : fail(`Pad leaves nothing of axis ${i}`);
  });
  return { outputs: [{ dtype: x.dtype, shape }], macs: 0 };
};

const firstInput: ShapeRule = (ins) => same(req(ins[0], 'input'));
const UNARY = ['Relu', 'Sigmoid', 'Tanh', 'Exp', 'Log', 'Sqrt', 'Neg', 'Abs', 'Erf', 'Reciprocal', 'Identity', 'Softplus', 'Elu', 'HardSigmoid', 'HardSwish', 'LeakyRelu', 'Gelu', 'Sin', 'Cos', 'Floor', 'Ceil', 'Clip', 'Dropout', 'BatchNormalization', 'LayerNormalization', 'SimplifiedLayerNormalization', 'InstanceNormalization', 'LpNormalization'];

const RULES = new Map<string, ShapeRule>([
  ...UNARY.map((op) => [op, firstInput] as const),
  ...['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Sum', 'Mean'].map((op) => [op, elementwise] as const),
  ...['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Not'].map((op) => [op, compare] as const),
  ['Softmax', softmaxLike],
  ['LogSoftmax', softmaxLike],
  ['Conv', conv],
  ['ConvTranspose', convTranspose],
  ['MaxPool', pool],
  ['AveragePool', pool],
  ['GlobalAveragePool', globalPool],
  ['GlobalMaxPool', globalPool],
  ['Concat', concat],
  ['Reshape', reshape],
  ['Transpose', transpose],
  ['MatMul', matmul],
  ['Gemm', gemm],
  ['ReduceMean', reduce],
  ['ReduceSum', reduce],
  ['ReduceMax', reduce],
  ['ReduceL2', reduce],
  ['Slice', slice],
  ['Split', split],
  ['Resize', resize],
  ['Unsqueeze', unsqueeze],
  ['Squeeze', squeeze],
  ['Gather', gather],
  ['Flatten', flatten],
  ['Cast', cast],
  ['Where', where],
  ['CumSum', cumSum],
  ['Pad', pad],
]);

export function ruleKey(opType: string, domain: string): string {
  return domain ? `${domain}.${opType}` : opType;
}

/** Model files add rules for the contrib ops they emit (e.g. `com.microsoft.MultiHeadAttention`). */
export function registerShapeRule(opType: string, domain: string, rule: ShapeRule): void {
  RULES.set(ruleKey(opType, domain), rule);
}

export function shapeRule(opType: string, domain: string): ShapeRule | undefined {
  return RULES.get(ruleKey(opType, domain));
}

export function assertStatic(shape: Shape, what: string): readonly number[] {
  return isStatic(shape) ? shape : fail(`${what} must have a static shape, got ${shapeString(shape)}`);
}
