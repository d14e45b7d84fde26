/** `fovea bench <capability> [options]`: one benchmark per capability, results in bench/results/. */
import { parseArgs } from 'node:util';
import { runAdaptersBench } from './adapters.js';
import { runChangeBench } from './change.js';
import { defaultImage, defaultWeights, runDetectBench } from './detect.js';
import { runImportBench } from './import.js';
import { runStreamBench } from './stream.js';
import { runTrackBench } from './track.js';
import { runVigBench } from './vig.js';

async function detect(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { ep: { type: 'string' }, runs: { type: 'string' }, warmup: { type: 'string' }, json: { type: 'boolean' }, image: { type: 'string' }, model: { type: 'string' }, sizes: { type: 'string' }, weights: { type: 'string' }, seeded: { type: 'boolean' } },
  });
  if (values.ep && values.ep !== 'cpu' && values.ep !== 'cuda') throw new Error(`--ep must be cpu or cuda, got ${values.ep}`);
  return runDetectBench(
    {
      ep: values.ep === 'cuda' ? 'cuda' : 'cpu',
      runs: Number(values.runs ?? 30),
      warmup: Number(values.warmup ?? 5),
      sizes: (values.sizes ?? '320,480,640').split(',').map(Number),
      image: values.image ?? defaultImage(),
      model: values.model ?? 'leyolo-nano',
      weights: values.seeded ? undefined : (values.weights ?? defaultWeights()),
    },
    values.json ?? false,
  );
}

const BENCHES: Record<string, (args: string[]) => Promise<void>> = { detect, adapters: runAdaptersBench, import: runImportBench, stream: runStreamBench, track: runTrackBench, vig: runVigBench, change: runChangeBench };

export async function runBench(args: string[]): Promise<void> {
  const named = args.length > 0 && !args[0].startsWith('-');
  const what = named ? args[0] : 'detect';
  const bench = BENCHES[what];
  if (!bench) throw new Error(`unknown benchmark '${what}'; available: ${Object.keys(BENCHES).join(', ')}`);
  return bench(named ? args.slice(1) : args);
}
