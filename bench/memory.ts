/**
 * Peak-memory measurement the child-process benchmarks share (bench vig, bench change): VmRSS sampled by a
 * worker thread while runs are in flight, VmHWM reset through /proc/self/clear_refs, and a parent that runs
 * one configuration per fresh child process and reads its JSON answer (the last stdout line).
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { projectRoot } from './stats.js';

export function vmKiB(field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** Resets the kernel's high-water mark (VmHWM) to the current RSS; false where the kernel does not allow it. */
export function resetHighWaterMark(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/** A worker thread that samples VmRSS every `everyMs` and keeps the maximum (KiB) and a sample count in shared memory. */
export function startSampler(everyMs = 2): { stop: () => Promise<{ maxKiB: number; samples: number }> } {
  const shared = new Int32Array(new SharedArrayBuffer(12));
  const code = `
    const { workerData } = require('node:worker_threads');
    const { readFileSync } = require('node:fs');
    const s = new Int32Array(workerData.buf);
    const tick = () => {
      const m = /^VmRSS:\\s+(\\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
      if (m && Number(m[1]) > Atomics.load(s, 0)) Atomics.store(s, 0, Number(m[1]));
      Atomics.add(s, 1, 1);
      if (Atomics.load(s, 2) === 0) setTimeout(tick, workerData.everyMs);
    };
    tick();`;
  const w = new Worker(code, { eval: true, workerData: { buf: shared.buffer, everyMs } });
  return {
    stop: async () => {
      Atomics.store(shared, 2, 1);
      await w.terminate();
      return { maxKiB: Atomics.load(shared, 0), samples: Atomics.load(shared, 1) };
    },
  };
}

/** What `peakWindow` saw, KiB: RSS at the start, the sampled maximum, VmHWM (NaN when it could not be reset) and their larger. */
export interface PeakMemory {
  baselineKiB: number;
  sampledKiB: number;
  hwmKiB: number;
  peakKiB: number;
  samples: number;
}

/**
 * Opens a peak-memory window: settles 50 ms, takes the RSS baseline, resets VmHWM and starts sampling VmRSS
 * every `everyMs`. `close` reads the peak: the larger of the sampled maximum and VmHWM.
 */
export async function peakWindow(everyMs: number): Promise<{ close: () => Promise<PeakMemory> }> {
  await new Promise((r) => setTimeout(r, 50));
  const baselineKiB = vmKiB('VmRSS');
  const hwm = resetHighWaterMark();
  const sampler = startSampler(everyMs);
  return {
    close: async () => {
      const sampled = await sampler.stop();
      const hwmKiB = hwm ? vmKiB('VmHWM') : NaN;
      return { baselineKiB, sampledKiB: sampled.maxKiB, hwmKiB, peakKiB: Math.max(sampled.maxKiB, Number.isFinite(hwmKiB) ? hwmKiB : 0), samples: sampled.samples };
    },
  };
}

/**
 * The child's side of `spawnChild`: when this process is `file --child <job JSON>`, runs the job, prints its
 * JSON answer as the last stdout line and exits (1, with the stack on stderr, if it throws).
 */
export function serveChild<J>(file: string, run: (job: J) => Promise<unknown>): void {
  if (process.argv[1] !== file || process.argv[2] !== '--child') return;
  run(JSON.parse(process.argv[3]) as J).then(
    (r) => {
      process.stdout.write(JSON.stringify(r) + '\n');
      process.exit(0);
    },
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}

/**
 * Runs `file --child <job JSON>` in a fresh Node process (with tsx's loader when `file` is TypeScript) and
 * resolves with the JSON object it prints last; rejects with the tail of its stderr, or after `timeoutMs`.
 */
export function spawnChild<T>(file: string, job: unknown, timeoutMs: number, what: string): Promise<T> {
  const loader = file.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const args = [...loader, file, '--child', JSON.stringify(job)];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: projectRoot(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').at(-1) ?? '';
      if (code === 0 && line.startsWith('{')) resolve(JSON.parse(line) as T);
      else reject(new Error(`child ${what} exited ${code ?? signal}${signal === 'SIGKILL' ? ` (killed after ${timeoutMs / 1000} s)` : ''}: ${err.trim().split('\n').slice(-3).join(' | ')}`));
    });
  });
}
