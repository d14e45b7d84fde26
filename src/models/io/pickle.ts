/**
 * A pickle virtual machine (protocols 0–5) that never executes anything: globals become PyGlobal
 * references, and every call (REDUCE, INST, OBJ, NEWOBJ) goes through the hooks, which decide
 * what a call means or refuse it.
 *
 * Why not npm `pickleparser` (0.2.1, evaluated): it decodes LONG1/LONG4 as unsigned (a pickled -1
 * as LONG1 reads as 255) and rejects longs over 8 bytes; REDUCE calls the resolved JavaScript
 * function directly, so it cannot tell a class instantiation from a function call; errors are
 * untyped, truncation surfaces as a RangeError from a DataView; and its values are `any`. The
 * opcode loop is small enough that owning it costs less than wrapping those gaps.
 */
import { CheckpointError } from './errors.js';
import type { PyDict, PyValue } from './values.js';
import { PyGlobal, PyObject, describe } from './values.js';

export interface UnpickleHooks {
  /** PERSID / BINPERSID: what a persistent id stands for (torch: a storage). */
  persistentLoad(pid: PyValue): PyValue;
  /** REDUCE, INST, OBJ: `fn(*args)`. */
  call(fn: PyGlobal, args: PyValue[]): PyValue;
  /** NEWOBJ, NEWOBJ_EX: `cls.__new__(cls, *args)`. */
  construct(cls: PyGlobal, args: PyValue[]): PyValue;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
const latin1 = new TextDecoder('latin1');

class Reader {
  pos = 0;
  private readonly dv: DataView;
  constructor(readonly bytes: Uint8Array) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  private need(n: number): number {
    const at = this.pos;
    if (n < 0 || at + n > this.bytes.length) throw new CheckpointError('truncated pickle: data.pkl ends in the middle of an opcode');
    this.pos += n;
    return at;
  }
  u8(): number {
    return this.bytes[this.need(1)];
  }
  u16(): number {
    return this.dv.getUint16(this.need(2), true);
  }
  i32(): number {
    return this.dv.getInt32(this.need(4), true);
  }
  u32(): number {
    return this.dv.getUint32(this.need(4), true);
  }
  u64(): number {
    const v = this.dv.getBigUint64(this.need(8), true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CheckpointError('corrupt pickle: 64-bit length out of range');
    return Number(v);
  }
  f64be(): number {
    return this.dv.getFloat64(this.need(8), false);
  }
  take(n: number): Uint8Array {
    const at = this.need(n);
    return this.bytes.subarray(at, at + n);
  }
  line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) throw new CheckpointError('truncated pickle: missing end of line');
    const s = latin1.decode(this.bytes.subarray(this.pos, end));
    this.pos = end + 1;
    return s;
  }
  text(n: number): string {
    const bytes = this.take(n);
    try {
      return utf8.decode(bytes);
    } catch {
      throw new CheckpointError('corrupt pickle: a string is not valid UTF-8');
    }
  }
}

/** Two's-complement little-endian integer (LONG1 / LONG4), as a number when it fits exactly. */
function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
  return intValue(v);
}

function intValue(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** Text-mode INT/LONG: "I01\n" is True in protocol 0. */
function decodeTextInt(s: string): PyValue {
  if (s === '01') return true;
  if (s === '00') return false;
  const t = s.endsWith('L') ? s.slice(0, -1) : s;
  if (!/^[-+]?\d+$/.test(t)) throw new CheckpointError(`corrupt pickle: bad integer literal ${JSON.stringify(s)}`);
  return intValue(BigInt(t));
}

/** Protocol-0 string literal: quoted, with Python escapes. */
function decodeQuoted(s: string): string {
  const q = s[0];
  if (s.length < 2 || (q !== '"' && q !== "'") || s[s.length - 1] !== q) throw new CheckpointError('corrupt pickle: insecure string literal');
  return s.slice(1, -1).replace(/\\(x[0-9a-fA-F]{2}|.)/g, (_, e: string) =>
    e[0] === 'x' ? String.fromCharCode(parseInt(e.slice(1), 16)) : ({ n: '\n', r: '\r', t: '\t', '0': '\0' } as Record<string, string>)[e] ?? e,
  );
}

/** `raw-unicode-escape` of protocol 0's UNICODE opcode. */
function decodeRawUnicode(s: string): string {
  return s.replace(/\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g, (_, a?: string, b?: string) => String.fromCodePoint(parseInt(a ?? b ?? '0', 16)));
}

/**
 * Run a pickle to its STOP and return the value it built. One switch over the opcodes, the way
 * CPython's pickle.py reads: splitting it would only scatter a table that is read top to bottom.
 */
export function unpickle(bytes: Uint8Array, hooks: UnpickleHooks): PyValue {
  const r = new Reader(bytes);
  // MARK pushes the current stack on `marks` and starts a new one; the opcodes that pop to the mark take that stack whole.
  let stack: PyValue[] = [];
  const marks: PyValue[][] = [];
  const memo = new Map<number, PyValue>();

  const pop = (): PyValue => {
    const v = stack.pop();
    if (v === undefined) throw new CheckpointError('corrupt pickle: stack underflow');
    return v;
  };
  const top = (): PyValue => {
    const v = stack[stack.length - 1];
    if (v === undefined) throw new CheckpointError('corrupt pickle: stack underflow');
    return v;
  };
  const popMark = (): PyValue[] => {
    const items = stack;
    const prev = marks.pop();
    if (!prev) throw new CheckpointError('corrupt pickle: no MARK on the stack');
    stack = prev;
    return items;
  };
  const global = (v: PyValue): PyGlobal => {
    if (v instanceof PyGlobal) return v;
    throw new CheckpointError(`unsupported pickle: call of ${describe(v)}, not of a named global`);
  };
  const memoGet = (i: number): PyValue => {
    const v = memo.get(i);
    if (v === undefined) throw new CheckpointError(`corrupt pickle: memo entry ${i} is not defined`);
    return v;
  };
  const setItems = (target: PyValue, items: PyValue[]): void => {
    let d: PyDict;
    if (target instanceof Map) d = target;
    else if (target instanceof PyObject) d = target.dictItems ??= new Map();
    else throw new CheckpointError(`corrupt pickle: SETITEM on ${describe(target)}`);
    for (let i = 0; i + 1 < items.length; i += 2) d.set(items[i], items[i + 1]);
  };
  const appendItems = (target: PyValue, items: PyValue[]): void => {
    // Loops, not push(...items): a pickled list may hold more items than a call takes arguments.
    if (Array.isArray(target)) for (const x of items) target.push(x);
    else if (target instanceof Set) for (const x of items) target.add(x);
    else if (target instanceof PyObject) for (const x of items) (target.listItems ??= []).push(x);
    else throw new CheckpointError(`corrupt pickle: APPEND on ${describe(target)}`);
  };

  for (;;) {
    const op = r.u8();
    switch (op) {
      case 0x80: { // PROTO
        const v = r.u8();
        if (v > 5) throw new CheckpointError(`unsupported pickle protocol ${v} (0–5 are known)`);
        break;
      }
      case 0x95: r.u64(); break; // FRAME: framing is only a read-ahead hint
      case 0x2e: return pop(); // STOP
      case 0x28: marks.push(stack); stack = []; break; // MARK
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: stack.push(top()); break; // DUP
      // Memo
      case 0x70: memo.set(Number(r.line()), top()); break; // PUT
      case 0x71: memo.set(r.u8(), top()); break; // BINPUT
      case 0x72: memo.set(r.u32(), top()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x67: stack.push(memoGet(Number(r.line()))); break; // GET
      case 0x68: stack.push(memoGet(r.u8())); break; // BINGET
      case 0x6a: stack.push(memoGet(r.u32())); break; // LONG_BINGET
      // Constants and numbers
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x49: stack.push(decodeTextInt(r.line())); break; // INT
      case 0x4c: stack.push(decodeTextInt(r.line())); break; // LONG
      case 0x4a: stack.push(r.i32()); break; // BININT
      case 0x4b: stack.push(r.u8()); break; // BININT1
      case 0x4d: stack.push(r.u16()); break; // BININT2
      case 0x8a: stack.push(decodeLong(r.take(r.u8()))); break; // LONG1
      case 0x8b: stack.push(decodeLong(r.take(r.i32()))); break; // LONG4
      case 0x46: stack.push(parseFloat(r.line())); break; // FLOAT
      case 0x47: stack.push(r.f64be()); break; // BINFLOAT
      // Strings and bytes
      case 0x53: stack.push(decodeQuoted(r.line())); break; // STRING
      case 0x54: stack.push(latin1.decode(r.take(r.i32()))); break; // BINSTRING
      case 0x55: stack.push(latin1.decode(r.take(r.u8()))); break; // SHORT_BINSTRING
      case 0x56: stack.push(decodeRawUnicode(r.line())); break; // UNICODE
      case 0x58: stack.push(r.text(r.u32())); break; // BINUNICODE
      case 0x8c: stack.push(r.text(r.u8())); break; // SHORT_BINUNICODE
      case 0x8d: stack.push(r.text(r.u64())); break; // BINUNICODE8
      case 0x42: stack.push(r.take(r.u32()).slice()); break; // BINBYTES
      case 0x43: stack.push(r.take(r.u8()).slice()); break; // SHORT_BINBYTES
      case 0x8e: stack.push(r.take(r.u64()).slice()); break; // BINBYTES8
      case 0x96: stack.push(r.take(r.u64()).slice()); break; // BYTEARRAY8
      case 0x97: throw new CheckpointError('unsupported pickle: out-of-band buffers (NEXT_BUFFER)');
      case 0x98: break; // READONLY_BUFFER
      // Containers
      case 0x29: stack.push([]); break; // EMPTY_TUPLE
      case 0x74: { const items = popMark(); stack.push(items); break; } // TUPLE
      case 0x85: stack.push([pop()]); break; // TUPLE1
      case 0x86: { const b = pop(); const a = pop(); stack.push([a, b]); break; } // TUPLE2
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); stack.push([a, b, c]); break; } // TUPLE3
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x6c: { const items = popMark(); stack.push(items); break; } // LIST
      case 0x61: { const x = pop(); appendItems(top(), [x]); break; } // APPEND
      case 0x65: { const items = popMark(); appendItems(top(), items); break; } // APPENDS
      case 0x7d: stack.push(new Map()); break; // EMPTY_DICT
      case 0x64: { const items = popMark(); const d: PyDict = new Map(); setItems(d, items); stack.push(d); break; } // DICT
      case 0x73: { const v = pop(); const k = pop(); setItems(top(), [k, v]); break; } // SETITEM
      case 0x75: { const items = popMark(); setItems(top(), items); break; } // SETITEMS
      case 0x8f: stack.push(new Set()); break; // EMPTY_SET
      case 0x90: { const items = popMark(); appendItems(top(), items); break; } // ADDITEMS
      case 0x91: stack.push(new Set(popMark())); break; // FROZENSET
      // Globals, calls and objects
      case 0x63: { const module = r.line(); stack.push(new PyGlobal(module, r.line())); break; } // GLOBAL
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') throw new CheckpointError('corrupt pickle: STACK_GLOBAL needs two strings');
        stack.push(new PyGlobal(module, name));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        const fn = global(pop());
        if (!Array.isArray(args)) throw new CheckpointError(`corrupt pickle: REDUCE of ${fn.qualifiedName} without an argument tuple`);
        stack.push(hooks.call(fn, args));
        break;
      }
      case 0x81: { // NEWOBJ
        const args = pop();
        const cls = global(pop());
        stack.push(hooks.construct(cls, Array.isArray(args) ? args : []));
        break;
      }
      case 0x92: { // NEWOBJ_EX (keyword arguments are kept on the record only when it is one)
        const kwargs = pop();
        const args = pop();
        const obj = hooks.construct(global(pop()), Array.isArray(args) ? args : []);
        if (obj instanceof PyObject && kwargs instanceof Map && kwargs.size) obj.dictItems = kwargs;
        stack.push(obj);
        break;
      }
      case 0x69: { // INST
        const module = r.line();
        const cls = new PyGlobal(module, r.line());
        stack.push(hooks.call(cls, popMark()));
        break;
      }
      case 0x6f: { // OBJ
        const items = popMark();
        const cls = global(items.shift() ?? null);
        stack.push(hooks.call(cls, items));
        break;
      }
      case 0x62: { // BUILD: only records keep state; a dict's or tensor's extra __dict__ (e.g. `_metadata`) is dropped
        const state = pop();
        const obj = top();
        if (obj instanceof PyObject) obj.state = state;
        break;
      }
      case 0x50: stack.push(hooks.persistentLoad(r.line())); break; // PERSID
      case 0x51: stack.push(hooks.persistentLoad(pop())); break; // BINPERSID
      case 0x82: case 0x83: case 0x84: throw new CheckpointError('unsupported pickle: extension registry codes (EXT1/2/4)');
      default:
        throw new CheckpointError(`corrupt pickle: unknown opcode 0x${op.toString(16)} at byte ${r.pos - 1}`);
    }
  }
}
