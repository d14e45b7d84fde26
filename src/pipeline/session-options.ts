/** The ORT session options every inference session in fovea uses (workers and benchmarks alike). */
import type { InferenceSession } from 'onnxruntime-node';

export function sessionOptions(intraOpThreads: number, spin: boolean): InferenceSession.SessionOptions {
  return {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: intraOpThreads,
    interOpNumThreads: 1,
    // ORT's memory pattern pre-plans one block per input shape for all of a run's tensors; measured on
    // ViG-T and DeiT-T at 1024² it held 1.5–2× the RSS of allocating each tensor from the arena as it
    // is needed (bench/results/vig-cpu.md), at the same latency. Off.
    enableMemPattern: false,
    // ORT's pool threads spin after each run by default; on a small machine that spinning takes the
    // cores sharp needs to decode the next image. Off unless asked for.
    extra: { session: { intra_op: { allow_spinning: spin ? '1' : '0' }, inter_op: { allow_spinning: spin ? '1' : '0' } } },
  };
}
