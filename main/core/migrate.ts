// Hosts and moving VMs between them (issue 15): the hosts a library reaches (added, listed with a bounded check,
// removed only when no VM lives there), the guests a host has, and `vmdesk migrate`: this machine → a libvirt
// host (disks through the image gate, converted to qcow2 with progress, copied into the host's pool, defined,
// started), libvirt host → libvirt host (libvirt's peer-to-peer migration, storage copied, live if asked), and a
// libvirt host → this machine (volumes copied back, through the gate). Each move is the VM's job.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { describeHostUri, HOST_ENGINE_KIND, LOCAL_HOST, parseHostUri } from '../api/host-uri.js';
import type { HostDomain, HostEntry, HostStatus } from '../api/rpc-hosts.js';
import { VmConfig, type Disk, type VmInfo } from '../api/schema.js';
import type { EngineContext, HostedEngine, HostTarget } from '../engines/engine.js';
import { engine as engineModule } from '../engines/registry.js';
import { fsyncDir, fsyncFile } from '../platform/atomic.js';
import { convert } from '../platform/qemu-img.js';
import { currentCancelSignal } from '../platform/cancel.js';
import type { Core } from './core.js';
import { admitImage, qemuImgSource } from './images/gate.js';
import { readTree } from './snapshots/store.js';
import { linkedClonesOf } from './snapshots/clone.js';
import { diskPath } from './core.js';
import type { ProgressFn } from './services.js';

function target(h: HostEntry): HostTarget {
  return { name: h.name, uri: h.uri, pool: h.pool };
}

async function hostEngine(): Promise<HostedEngine> {
  const eng = await engineModule(HOST_ENGINE_KIND);
  if (!eng.hosted) throw new VmdeskError(ErrorCode.internal, `the ${HOST_ENGINE_KIND} engine does not reach hosts`);
  return eng.hosted;
}

function vmsOn(vms: VmInfo[], name: string): VmInfo[] {
  return vms.filter((v) => v.host?.toLowerCase() === name.toLowerCase());
}

async function status(core: Core, h: HostEntry, check: boolean): Promise<HostStatus> {
  const out: HostStatus = { ...h, where: describeHostUri(parseHostUri(h.uri)), vms: vmsOn(await core.list(), h.name).length };
  if (!check) return out;
  const t0 = Date.now();
  try {
    const p = await (await hostEngine()).probe(target(h));
    out.reachable = true;
    out.version = p.version;
    if (p.warnings.length) out.error = p.warnings.join('; ');
  } catch (e) {
    out.reachable = false;
    out.error = (e as Error).message;
  }
  out.latencyMs = Date.now() - t0;
  return out;
}

/** The library's hosts; with check, every one is asked at once (each bounded by the connect timeout). */
export async function listHosts(core: Core, check: boolean): Promise<HostStatus[]> {
  return Promise.all(core.hosts.list().map((h) => status(core, h, check)));
}

/** Adds a host, after it has answered (unless check is false); nothing is stored when it does not. */
export async function addHost(core: Core, p: { name: string; uri: string; pool?: string; check?: boolean }, progress: ProgressFn): Promise<{ host: HostStatus; warnings: string[] }> {
  const warnings: string[] = [];
  const uri = parseHostUri(p.uri);
  if (uri.transport === 'tcp') warnings.push(`${p.uri} is plain TCP: libvirt's traffic (and the guests' consoles) travel unencrypted; prefer qemu+ssh:// or qemu+tls://`);
  if (core.hosts.peek(p.name)) throw new VmdeskError(ErrorCode.exists, `a host named "${core.hosts.peek(p.name)!.name}" already exists`);
  let probe: { version: string; warnings: string[] } | undefined;
  if (p.check !== false) {
    progress(`connecting to ${p.uri}`);
    probe = await (await hostEngine()).probe({ name: p.name, uri: p.uri, pool: p.pool ?? 'default' });
    warnings.push(...probe.warnings);
  } else {
    warnings.push('the host was not asked (--no-check): whether it answers shows at first use');
  }
  const entry = await core.hosts.add({ name: p.name, uri: p.uri, ...(p.pool ? { pool: p.pool } : {}) });
  return { host: { ...entry, where: describeHostUri(uri), vms: 0, ...(probe ? { reachable: true, version: probe.version } : {}) }, warnings };
}

/** Forgets a host; refused while VMs of this library live on it. */
export async function removeHost(core: Core, name: string): Promise<{ removed: string }> {
  const h = core.hosts.get(name);
  const on = vmsOn(await core.list(), h.name);
  if (on.length) throw new VmdeskError(ErrorCode.busy, `VMs live on host "${h.name}": ${on.map((v) => v.name).join(', ')}; move them (vmdesk migrate NAME --to HOST) or delete them first`);
  await core.hosts.remove(h.name);
  return { removed: h.name };
}

/** Every guest the host has, marked with this library's VM where it is one. */
export async function hostDomains(core: Core, name: string): Promise<HostDomain[]> {
  const h = core.hosts.get(name);
  const guests = await (await hostEngine()).guests(target(h));
  const ours = new Map(vmsOn(await core.list(), h.name).map((v) => [v.id, v.name]));
  return guests.map((g) => ({ ...g, vm: ours.get(g.uuid) ?? null }));
}

// ---- moving a VM -----------------------------------------------------------------------------------------

/** What must hold before any move: no snapshots (they stay in the disks they were taken in), no linked clones. */
async function checkMovable(core: Core, vm: { id: string; dir: string; config: VmConfig }): Promise<void> {
  const tree = await readTree(vm.dir);
  if (tree.nodes.length) {
    throw new VmdeskError(ErrorCode.invalid, `"${vm.config.name}" has ${tree.nodes.length} snapshot${tree.nodes.length === 1 ? '' : 's'}; snapshots do not move between hosts (libvirt refuses to migrate a domain with snapshots): delete them first (vmdesk snapshot delete)`);
  }
  const linked = vm.config.disks.filter((d) => d.base);
  if (linked.length) throw new VmdeskError(ErrorCode.invalid, `"${vm.config.name}" is a linked clone (disk ${linked[0]!.id} reads through a base); make it a full clone first (vmdesk clone --snapshot… without --linked)`);
  const clones = await linkedClonesOf(core, vm.dir);
  if (clones.length) throw new VmdeskError(ErrorCode.invalid, `"${vm.config.name}" holds the base disks of its linked clones (${clones.join(', ')}); they would lose them`);
}

export interface MigrateOptions {
  live?: boolean;
  /** Start it at the destination (default: when it ran before, or when it comes from this machine). */
  start?: boolean;
}

/** Moves a VM; runs as its job (the caller holds it). */
export async function migrateVm(core: Core, ref: string, to: string, opts: MigrateOptions, progress: ProgressFn): Promise<{ info: VmInfo; warnings: string[] }> {
  const vm = await core.usable(ref);
  const from = vm.config.host;
  const info = await core.get(vm.id);
  const dest = to.toLowerCase() === LOCAL_HOST ? undefined : core.hosts.get(to);
  if ((dest?.name.toLowerCase() ?? LOCAL_HOST) === (from?.toLowerCase() ?? LOCAL_HOST)) {
    throw new VmdeskError(ErrorCode.invalid, `"${vm.config.name}" is already ${from ? `on host "${from}"` : 'in the local library'}`);
  }
  const running = info.state === 'running' || info.state === 'paused';
  if (running && !(from && dest)) {
    throw new VmdeskError(ErrorCode.state, `"${vm.config.name}" is ${info.state}; a VM moves ${from ? 'to this machine' : 'from this machine to a libvirt host'} while it is shut down (only a move between two libvirt hosts can be live): vmdesk stop "${vm.config.name}"`);
  }
  if (opts.live && !running) throw new VmdeskError(ErrorCode.invalid, `--live moves a running VM; "${vm.config.name}" is ${info.state}`);
  if (running && info.state !== 'running' && opts.live) throw new VmdeskError(ErrorCode.state, `"${vm.config.name}" is ${info.state}; resume it for a live move`);
  await checkMovable(core, vm);
  if (!from && dest) return toHost(core, vm, dest, opts, progress);
  if (from && !dest) return toLocal(core, vm, opts, progress);
  return betweenHosts(core, vm, dest!, running, opts, progress);
}

type Vm = { id: string; dir: string; config: VmConfig };

/** Settings local engines give by default (guest agent channel, display model, tablet) that libvirt VMs go without. */
const DEFAULTED = ['guestAgent', 'display', 'usbTablet'];

function ctxFor(core: Core, vm: Vm, config: VmConfig, host?: HostEntry): EngineContext {
  const ctx: EngineContext = { config, bundleDir: vm.dir, runtimeDir: core.library.runtimeDir(vm.id) };
  if (host) ctx.host = target(host);
  return ctx;
}

/** Checks a configuration against the engine that will run it, as create does; nothing has been touched. */
async function judge(config: VmConfig): Promise<VmConfig> {
  const parsed = VmConfig.safeParse(config);
  if (!parsed.success) throw new VmdeskError(ErrorCode.invalid, `the moved VM's settings would be invalid: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  const eng = await engineModule(parsed.data.engine);
  const caps = eng.capabilities;
  for (const [i, n] of parsed.data.network.entries()) {
    if (!caps.networkModes.includes(n.mode)) {
      const alt = caps.networkModes.filter((m) => m !== 'internal');
      throw new VmdeskError(ErrorCode.invalid, `network adapter ${i} is ${n.mode}, which the ${eng.kind} engine does not offer (it offers: ${caps.networkModes.join(', ')}); change it first, e.g. vmdesk set "${config.name}" --net ${alt.find((m) => m !== 'none') ?? 'none'}`);
    }
  }
  for (const d of parsed.data.disks) {
    if (d.bus && !caps.diskBuses.includes(d.bus)) throw new VmdeskError(ErrorCode.invalid, `disk ${d.id} is on a ${d.bus} bus, which the ${eng.kind} engine does not have`);
  }
  eng.validate(parsed.data);
  return parsed.data;
}

/** This machine → a libvirt host: every disk through the gate, converted to qcow2, copied into the pool. */
async function toHost(core: Core, vm: Vm, dest: HostEntry, opts: MigrateOptions, progress: ProgressFn): Promise<{ info: VmInfo; warnings: string[] }> {
  const hosted = await hostEngine();
  const disks: Disk[] = vm.config.disks.map((d) => ({ id: d.id, path: `disks/${d.id}.qcow2`, format: 'qcow2', owned: true, readOnly: d.readOnly, ...(d.bus ? { bus: d.bus } : {}) }));
  if (vm.config.limits && Object.keys(vm.config.limits).length) throw new VmdeskError(ErrorCode.invalid, `"${vm.config.name}" has resource limits, which the ${HOST_ENGINE_KIND} engine does not apply; clear them first`);
  // Settings this machine's engines fill in by default and a libvirt host does not have: dropped, said below.
  const dropped = DEFAULTED.filter((k) => (vm.config as unknown as Record<string, unknown>)[k] !== undefined);
  const rest = Object.fromEntries(Object.entries(vm.config).filter(([k]) => !dropped.includes(k))) as VmConfig;
  const next = await judge({ ...rest, engine: HOST_ENGINE_KIND, host: dest.name, disks });
  const warnings: string[] = dropped.length ? [`not carried to the host (the ${HOST_ENGINE_KIND} engine has no such setting): ${dropped.join(', ')}`] : [];
  progress(`connecting to ${dest.name}`, 0);
  const probe = await hosted.probe(target(dest));
  if (probe.warnings.length) throw new VmdeskError(ErrorCode.host, probe.warnings.join('; '));
  // Every source is judged before anything is written or copied.
  const admitted = [];
  for (const d of vm.config.disks) {
    const file = diskPath(vm.dir, d);
    admitted.push({ disk: d, img: await admitImage({ path: file }, { what: `disk ${d.id} (${file})`, stated: d.format }) });
  }
  const temps: string[] = [];
  const sources: Record<string, { file: string; format: 'qcow2' }> = {};
  const ctx = ctxFor(core, vm, next, dest);
  const n = Math.max(1, admitted.length);
  try {
    await fs.mkdir(path.join(vm.dir, 'disks'), { recursive: true, mode: 0o700 });
    for (const [i, a] of admitted.entries()) {
      // A flat qcow2 of the disk as it is now (no snapshots, no base): what the host gets.
      const tmp = path.join(vm.dir, 'disks', `.moving-${a.disk.id}.qcow2`);
      temps.push(tmp);
      await convert(qemuImgSource(a.img), tmp, { dstFormat: 'qcow2', onProgress: (f) => progress(`converting disk ${a.disk.id}`, ((i + f) / n) * 0.3) });
      sources[a.disk.id] = { file: tmp, format: 'qcow2' };
    }
    currentCancelSignal()?.throwIfAborted();
    await hosted.provision(ctx, { sources }, (p, f) => progress(p, f === undefined ? undefined : 0.3 + f * 0.65));
  } catch (e) {
    for (const t of temps) await fs.rm(t, { force: true });
    throw cancelled(e);
  }
  for (const t of temps) await fs.rm(t, { force: true });
  // The move is done once vm.json says so; only then do this machine's copies go.
  await core.saveConfig(vm.id, next);
  for (const d of vm.config.disks.filter((x) => x.owned)) {
    const file = diskPath(vm.dir, d);
    if (file.startsWith(vm.dir + path.sep)) await fs.rm(file, { force: true });
  }
  await fs.rm(path.join(vm.dir, 'uefi-vars.qcow2'), { force: true });
  const attached = vm.config.disks.filter((d) => !d.owned);
  if (attached.length) warnings.push(`attached disk${attached.length === 1 ? '' : 's'} ${attached.map((d) => d.path).join(', ')} ${attached.length === 1 ? 'was' : 'were'} copied to the host; the files here are left as they were`);
  if (vm.config.firmware === 'uefi') warnings.push('UEFI variables (boot entries) start afresh on the host');
  progress('moved', 0.95);
  let info = await core.get(vm.id);
  if (opts.start !== false) {
    progress(`starting on ${dest.name}`, 0.97);
    info = await core.start(vm.id);
  }
  return { info, warnings };
}

/** A libvirt host → this machine: the VM's volumes copied into the bundle and admitted through the gate. */
async function toLocal(core: Core, vm: Vm, opts: MigrateOptions, progress: ProgressFn): Promise<{ info: VmInfo; warnings: string[] }> {
  const hosted = await hostEngine();
  const from = core.hosts.get(vm.config.host!);
  const foreign = vm.config.disks.filter((d) => !d.owned);
  if (foreign.length) throw new VmdeskError(ErrorCode.invalid, `disk ${foreign[0]!.id} of "${vm.config.name}" is a file on host "${from.name}" (${foreign[0]!.path}), not one of its own volumes; VMDesk copies only the VM's own disks`);
  const localKind = VmConfig.shape.engine.parse(undefined);
  const disks: Disk[] = vm.config.disks.map((d) => ({ id: d.id, path: `disks/${d.id}.qcow2`, format: 'qcow2', owned: true, readOnly: d.readOnly, ...(d.bus ? { bus: d.bus } : {}) }));
  const { host: _h, ...rest } = vm.config;
  void _h;
  const next = await judge({ ...rest, engine: localKind, disks });
  const fromCtx = ctxFor(core, vm, vm.config, from);
  await fs.mkdir(path.join(vm.dir, 'disks'), { recursive: true, mode: 0o700 });
  const fetched: string[] = [];
  const n = Math.max(1, disks.length);
  try {
    for (const [i, d] of disks.entries()) {
      const tmp = path.join(vm.dir, 'disks', `.fetching-${d.id}.qcow2`);
      fetched.push(tmp);
      await hosted.fetchDisk(fromCtx, d.id, tmp, (p, f) => progress(p, f === undefined ? undefined : ((i + f) / n) * 0.9));
      // What comes from a host is an image like any other: through the gate before QEMU opens it.
      await admitImage({ path: tmp }, { what: `disk ${d.id} from host "${from.name}"`, stated: 'qcow2' });
    }
    // On the disk before they take the disks' names: the host's copies may be gone once the move is recorded.
    for (const f of fetched) await fsyncFile(f);
    for (const [i, d] of disks.entries()) await fs.rename(fetched[i]!, path.join(vm.dir, d.path));
    await fsyncDir(path.join(vm.dir, 'disks'));
  } catch (e) {
    for (const f of fetched) await fs.rm(f, { force: true });
    for (const d of disks) await fs.rm(path.join(vm.dir, d.path), { force: true });
    throw cancelled(e);
  }
  await core.saveConfig(vm.id, next);
  const warnings: string[] = [];
  // Moved: the host's copy goes. A failure here leaves a stray domain there, said plainly.
  await hosted.remove(fromCtx).catch((e: Error) => warnings.push(`the VM is here now, but its copy on host "${from.name}" could not be removed: ${e.message}`));
  let info = await core.get(vm.id);
  if (opts.start !== false) {
    progress('starting here', 0.97);
    info = await core.start(vm.id);
  }
  return { info, warnings };
}

/** One libvirt host → another: libvirt migrates it (peer to peer, storage copied), live when it runs. */
async function betweenHosts(core: Core, vm: Vm, dest: HostEntry, running: boolean, opts: MigrateOptions, progress: ProgressFn): Promise<{ info: VmInfo; warnings: string[] }> {
  const hosted = await hostEngine();
  const from = core.hosts.get(vm.config.host!);
  const next = await judge({ ...vm.config, host: dest.name });
  const fromCtx = ctxFor(core, vm, vm.config, from);
  const toCtx = ctxFor(core, vm, next, dest);
  const warnings: string[] = [];
  // The guest's runtime lets go first: the source's "stopped (migrated)" is not its end.
  if (running) core.releaseRuntime(vm.id);
  try {
    await hosted.migrate(fromCtx, toCtx, { live: running && opts.live !== false }, progress);
  } catch (e) {
    if (running) await core.readopt(vm.id);
    throw cancelled(e);
  }
  await core.saveConfig(vm.id, next);
  let info: VmInfo;
  if (running) info = await core.readopt(vm.id);
  else {
    info = await core.get(vm.id);
    if (opts.start === true) info = await core.start(vm.id);
  }
  if (running && info.state !== 'running' && info.state !== 'paused') warnings.push(`"${vm.config.name}" was moved but is not running on "${dest.name}" (${info.state})`);
  return { info, warnings };
}

function cancelled(e: unknown): unknown {
  if (currentCancelSignal()?.aborted && !(e instanceof VmdeskError && e.code === ErrorCode.cancelled)) return new VmdeskError(ErrorCode.cancelled, 'the move was cancelled; the VM is where it was');
  return e;
}
