/** `fovea bench <capability>`: one benchmark per capability, results in bench/results/. */
import { parseArgs } from 'node:util';
import { defaultImage, runDetectBench } from './detect.js';

export async function runBench(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { ep: { type: 'string' }, runs: { type: 'string' }, warmup: { type: 'string' }, json: { type: 'boolean' }, image: { type: 'string' }, model: { type: 'string' }, sizes: { type: 'string' } },
  });
  const what = positionals[0] ?? 'detect';
  const ep = values.ep === 'cuda' ? 'cuda' : 'cpu';
  if (values.ep && values.ep !== 'cpu' && values.ep !== 'cuda') throw new Error(`--ep must be cpu or cuda, got ${values.ep}`);
  switch (what) {
    case 'detect':
      return runDetectBench(
        {
          ep,
          runs: Number(values.runs ?? 30),
          warmup: Number(values.warmup ?? 5),
          sizes: (values.sizes ?? '320,480,640').split(',').map(Number),
          image: values.image ?? defaultImage(),
          model: values.model ?? 'leyolo-nano',
        },
        values.json ?? false,
      );
    default:
      throw new Error(`unknown benchmark '${what}'; available: detect`);
  }
}
