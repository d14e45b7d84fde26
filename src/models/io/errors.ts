/** The one error type the checkpoint readers throw for anything wrong with a file's contents. */
export class CheckpointError extends Error {
  override name = 'CheckpointError';
  constructor(
    message: string,
    /** The file the error is about, when known. */
    readonly path?: string,
  ) {
    super(path ? `${path}: ${message}` : message);
  }
}

/** Rethrow `e` as a CheckpointError about `path` (keeping its message), unless it is one already. */
export function asCheckpointError(e: unknown, path: string): Error {
  if (e instanceof CheckpointError) return e.path ? e : new CheckpointError(e.message, path);
  if (e instanceof Error && 'code' in e && typeof e.code === 'string') return e; // ENOENT, EACCES: the OS says it best
  const msg = e instanceof Error ? e.message : String(e);
  return new CheckpointError(`corrupt checkpoint (${msg})`, path);
}
