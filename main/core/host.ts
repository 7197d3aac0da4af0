// What this host offers VMs: CPUs, memory, QEMU, and each accelerator with the reason it can or cannot be used,
// as the engines report them (the core imports no engine: each one that probes the host says what it found).
import os from 'node:os';
import type { AccelChoice, AcceleratorReport, HostInfo } from '../api/schema.js';
import type { EngineHostReport } from '../engines/engine.js';
import { engine, engineKinds } from '../engines/registry.js';
import { hostCapacity } from './validate.js';

type AccelName = 'kvm' | 'hvf' | 'tcg';

/**
 * Two engines' views of one accelerator (QEMU's: can it run a stock kernel on it; the micro-VMM's self-test:
 * API version, timing, class), keeping both reasons. The later view's measurements are kept; an accelerator
 * either engine finds unusable is unusable.
 */
export function mergeAccelReports(first: AcceleratorReport, later: AcceleratorReport | undefined): AcceleratorReport {
  if (!later) return first;
  const merged: AcceleratorReport = { ...later };
  if (first.available && first.class === 'unusable' && later.class === 'hardware') merged.class = 'unusable';
  merged.reason = later.reason === first.reason ? later.reason : `${first.reason}; self-test: ${later.reason}`;
  return merged;
}

const NOT_PROBED = (name: AccelName): AcceleratorReport => ({ available: false, reason: `no engine here probes ${name}` });

/** Each engine's report (in registry order: QEMU first); an engine that cannot load or probe is left out. */
async function engineReports(): Promise<EngineHostReport[]> {
  const out = await Promise.all(
    engineKinds().map(async (kind) => {
      try {
        const m = await engine(kind);
        return m.hostReport ? await m.hostReport() : undefined;
      } catch {
        return undefined;
      }
    }),
  );
  return out.filter((r): r is EngineHostReport => r !== undefined);
}

export async function hostInfo(): Promise<HostInfo> {
  const cap = hostCapacity();
  const reports = await engineReports();
  const accelerators = {} as Record<AccelName, AcceleratorReport>;
  for (const name of ['kvm', 'hvf', 'tcg'] as const) {
    let view: AcceleratorReport | undefined;
    for (const r of reports) {
      const next = r.accelerators?.[name];
      if (next) view = view ? mergeAccelReports(view, next) : next;
    }
    accelerators[name] = view ?? NOT_PROBED(name);
  }
  const qemu = reports.find((r) => r.qemu)?.qemu ?? { found: false, reason: 'no engine here runs QEMU' };
  const defaultAccel: AccelChoice = reports.find((r) => r.defaultAccel)?.defaultAccel ?? { requested: 'auto', used: 'tcg', reason: 'no engine here chooses an accelerator' };
  const notes = reports.flatMap((r) => r.notes ?? []);
  return {
    platform: process.platform,
    arch: os.arch(),
    cpus: cap.cpus,
    memoryMiB: cap.memoryMiB,
    freeMemoryMiB: cap.freeMemoryMiB,
    qemu,
    accelerators,
    defaultAccel,
    ...(notes.length ? { notes } : {}),
  };
}
