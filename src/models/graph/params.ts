/**
 * Where a builder's weights come from. A builder asks `p.param('c.weight', shape, init)` under the
 * official module path (`p.scope('model.3.layers.1')`); the same call draws deterministic seeded
 * values, or takes the checkpoint's tensor and checks its shape. Every request is recorded, so the
 * unfolded parameter count and the missing / unexpected checkpoint keys fall out of one build.
 */
import type { HostTensor } from './tensor.js';
import { numel, shapeString } from './tensor.js';

export type Init =
  | { kind: 'uniform'; bound: number }
  | { kind: 'normal'; std: number }
  | { kind: 'const'; value: number }
  | { kind: 'values'; values: (i: number) => number };

export const zeros: Init = { kind: 'const', value: 0 };
export const ones: Init = { kind: 'const', value: 1 };
/** PyTorch's default Conv/Linear init (kaiming_uniform with a=√5): U(±1/√fan_in), for weights and biases alike. */
export const torchDefault = (fanIn: number): Init => ({ kind: 'uniform', bound: 1 / Math.sqrt(fanIn) });

export type StateDict = ReadonlyMap<string, HostTensor>;

export class CheckpointMismatchError extends Error {
  override name = 'CheckpointMismatchError';
}

interface Request {
  readonly shape: readonly number[];
  readonly buffer: boolean;
}

/** The state shared by all scopes of one build. */
class ParamStore {
  readonly requests = new Map<string, Request>();
  readonly missing: string[] = [];
  readonly mismatched: string[] = [];
  constructor(
    readonly seed: number,
    readonly checkpoint?: StateDict,
  ) {}
}

export class Params {
  private constructor(
    private readonly store: ParamStore,
    readonly prefix: string,
  ) {}

  /** Deterministic initialisation: the values of a key depend only on (seed, full key), not on build order. */
  static seeded(seed = 0): Params {
    return new Params(new ParamStore(seed), '');
  }

  /** Weights from a checkpoint; absent keys are recorded and reported by `assertComplete()`. */
  static fromStateDict(sd: StateDict, seed = 0): Params {
    return new Params(new ParamStore(seed, sd), '');
  }

  get trained(): boolean {
    return this.store.checkpoint !== undefined;
  }

  scope(name: string | number): Params {
    return new Params(this.store, this.key(String(name)));
  }

  private key(name: string): string {
    return this.prefix ? `${this.prefix}.${name}` : name;
  }

  /** A trainable parameter (counted by `parameterCount`). */
  param(name: string, shape: readonly number[], init: Init): Float32Array {
    return this.fetch(name, shape, init, false);
  }

  /** A buffer such as BatchNorm running statistics (not a parameter, like PyTorch's buffers). */
  buffer(name: string, shape: readonly number[], init: Init): Float32Array {
    return this.fetch(name, shape, init, true);
  }

  private fetch(name: string, shape: readonly number[], init: Init, buffer: boolean): Float32Array {
    const key = this.key(name);
    if (this.store.requests.has(key)) throw new Error(`parameter ${key} requested twice`);
    this.store.requests.set(key, { shape: [...shape], buffer });
    const ck = this.store.checkpoint;
    if (!ck) return draw(this.store.seed, key, numel(shape), init);
    const t = ck.get(key);
    if (!t) {
      this.store.missing.push(key);
      return draw(this.store.seed, key, numel(shape), init);
    }
    // A checkpoint may store a [c] tensor as [c,1,1] or a scalar as [1]: only the element count and the non-1 dims must agree.
    const squeeze = (s: readonly number[]) => s.filter((d) => d !== 1).join('x');
    if (numel(t.shape) !== numel(shape) || squeeze(t.shape) !== squeeze(shape)) {
      this.store.mismatched.push(`${key}: checkpoint ${shapeString(t.shape)}, model ${shapeString(shape)}`);
      return draw(this.store.seed, key, numel(shape), init);
    }
    if (!(t.data instanceof Float32Array)) throw new CheckpointMismatchError(`${key}: expected float data, got ${t.dtype}`);
    return t.data;
  }

  /** Parameters requested so far, unfolded (BatchNorm affine included, running statistics not). */
  parameterCount(): number {
    let n = 0;
    for (const r of this.store.requests.values()) if (!r.buffer) n += numel(r.shape);
    return n;
  }

  /** Every key requested so far with its shape, and whether it is a buffer (running statistics). */
  requested(): Array<{ key: string; shape: readonly number[]; buffer: boolean }> {
    return [...this.store.requests].map(([key, r]) => ({ key, ...r }));
  }

  /** Throws, naming the first missing and unexpected keys and every shape mismatch, unless the checkpoint fits exactly. */
  assertComplete(ignore: (key: string) => boolean = () => false): void {
    const ck = this.store.checkpoint;
    if (!ck) return;
    const unexpected = [...ck.keys()].filter((k) => !this.store.requests.has(k) && !ignore(k));
    const { missing, mismatched } = this.store;
    if (missing.length === 0 && unexpected.length === 0 && mismatched.length === 0) return;
    const parts: string[] = [];
    const head = (xs: string[]) => xs.slice(0, 5).join(', ') + (xs.length > 5 ? `, … (${xs.length} in all)` : '');
    if (missing.length) parts.push(`missing keys: ${head(missing)}`);
    if (unexpected.length) parts.push(`unexpected keys: ${head(unexpected)}`);
    if (mismatched.length) parts.push(`shape mismatches: ${head(mismatched)}`);
    throw new CheckpointMismatchError(`checkpoint does not fit the model — ${parts.join('; ')}`);
  }
}

/** FNV-1a of the key, mixed with the seed: a per-key stream start. */
function keySeed(seed: number, key: string): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** mulberry32: small, fast, and identical on every platform (also the seeded stream of tests and benches). */
export function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function draw(seed: number, key: string, n: number, init: Init): Float32Array {
  const out = new Float32Array(n);
  switch (init.kind) {
    case 'const':
      out.fill(init.value);
      return out;
    case 'values':
      for (let i = 0; i < n; i++) out[i] = init.values(i);
      return out;
    case 'uniform': {
      const r = mulberry32(keySeed(seed, key));
      for (let i = 0; i < n; i++) out[i] = (2 * r() - 1) * init.bound;
      return out;
    }
    case 'normal': {
      const r = mulberry32(keySeed(seed, key));
      for (let i = 0; i < n; i++) out[i] = init.std * Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
      return out;
    }
  }
}
