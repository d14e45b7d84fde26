/**
 * The ImageNet-1k classifiers the registry serves for the `classify` task (and `/v1/embed`): ViG-T/S/B
 * (specs/models-a.md §2), CARE-S0/S1/S2 (§3; logits = the mean of `head` and `dist_head`, features = the
 * pooled vector both heads read) and DeiT-T/S. Each builds one graph with two outputs, `logits` [B, 1000] and
 * `features` [B, C] (the pooled trunk output the head reads), so classify and embed share a session.
 * All take the eval transform Resize(S/0.875, bicubic) → CenterCrop(S) → ImageNet mean/std.
 */
import { build as buildCare, ignoredCheckpointKey as careIgnoredKey, mapCheckpoint as mapCareCheckpoint, parameterCount as careParameterCount, SIZE_MULTIPLE as CARE_MULTIPLE, variants as careVariants, type CareVariant } from './care.js';
import { build as buildDeiT, parameterCount as deitParameterCount, variants as deitVariants, type DeiTVariant } from './deit.js';
import { Graph } from './graph/graph.js';
import type { Params, StateDict } from './graph/params.js';
import { build as buildViGTrunk, keyDim, mlpHidden, valueDim, variants as vigVariants, type ViGConfig, type ViGVariant } from './vig.js';
import { VIT_LINEAR_INIT, linear } from './vit.js';

export type ClassifierSpec =
  | { readonly family: 'vig'; readonly variant: ViGVariant }
  | { readonly family: 'care'; readonly variant: CareVariant }
  | { readonly family: 'deit'; readonly variant: DeiTVariant };

export const CLASSIFIERS: Readonly<Record<string, ClassifierSpec>> = {
  'vig-t': { family: 'vig', variant: 'ViG-T' },
  'vig-s': { family: 'vig', variant: 'ViG-S' },
  'vig-b': { family: 'vig', variant: 'ViG-B' },
  'care-s0': { family: 'care', variant: 'S0' },
  'care-s1': { family: 'care', variant: 'S1' },
  'care-s2': { family: 'care', variant: 'S2' },
  'deit-t': { family: 'deit', variant: 'DeiT-T' },
  'deit-s': { family: 'deit', variant: 'DeiT-S' },
};

/** Input sides: multiples of the patch stride (16; CARE's total stride 32), from the trained 224 up to 2048. */
export const CLASSIFY_SIZE = { default: 224, multiple: 16, min: 224, max: 2048 } as const;

/** The side a classifier's input must be a multiple of. */
export const sizeMultiple = (spec: ClassifierSpec): number => (spec.family === 'care' ? CARE_MULTIPLE : CLASSIFY_SIZE.multiple);

/** A checkpoint's state dict as the builder names it (CARE's may carry DataParallel's `module.`). */
export function mapClassifierCheckpoint(spec: ClassifierSpec, sd: StateDict): StateDict {
  return spec.family === 'care' ? mapCareCheckpoint(sd) : sd;
}

/** ViG's count module by module (vig.py's module tree) at the trained 14×14 grid. */
function vigParameterCount(cfg: ViGConfig): number {
  const c = cfg.embedDim;
  const [dk, dv, hv, h] = [keyDim(cfg), valueDim(cfg), valueDim(cfg) / cfg.heads, mlpHidden(c)];
  const patch = 3 * (c / 2) * 81 + c / 2 + 2 * (c / 2) + ((c / 2) * c * 9 + c) + 2 * c;
  const attn = c * 9 + c * (2 * dk + dv) + (c * 16 + 16 * 2 * dk + 2 * dk) + dv * c + 2 * hv + (c * dv + dv);
  const block = c + attn + c + c * 2 * h + h * c;
  return patch + cfg.posGrid ** 2 * c + cfg.depth * block + c + (c * cfg.numClasses + cfg.numClasses);
}

export function classifierInfo(spec: ClassifierSpec): { params: number; numClasses: number; dim: number } {
  if (spec.family === 'vig') {
    const cfg = vigVariants[spec.variant];
    return { params: vigParameterCount(cfg), numClasses: cfg.numClasses, dim: cfg.embedDim };
  }
  if (spec.family === 'care') {
    const cfg = careVariants[spec.variant];
    return { params: careParameterCount(cfg), numClasses: cfg.numClasses, dim: cfg.clsDim };
  }
  const cfg = deitVariants[spec.variant];
  return { params: deitParameterCount(cfg), numClasses: cfg.numClasses, dim: cfg.vit.width };
}

/** The graph `images` [B, 3, S, S] → `logits`, `features`; a checkpoint must fit exactly. */
export function buildClassifier(spec: ClassifierSpec, size: number, p: Params): Graph {
  const g = new Graph(`${spec.family}-${spec.variant.toLowerCase()}-${size}`);
  if (spec.family === 'care') {
    // CARE's builder names its outputs `logits` and `features` itself; BN counters are not weights.
    buildCare(g, careVariants[spec.variant], p, { imageSize: size, output: 'both' });
    p.assertComplete(careIgnoredKey('both'));
    return g;
  }
  if (spec.family === 'vig') {
    const cfg = vigVariants[spec.variant];
    const features = buildViGTrunk(g, cfg, p, { imageSize: size, gla: 'fused', output: 'features' });
    g.output(linear(g, p.scope('head'), features, cfg.numClasses, { init: VIT_LINEAR_INIT }), 'logits');
    g.output(features, 'features');
  } else {
    const { logits, features } = buildDeiT(g, deitVariants[spec.variant], p, { imageSize: size });
    g.output(logits, 'logits');
    g.output(features, 'features');
  }
  p.assertComplete();
  return g;
}
