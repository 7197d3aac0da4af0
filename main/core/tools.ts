// What the GUI needs beyond the VM verbs, built on the core's public surface (ToolRpcMethods in
// main/api/rpc-tools.ts): the daemon-side file picker, log tails, VMDesk's own per-VM history, port checks,
// the CD drive while a guest runs, disks detached and reordered.
import { constants as fsc, promises as fs } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { VmEvent } from '../api/events.js';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { FILES_LIST_MAX, LOG_TAIL_MAX, type FileEntry, type FileKind, type LogSource, type PortStatus } from '../api/rpc-tools.js';
import type { DiskBus, VmConfig, VmInfo } from '../api/schema.js';
import { engine as engineModule } from '../engines/registry.js';
import { isAlive } from '../api/states.js';
import { containedPath } from '../platform/contain.js';
import type { Core } from './core.js';
import { admitImage, formatFromName } from './images/gate.js';
import { fileTail } from './serial.js';

// ---- paths as users type them ------------------------------------------------------------------------

/** ~ and ~/x become the daemon user's home; the rest is normalised (no "..", no doubled slashes). */
export function expandUserPath(p: string, home = os.homedir()): string {
  const expanded = p === '~' ? home : p.startsWith('~/') ? path.join(home, p.slice(2)) : p;
  if (!path.isAbsolute(expanded)) throw new VmdeskError(ErrorCode.invalid, `path must be absolute (or start with ~/): ${p}`);
  if (/[\u0000-\u001f\u007f]/.test(expanded)) throw new VmdeskError(ErrorCode.invalid, 'path must not contain newlines or control characters');
  return path.resolve(expanded);
}

const EXTENSIONS: Record<Exclude<FileKind, 'any' | 'kernel'>, readonly string[]> = {
  iso: ['.iso', '.img'],
  disk: ['.qcow2', '.img', '.raw', '.vmdk', '.vdi', '.vhdx', '.vhd'],
  appliance: ['.ova', '.ovf', '.vmdesk'],
  import: ['.ova', '.ovf', '.vmdesk', '.qcow2', '.img', '.raw', '.vmdk', '.vdi', '.vhdx', '.vhd'],
};

function shows(kind: FileKind, name: string): boolean {
  if (kind === 'any' || kind === 'kernel') return true;
  const lower = name.toLowerCase();
  return EXTENSIONS[kind].some((e) => lower.endsWith(e));
}

async function readable(p: string, dir: boolean): Promise<boolean> {
  try {
    await fs.access(p, dir ? fsc.R_OK | fsc.X_OK : fsc.R_OK);
    return true;
  } catch {
    return false;
  }
}

/** One folder as the daemon's user may read it; bounded (FILES_LIST_MAX entries, a few stats at a time). */
export async function listFiles(opts: { path?: string; show?: FileKind; hidden?: boolean }, home = os.homedir()): Promise<{ path: string; parent: string | null; home: string; entries: FileEntry[]; truncated: boolean }> {
  const dir = expandUserPath(opts.path ?? '~', home);
  let names: string[];
  try {
    const st = await fs.stat(dir);
    if (!st.isDirectory()) throw new VmdeskError(ErrorCode.invalid, `${dir} is not a folder`);
    names = await fs.readdir(dir);
  } catch (e) {
    if (e instanceof VmdeskError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new VmdeskError(ErrorCode.notFound, `there is no folder ${dir}`);
    if (code === 'EACCES' || code === 'EPERM') throw new VmdeskError(ErrorCode.permission, `VMDesk may not read the folder ${dir}`);
    throw new VmdeskError(ErrorCode.host, `cannot read the folder ${dir}: ${(e as Error).message}`);
  }
  const show = opts.show ?? 'any';
  names = names.filter((n) => opts.hidden || !n.startsWith('.')).sort((a, b) => a.localeCompare(b));
  const entries: FileEntry[] = [];
  let truncated = false;
  // Stat in small batches: a folder of 100,000 files costs only the names past the cap.
  for (let i = 0; i < names.length && !truncated; i += 64) {
    const batch = await Promise.all(
      names.slice(i, i + 64).map(async (name): Promise<FileEntry | null> => {
        const full = path.join(dir, name);
        try {
          const st = await fs.stat(full);
          if (st.isDirectory()) return (await readable(full, true)) ? { name, kind: 'dir', size: 0, modifiedAt: st.mtime.toISOString() } : null;
          if (!st.isFile() || !shows(show, name) || !(await readable(full, false))) return null;
          return { name, kind: 'file', size: st.size, modifiedAt: st.mtime.toISOString() };
        } catch {
          return null; // a dangling link, or gone meanwhile
        }
      }),
    );
    for (const e of batch) {
      if (!e) continue;
      if (entries.length >= FILES_LIST_MAX) {
        truncated = true;
        break;
      }
      entries.push(e);
    }
  }
  entries.sort((a, b) => (a.kind === b.kind ? 0 : a.kind === 'dir' ? -1 : 1));
  const parent = path.dirname(dir);
  return { path: dir, parent: parent === dir ? null : parent, home, entries, truncated };
}

export async function statFile(p: string, home = os.homedir()): Promise<{ path: string; exists: boolean; kind?: 'dir' | 'file' | 'other'; size?: number; readable: boolean; reason?: string }> {
  const full = expandUserPath(p, home);
  try {
    const st = await fs.stat(full);
    const kind = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
    const ok = await readable(full, kind === 'dir');
    return { path: full, exists: true, kind, size: kind === 'file' ? st.size : 0, readable: ok, ...(ok ? {} : { reason: `VMDesk may not read ${full} (permission denied)` }) };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { path: full, exists: false, readable: false, reason: code === 'ENOENT' || code === 'ENOTDIR' ? `${full} does not exist` : code === 'EACCES' ? `VMDesk may not look into the folder of ${full}` : `cannot read ${full}: ${code ?? (e as Error).message}` };
  }
}

// ---- VMDesk's own record of what happened to each VM --------------------------------------------------

const HISTORY_MAX = 300;

/** Per VM, the last few hundred things VMDesk did or saw (state changes, calls and their outcome), in memory. */
export class VmHistory {
  private readonly byVm = new Map<string, { at: string; text: string }[]>();
  private readonly lastState = new Map<string, string>();
  private readonly opVm = new Map<string, string>();

  constructor(core: Core) {
    core.on('event', (ev) => this.onEvent(ev));
  }

  add(vmId: string, text: string): void {
    let list = this.byVm.get(vmId);
    if (!list) this.byVm.set(vmId, (list = []));
    list.push({ at: new Date().toISOString(), text });
    if (list.length > HISTORY_MAX) list.splice(0, list.length - HISTORY_MAX);
  }

  private onEvent(ev: VmEvent): void {
    switch (ev.type) {
      case 'vm-created':
        this.lastState.set(ev.id, ev.info.state);
        return this.add(ev.id, `created "${ev.info.name}"`);
      case 'vm-state': {
        if (this.lastState.get(ev.id) === ev.state) return;
        this.lastState.set(ev.id, ev.state);
        const exit = (ev.state === 'stopped' || ev.state === 'crashed') && ev.info.lastExit ? ` (${ev.info.lastExit.reason}${ev.info.lastExit.detail ? `: ${ev.info.lastExit.detail}` : ''})` : '';
        return this.add(ev.id, `${ev.state}${exit}`);
      }
      case 'vm-deleted':
        this.byVm.delete(ev.id);
        this.lastState.delete(ev.id);
        return;
      case 'progress':
        if (ev.id && !ev.done) this.opVm.set(ev.opId, ev.id);
        if (ev.done) this.opVm.delete(ev.opId);
        return;
      default:
        return;
    }
  }

  text(vm: VmInfo): string {
    const list = this.byVm.get(vm.id) ?? [];
    const lines = list.map((e) => `${e.at}  ${e.text}`);
    // After a daemon restart the memory is empty: the last exit on disk is still worth showing.
    if (!list.length && vm.lastExit) lines.push(`${vm.lastExit.at}  last exit: ${vm.lastExit.reason}${vm.lastExit.detail ? ` (${vm.lastExit.detail})` : ''}`);
    if (!lines.length) lines.push(`${new Date().toISOString()}  nothing recorded since the VMDesk daemon started`);
    return lines.join('\n') + '\n';
  }
}

const histories = new WeakMap<Core, VmHistory>();

export function historyOf(core: Core): VmHistory {
  let h = histories.get(core);
  if (!h) histories.set(core, (h = new VmHistory(core)));
  return h;
}

// ---- logs ------------------------------------------------------------------------------------------------

export async function vmLogs(core: Core, ref: string, source: LogSource, maxBytes = 256 * 1024): Promise<{ source: LogSource; file: string | null; text: string; truncated: boolean }> {
  const vm = await core.get(ref);
  const max = Math.min(maxBytes, LOG_TAIL_MAX);
  if (source === 'events') {
    const text = historyOf(core).text(vm);
    return { source, file: null, text: text.length > max ? text.slice(text.length - max) : text, truncated: text.length > max };
  }
  const file = path.join(vm.bundle, 'logs', source === 'qemu' ? 'qemu.log' : 'serial.log');
  let size = 0;
  try {
    size = (await fs.stat(file)).size;
  } catch {
    return { source, file, text: '', truncated: false };
  }
  let text = fileTail(file, max).toString('utf8');
  const truncated = size > max;
  // A tail cut in the middle of a line starts at the next one.
  if (truncated) text = text.slice(text.indexOf('\n') + 1);
  return { source, file, text, truncated };
}

// ---- ports -----------------------------------------------------------------------------------------------

/** Host ports the running VMs (but `exceptId`) forward, and to whom. */
export function forwardedByRunningVms(vms: VmInfo[], exceptId?: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const v of vms) {
    if (v.id === exceptId || !v.config || !isAlive(v.state)) continue;
    for (const n of v.config.network) for (const f of n.forwards) out.set(`${f.protocol}:${f.hostPort}`, v.name);
  }
  return out;
}

function bindProbe(protocol: 'tcp' | 'udp', port: number): Promise<'free' | 'in-use' | 'privileged'> {
  if (protocol === 'udp') {
    return import('node:dgram').then(
      ({ createSocket }) =>
        new Promise((resolve) => {
          const s = createSocket('udp4');
          s.once('error', (e: NodeJS.ErrnoException) => {
            s.close();
            resolve(e.code === 'EACCES' ? 'privileged' : 'in-use');
          });
          s.bind({ port, address: '127.0.0.1', exclusive: true }, () => s.close(() => resolve('free')));
        }),
    );
  }
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'EACCES' ? 'privileged' : 'in-use'));
    srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve('free')));
  });
}

export async function checkPorts(core: Core, forwards: { protocol: 'tcp' | 'udp'; hostPort: number }[], ref?: string): Promise<PortStatus[]> {
  const vms = await core.list();
  const self = ref ? (await core.get(ref)).id : undefined;
  const mine = new Set(self ? [...forwardedByRunningVms(vms.filter((v) => v.id === self)).keys()] : []);
  const taken = forwardedByRunningVms(vms, self);
  const out: PortStatus[] = [];
  for (const f of forwards) {
    const key = `${f.protocol}:${f.hostPort}`;
    const p = `host port ${f.hostPort}/${f.protocol}`;
    const vm = taken.get(key);
    if (vm) {
      out.push({ ...f, status: 'vm', vm, message: `${p} is forwarded to the running VM "${vm}"` });
      continue;
    }
    // The VM asking forwards it itself while it runs: that is no conflict.
    if (mine.has(key)) {
      out.push({ ...f, status: 'free', message: `${p} is this VM's own forward` });
      continue;
    }
    const probe = await bindProbe(f.protocol, f.hostPort);
    out.push({
      ...f,
      status: probe,
      message: probe === 'free' ? `${p} is free` : probe === 'privileged' ? `${p} needs privileges to listen on; choose a port above 1023` : `${p} is already in use by another program`,
    });
  }
  return out;
}

// ---- the CD drive and the disks ----------------------------------------------------------------------------

/** Inserts (or ejects, null) the VM's disc: in the running guest where its engine can, and in vm.json. */
export async function changeMedia(core: Core, ref: string, cdrom: string | null): Promise<VmInfo> {
  const vm = await core.get(ref);
  if (!vm.config) throw new VmdeskError(ErrorCode.broken, `"${vm.name}" cannot be read: ${vm.broken ?? 'broken'}`);
  if (cdrom) await admitImage({ path: cdrom }, { what: `ISO ${cdrom}`, purpose: 'cdrom' });
  if (!isAlive(vm.state)) return core.update(vm.id, { cdrom });
  const rt = core.runtime(vm.id);
  if (vm.state !== 'running' && vm.state !== 'paused') throw new VmdeskError(ErrorCode.state, `cannot change the disc of "${vm.name}" while it is ${vm.state}`);
  if (!rt?.changeMedium) throw new VmdeskError(ErrorCode.invalid, `the ${vm.config.engine} engine cannot change a disc while the guest runs; shut "${vm.name}" down first`);
  await rt.changeMedium(cdrom);
  // The next start gets the same disc.
  const next: VmConfig = { ...vm.config };
  if (cdrom) next.cdrom = cdrom;
  else delete next.cdrom;
  return core.saveConfig(vm.id, next);
}

export async function detachDisk(core: Core, ref: string, diskId: string, hasSnapshots: (vmId: string, diskId: string) => Promise<boolean>): Promise<{ info: VmInfo; keptFile?: string }> {
  const e = await core.usable(ref);
  const vm = await core.get(e.id);
  if (isAlive(vm.state)) throw new VmdeskError(ErrorCode.state, `cannot detach a disk while "${e.config.name}" is ${vm.state}`);
  const d = e.config.disks.find((x) => x.id === diskId);
  if (!d) throw new VmdeskError(ErrorCode.notFound, `no disk "${diskId}" (disks: ${e.config.disks.map((x) => x.id).join(', ') || 'none'})`);
  if (d.base) throw new VmdeskError(ErrorCode.invalid, `disk ${d.id} of "${e.config.name}" is a linked clone's overlay and cannot be detached`);
  if (await hasSnapshots(e.id, d.id)) throw new VmdeskError(ErrorCode.busy, `snapshots of "${e.config.name}" are kept inside disk ${d.id}; delete them before detaching it`);
  const next: VmConfig = { ...e.config, disks: e.config.disks.filter((x) => x.id !== d.id) };
  if (!d.owned) return { info: await core.saveConfig(e.id, next) };
  // The VM's own disk is not deleted: it goes where "delete, keep disks" puts disks.
  const src = await containedPath(e.dir, d.path).catch(() => {
    throw new VmdeskError(ErrorCode.invalid, `disk ${d.id} of "${e.config.name}" is marked as the VM's own but lies outside its bundle (${d.path}); nothing was moved`);
  });
  const keepDir = path.join(core.home, 'kept-disks');
  await fs.mkdir(keepDir, { recursive: true, mode: 0o700 });
  const ext = formatFromName(src) ? path.extname(src) : `.${d.format === 'vpc' ? 'vhd' : d.format}`;
  let dest = path.join(keepDir, `${e.config.name}-${d.id}-${e.id.slice(0, 8)}${ext}`);
  for (let i = 2; await fs.access(dest).then(() => true, () => false); i++) dest = path.join(keepDir, `${e.config.name}-${d.id}-${e.id.slice(0, 8)}-${i}${ext}`);
  await fs.rename(src, dest);
  try {
    return { info: await core.saveConfig(e.id, next), keptFile: dest };
  } catch (err) {
    await fs.rename(dest, src).catch(() => {});
    throw err;
  }
}

export async function reorderDisks(core: Core, ref: string, order: string[]): Promise<VmInfo> {
  const e = await core.usable(ref);
  const vm = await core.get(e.id);
  if (isAlive(vm.state)) throw new VmdeskError(ErrorCode.state, `cannot change the boot order while "${e.config.name}" is ${vm.state}`);
  const ids = e.config.disks.map((d) => d.id);
  if (order.length !== ids.length || new Set(order).size !== order.length || !order.every((id) => ids.includes(id))) {
    throw new VmdeskError(ErrorCode.invalid, `the new order must name each disk once (disks: ${ids.join(', ')})`);
  }
  return core.saveConfig(e.id, { ...e.config, disks: order.map((id) => e.config.disks.find((d) => d.id === id)!) });
}

/**
 * Changes one disk of a stopped VM: its bus (a Windows guest without virtio drivers needs SATA; a guest
 * installed on SATA can move to virtio once it has them) or whether the guest may write it. A saved VM is
 * refused: its device state was saved with the old bus.
 */
export async function setDisk(core: Core, ref: string, diskId: string, change: { bus?: DiskBus; readOnly?: boolean }): Promise<VmInfo> {
  const e = await core.usable(ref);
  const vm = await core.get(e.id);
  if (isAlive(vm.state)) throw new VmdeskError(ErrorCode.state, `cannot change a disk while "${e.config.name}" is ${vm.state}; shut it down first`);
  if (vm.state === 'saved') throw new VmdeskError(ErrorCode.state, `"${e.config.name}" has a saved state, taken with its disks as they are; start it and shut it down (or discard the state) first`);
  const disk = e.config.disks.find((d) => d.id === diskId);
  if (!disk) throw new VmdeskError(ErrorCode.notFound, `"${e.config.name}" has no disk "${diskId}" (disks: ${e.config.disks.map((d) => d.id).join(', ') || 'none'})`);
  const eng = await engineModule(e.config.engine);
  if (change.bus && !eng.capabilities.diskBuses.includes(change.bus)) {
    throw new VmdeskError(ErrorCode.invalid, `the ${eng.kind} engine has no ${change.bus} disk bus (buses: ${eng.capabilities.diskBuses.join(', ')})`);
  }
  const next: VmConfig = {
    ...e.config,
    disks: e.config.disks.map((d) => (d.id === diskId ? { ...d, ...(change.bus ? { bus: change.bus } : {}), ...(change.readOnly !== undefined ? { readOnly: change.readOnly } : {}) } : d)),
  };
  eng.validate(next);
  return core.saveConfig(e.id, next);
}
