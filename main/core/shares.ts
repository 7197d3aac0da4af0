// Shared folders of a VM (vmdesk share add|remove|list): a host folder is checked before it is kept (absolute,
// there, a folder, stored by its real path) and refused where sharing it would hand the guest the library
// itself, another VM's bundle or a disk image some VM runs from. Shares are hardware: changed while stopped.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { SHARES_MAX, ShareTag, type ShareDriver, type SharedFolder, type VmInfo } from '../api/schema.js';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { isAlive } from '../api/states.js';
import { engine as engineModule } from '../engines/registry.js';
import { mountCommand } from '../api/rpc-guest.js';
import { runtimeRoot } from '../platform/paths.js';
import type { Core } from './core.js';
import { diskPath } from './core.js';

export interface ShareListing {
  id: string;
  name: string;
  state: VmInfo['state'];
  shares: (SharedFolder & { mount: string; active?: { driver: ShareDriver } })[];
  notes: string[];
}

/** a inside b (or the same folder). */
function within(a: string, b: string): boolean {
  const rel = path.relative(b, a);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

async function realOrSelf(p: string): Promise<string> {
  return fs.realpath(p).catch(() => path.resolve(p));
}

/** The folder's real path, or a refusal naming what is wrong with it. */
export async function checkShareFolder(core: Core, hostPath: string): Promise<string> {
  if (!path.isAbsolute(hostPath)) throw new VmdeskError(ErrorCode.invalid, `a shared folder must be given by an absolute path (got ${hostPath})`);
  let real: string;
  try {
    real = await fs.realpath(hostPath);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new VmdeskError(ErrorCode.notFound, `${hostPath} does not exist`);
    if (code === 'EACCES') throw new VmdeskError(ErrorCode.permission, `${hostPath} cannot be read by VMDesk (permission denied)`);
    throw e;
  }
  const st = await fs.stat(real);
  if (!st.isDirectory()) throw new VmdeskError(ErrorCode.invalid, `${hostPath} is not a folder; share the folder that holds it`);
  const home = await realOrSelf(core.home);
  const run = await realOrSelf(runtimeRoot(core.home));
  for (const [what, dir] of [
    ['the VMDesk library', home],
    ["VMDesk's runtime folder", run],
  ] as const) {
    if (within(real, dir)) throw new VmdeskError(ErrorCode.invalid, `${hostPath} is inside ${what} (${dir}): the guest would reach VMs' disks and sockets; share another folder`);
    if (within(dir, real)) throw new VmdeskError(ErrorCode.invalid, `${hostPath} holds ${what} (${dir}): the guest would reach every VM's disks; share a folder that does not contain it`);
  }
  // Disk images VMs run from (attached ones live outside their bundles): a guest must not write under another.
  for (const vm of await core.list()) {
    for (const d of vm.config?.disks ?? []) {
      const file = await realOrSelf(diskPath(vm.bundle, d));
      if (within(file, real)) throw new VmdeskError(ErrorCode.invalid, `${hostPath} holds disk ${d.id} of VM "${vm.name}" (${file}); share a folder without VM disks in it`);
    }
  }
  return real;
}

/** A tag from the folder's name: its allowed characters, unique among the VM's shares. */
function defaultTag(real: string, taken: Set<string>): string {
  const stem = path.basename(real).replace(/[^A-Za-z0-9._-]/g, '').replace(/^[._-]+/, '').slice(0, 30) || 'share';
  for (let n = 1; ; n++) {
    const tag = n === 1 ? stem : `${stem}-${n}`;
    if (!taken.has(tag)) return tag;
  }
}

async function shareEngine(core: Core, ref: string) {
  const e = await core.usable(ref);
  const eng = await engineModule(e.config.engine);
  const drivers = eng.capabilities.guest?.shares ?? [];
  return { e, eng, drivers };
}

export async function addShare(core: Core, ref: string, input: { hostPath: string; tag?: string; readOnly?: boolean; driver?: ShareDriver }): Promise<VmInfo> {
  const { e, eng, drivers } = await shareEngine(core, ref);
  if (!drivers.length) throw new VmdeskError(ErrorCode.invalid, `the ${eng.kind} engine has no shared folders`);
  if (input.driver && !drivers.includes(input.driver)) throw new VmdeskError(ErrorCode.invalid, `the ${eng.kind} engine here has no ${input.driver} shares (it has: ${drivers.join(', ')})`);
  const info = await core.get(e.id);
  if (isAlive(info.state)) throw new VmdeskError(ErrorCode.state, `cannot add a shared folder while "${info.name}" is ${info.state}: the guest sees its devices at boot; shut it down first`);
  const shares = e.config.shares ?? [];
  if (shares.length >= SHARES_MAX) throw new VmdeskError(ErrorCode.invalid, `a VM has at most ${SHARES_MAX} shared folders`);
  const real = await checkShareFolder(core, input.hostPath);
  if (shares.some((s) => s.hostPath === real)) throw new VmdeskError(ErrorCode.exists, `${real} is already shared with "${info.name}" (tag ${shares.find((s) => s.hostPath === real)!.tag})`);
  const taken = new Set(shares.map((s) => s.tag));
  let tag: string;
  if (input.tag !== undefined) {
    const parsed = ShareTag.safeParse(input.tag);
    if (!parsed.success) throw new VmdeskError(ErrorCode.invalid, parsed.error.issues[0]?.message ?? 'invalid tag');
    if (taken.has(parsed.data)) throw new VmdeskError(ErrorCode.exists, `"${info.name}" already has a shared folder tagged ${parsed.data}`);
    tag = parsed.data;
  } else tag = defaultTag(real, taken);
  const share: SharedFolder = { tag, hostPath: real, readOnly: input.readOnly ?? false, ...(input.driver ? { driver: input.driver } : {}) };
  return core.saveConfig(e.id, { ...e.config, shares: [...shares, share] });
}

export async function removeShare(core: Core, ref: string, tag: string): Promise<VmInfo> {
  const e = await core.usable(ref);
  const info = await core.get(e.id);
  const shares = e.config.shares ?? [];
  if (!shares.some((s) => s.tag === tag)) throw new VmdeskError(ErrorCode.notFound, `"${info.name}" has no shared folder tagged ${tag} (tags: ${shares.map((s) => s.tag).join(', ') || 'none'})`);
  if (isAlive(info.state)) throw new VmdeskError(ErrorCode.state, `cannot remove a shared folder while "${info.name}" is ${info.state}; shut it down first`);
  const next = { ...e.config, shares: shares.filter((s) => s.tag !== tag) };
  if (!next.shares.length) delete (next as { shares?: unknown }).shares;
  return core.saveConfig(e.id, next);
}

export async function listShares(core: Core, ref: string): Promise<ShareListing> {
  const { e, eng, drivers } = await shareEngine(core, ref);
  const info = await core.get(e.id);
  const rt = isAlive(info.state) ? core.runtime(e.id) : undefined;
  const active = new Map((rt?.activeShares?.() ?? []).map((s) => [s.tag, s]));
  const notes: string[] = [];
  if (!drivers.length) notes.push(`the ${eng.kind} engine has no shared folders`);
  const shares = (e.config.shares ?? []).map((s) => {
    const a = active.get(s.tag);
    const driver = a?.driver ?? s.driver ?? drivers[0] ?? 'virtiofs';
    return { ...s, mount: mountCommand({ tag: s.tag, driver, readOnly: s.readOnly }), ...(a ? { active: { driver: a.driver } } : {}) };
  });
  if (rt && shares.some((s) => !s.active)) notes.push('shares without "active" were left out at start (see vmdesk start\'s warnings) or added since; they come with the next start');
  if (shares.length) notes.push('mount commands are for Linux guests (virtiofs needs Linux 5.4+, 9p the 9pnet_virtio module); Windows guests need WinFsp and the virtio-win virtiofs service');
  return { id: e.id, name: info.name, state: info.state, shares, notes };
}
