// Changes to a running guest's network and limits, its usage, and the internal networks it plugs into: the
// operations of issue 11 over the core's public surface (the index, runtimes, saveConfig). Each one asks the
// engine's capabilities, never its name.
import { DEVICE_STOPPED_ONLY } from './devices.js';
import type { HostInfo, PortForward, VmConfig, VmInfo, VmStats } from '../api/schema.js';
import { GUEST_STOPPED_ONLY } from './guest.js';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { isAlive } from '../api/states.js';
import type { EngineModule, VmRuntime } from '../engines/engine.js';
import { connectUnixSocket } from '../platform/process.js';
import { runtimeRoot } from '../platform/paths.js';
import { cpuCaps, pinningSupport } from '../platform/cpu-limits.js';
import { LIMITS } from '../api/schema.js';
import type { Core } from './core.js';
import { applyLimits, kindsChanged } from './limits.js';
import { checkForwardConflicts, checkForwards, firstNatAdapter, forwardKey, guiServerPorts, type ForwardOwners } from './network.js';
import { STALE_MS } from './stats.js';
import type { SwitchFabric } from './switch.js';

/** Who forwards which host port: running VMs (but `exceptId`), stopped ones, and the library's GUI servers. */
export async function forwardOwners(core: Core, exceptId?: string): Promise<ForwardOwners> {
  const runningVms = new Map<string, string>();
  const stoppedVms = new Map<string, string[]>();
  for (const v of await core.list()) {
    if (!v.config || v.id === exceptId) continue;
    for (const f of v.config.network.flatMap((n) => n.forwards)) {
      const key = forwardKey(f);
      if (isAlive(v.state)) runningVms.set(key, v.name);
      else stoppedVms.set(key, [...(stoppedVms.get(key) ?? []), v.name]);
    }
  }
  return { runningVms, stoppedVms, guiPorts: guiServerPorts(runtimeRoot(core.home)) };
}

function running(core: Core, info: VmInfo): VmRuntime | undefined {
  return isAlive(info.state) ? core.runtime(info.id) : undefined;
}

async function usable(core: Core, ref: string): Promise<{ info: VmInfo; config: VmConfig; eng: EngineModule }> {
  const info = await core.get(ref);
  if (!info.config) throw new VmdeskError(ErrorCode.broken, `"${info.name}" cannot be read: ${info.broken ?? 'broken'}`);
  return { info, config: info.config, eng: await core.engineOf(info.config) };
}

function liveForwards(eng: EngineModule, rt: VmRuntime, name: string): NonNullable<VmRuntime['setForwards']> {
  if (!eng.capabilities.liveNetwork?.forwards || !rt.setForwards) {
    throw new VmdeskError(ErrorCode.state, `the ${eng.kind} engine cannot change port forwards while the guest runs; shut "${name}" down first`);
  }
  return rt.setForwards.bind(rt);
}

/** Adds a forward to the first nat/nat-host adapter (or `adapter`): in the running guest first, then in vm.json. */
export async function forwardAdd(core: Core, ref: string, forward: PortForward, adapter?: number): Promise<VmInfo> {
  const { info, config, eng } = await usable(core, ref);
  const idx = adapter ?? firstNatAdapter(config.network);
  const n = config.network[idx];
  if (!n || (n.mode !== 'nat' && n.mode !== 'nat-host')) {
    throw new VmdeskError(ErrorCode.invalid, adapter === undefined ? `"${info.name}" has no nat or nat-host network adapter to forward ports through` : `network adapter ${adapter} of "${info.name}" is ${n?.mode ?? 'absent'}: forwards need nat or nat-host`);
  }
  const key = forwardKey(forward);
  if (config.network.some((a) => a.forwards.some((f) => forwardKey(f) === key))) throw new VmdeskError(ErrorCode.exists, `"${info.name}" already forwards host port ${key}`);
  if (n.forwards.length >= LIMITS.forwardsMax) throw new VmdeskError(ErrorCode.invalid, `an adapter has at most ${LIMITS.forwardsMax} forwards`);
  const next: VmConfig = { ...config, network: config.network.map((a, i) => (i === idx ? { ...a, forwards: [...a.forwards, forward] } : a)) };
  checkForwards(next.network);
  const rt = running(core, info);
  const warnings = await checkForwardConflicts(info.name, [forward], await forwardOwners(core, info.id), !!rt);
  const backend = rt ? ((await liveForwards(eng, rt, info.name)(idx, next.network[idx]!.forwards)) ?? []) : [];
  const out = await core.saveConfig(info.id, next);
  return { ...out, warnings: [...out.warnings, ...warnings, ...backend] };
}

/** Removes the forward of a host port, from whichever adapter has it. */
export async function forwardRemove(core: Core, ref: string, protocol: 'tcp' | 'udp', hostPort: number): Promise<VmInfo> {
  const { info, config, eng } = await usable(core, ref);
  const key = forwardKey({ protocol, hostPort });
  const idx = config.network.findIndex((a) => a.forwards.some((f) => forwardKey(f) === key));
  if (idx < 0) throw new VmdeskError(ErrorCode.notFound, `"${info.name}" does not forward host port ${key}`);
  const next: VmConfig = { ...config, network: config.network.map((a, i) => (i === idx ? { ...a, forwards: a.forwards.filter((f) => forwardKey(f) !== key) } : a)) };
  const rt = running(core, info);
  if (rt) await liveForwards(eng, rt, info.name)(idx, next.network[idx]!.forwards);
  return core.saveConfig(info.id, next);
}

/** A running guest's card link up or down (not kept: every start plugs the cable in). */
export async function setLink(core: Core, ref: string, adapter: number, up: boolean): Promise<VmInfo> {
  const { info, config, eng } = await usable(core, ref);
  const rt = running(core, info);
  if (!rt || (info.state !== 'running' && info.state !== 'paused')) throw new VmdeskError(ErrorCode.state, `"${info.name}" is ${info.state}: a link is set up or down while the guest runs (every start has its links up)`);
  const n = config.network[adapter];
  if (!n || n.mode === 'none') throw new VmdeskError(ErrorCode.invalid, `"${info.name}" has no network card ${adapter} (eth${adapter}); its cards: ${config.network.flatMap((a, i) => (a.mode === 'none' ? [] : [`${i} (${a.mode})`])).join(', ') || 'none'}`);
  if (!eng.capabilities.liveNetwork?.link || !rt.setLink) throw new VmdeskError(ErrorCode.invalid, `the ${eng.kind} engine cannot set a network link up or down`);
  await rt.setLink(adapter, up);
  const out = await core.get(info.id);
  core.emit('event', { type: 'vm-updated', id: out.id, info: out });
  return out;
}

/**
 * Network settings of a running VM may change only in their forwards (cards are fixed at boot): the reason
 * when anything else differs, else the adapters whose forwards change.
 */
export function liveNetworkChange(cur: VmConfig['network'], next: VmConfig['network']): { refusal?: string; changed: number[] } {
  if (cur.length !== next.length) return { refusal: 'network cards are fixed while the guest runs (adding or removing one needs a restart)', changed: [] };
  const changed: number[] = [];
  for (let i = 0; i < cur.length; i++) {
    const a = cur[i]!;
    const b = next[i]!;
    if (a.mode !== b.mode || a.network !== b.network || (a.model ?? 'virtio-net') !== (b.model ?? 'virtio-net') || (b.mac !== undefined && a.mac !== b.mac)) {
      return { refusal: `network card ${i} would change (${a.mode}${a.network ? `:${a.network}` : ''} to ${b.mode}${b.network ? `:${b.network}` : ''}): cards are fixed while the guest runs; only forwards (vmdesk forward) and the link (vmdesk link) change live`, changed: [] };
    }
    if (JSON.stringify(a.forwards) !== JSON.stringify(b.forwards)) changed.push(i);
  }
  return { changed };
}

/** Applies a settings change to the running guest (forwards, limits) before it is saved; returns warnings. */
export async function applyLiveUpdate(core: Core, id: string, cur: VmConfig, next: VmConfig, eng: EngineModule, rt: VmRuntime): Promise<string[]> {
  const warnings: string[] = [];
  const { changed } = liveNetworkChange(cur.network, next.network);
  if (changed.length) {
    const setForwards = liveForwards(eng, rt, cur.name);
    const before = new Set(cur.network.flatMap((n) => n.forwards.map(forwardKey)));
    const added = next.network.flatMap((n) => n.forwards).filter((f) => !before.has(forwardKey(f)));
    warnings.push(...(await checkForwardConflicts(cur.name, added, await forwardOwners(core, id), true)));
    for (const i of changed) await setForwards(i, next.network[i]!.forwards);
  }
  const kinds = kindsChanged(cur.limits, next.limits);
  if (kinds.length) warnings.push(...(await applyLimits(id, next, rt, eng, kinds)));
  return warnings;
}

/** Plugs a running guest's internal-network adapters into the daemon's switches (retrying while QEMU sets up). */
export async function plugNetPorts(fabric: SwitchFabric, vmId: string, rt: VmRuntime, alive: () => boolean): Promise<void> {
  for (const port of rt.netPorts ?? []) {
    for (let attempt = 0; ; attempt++) {
      if (!alive()) return;
      try {
        const sock = await connectUnixSocket(port.socket);
        if (!alive()) {
          sock.destroy();
          return;
        }
        fabric.plug(port.network, vmId, port.adapter, sock);
        break;
      } catch {
        if (attempt > 200) break;
        await new Promise((r) => setTimeout(r, 25));
      }
    }
  }
}

/** One usage sample; when there is no recent one to compute rates against, two, half a second apart. */
export async function vmStats(core: Core, ref: string): Promise<VmStats> {
  const { info, config } = await usable(core, ref);
  const rt = running(core, info);
  if (!rt) throw new VmdeskError(ErrorCode.state, `"${info.name}" is ${info.state}: usage is measured while it runs`);
  const age = core.usage.age(info.id);
  if (age === undefined || age > STALE_MS) {
    await core.usage.sample(info.id, rt, config, core.fabric.counters(info.id));
    await new Promise((r) => setTimeout(r, 500));
  }
  return core.usage.sample(info.id, rt, config, core.fabric.counters(info.id));
}

/** What running VMs have committed: vCPUs and memory (the balloon target where one is set). */
export function committed(vms: VmInfo[]): NonNullable<HostInfo['committed']> {
  const up = vms.filter((v) => v.config && isAlive(v.state));
  return {
    runningVms: up.length,
    cpus: up.reduce((s, v) => s + v.config!.cpus, 0),
    memoryMiB: up.reduce((s, v) => s + (v.config!.limits?.memoryTargetMiB ?? v.config!.memoryMiB), 0),
  };
}

export function hostLimitSupport(): NonNullable<HostInfo['limits']> {
  const cap = cpuCaps().support;
  const pin = pinningSupport();
  return {
    cpuCap: { available: cap.available, ...(cap.mechanism ? { mechanism: cap.mechanism } : {}), reason: cap.reason },
    cpuPinning: { available: pin.available, ...(pin.mechanism ? { mechanism: pin.mechanism } : {}), reason: pin.reason },
  };
}

/** Why settings wait for the guest to be shut down, in words a user can act on. */
export function stoppedOnlyWhy(keys: string[], network?: string): string {
  const why: Record<string, string> = {
    cpus: 'vCPUs are fixed when the guest boots (no CPU hot-plug on this machine)',
    memoryMiB: 'the memory size is fixed at boot (--memory-target gives memory back while it runs)',
    engine: 'the engine runs the guest',
    accel: 'the accelerator is chosen at start',
    firmware: 'the firmware runs at boot',
    cdrom: 'the CD-ROM drive is set up at boot',
    directKernel: 'the kernel is loaded at boot',
    ...GUEST_STOPPED_ONLY,
    ...DEVICE_STOPPED_ONLY,
  };
  return [...keys.map((k) => why[k] ?? `${k} is fixed while the guest runs`), ...(network ? [network] : [])].join('; ');
}
