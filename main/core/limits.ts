// Resource limits: what a VM's engine and this host can apply, merging a change into the settings, and
// applying limits to a running guest: the CPU cap and pinning on its host process here (cgroups, taskset),
// the memory target and disk I/O limits through its runtime.
import type { ResourceLimits, ResourceLimitsPatch, VmConfig } from '../api/schema.js';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import type { EngineModule, LimitKind, VmRuntime } from '../engines/engine.js';
import { checkPinning, cpuCaps, pinningSupport, pinProcess } from '../platform/cpu-limits.js';

const KIND_OF: Record<keyof ResourceLimits, LimitKind> = {
  cpuCapPercent: 'cpuCap',
  cpuPinning: 'cpuPinning',
  memoryTargetMiB: 'memoryTarget',
  diskIops: 'diskIo',
  diskBytesPerSec: 'diskIo',
};

const WORDS: Record<LimitKind, string> = {
  cpuCap: 'a CPU cap',
  cpuPinning: 'CPU pinning',
  memoryTarget: 'a memory target (balloon)',
  diskIo: 'disk I/O limits',
};

/** The kinds of limit that are set. */
export function kindsSet(l: ResourceLimits | undefined): LimitKind[] {
  return [...new Set(Object.entries(l ?? {}).flatMap(([k, v]) => (v === undefined ? [] : [KIND_OF[k as keyof ResourceLimits]])))];
}

/** The kinds whose values differ between two settings. */
export function kindsChanged(a: ResourceLimits | undefined, b: ResourceLimits | undefined): LimitKind[] {
  const out = new Set<LimitKind>();
  for (const k of Object.keys(KIND_OF) as (keyof ResourceLimits)[]) {
    if (JSON.stringify(a?.[k]) !== JSON.stringify(b?.[k])) out.add(KIND_OF[k]);
  }
  return [...out];
}

/** The settings after a change: null clears a limit, absent keeps it. */
export function mergeLimits(cur: ResourceLimits | undefined, patch: ResourceLimitsPatch): ResourceLimits | undefined {
  const next: Record<string, unknown> = { ...(cur ?? {}) };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete next[k];
    else if (v !== undefined) next[k] = v;
  }
  if (Array.isArray(next.cpuPinning)) next.cpuPinning = [...new Set(next.cpuPinning as number[])].sort((x, y) => x - y);
  return Object.keys(next).length ? (next as ResourceLimits) : undefined;
}

/**
 * Refuses limits the engine cannot apply (by its capabilities) or this host cannot (CPU caps without a
 * usable cgroup, pinning to CPUs it lacks), and ones that contradict the settings.
 */
export function checkLimits(config: VmConfig, eng: EngineModule): void {
  const l = config.limits;
  if (!l) return;
  const caps = eng.capabilities.limits;
  for (const kind of kindsSet(l)) {
    if (!caps?.[kind]) throw new VmdeskError(ErrorCode.invalid, `the ${eng.kind} engine cannot apply ${WORDS[kind]}`);
  }
  if (l.memoryTargetMiB !== undefined && l.memoryTargetMiB > config.memoryMiB) {
    throw new VmdeskError(ErrorCode.invalid, `the memory target (${l.memoryTargetMiB} MiB) is more than the VM's memory (${config.memoryMiB} MiB)`);
  }
  if (l.cpuCapPercent !== undefined) {
    const s = cpuCaps().support;
    if (!s.available) throw new VmdeskError(ErrorCode.host, s.reason);
  }
  if (l.cpuPinning !== undefined) {
    const s = pinningSupport();
    if (!s.available) throw new VmdeskError(ErrorCode.host, s.reason);
    checkPinning(l.cpuPinning);
  }
}

/**
 * Applies the given kinds to a running guest. Kinds the engine cannot change live are left for the next
 * start and named in the returned warnings.
 */
export async function applyLimits(vmId: string, config: VmConfig, rt: VmRuntime, eng: EngineModule, kinds: readonly LimitKind[], opts: { starting?: boolean } = {}): Promise<string[]> {
  const warnings: string[] = [];
  const l = config.limits ?? {};
  const live = eng.capabilities.limits?.live ?? [];
  const engineKinds: LimitKind[] = [];
  for (const kind of kinds) {
    if (!opts.starting && !live.includes(kind)) {
      warnings.push(`${WORDS[kind]} takes effect at the next start: the ${eng.kind} engine cannot change it while the guest runs`);
      continue;
    }
    if (kind === 'cpuCap') {
      const cap = l.cpuCapPercent;
      if (cap === undefined && cpuCaps().members(vmId).length === 0) continue;
      cpuCaps().apply(vmId, rt.pid, cap === undefined ? null : { percent: cap, cpus: config.cpus });
    } else if (kind === 'cpuPinning') {
      await pinProcess(rt.pid, l.cpuPinning ?? null);
    } else if (!opts.starting) {
      engineKinds.push(kind);
    }
  }
  if (engineKinds.length) {
    if (!rt.applyLimits) throw new VmdeskError(ErrorCode.invalid, `the ${eng.kind} engine cannot change ${engineKinds.map((k) => WORDS[k]).join(' or ')} while the guest runs`);
    await rt.applyLimits(l, engineKinds);
  }
  return warnings;
}

/** After the guest's process has gone: its cgroup goes too. */
export function releaseLimits(vmId: string): void {
  cpuCaps().release(vmId);
}
