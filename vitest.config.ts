import { defineConfig } from 'vitest/config';
import vue from '@vitejs/plugin-vue';
import LongestFirst from './test/sequencer';

// One config for every suite; integration and e2e suites boot real QEMU/Chromium, so files run two at a time.
export default defineConfig({
  plugins: [vue()],
  test: {
    include: ['test/**/*.test.ts', 'main/**/*.test.ts', 'renderer/**/*.test.ts', 'native/**/*.test.ts'],
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    globalSetup: ['test/global-setup.ts'],
    reporters: ['default', './test/summary-reporter.ts'],
    sequence: { sequencer: LongestFirst },
  },
});
