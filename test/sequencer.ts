// Runs the longest test files first, so that on CI's fresh clone (no vitest cache) the two workers do not end
// with one long file running alone: longest-first is what balances a fixed number of workers best. Known files
// take their last measured duration from vitest's cache when it has one (a developer's machine), else the
// estimate below (seconds, measured here; a file missing from it counts as short). Refresh the list from a
// local cache (node_modules/.vite/vitest/*/results.json) when the slowest files change.
import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { relative } from 'node:path';

const ESTIMATE_S: Record<string, number> = {
  'test/integration/snapshot-live.test.ts': 158,
  'test/integration/libvirt-host.test.ts': 135,
  'test/e2e/snapshots.e2e.test.ts': 97,
  'test/e2e/screens.e2e.test.ts': 95,
  'test/integration/daemon-concurrency.test.ts': 86,
  'test/integration/snapshot-backup.test.ts': 78,
  'test/e2e/vm-surface.e2e.test.ts': 78,
  'test/integration/network-modes.test.ts': 76,
  'test/integration/backup-archive-crash.test.ts': 65,
  'test/integration/cli-lifecycle.test.ts': 62,
  'test/e2e/gallery-terminal.e2e.test.ts': 59,
  'test/integration/cli-daemon.test.ts': 58,
  'test/integration/cli-bad-input.test.ts': 57,
  'test/e2e/settings-devices.e2e.test.ts': 54,
  'test/integration/daemon-crash.test.ts': 52,
  'test/integration/images-cli.test.ts': 52,
  'test/integration/snapshot-clone.test.ts': 46,
  'test/integration/qemu-devices.test.ts': 40,
  'test/integration/qemu-engine.test.ts': 33,
  'test/packaging/package-layout.test.ts': 30,
  'test/unit/snapshot-cli.test.ts': 30,
  'test/integration/backup-archive-hostile.test.ts': 29,
  'test/e2e/vm-lifecycle.e2e.test.ts': 27,
  'test/integration/guest-integration.test.ts': 25,
  'test/integration/snapshot-crash.test.ts': 23,
  'test/unit/server-limits.test.ts': 22,
  'test/integration/backup-ova.test.ts': 20,
  'test/integration/snapshot-uefi.test.ts': 19,
  'test/unit/snapshot-offline.test.ts': 16,
  'test/unit/platform-locks.test.ts': 16,
};

export default class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const ordered = await super.sort(files);
    const cost = (f: TestSpecification): number => {
      const file = relative(this.ctx.config.root, f.moduleId);
      const cached = this.ctx.cache.getFileTestResults(`${f.project.name}:${file}`)?.duration;
      return cached !== undefined ? cached / 1000 : (ESTIMATE_S[file] ?? 0);
    };
    // A stable sort: files of equal (unknown) cost keep the base sequencer's order.
    return ordered.map((f, i) => ({ f, i, c: cost(f) })).sort((a, b) => b.c - a.c || a.i - b.i).map((x) => x.f);
  }
}
