import { defineConfig } from 'vitest/config';

// Integration tests build network namespaces and start daemons; running those files in
// parallel on a 2-core machine makes them compete for CPU and names, so files run one at a time.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
