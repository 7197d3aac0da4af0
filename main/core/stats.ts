// Usage of running VMs: CPU time and resident memory of the guest's host process (/proc), disk counters and
// the balloon's size from the engine, network counters from the daemon's switch (internal networks). Each
// sample keeps the cumulative counters; rates are against the previous sample of the same VM.
import type { VmConfig, VmStats } from '../api/schema.js';
import type { VmRuntime } from '../engines/engine.js';
import { processCpuSeconds, processRssBytes } from '../platform/proc-stats.js';
import type { PortCounters } from './switch.js';

interface Raw {
  /** performance.now() of the sample. */
  t: number;
  pid: number;
  cpuSeconds?: number;
  disk?: { readBytes: number; writeBytes: number; readOps: number; writeOps: number };
  net?: { rx: number; tx: number };
}

/** A sample older than this is not used for rates (a one-off `vm.stats` takes a fresh pair instead). */
export const STALE_MS = 5000;

export class UsageSampler {
  private readonly last = new Map<string, Raw>();
  private readonly inFlight = new Map<string, Promise<VmStats>>();

  /** Milliseconds since the VM's last sample, or undefined. */
  age(id: string): number | undefined {
    const l = this.last.get(id);
    return l ? performance.now() - l.t : undefined;
  }

  forget(id: string): void {
    this.last.delete(id);
  }

  /** One sample; concurrent calls for one VM share it (a slow monitor does not pile up requests). */
  sample(id: string, rt: VmRuntime, config: VmConfig, net: PortCounters | undefined): Promise<VmStats> {
    const running = this.inFlight.get(id);
    if (running) return running;
    const p = this.take(id, rt, config, net).finally(() => this.inFlight.delete(id));
    this.inFlight.set(id, p);
    return p;
  }

  private async take(id: string, rt: VmRuntime, config: VmConfig, net: PortCounters | undefined): Promise<VmStats> {
    const notes: string[] = [];
    const [cpuSeconds, rss, usage] = await Promise.all([
      processCpuSeconds(rt.pid),
      processRssBytes(rt.pid),
      rt.usage ? rt.usage().catch((e: Error) => ({ notes: [`engine counters: ${e.message}`] }) as Awaited<ReturnType<NonNullable<VmRuntime['usage']>>>) : Promise.resolve(undefined),
    ]);
    if (cpuSeconds === undefined) notes.push('CPU and memory of the guest process: /proc is not readable here');
    if (usage) notes.push(...usage.notes);
    else notes.push('this engine reports no disk or balloon counters');
    const hasInternal = config.network.some((n) => n.mode === 'internal');
    const hasNat = config.network.some((n) => n.mode === 'nat' || n.mode === 'nat-host');
    if (hasNat) notes.push(`network counters cover internal networks only: QEMU's user network and passt (nat, nat-host) keep none${hasInternal ? '' : ', so they are unknown for this VM'}`);
    else if (hasInternal && !net) notes.push('network counters: no internal adapter is connected to its network right now');
    const now: Raw = {
      t: performance.now(),
      pid: rt.pid,
      cpuSeconds,
      disk: usage?.disk,
      net: net ? { rx: net.rxBytes, tx: net.txBytes } : undefined,
    };
    const prev = this.last.get(id);
    this.last.set(id, now);
    // A sample of another process (the guest restarted) is no base for rates.
    const base = prev && prev.pid === now.pid && now.t > prev.t ? prev : undefined;
    const dt = base ? (now.t - base.t) / 1000 : 0;
    const rate = (cur: number | undefined, old: number | undefined): number | null => (base && cur !== undefined && old !== undefined && cur >= old ? (cur - old) / dt : null);
    const cpuRate = rate(cpuSeconds, base?.cpuSeconds);
    return {
      id,
      at: new Date().toISOString(),
      intervalMs: base ? Math.round(now.t - base.t) : null,
      cpuPercent: cpuRate === null ? null : Math.round(cpuRate * 1000) / 10,
      cpuSeconds: cpuSeconds ?? null,
      memoryRssBytes: rss ?? null,
      memoryGuestBytes: usage?.memoryGuestBytes ?? null,
      memoryConfiguredBytes: config.memoryMiB * 1024 * 1024,
      diskReadBytes: now.disk?.readBytes ?? null,
      diskWriteBytes: now.disk?.writeBytes ?? null,
      diskReadOps: now.disk?.readOps ?? null,
      diskWriteOps: now.disk?.writeOps ?? null,
      netRxBytes: now.net?.rx ?? null,
      netTxBytes: now.net?.tx ?? null,
      rates: {
        diskReadBytesPerSec: rate(now.disk?.readBytes, base?.disk?.readBytes),
        diskWriteBytesPerSec: rate(now.disk?.writeBytes, base?.disk?.writeBytes),
        diskReadOpsPerSec: rate(now.disk?.readOps, base?.disk?.readOps),
        diskWriteOpsPerSec: rate(now.disk?.writeOps, base?.disk?.writeOps),
        netRxBytesPerSec: rate(now.net?.rx, base?.net?.rx),
        netTxBytesPerSec: rate(now.net?.tx, base?.net?.tx),
      },
      notes,
    };
  }
}
