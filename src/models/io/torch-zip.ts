/**
 * PyTorch's zip checkpoint format (torch.save since 1.6): `<archive>/data.pkl` is a pickle whose
 * persistent ids name storages, each stored raw in `<archive>/data/<key>`; `<archive>/byteorder`
 * ("little" or "big") is present in files written since torch 2.1.
 */
import type { FileHandle } from 'node:fs/promises';
import { CheckpointError } from './errors.js';
import { unpickle } from './pickle.js';
import { TorchContext, torchHooks } from './reducers.js';
import type { TorchStorage } from './tensors.js';
import { decodeStorage } from './tensors.js';
import type { PyValue } from './values.js';
import type { ZipEntry } from './zip.js';
import { ZipArchive } from './zip.js';

/** The `<archive>/` folder that holds data.pkl (the stem torch.save was given: "archive", "best", …). */
function archivePrefix(zip: ZipArchive): string {
  let best: string | undefined;
  for (const name of zip.entries.keys()) {
    if (name !== 'data.pkl' && !name.endsWith('/data.pkl')) continue;
    const prefix = name.slice(0, -'data.pkl'.length);
    if (best === undefined || prefix.length < best.length) best = prefix;
  }
  if (best === undefined) throw new CheckpointError('corrupt checkpoint: the zip archive has no data.pkl (not a torch.save file, or damaged)');
  return best;
}

export async function readTorchZip(file: FileHandle, fileSize: number): Promise<PyValue> {
  const zip = await ZipArchive.open(file, fileSize);
  const prefix = archivePrefix(zip);
  const byteorder = zip.entries.get(`${prefix}byteorder`);
  const bigEndian = byteorder ? new TextDecoder().decode(await zip.read(byteorder)).trim() === 'big' : false;

  const ctx = new TorchContext();
  const root = unpickle(await zip.read(zip.entries.get(`${prefix}data.pkl`) as ZipEntry), torchHooks(ctx));
  await readStorages(zip, prefix, [...ctx.storages.values()], bigEndian);
  for (const t of ctx.tensors) t.materialise();
  for (const s of ctx.storages.values()) s.data = undefined; // views keep what they use
  return root;
}

/** Each storage is read once, in file order, and decoded once; its views are cut from that one array. */
async function readStorages(zip: ZipArchive, prefix: string, storages: TorchStorage[], bigEndian: boolean): Promise<void> {
  const byEntry = new Map<ZipEntry, TorchStorage>();
  for (const storage of storages) {
    const entry = zip.entries.get(`${prefix}data/${storage.key}`);
    if (!entry) throw new CheckpointError(`corrupt checkpoint: storage ${storage.key} is missing from the archive (${prefix}data/${storage.key})`);
    if (entry.size < storage.byteLength) {
      throw new CheckpointError(`corrupt checkpoint: storage ${storage.key} holds ${entry.size} bytes but needs ${storage.byteLength} (${storage.numel} × ${storage.dtype}); truncated?`);
    }
    byEntry.set(entry, storage);
  }
  await zip.readEach([...byEntry.keys()], (entry, bytes) => {
    const storage = byEntry.get(entry) as TorchStorage;
    storage.data = decodeStorage(bytes, storage.dtype, storage.numel, bigEndian);
  });
}
