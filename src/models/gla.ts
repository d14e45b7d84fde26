/**
 * Gated linear attention (GLA) over a token sequence, per head, as ViG's BiGLA uses it
 * (specs/models-a.md §2 "BiGLA block"; DESIGN "Fused ops" 1). With q, k [B,H,L,dk], v [B,H,L,dv] and
 * log-gates logα [B,H,L,dk] (≤ 0):
 *
 *   forward   S_t = diag(α_t) S_{t−1} + k_tᵀ v_t,   o_t = scale · q_t S_t
 *   backward  S_t = diag(α_t) S_{t+1} + k_tᵀ v_t,   o_t = scale · q_t S_t   (both include token t)
 *
 * Four forms of the same function:
 * - `glaFused` (the serving path): onnxruntime's own fused kernel, `com.microsoft.LinearAttention` with
 *   `update_rule: 'gated'` and a per-key-channel log-decay — the recurrence in native code, one node per
 *   direction, on the packed [B, L, H·d] layout the projections already give (no head transposes). It is
 *   what ViG's eval branch runs (`bid_fused_recurrent_gla`, a recurrence), at L·dk·dv MACs per head.
 * - `glaChunkwise` (the chunkwise-parallel graph): tokens in chunks of C. Inside a chunk a masked C×C score matrix with a
 *   per-pair decay exponent; across chunks the dk×dv state is carried forward, unrolled over L/C steps. Cost
 *   is linear in L: L·(C·dk + C·dv + 2·dk·dv) MACs per head.
 * - `glaQuadratic` (the plain twin): o_t = scale Σ_{s≤t} Σ_d q_t[d] k_s[d] e^{C_t[d]−C_s[d]} v_s with C the
 *   cumulative log-gates, an L×L×dk tensor per head. The backward direction uses the mirrored formula
 *   (reverse cumsum, upper triangle) rather than reversing the sequence, so it checks the reversal too.
 * - `glaRecurrent`: the recurrence itself in TypeScript, float64, the reference the tests trust.
 *
 * Numerics. Every exponent is a sum of log-gates over a causal span, so it is ≤ 0 where it is used; the
 * spans that are not used (the other triangle) have exponents ≥ 0 that can be arbitrarily large, so they
 * are set to −inf *before* Exp (e^{−inf} = 0, never inf·0 = NaN). The factored form q·e^{b_i}, k·e^{−b_j}
 * would save the C×C×dk tensor but e^{−b_j} overflows float32 once a chunk's gates sum below −88 (a
 * chunk of 64 strongly decaying gates gets there), so the intra-chunk scores use the per-pair exponent
 * b_i − b_j; it costs C·dk elementwise work per token, still linear in L. The inter-chunk factors
 * e^{b_i} and e^{b_last − b_j} are ≤ 1 and only underflow where the true weight is below float32's range.
 * Cumulative sums restart at every chunk, so the chunkwise form never subtracts two large cumsums; the
 * quadratic form does (C_t − C_s over the whole sequence), which loses a few ulps of C_t per term.
 *
 * Chunking: L need not be divisible by C. The sequence is padded at its end with zero tokens (k = v = 0
 * and log-gate 0), which no earlier output can see in a causal scan, and the output is sliced back to L.
 * The backward direction reverses the sequence (Gather with reversed indices), runs the forward scan and
 * reverses the output — what ViG's training branch does with `flip`.
 */
import type { Graph, Value } from './graph/graph.js';
import { MS_DOMAIN } from './graph/graph.js';
import { reshape, slice, transpose } from './graph/nn.js';
import { ShapeError, assertStatic, registerShapeRule } from './graph/shapes.js';
import type { Dim } from './graph/tensor.js';
import { float32, int64, shapeString } from './graph/tensor.js';

export type GlaDirection = 'forward' | 'backward';

/** Per-head inputs, each [B, H, L, d]; B may be symbolic ('batch'), the rest must be static. */
export interface GlaInputs {
  readonly q: Value;
  readonly k: Value;
  readonly v: Value;
  /** log α, ≤ 0 (ViG: logsigmoid(gk)/16), same shape as q and k. */
  readonly logAlpha: Value;
}

export interface GlaOptions {
  readonly direction?: GlaDirection;
  /** Default dk^−0.5 (fla's `scale = -1`). */
  readonly scale?: number;
}

export interface ChunkwiseOptions extends GlaOptions {
  /** Chunk size C (fla's fused_chunk_gla uses 16). */
  readonly chunk: number;
}

interface Dims {
  readonly batch: Dim;
  readonly heads: number;
  readonly length: number;
  readonly dk: number;
  readonly dv: number;
}

function checkInputs(x: GlaInputs): Dims {
  const [batch, ...rest] = x.q.shape;
  const [heads, length, dk] = assertStatic(rest, 'gla: q past the batch dim');
  const want = (v: Value, d: number, what: string) => {
    const s = [batch, heads, length, d];
    if (v.shape.length !== 4 || v.shape.some((x, i) => x !== s[i])) throw new ShapeError(`gla: ${what} is ${shapeString(v.shape)}, expected ${shapeString(s)}`);
  };
  if (x.q.shape.length !== 4) throw new ShapeError(`gla: q must be [B, H, L, dk], got ${shapeString(x.q.shape)}`);
  want(x.k, dk, 'k');
  want(x.logAlpha, dk, 'logAlpha');
  const dv = assertStatic(x.v.shape.slice(3), 'gla: v')[0] ?? 0;
  want(x.v, dv, 'v');
  return { batch, heads, length, dk, dv };
}

const scalar = (g: Graph, v: number) => g.constant(float32([1], [v]), 'gla_scalar');
const ints = (g: Graph, v: readonly number[]) => g.constant(int64(v), 'gla_ints');
const unsqueeze = (g: Graph, x: Value, axis: number) => g.op1('Unsqueeze', [x, ints(g, [axis])]);
const cumsum = (g: Graph, x: Value, axis: number, reverse = false) => g.op1('CumSum', [x, g.constant(int64([axis], []), 'axis')], reverse ? { reverse: 1 } : {});

/** Reverses axis 2 (the sequence) of a [B, H, L, d] tensor. */
function reverseSequence(g: Graph, x: Value, length: number): Value {
  const idx = g.constant(int64(Array.from({ length }, (_, i) => length - 1 - i)), 'reversed');
  return g.op1('Gather', [x, idx], { axis: 2 });
}

/**
 * A [T, T, 1] additive mask: 0 where key s may reach query t (s ≤ t, or s ≥ t for `upper`), −inf
 * elsewhere. Added to the decay exponent before Exp.
 */
function causalMask(g: Graph, t: number, upper = false): Value {
  const m = new Float32Array(t * t);
  for (let i = 0; i < t; i++) for (let j = 0; j < t; j++) if (upper ? j < i : j > i) m[i * t + j] = -Infinity;
  return g.constant(float32([t, t, 1], m), 'causal_mask');
}

/**
 * Scores A[..., t, s] = Σ_d q_t[d] k_s[d] e^{c_t[d] − c_s[d]} over a window of T tokens, the exponent masked
 * to −inf outside the causal triangle before Exp. q, k, c: [..., T, dk] → [..., T, T].
 */
function decayedScores(g: Graph, q: Value, k: Value, c: Value, mask: Value): Value {
  const r = q.shape.length;
  const exponent = g.op1('Add', [g.op1('Sub', [unsqueeze(g, c, r - 1), unsqueeze(g, c, r - 2)]), mask]);
  const kDecayed = g.op1('Mul', [g.op1('Exp', [exponent]), unsqueeze(g, k, r - 2)]); // [..., T(t), T(s), dk]
  const scores = g.op1('MatMul', [kDecayed, unsqueeze(g, q, r)]); // [..., T, T, 1]
  return g.op1('Squeeze', [scores, ints(g, [-1])]);
}

/**
 * The full masked quadratic form: an L×L×dk decay tensor per head. Memory grows as L²·dk, so this is the
 * plain twin for moderate L, not a path for high-resolution inputs.
 */
export function glaQuadratic(g: Graph, x: GlaInputs, o: GlaOptions = {}): Value {
  const d = checkInputs(x);
  const backward = o.direction === 'backward';
  const q = g.op1('Mul', [x.q, scalar(g, o.scale ?? d.dk ** -0.5)]);
  // Forward C_t = Σ_{u≤t} logα_u and keys s ≤ t; backward D_t = Σ_{u≥t} logα_u and keys s ≥ t.
  const c = cumsum(g, x.logAlpha, 2, backward);
  const scores = decayedScores(g, q, x.k, c, causalMask(g, d.length, backward));
  return g.op1('MatMul', [scores, x.v]);
}

/**
 * The chunkwise-parallel form, forward in time over [B, H, L, ·] with L divisible by C:
 * intra-chunk scores with the per-pair exponent b_t − b_s (b: cumsum restarted at each chunk), plus the
 * state carried across chunks, S_{n+1} = e^{b_last,n} ⊙ S_n + Σ_s (k_s e^{b_last − b_s})ᵀ v_s.
 */
function chunkwiseForward(g: Graph, q: Value, k: Value, v: Value, logAlpha: Value, d: Dims, c: number): Value {
  const n = d.length / c;
  const chunked = (t: Value, w: number) => reshape(g, t, [d.batch, d.heads, n, c, w]);
  const [qc, kc, vc] = [chunked(q, d.dk), chunked(k, d.dk), chunked(v, d.dv)];
  const b = cumsum(g, chunked(logAlpha, d.dk), 3); // [B, H, N, C, dk], ≤ 0, decreasing along C
  const intra = g.op1('MatMul', [decayedScores(g, qc, kc, b, causalMask(g, c)), vc]); // [B, H, N, C, dv]
  if (n === 1) return reshape(g, intra, [d.batch, d.heads, d.length, d.dv]);

  const bLast = slice(g, b, 3, c - 1, c); // [B, H, N, 1, dk]
  const kToEnd = g.op1('Mul', [kc, g.op1('Exp', [g.op1('Sub', [bLast, b])])]);
  const updates = g.op1('MatMul', [transpose(g, kToEnd, [0, 1, 2, 4, 3]), vc]); // [B, H, N, dk, dv]
  const decays = transpose(g, g.op1('Exp', [bLast]), [0, 1, 2, 4, 3]); // [B, H, N, dk, 1]
  const splitN = (t: Value) => g.op('Split', [t, ints(g, Array<number>(n).fill(1))], { axis: 2 });
  const [u, gamma] = [splitN(updates), splitN(decays)];
  // states[m] is the state entering chunk m + 1; the chunk recurrence, unrolled, one Mul + Add a step.
  const states = [u[0]];
  for (let m = 1; m < n - 1; m++) states.push(g.op1('Add', [g.op1('Mul', [gamma[m], states[m - 1]]), u[m]]));
  const carried = states.length === 1 ? states[0] : g.op1('Concat', states, { axis: 2 }); // [B, H, N−1, dk, dv]
  const qFromStart = slice(g, g.op1('Mul', [qc, g.op1('Exp', [b])]), 2, 1, n);
  const inter = g.op1('MatMul', [qFromStart, carried]); // [B, H, N−1, C, dv]
  const out = g.op1('Concat', [slice(g, intra, 2, 0, 1), g.op1('Add', [slice(g, intra, 2, 1, n), inter])], { axis: 2 });
  return reshape(g, out, [d.batch, d.heads, d.length, d.dv]);
}

/**
 * The chunkwise-parallel (fused) form. L is padded at its end to a multiple of `chunk` with zero tokens
 * and the output sliced back; the backward direction runs the forward scan on the reversed sequence.
 */
export function glaChunkwise(g: Graph, x: GlaInputs, o: ChunkwiseOptions): Value {
  const d = checkInputs(x);
  const c = o.chunk;
  if (!Number.isInteger(c) || c < 1) throw new ShapeError(`gla: chunk size must be a positive integer, got ${c}`);
  const backward = o.direction === 'backward';
  const padded = Math.ceil(d.length / c) * c;
  const prepare = (t: Value) => {
    const r = backward ? reverseSequence(g, t, d.length) : t;
    return padded === d.length ? r : g.op1('Pad', [r, ints(g, [0, 0, 0, 0, 0, 0, padded - d.length, 0])]);
  };
  const q = g.op1('Mul', [prepare(x.q), scalar(g, o.scale ?? d.dk ** -0.5)]);
  const out = chunkwiseForward(g, q, prepare(x.k), prepare(x.v), prepare(x.logAlpha), { ...d, length: padded }, c);
  const trimmed = padded === d.length ? out : slice(g, out, 2, 0, d.length);
  return backward ? reverseSequence(g, trimmed, d.length) : trimmed;
}

// ---- onnxruntime's fused kernel --------------------------------------------------------------

/**
 * `com.microsoft.LinearAttention` (onnxruntime ≥ 1.30): query/key/decay [B, T, H·dk], value [B, T, H·dv],
 * optional past_state [B, H, dk, dv] → output [B, T, H·dv] and present_state [B, H, dk, dv]. Only the
 * 'gated' rule (GLA) is used here; the op needs both outputs declared.
 */
registerShapeRule('LinearAttention', MS_DOMAIN, (ins, attrs) => {
  const [q, k, v, past, decay, beta] = ins;
  if (!q || !k || !v || !decay) throw new ShapeError('LinearAttention (gated) needs query, key, value and decay');
  if (past || beta) throw new ShapeError('LinearAttention: past_state and beta are not used by the gated form here');
  if (attrs.update_rule !== 'gated') throw new ShapeError(`LinearAttention: only update_rule 'gated' is used, got ${String(attrs.update_rule)}`);
  const heads = attrs.q_num_heads;
  if (typeof heads !== 'number' || heads < 1 || attrs.kv_num_heads !== heads) throw new ShapeError('LinearAttention: q_num_heads = kv_num_heads ≥ 1 required');
  for (const [t, what] of [[q, 'query'], [k, 'key'], [v, 'value'], [decay, 'decay']] as const)
    if (t.shape.length !== 3) throw new ShapeError(`LinearAttention: ${what} must be [B, T, H·d], got ${shapeString(t.shape)}`);
  const [hk, hv] = [assertStatic(q.shape.slice(2), 'query')[0], assertStatic(v.shape.slice(2), 'value')[0]];
  const same = (a: readonly unknown[], b: readonly unknown[]) => a.length === b.length && a.every((x, i) => x === b[i]);
  if (!same(k.shape, q.shape) || !same(decay.shape, q.shape)) throw new ShapeError(`LinearAttention: key ${shapeString(k.shape)} and decay ${shapeString(decay.shape)} must match query ${shapeString(q.shape)}`);
  if (v.shape[0] !== q.shape[0] || v.shape[1] !== q.shape[1]) throw new ShapeError(`LinearAttention: value ${shapeString(v.shape)} does not match query ${shapeString(q.shape)}`);
  if (hk % heads || hv % heads) throw new ShapeError(`LinearAttention: widths ${hk}/${hv} do not split into ${heads} heads`);
  const t = typeof q.shape[1] === 'number' ? q.shape[1] : 1;
  const [dk, dv] = [hk / heads, hv / heads];
  return {
    outputs: [
      { dtype: q.dtype, shape: v.shape },
      { dtype: q.dtype, shape: [q.shape[0], heads, dk, dv] },
    ],
    // state update (k ⊗ v) and read-out (q · S) per token and head
    macs: 2 * t * heads * dk * dv,
  };
});

/** Packed per-token inputs for `glaFused`: q, k, logAlpha [B, L, H·dk], v [B, L, H·dv]. */
export interface GlaPackedInputs extends GlaInputs {
  readonly heads: number;
}

/** Reverses axis 1 (the sequence) of a packed [B, L, d] tensor. */
function reverseTokens(g: Graph, x: Value, length: number): Value {
  const idx = g.constant(int64(Array.from({ length }, (_, i) => length - 1 - i)), 'reversed');
  return g.op1('Gather', [x, idx], { axis: 1 });
}

/**
 * GLA through onnxruntime's fused LinearAttention kernel on the packed layout; the backward direction
 * reverses the tokens, runs the same forward recurrence and reverses the output. Returns [B, L, H·dv].
 */
export function glaFused(g: Graph, x: GlaPackedInputs, o: GlaOptions = {}): Value {
  const length = assertStatic(x.q.shape.slice(1, 2), 'gla: tokens')[0];
  const dk = assertStatic(x.q.shape.slice(2), 'gla: query width')[0] / x.heads;
  const backward = o.direction === 'backward';
  const prepare = (t: Value) => (backward ? reverseTokens(g, t, length) : t);
  const attrs = { update_rule: 'gated', q_num_heads: x.heads, kv_num_heads: x.heads, scale: o.scale ?? dk ** -0.5 };
  const [out] = g.op('LinearAttention', [prepare(x.q), prepare(x.k), prepare(x.v), null, prepare(x.logAlpha)], attrs, { domain: MS_DOMAIN });
  return backward ? reverseTokens(g, out, length) : out;
}

// ---- the plain recurrence ---------------------------------------------------------------------

/** Host tensors for `glaRecurrent`, row-major [B, H, L, d]. */
export interface GlaHostInputs {
  readonly q: Float32Array | Float64Array;
  readonly k: Float32Array | Float64Array;
  readonly v: Float32Array | Float64Array;
  readonly logAlpha: Float32Array | Float64Array;
  readonly batch: number;
  readonly heads: number;
  readonly length: number;
  readonly dk: number;
  readonly dv: number;
}

/** The recurrence token by token, the dk×dv state in float64; returns o [B, H, L, dv]. */
export function glaRecurrent(x: GlaHostInputs, o: GlaOptions = {}): Float64Array {
  const { batch, heads, length: L, dk, dv } = x;
  const scale = o.scale ?? dk ** -0.5;
  const out = new Float64Array(batch * heads * L * dv);
  const state = new Float64Array(dk * dv);
  for (let bh = 0; bh < batch * heads; bh++) {
    state.fill(0);
    for (let step = 0; step < L; step++) {
      const t = o.direction === 'backward' ? L - 1 - step : step;
      const [kq, kv] = [(bh * L + t) * dk, (bh * L + t) * dv];
      for (let i = 0; i < dk; i++) {
        const alpha = Math.exp(x.logAlpha[kq + i]);
        const ki = x.k[kq + i];
        for (let j = 0; j < dv; j++) state[i * dv + j] = alpha * state[i * dv + j] + ki * x.v[kv + j];
      }
      for (let j = 0; j < dv; j++) {
        let acc = 0;
        for (let i = 0; i < dk; i++) acc += x.q[kq + i] * state[i * dv + j];
        out[kv + j] = scale * acc;
      }
    }
  }
  return out;
}
