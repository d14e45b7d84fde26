/**
 * Damaged, foreign and hostile files: each is refused with a CheckpointError that names the file and
 * says what is wrong in words a user can act on.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointError, readCheckpoint } from '../src/models/io/index.js';

const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/checkpoints/${name}`, import.meta.url));
const LEYOLO = fileURLToPath(new URL('../../shared/fixtures/weights/LeYOLONano.pt', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'fovea-checkpoint-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A temp copy of a fixture, changed by `edit`. */
function damaged(name: string, edit: (path: string) => void): string {
  const path = join(tmp, `${Math.random().toString(36).slice(2)}-${name.split('/').pop()}`);
  copyFileSync(name.includes('/') ? name : fixture(name), path);
  edit(path);
  return path;
}

/** Overwrite bytes at `at` (negative counts from the end) with their complement. */
function flipBytes(path: string, at: number, n = 4): void {
  const b = readFileSync(path);
  const start = at < 0 ? b.length + at : at;
  for (let i = start; i < start + n; i++) b[i] ^= 0xff;
  writeFileSync(path, b);
}

/** Where a stored zip entry's data begins: after its local header (30 bytes, the name and the extra field). */
function dataOffset(zip: Buffer, name: string): number {
  const at = zip.indexOf(Buffer.from(name)) - 30; // the first occurrence of the name is in its local header
  expect(zip.readUInt32LE(at)).toBe(0x04034b50);
  return at + 30 + zip.readUInt16LE(at + 26) + zip.readUInt16LE(at + 28);
}

async function rejection(path: string): Promise<CheckpointError> {
  try {
    await readCheckpoint(path);
  } catch (e) {
    expect(e).toBeInstanceOf(CheckpointError);
    expect((e as CheckpointError).message).toContain(path);
    return e as CheckpointError;
  }
  throw new Error(`${path} was read without error`);
}

describe('truncated files', () => {
  it('a torch checkpoint cut in half is reported as truncated', async () => {
    const path = damaged('module.pt', (p) => truncateSync(p, Math.floor(statSync(p).size / 2)));
    expect((await rejection(path)).message).toMatch(/truncated or corrupt zip archive: no end-of-central-directory record/);
  });

  it('LeYOLONano.pt cut in half is reported as truncated', async () => {
    const path = damaged(LEYOLO, (p) => truncateSync(p, Math.floor(statSync(p).size / 2)));
    expect((await rejection(path)).message).toMatch(/truncated/);
  });

  it('a storage shorter than its tensors need is named', async () => {
    expect((await rejection(fixture('short-storage.pt'))).message).toMatch(/storage 0 holds 6 bytes but needs 12 \(6 × float16\); truncated\?/);
  });

  it('a safetensors file cut short is reported as truncated', async () => {
    const path = damaged('tensors.safetensors', (p) => truncateSync(p, statSync(p).size - 16));
    expect((await rejection(path)).message).toMatch(/truncated safetensors file/);
  });

  it('an empty file is reported as empty', async () => {
    const path = damaged('module.pt', (p) => truncateSync(p, 0));
    expect((await rejection(path)).message).toMatch(/empty file/);
  });
});

describe('corrupt files', () => {
  it('damaged storage bytes fail the CRC-32 check', async () => {
    const path = damaged(LEYOLO, (p) => flipBytes(p, dataOffset(readFileSync(p), 'best/data/0') + 100));
    expect((await rejection(path)).message).toMatch(/corrupt zip entry best\/data\/\d+: CRC-32 mismatch/);
  });

  it('damaged pickle bytes fail the CRC-32 check', async () => {
    const path = damaged('module.pt', (p) => flipBytes(p, 200));
    expect((await rejection(path)).message).toMatch(/corrupt zip entry module\/data.pkl: CRC-32 mismatch/);
  });

  it('a damaged central directory is reported', async () => {
    const b = readFileSync(fixture('module.pt'));
    const cdOffset = b.readUInt32LE(b.length - 22 + 16);
    const path = damaged('module.pt', (p) => flipBytes(p, cdOffset, 4));
    expect((await rejection(path)).message).toMatch(/corrupt zip archive: central directory entry 0 is damaged/);
  });

  it('an archive without data.pkl is not taken for a checkpoint', async () => {
    expect((await rejection(fixture('no-data-pkl.pt'))).message).toMatch(/no data\.pkl/);
  });

  it('a file of another kind is refused', async () => {
    const path = join(tmp, 'notes.txt');
    writeFileSync(path, 'just some text, certainly not weights\n');
    expect((await rejection(path)).message).toMatch(/not a checkpoint/);
  });

  it('a missing file keeps the operating system’s error', async () => {
    await expect(readCheckpoint(join(tmp, 'absent.pt'))).rejects.toThrow(/ENOENT/);
  });
});

describe('hostile and legacy files', () => {
  it('a pickle that calls os.system (posix.system) inside a torch archive is refused, naming the call', async () => {
    expect((await rejection(fixture('os-system.pt'))).message).toMatch(/refusing to load: the pickle calls posix\.system/);
  });

  it('a bare pickle that calls os.system is refused too', async () => {
    expect((await rejection(fixture('os-system.pkl'))).message).toMatch(/posix\.system/);
  });

  it('the legacy (pre-1.6) torch.save format asks for a re-save', async () => {
    expect((await rejection(fixture('legacy.pt'))).message).toMatch(/legacy format, re-save with torch>=1\.6/);
  });
});
