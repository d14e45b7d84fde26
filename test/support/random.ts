/** The project's seeded PRNG (mulberry32), so every random test case can be replayed from its seed. */
export { mulberry32 as prng } from '../../src/models/graph/params.js';
