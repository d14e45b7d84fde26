/** Small helpers every benchmark shares: order statistics, the machine's description, result files. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, isAbsolute, join, relative as relativePath } from 'node:path';
import { fileURLToPath } from 'node:url';

export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

export interface Summary {
  median: number;
  p95: number;
  n: number;
}

export const summarize = (xs: readonly number[]): Summary => ({ median: round(quantile(xs, 0.5)), p95: round(quantile(xs, 0.95)), n: xs.length });
export const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  platform: string;
}

export function machine(): Machine {
  const c = cpus();
  return { cpu: c[0]?.model.trim() ?? 'unknown', cores: c.length, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version, platform: `${process.platform}-${process.arch}` };
}

export function describeMachine(m: Machine): string {
  return `${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, ${m.platform}`;
}

/** The project root, from bench/ or dist/bench/. */
export function projectRoot(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  return here.includes(`${join('dist', 'bench')}`) ? join(here, '..', '..') : join(here, '..');
}

export function writeResults(name: string, json: unknown, markdown: string): { json: string; md: string } {
  const dir = join(projectRoot(), 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const paths = { json: join(dir, `${name}.json`), md: join(dir, `${name}.md`) };
  // Paths are written relative to the project, so results name no machine's folders.
  const relative = (_k: string, v: unknown) => (typeof v === 'string' && isAbsolute(v) ? relativePath(projectRoot(), v) : v);
  writeFileSync(paths.json, JSON.stringify(json, relative, 2) + '\n');
  writeFileSync(paths.md, markdown);
  return paths;
}
