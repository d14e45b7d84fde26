export { type ChangeRegion, DEFAULT_POLYGON_EPSILON, type RegionOptions, changedFraction, regions } from './regions.js';
export { type Rle, maskToPng, maskToRle, rleToMask } from './rle.js';
export { ChangeMetrics, type ChangeScores, type ConfusionCounts, confusion, scores } from './metrics.js';
