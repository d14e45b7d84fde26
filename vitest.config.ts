import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // ORT sessions live in worker threads of their own; forks keep test files isolated.
    pool: 'forks',
  },
});
