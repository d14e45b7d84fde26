/**
 * A read-only zip directory reader over an open file: end-of-central-directory (EOCD) record,
 * central directory, local headers, ZIP64 for archives and entries past 4 GiB.
 *
 * Why not a library: `adm-zip` and `fflate`'s `unzipSync` want the whole archive in memory and copy
 * every entry out of it. `yauzl` reads by offset but only through streams, one callback chain per
 * entry, which is much slower for the hundreds of small storages a checkpoint holds. PyTorch's
 * writer stores entries uncompressed, so the reader here only needs positional reads: every entry
 * is read once, straight into a fresh (aligned) buffer, and its CRC-32 is checked. Deflated entries
 * (an archive re-zipped by some tool) are inflated with node:zlib.
 */
import type { FileHandle } from 'node:fs/promises';
import zlib from 'node:zlib';
import { CheckpointError } from './errors.js';

export interface ZipEntry {
  readonly name: string;
  readonly method: number;
  readonly crc32: number;
  readonly compressedSize: number;
  readonly size: number;
  readonly localHeaderOffset: number;
}

const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;
const METHOD_STORED = 0;
const METHOD_DEFLATE = 8;
const EOCD_SIZE = 22;
const MAX_COMMENT = 0xffff;
/** Bytes read per system call when reading many entries. */
const WINDOW = 16 << 20;
const MAX_READ = 1 << 30;

export class ZipArchive {
  private constructor(
    private readonly file: FileHandle,
    readonly fileSize: number,
    readonly entries: ReadonlyMap<string, ZipEntry>,
    private readonly ends: ReadonlyMap<ZipEntry, number>,
  ) {}

  static async open(file: FileHandle, fileSize: number): Promise<ZipArchive> {
    const tailLength = Math.min(fileSize, EOCD_SIZE + MAX_COMMENT + 20);
    const tail = await readAt(file, fileSize - tailLength, tailLength);
    const eocdAt = findEocd(tail);
    if (eocdAt < 0) throw new CheckpointError('truncated or corrupt zip archive: no end-of-central-directory record (is the file complete?)');
    const eocd = view(tail).subarray(eocdAt);
    let count = eocd.u16(10);
    let cdSize = eocd.u32(12);
    let cdOffset = eocd.u32(16);
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      ({ count, cdSize, cdOffset } = await readZip64Eocd(file, tail, eocdAt, fileSize - tailLength));
    }
    if (cdOffset + cdSize > fileSize) throw new CheckpointError('truncated or corrupt zip archive: the central directory lies past the end of the file');
    const cd = view(await readAt(file, cdOffset, cdSize));
    const entries = new Map<string, ZipEntry>();
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cd.length || cd.u32(p) !== SIG_CENTRAL) throw new CheckpointError(`corrupt zip archive: central directory entry ${i} is damaged`);
      const nameLen = cd.u16(p + 28);
      const extraLen = cd.u16(p + 30);
      const commentLen = cd.u16(p + 32);
      const name = new TextDecoder().decode(cd.bytes.subarray(p + 46, p + 46 + nameLen));
      const entry = {
        name,
        method: cd.u16(p + 10),
        crc32: cd.u32(p + 16),
        compressedSize: cd.u32(p + 20),
        size: cd.u32(p + 24),
        localHeaderOffset: cd.u32(p + 42),
      };
      applyZip64Extra(entry, cd.bytes.subarray(p + 46 + nameLen, p + 46 + nameLen + extraLen));
      entries.set(name, entry);
      p += 46 + nameLen + extraLen + commentLen;
    }
    // Entries are laid out one after another: each ends where the next local header (or the directory) begins.
    const inFileOrder = [...entries.values()].sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
    const ends = new Map<ZipEntry, number>();
    inFileOrder.forEach((e, i) => ends.set(e, i + 1 < inFileOrder.length ? inFileOrder[i + 1].localHeaderOffset : cdOffset));
    return new ZipArchive(file, fileSize, entries, ends);
  }

  /** One entry's uncompressed bytes; the CRC-32 is checked. */
  async read(entry: ZipEntry): Promise<Uint8Array> {
    let out: Uint8Array | undefined;
    await this.readEach([entry], (_, bytes) => (out = bytes));
    return out as Uint8Array;
  }

  /**
   * Read many entries with few system calls: entries are taken in file order and read in windows
   * of up to WINDOW bytes, one positional read per window. A stored entry's bytes are a view into
   * its window (no copy); windows start on a 64-byte boundary, so data that torch aligned in the
   * file stays aligned for typed-array views.
   */
  async readEach(entries: readonly ZipEntry[], use: (entry: ZipEntry, bytes: Uint8Array) => void): Promise<void> {
    const sorted = [...entries].sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
    for (let i = 0; i < sorted.length; ) {
      const start = sorted[i].localHeaderOffset - (sorted[i].localHeaderOffset % 64);
      let j = i + 1;
      while (j < sorted.length && this.extentEnd(sorted[j]) - start <= WINDOW) j++;
      const end = this.extentEnd(sorted[j - 1]);
      const window = await readAt(this.file, start, end - start, sorted[i].name);
      for (const e of sorted.slice(i, j)) use(e, this.entryData(e, window.subarray(e.localHeaderOffset - start)));
      i = j;
    }
  }

  /** Where an entry's bytes end at the latest: the next local header, or the central directory. */
  private extentEnd(e: ZipEntry): number {
    return this.ends.get(e) ?? this.fileSize;
  }

  /** An entry's data from bytes that start at its local header. */
  private entryData(entry: ZipEntry, chunk: Uint8Array): Uint8Array {
    if (chunk.length < 30) throw new CheckpointError(`truncated zip archive: the local header of ${entry.name} is cut off`);
    const header = view(chunk);
    if (header.u32(0) !== SIG_LOCAL) throw new CheckpointError(`corrupt zip archive: bad local header for ${entry.name}`);
    const dataAt = 30 + header.u16(26) + header.u16(28);
    if (dataAt + entry.compressedSize > chunk.length) throw new CheckpointError(`truncated or corrupt zip archive: the data of ${entry.name} overruns its space`);
    const stored = chunk.subarray(dataAt, dataAt + entry.compressedSize);
    let bytes: Uint8Array;
    if (entry.method === METHOD_STORED) bytes = stored;
    else if (entry.method === METHOD_DEFLATE) {
      try {
        bytes = new Uint8Array(zlib.inflateRawSync(stored));
      } catch (e) {
        throw new CheckpointError(`corrupt zip entry ${entry.name}: ${(e as Error).message}`);
      }
    } else throw new CheckpointError(`zip entry ${entry.name} uses compression method ${entry.method}; only stored and deflate are supported`);
    if (bytes.length !== entry.size) throw new CheckpointError(`corrupt zip entry ${entry.name}: ${bytes.length} bytes, the directory says ${entry.size}`);
    if (crc32(bytes) !== entry.crc32) throw new CheckpointError(`corrupt zip entry ${entry.name}: CRC-32 mismatch (the bytes were damaged)`);
    return bytes;
  }
}

/** Positional read of exactly `length` bytes into a fresh buffer (offset 0, so typed views are aligned). */
export async function readAt(file: FileHandle, position: number, length: number, what?: string): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    // fs caps one read at 2 GiB; storages past that are read in 1 GiB pieces.
    const { bytesRead } = await file.read(buf, done, Math.min(length - done, MAX_READ), position + done);
    if (bytesRead === 0) {
      throw new CheckpointError(`truncated file: ${what ?? 'zip record'} needs ${length} bytes at offset ${position}, the file ends first`);
    }
    done += bytesRead;
  }
  return buf;
}

interface LeView {
  readonly bytes: Uint8Array;
  readonly length: number;
  u16(at: number): number;
  u32(at: number): number;
  u64(at: number): number;
  subarray(at: number): LeView;
}

function view(bytes: Uint8Array): LeView {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    bytes,
    length: bytes.length,
    u16: (at) => dv.getUint16(at, true),
    u32: (at) => dv.getUint32(at, true),
    u64: (at) => {
      const v = dv.getBigUint64(at, true);
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CheckpointError('corrupt zip archive: a 64-bit size or offset is out of range');
      return Number(v);
    },
    subarray: (at) => view(bytes.subarray(at)),
  };
}

/** The last EOCD signature whose comment length fits the tail exactly (a comment may contain the signature). */
function findEocd(tail: Uint8Array): number {
  const v = view(tail);
  for (let i = tail.length - EOCD_SIZE; i >= 0; i--) {
    if (v.u32(i) === SIG_EOCD && i + EOCD_SIZE + v.u16(i + 20) <= tail.length) return i;
  }
  return -1;
}

async function readZip64Eocd(file: FileHandle, tail: Uint8Array, eocdAt: number, tailStart: number): Promise<{ count: number; cdSize: number; cdOffset: number }> {
  const locAt = eocdAt - 20;
  const t = view(tail);
  if (locAt < 0 || t.u32(locAt) !== SIG_ZIP64_LOCATOR) throw new CheckpointError('corrupt zip archive: ZIP64 sizes without a ZIP64 locator');
  const recordAt = t.u64(locAt + 8);
  if (recordAt + 56 > tailStart + locAt) throw new CheckpointError('corrupt zip archive: bad ZIP64 end-of-central-directory offset');
  const r = view(await readAt(file, recordAt, 56));
  if (r.u32(0) !== SIG_ZIP64_EOCD) throw new CheckpointError('corrupt zip archive: bad ZIP64 end-of-central-directory record');
  return { count: r.u64(32), cdSize: r.u64(40), cdOffset: r.u64(48) };
}

/** ZIP64 extended information (header id 1): the 64-bit values of the fields that are 0xFFFFFFFF, in order. */
function applyZip64Extra(e: { size: number; compressedSize: number; localHeaderOffset: number }, extra: Uint8Array): void {
  const v = view(extra);
  for (let p = 0; p + 4 <= extra.length; ) {
    const id = v.u16(p);
    const len = v.u16(p + 2);
    if (id === 0x0001) {
      let q = p + 4;
      const next = (): number => {
        if (q + 8 > p + 4 + len) throw new CheckpointError('corrupt zip archive: short ZIP64 extra field');
        const x = v.u64(q);
        q += 8;
        return x;
      };
      if (e.size === 0xffffffff) e.size = next();
      if (e.compressedSize === 0xffffffff) e.compressedSize = next();
      if (e.localHeaderOffset === 0xffffffff) e.localHeaderOffset = next();
      return;
    }
    p += 4 + len;
  }
}

let crcTable: Uint32Array | undefined;

/** CRC-32 (IEEE): node:zlib's native one where Node has it (20.15+), else a table-driven loop. */
export function crc32(bytes: Uint8Array): number {
  const native = (zlib as { crc32?: (data: Uint8Array) => number }).crc32;
  if (native) return native(bytes) >>> 0;
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = crcTable[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
