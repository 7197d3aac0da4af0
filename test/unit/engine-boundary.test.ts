// Engines are plug-ins: the core, daemon, CLI, API and platform modules reach them only through the registry
// and the EngineModule interface, and what the host offers comes from the engines' own reports.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { hostInfo, mergeAccelReports } from '../../main/core/host.js';
import type { EngineModule } from '../../main/engines/engine.js';
import { engineKinds, registerEngine, unregisterEngine } from '../../main/engines/registry.js';

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = path.join(dir, n);
    return statSync(p).isDirectory() ? sources(p) : /\.ts$/.test(n) ? [p] : [];
  });
}

describe('the engine boundary', () => {
  afterEach(() => unregisterEngine('boundary-test'));

  it('no module outside main/engines imports an engine\'s own files (only engine.ts and registry.ts)', () => {
    const offenders: string[] = [];
    for (const area of ['core', 'daemon', 'cli', 'api', 'platform', 'client', 'electron', 'server']) {
      const dir = path.resolve('main', area);
      if (!statSync(dir, { throwIfNoEntry: false })?.isDirectory()) continue;
      for (const file of sources(dir)) {
        const text = readFileSync(file, 'utf8');
        for (const m of text.matchAll(/(?:from\s+|import\(\s*)['"]([^'"]+)['"]/g)) {
          const spec = m[1]!;
          if (!spec.startsWith('.')) continue;
          const target = path.relative(path.resolve('main/engines'), path.resolve(path.dirname(file), spec));
          if (target.startsWith('..') || path.isAbsolute(target)) continue;
          if (!/^(engine|registry)\.js$/.test(target)) offenders.push(`${path.relative('.', file)} imports ${spec}`);
        }
      }
    }
    expect(offenders).toEqual([]);
  });

  it('merges every engine\'s view of the host, a plug-in\'s included, and leaves out one that cannot load', async () => {
    registerEngine({
      kind: 'boundary-test',
      description: 'a plug-in that probes the host',
      hostReport: async () => ({ accelerators: { hvf: { available: true, class: 'hardware', reason: 'the plug-in found it' } }, notes: ['the plug-in\'s helper is old'] }),
    } as unknown as EngineModule);
    expect(engineKinds()).toContain('boundary-test');
    const info = await hostInfo();
    // QEMU's view (first) and the plug-in's are both in the reason; the later view's measurements are kept.
    expect(info.accelerators.hvf.reason).toContain('the plug-in found it');
    if (process.platform !== 'darwin') expect(info.accelerators.hvf.reason).toContain('only on macOS');
    expect(info.accelerators.tcg.available).toBe(true);
    expect(info.qemu.found).toBe(true);
    expect(info.defaultAccel.requested).toBe('auto');
    expect(info.notes).toContain('the plug-in\'s helper is old');

    registerEngine({ kind: 'boundary-test', description: 'a plug-in whose probe fails', hostReport: async () => { throw new Error('no'); } } as unknown as EngineModule);
    const again = await hostInfo();
    expect(again.accelerators.hvf.reason).not.toContain('the plug-in found it');
  });

  it('an accelerator either engine finds unusable is unusable, with both reasons', () => {
    const qemuView = { available: true, class: 'unusable' as const, reason: 'QEMU cannot boot a stock kernel on this KVM' };
    const selfTest = { available: true, class: 'hardware' as const, reason: 'KVM API 12', apiVersion: 12 };
    const merged = mergeAccelReports(qemuView, selfTest);
    expect(merged.class).toBe('unusable');
    expect(merged.apiVersion).toBe(12);
    expect(merged.reason).toBe('QEMU cannot boot a stock kernel on this KVM; self-test: KVM API 12');
    expect(mergeAccelReports(qemuView, undefined)).toBe(qemuView);
  });
});
