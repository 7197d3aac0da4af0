// Network settings the core decides for every engine: MAC addresses (one per card, kept for the VM's life,
// new ones for clones and imports), and whether a host port may be forwarded (privileged ports, another
// VM's forward, VMDesk's own GUI server, another program).
import { randomBytes } from 'node:crypto';
import type { NetAdapter, PortForward } from '../api/schema.js';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { probeHostPort } from '../platform/ports.js';
export { guiServerPorts } from '../platform/gui-servers.js';

/** Host ports below this need privileges to listen on: VMDesk does not forward them. */
export const FIRST_UNPRIVILEGED_PORT = 1024;

/** A locally administered unicast address in QEMU's 52:54:00 range. */
export function randomMac(taken: ReadonlySet<string> = new Set()): string {
  for (;;) {
    const b = randomBytes(3);
    const mac = `52:54:00:${[...b].map((x) => x.toString(16).padStart(2, '0')).join(':')}`;
    // QEMU's own default (52:54:00:12:34:56 + index) would collide with any VM that has no fixed address.
    if (!taken.has(mac) && !/^52:54:00:12:34:5[6-9]$/.test(mac)) return mac;
  }
}

/**
 * Every card gets a MAC: one it has, else the one the card at the same place had before (`previous`), else
 * a new one unused in the library (`taken`). Adapters with mode none get none.
 */
export function withMacs(network: readonly NetAdapter[], taken: ReadonlySet<string>, previous: readonly NetAdapter[] = []): NetAdapter[] {
  const used = new Set(taken);
  // A card given its MAC keeps it; one without inherits its position's old MAC only if no card in the new
  // list has that address (after a reorder the old card may be elsewhere, with its MAC given).
  const given = new Set(network.filter((n) => n.mode !== 'none' && n.mac).map((n) => n.mac!));
  const out = network.map((n, i): NetAdapter => {
    if (n.mode === 'none') {
      const { mac: _drop, ...rest } = n;
      return rest;
    }
    const old = previous[i]?.mode !== 'none' ? previous[i]?.mac : undefined;
    const mac = n.mac ?? (old && !given.has(old) ? old : undefined);
    if (mac && !n.mac) given.add(mac);
    return mac ? { ...n, mac } : n;
  });
  for (const n of out) if (n.mac) used.add(n.mac);
  return out.map((n) => (n.mode === 'none' || n.mac ? n : { ...n, mac: (() => { const m = randomMac(used); used.add(m); return m; })() }));
}

export function needsMacs(network: readonly NetAdapter[]): boolean {
  return network.some((n) => n.mode !== 'none' && !n.mac);
}

/** The adapter forwards apply to by default: the first nat or nat-host one; -1 when there is none. */
export function firstNatAdapter(network: readonly NetAdapter[]): number {
  return network.findIndex((n) => n.mode === 'nat' || n.mode === 'nat-host');
}

export const forwardKey = (f: Pick<PortForward, 'protocol' | 'hostPort'>) => `${f.protocol}:${f.hostPort}`;
export const forwardText = (f: PortForward) => `${f.protocol}:${f.hostPort}:${f.guestPort}`;

/** Forwards within one VM's settings: on nat/nat-host cards only, no host port twice, none privileged. */
export function checkForwards(network: readonly NetAdapter[]): void {
  const seen = new Set<string>();
  for (const n of network) {
    if (n.forwards.length && n.mode !== 'nat' && n.mode !== 'nat-host') throw new VmdeskError(ErrorCode.invalid, `port forwards need a nat or nat-host adapter (this one is ${n.mode})`);
    for (const f of n.forwards) {
      const key = forwardKey(f);
      if (seen.has(key)) throw new VmdeskError(ErrorCode.invalid, `host port ${key} is forwarded twice`);
      seen.add(key);
      privileged(f);
    }
  }
}

function privileged(f: PortForward): void {
  if (f.hostPort < FIRST_UNPRIVILEGED_PORT) {
    throw new VmdeskError(ErrorCode.permission, `host port ${f.hostPort} is privileged (below ${FIRST_UNPRIVILEGED_PORT}); forward from a port of ${FIRST_UNPRIVILEGED_PORT} or more, e.g. tcp:${8000 + (f.hostPort % 1000)}:${f.guestPort}`);
  }
}

export interface ForwardOwners {
  /** protocol:port -> the running VM that forwards it. */
  runningVms: Map<string, string>;
  /** protocol:port -> stopped VMs whose settings forward it. */
  stoppedVms: Map<string, string[]>;
  /** TCP ports VMDesk's GUI servers of this library listen on. */
  guiPorts: { port: number; pid: number }[];
}

/**
 * Refuses forwards whose host port is taken, naming who has it: a running VM, VMDesk's GUI server, or
 * (when `probe`) another program; returns warnings for stopped VMs that forward the same port.
 */
export async function checkForwardConflicts(vmName: string, forwards: readonly PortForward[], owners: ForwardOwners, probe: boolean): Promise<string[]> {
  const warnings: string[] = [];
  for (const f of forwards) {
    privileged(f);
    const key = forwardKey(f);
    const vm = owners.runningVms.get(key);
    if (vm) throw new VmdeskError(ErrorCode.busy, `host port ${key} is already forwarded by VM "${vm}", which is running`);
    const gui = f.protocol === 'tcp' ? owners.guiPorts.find((g) => g.port === f.hostPort) : undefined;
    if (gui) throw new VmdeskError(ErrorCode.busy, `host port ${key} is VMDesk's own GUI server (pid ${gui.pid}); choose another port`);
    if (probe) {
      const r = await probeHostPort(f.protocol, f.hostPort);
      if (r.state === 'in-use') throw new VmdeskError(ErrorCode.busy, `host port ${key} is already in use by another program`);
      if (r.state === 'denied') throw new VmdeskError(ErrorCode.permission, `host port ${key} needs privileges to listen on; choose a port of ${FIRST_UNPRIVILEGED_PORT} or more`);
      if (r.state === 'error') throw new VmdeskError(ErrorCode.host, `cannot check host port ${key}: ${r.message}`);
    }
    const stopped = owners.stoppedVms.get(key);
    if (stopped?.length) warnings.push(`host port ${key} is also forwarded by ${stopped.map((n) => `"${n}"`).join(', ')}: they cannot run at the same time as "${vmName}"`);
  }
  return warnings;
}
