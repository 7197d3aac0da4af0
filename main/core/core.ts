// The VMDesk core, held by the daemon (vmdeskd), the only writer of its library: an in-memory index of every
// VM, the running guests (engine runtimes, children of this process), one job per VM at a time, serial
// fan-out, and an event for every change. Snapshots, clones and backup build on it through SnapshotCore.
import { EventEmitter } from 'node:events';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import {
  CreateVmRequest,
  ExitRecord,
  LIMITS,
  VmConfig,
  VmName,
  VmSettingsPatch,
  VM_SCHEMA_VERSION,
  type Disk,
  type HostInfo,
  type VmInfo,
  type VmState,
} from '../api/schema.js';
import type { VmEvent } from '../api/events.js';
import { VmdeskError, ErrorCode } from '../api/errors.js';
import { LOCAL_DISK_OPERATIONS, OPERATIONS, allowed, isAlive, type JobInfo, type VmOperation } from '../api/states.js';
import { HOST_ENGINE_KIND, LOCAL_HOST } from '../api/host-uri.js';
import { HostRegistry } from './hosts.js';
import type { EngineContext, EngineModule, SavedStateInfo, VmRuntime } from '../engines/engine.js';
import { engine as engineModule, hasEngine } from '../engines/registry.js';
import { VmLibrary, brokenError, type BundleEntry } from './library.js';
import { checkReadableFile, checkResources, hostCapacity, parseOrThrow } from './validate.js';
import { defaultHome } from '../platform/paths.js';
import { admitImage, formatFromName } from './images/gate.js';
import { containedPath } from '../platform/contain.js';
import { fsyncDir, fsyncFile, writeFileAtomic } from '../platform/atomic.js';
import { SerialHub, fileTail, type SerialSession } from './serial.js';
import type { ProgressFn, SnapshotCore, UsableEntry } from './services.js';
import { checkForwards, forwardKey, guiServerPorts, needsMacs, withMacs } from './network.js';
import { SwitchFabric } from './switch.js';
import { UsageSampler } from './stats.js';
import { applyLimits, checkLimits, kindsSet, mergeLimits, releaseLimits } from './limits.js';
import { applyLiveUpdate, committed, hostLimitSupport, liveNetworkChange, plugNetPorts, stoppedOnlyWhy } from './live.js';
import { runtimeRoot } from '../platform/paths.js';
import { applyGuestPatch, checkGuestCapabilities, guestAgentReport, guestDefaults } from './guest.js';
import type { GuestAgentReport } from '../api/rpc-guest.js';
import { admitDriverDisc, applyDevicePatch, applyPreset, checkDeviceCapabilities, deviceDefaults } from './devices.js';

export type { ProgressFn } from './services.js';

export interface CoreOptions {
  home?: string;
  /**
   * A long-lived core (the daemon) squares snapshot metadata with the disks at start-up and sweeps what
   * crashed clones left; a short-lived one (tests) skips it.
   */
  longLived?: boolean;
}

interface VmRecord {
  id: string;
  dir: string;
  config: VmConfig | null;
  broken?: string;
  state: VmState;
  runtime?: VmRuntime;
  hub?: SerialHub;
  lastExit?: ExitRecord;
  /** Warnings of the last start (accelerator, network isolation), shown while it runs. */
  warnings: string[];
  job?: JobInfo;
  /** The state vmdesk suspend saved (state 'saved'), as the engine found it. */
  saved?: SavedStateInfo;
}

/**
 * Errors that mean a start was refused for the request or the host before the engine launched anything. A busy
 * port or disk is not among them: the VM's last exit keeps that reason ("stopped (start failed)" in the list).
 */
const REFUSALS: ReadonlySet<string> = new Set([ErrorCode.invalid, ErrorCode.notFound, ErrorCode.state, ErrorCode.host, ErrorCode.permission]);

export class Core extends EventEmitter<{ event: [VmEvent] }> implements SnapshotCore {
  readonly home: string;
  readonly library: VmLibrary;
  private readonly vms = new Map<string, VmRecord>();
  /** Names (lower case) of VMs being created right now: taken, though no bundle exists yet. */
  private readonly creating = new Set<string>();
  private readonly longLived: boolean;
  private booted = false;
  /** The daemon's switches for internal networks (one per network name). */
  readonly fabric = new SwitchFabric();
  /** Usage samples of running VMs (rates against the previous one). */
  readonly usage = new UsageSampler();
  /** Libvirt hosts this library reaches (hosts.json). */
  readonly hosts: HostRegistry;

  constructor(opts: CoreOptions = {}) {
    super();
    this.home = path.resolve(opts.home ?? defaultHome());
    this.library = new VmLibrary(this.home);
    this.hosts = new HostRegistry(this.home);
    this.longLived = opts.longLived ?? false;
  }

  /** Loads the library into memory and takes over guests that kept running while no daemon watched them. */
  async boot(): Promise<void> {
    if (this.booted) return;
    this.booted = true;
    await this.library.init();
    await Promise.all((await this.library.list()).map((e) => this.load(e)));
    if (this.longLived) {
      const { SnapshotManager } = await import('./snapshots/manager.js');
      const snaps = new SnapshotManager(this);
      await snaps.reconcileAll().catch(() => []);
      const { sweepOrphanLinkedBases } = await import('./snapshots/clone.js');
      await sweepOrphanLinkedBases(this, snaps).catch(() => []);
    }
  }

  /** Lets go of every guest (they keep running; the next daemon adopts them). */
  async shutdown(): Promise<void> {
    for (const r of this.vms.values()) {
      r.runtime?.detach();
      r.hub?.end();
    }
    // QEMU listens again on internal adapters' sockets: the next daemon plugs them back in.
    this.fabric.close();
  }

  private async load(e: BundleEntry): Promise<VmRecord> {
    const rec: VmRecord = { id: e.id, dir: e.dir, config: e.config, broken: e.broken, state: 'stopped', warnings: [] };
    this.vms.set(e.id, rec);
    if (!rec.config) return rec;
    if (!hasEngine(rec.config.engine)) {
      rec.config = null;
      rec.broken = `it runs on the "${e.config!.engine}" engine, which this VMDesk does not have`;
      return rec;
    }
    rec.lastExit = readLastExit(rec.dir);
    if (rec.lastExit?.reason === 'crashed') rec.state = 'crashed';
    // No runtime dir: no guest ever ran for it under this home (listing hundreds of VMs stays cheap).
    if (!existsSync(this.library.runtimeDir(rec.id))) return rec;
    const eng = await engineModule(rec.config.engine);
    const ctx = this.ctx(rec as UsableEntry);
    const rt = await eng.adopt(ctx).catch(() => null);
    if (rt) this.track(rec, rt, [...rt.warnings]);
    else {
      const exit = await eng.reapOrphan?.(ctx).catch(() => undefined);
      if (exit) {
        rec.lastExit = exit;
        rec.state = exit.reason === 'crashed' ? 'crashed' : 'stopped';
      }
      // Memory and devices saved by vmdesk suspend: the next start resumes them.
      if (this.restingState(rec, eng) === 'saved') rec.state = 'saved';
    }
    return rec;
  }

  private emitEvent(ev: VmEvent): void {
    this.emit('event', ev);
  }

  // ---- engines -------------------------------------------------------------------------------------------

  engineOf(config: VmConfig): Promise<EngineModule> {
    return engineModule(config.engine);
  }

  ctx(entry: UsableEntry): EngineContext {
    const ctx: EngineContext = { config: entry.config, bundleDir: entry.dir, runtimeDir: this.library.runtimeDir(entry.id) };
    // A VM on a libvirt host: the host as hosts.json has it (an unknown one is the engine's clear error).
    const host = entry.config.host ? this.hosts.peek(entry.config.host) : undefined;
    if (host) ctx.host = { name: host.name, uri: host.uri, pool: host.pool };
    return ctx;
  }

  runtime(id: string): VmRuntime | undefined {
    return this.vms.get(id)?.runtime;
  }

  /**
   * Lets go of a running guest without recording an end (it is moving to another host): its runtime stops
   * watching, the VM keeps its state until readopt says where the guest is.
   */
  releaseRuntime(id: string): void {
    const r = this.vms.get(id);
    const rt = r?.runtime;
    if (!r || !rt) return;
    r.runtime = undefined;
    r.hub?.end();
    r.hub = undefined;
    rt.detach();
    this.fabric.unplugVm(r.id);
    this.usage.forget(r.id);
  }

  /** Finds the guest where its configuration says it lives now and follows it (after a move); stopped when none runs. */
  async readopt(ref: string): Promise<VmInfo> {
    const r = this.usableRecord(ref);
    this.releaseRuntime(r.id);
    const eng = await engineModule(r.config.engine);
    this.library.ensureRuntimeDir(r.id);
    const rt = await eng.adopt(this.ctx(r)).catch(() => null);
    if (rt) this.track(r, rt, [...rt.warnings]);
    else r.state = 'stopped';
    this.emitState(r);
    return this.infoOf(r);
  }

  private track(rec: VmRecord, rt: VmRuntime, warnings: string[]): void {
    rec.runtime = rt;
    rec.state = rt.state;
    rec.warnings = warnings;
    rec.hub = new SerialHub(rt.serial);
    if (rt.netPorts?.length) void plugNetPorts(this.fabric, rec.id, rt, () => rec.runtime === rt);
    const off = rt.onState((s) => {
      // The end is announced once, with its exit record, by the exited handler below.
      if (rec.runtime !== rt || s === 'stopped' || s === 'crashed') return;
      rec.state = s;
      this.emitState(rec);
    });
    void rt.exited.then((exit) => {
      off();
      if (rec.runtime !== rt) return;
      rec.runtime = undefined;
      rec.hub?.end();
      rec.hub = undefined;
      rec.lastExit = exit;
      rec.warnings = [];
      rec.state = exit.reason === 'crashed' ? 'crashed' : exit.reason === 'saved' ? 'saved' : 'stopped';
      // Saved (vmdesk suspend, or finished by an adopting daemon): what is saved, for vm.get.
      if (exit.reason === 'saved' && rec.config) void this.engineOf(rec.config).then((eng) => {
        if (rec.state !== 'saved' || rec.saved) return;
        rec.state = this.restingState(rec, eng);
        this.emitUpdated(rec);
      }, () => undefined);
      this.fabric.unplugVm(rec.id);
      this.usage.forget(rec.id);
      releaseLimits(rec.id);
      this.emitState(rec);
    });
  }

  private emitState(rec: VmRecord): void {
    if (!this.vms.has(rec.id)) return;
    const info = this.infoOf(rec);
    this.emitEvent({ type: 'vm-state', id: rec.id, state: info.state, info });
  }

  // ---- reading -------------------------------------------------------------------------------------------

  async list(): Promise<VmInfo[]> {
    return [...this.vms.values()].map((r) => this.infoOf(r)).sort((a, b) => a.name.localeCompare(b.name));
  }

  async get(ref: string): Promise<VmInfo> {
    return this.infoOf(this.record(ref));
  }

  /** Finds a VM by exact name, id, or unique id prefix (at least 6 characters). */
  async resolve(ref: string): Promise<BundleEntry> {
    const r = this.record(ref);
    return { id: r.id, dir: r.dir, config: r.config, ...(r.broken ? { broken: r.broken } : {}) };
  }

  async usable(ref: string): Promise<UsableEntry> {
    const e = await this.resolve(ref);
    if (!e.config) throw brokenError(e);
    return e as UsableEntry;
  }

  private record(ref: string): VmRecord {
    if (!ref) throw new VmdeskError(ErrorCode.invalid, 'a VM name or id is required');
    const byId = this.vms.get(ref);
    if (byId) return byId;
    const all = [...this.vms.values()];
    // HOST:NAME (vmdesk --host): the VM of that name on that host ("local" is this library). Names have no ':'.
    const colon = ref.indexOf(':');
    if (colon > 0) {
      const host = ref.slice(0, colon).toLowerCase();
      const name = ref.slice(colon + 1);
      const here = all.filter((r) => (r.config?.host ?? LOCAL_HOST).toLowerCase() === host);
      const hit = here.filter((r) => r.config?.name === name || r.id === name || (name.length >= 6 && r.id.startsWith(name)));
      if (hit.length === 1) return hit[0]!;
      const elsewhere = all.find((r) => r.config?.name === name);
      const where = elsewhere ? ` (it is ${elsewhere.config?.host ? `on host "${elsewhere.config.host}"` : 'in the local library'})` : '';
      throw new VmdeskError(ErrorCode.notFound, `no VM named "${name}" on ${host === LOCAL_HOST ? 'the local library' : `host "${ref.slice(0, colon)}"`}${where}`);
    }
    const exact = all.filter((r) => r.config?.name === ref);
    if (exact.length === 1) return exact[0]!;
    if (ref.length >= 6) {
      const byPrefix = all.filter((r) => r.id.startsWith(ref));
      if (byPrefix.length === 1) return byPrefix[0]!;
    }
    throw new VmdeskError(ErrorCode.notFound, `no VM named "${ref}"`);
  }

  private usableRecord(ref: string): VmRecord & { config: VmConfig } {
    const r = this.record(ref);
    if (!r.config) throw brokenError({ id: r.id, dir: r.dir, config: null, broken: r.broken });
    return r as VmRecord & { config: VmConfig };
  }

  private infoOf(r: VmRecord): VmInfo {
    if (!r.config) return { id: r.id, name: r.id, bundle: r.dir, state: 'stopped', config: null, broken: r.broken, warnings: [] };
    const info: VmInfo = { id: r.id, name: r.config.name, bundle: r.dir, state: r.state, config: r.config, warnings: [...r.warnings] };
    if (r.config.host) info.host = r.config.host;
    if (r.lastExit) info.lastExit = r.lastExit;
    if (r.state === 'saved' && r.saved) info.savedState = { at: r.saved.at, bytes: r.saved.bytes };
    if (r.runtime && isAlive(r.state)) {
      // A guest on another host has no process here (pid 0).
      if (r.runtime.pid > 0) info.pid = r.runtime.pid;
      info.accel = r.runtime.accel;
      const down = r.runtime.linksDown?.();
      if (down?.length) info.linkDown = down;
    }
    if (r.job) info.job = { id: r.job.id, op: r.job.op, method: r.job.method, startedAt: r.job.startedAt };
    return info;
  }

  /** Every job running now. */
  jobs(): JobInfo[] {
    return [...this.vms.values()].flatMap((r) => (r.job ? [r.job] : []));
  }

  /** VMs in the library. */
  count(): number {
    return this.vms.size;
  }

  /** Guests that run (the daemon stays while there are any). */
  runningCount(): number {
    return [...this.vms.values()].filter((r) => isAlive(r.state)).length;
  }

  // ---- jobs: one modifying operation per VM at a time ----------------------------------------------------

  /**
   * Runs `fn` as the VM's job for `op`, after checking the state table; a VM busy with another job is
   * refused with EBUSY naming it (a forced power-off preempts). Queries never come through here.
   */
  async job<T>(ref: string, op: VmOperation, method: string, fn: () => Promise<T>): Promise<T> {
    const r = this.record(ref);
    const rule = OPERATIONS[op];
    const name = r.config?.name ?? r.id;
    if (r.job && !rule.preempts) {
      const secs = Math.round((Date.now() - Date.parse(r.job.startedAt)) / 1000);
      throw new VmdeskError(ErrorCode.busy, `"${name}" is busy: ${r.job.method} is running (for ${secs} s); try again when it has finished`);
    }
    if (r.config && !allowed(op, r.state)) {
      throw new VmdeskError(ErrorCode.state, `cannot ${rule.verb} "${name}" while it is ${r.state}${wayOut(op, r.state, name)}`);
    }
    if (r.config?.host && LOCAL_DISK_OPERATIONS.includes(op)) {
      throw new VmdeskError(ErrorCode.invalid, `cannot ${rule.verb} "${name}": it lives on host "${r.config.host}", where its disks are volumes, not files on this machine; move it here first (vmdesk migrate "${name}" --to local)`);
    }
    if (rule.preempts) return fn();
    const job: JobInfo = { id: randomUUID(), vmId: r.id, op, method, startedAt: new Date().toISOString() };
    r.job = job;
    this.emitUpdated(r);
    try {
      return await fn();
    } finally {
      if (r.job === job) r.job = undefined;
      this.emitUpdated(r);
    }
  }

  private emitUpdated(r: VmRecord): void {
    if (!this.vms.has(r.id)) return;
    this.emitEvent({ type: 'vm-updated', id: r.id, info: this.infoOf(r) });
  }

  // ---- host ----------------------------------------------------------------------------------------------

  async host(): Promise<HostInfo> {
    const { hostInfo } = await import('./host.js');
    // VMs on libvirt hosts use those hosts, not this one.
    return { ...(await hostInfo()), committed: committed((await this.list()).filter((i) => !i.host)), limits: hostLimitSupport() };
  }

  /** vCPUs and memory of the running VMs but `exceptId` (the balloon target counts where one is set). */
  private committedBy(exceptId?: string): { cpus: number; memoryMiB: number } {
    const c = committed([...this.vms.values()].filter((r) => r.id !== exceptId).map((r) => this.infoOf(r)));
    return { cpus: c.cpus, memoryMiB: c.memoryMiB };
  }

  /** MAC addresses of every VM in the library but `exceptId`. */
  private macsInUse(exceptId?: string): Set<string> {
    return new Set([...this.vms.values()].flatMap((r) => (r.id === exceptId || !r.config ? [] : r.config.network.flatMap((n) => (n.mac ? [n.mac] : [])))));
  }

  // ---- create / update / rename / delete -----------------------------------------------------------------

  async checkNewVmName(raw: unknown, exceptId?: string): Promise<string> {
    const name = parseOrThrow(VmName, raw, 'invalid name');
    const lower = name.toLowerCase();
    const taken = [...this.vms.values()].some((r) => r.id !== exceptId && r.config?.name.toLowerCase() === lower);
    if (taken || this.creating.has(lower)) throw new VmdeskError(ErrorCode.exists, `a VM named "${name}" already exists`);
    return name;
  }

  async createVmBundle(rawName: string, fill: (staging: string, id: string) => Promise<VmConfig>): Promise<VmInfo> {
    const name = await this.checkNewVmName(rawName);
    const lower = name.toLowerCase();
    this.creating.add(lower);
    try {
      // Every new VM's cards get MAC addresses of their own (clones and imports arrive without).
      const entry = await this.library.createBundle(async (staging, id) => {
        const c = await fill(staging, id);
        return needsMacs(c.network) ? { ...c, network: withMacs(c.network, this.macsInUse()) } : c;
      });
      const rec = await this.load(entry);
      const info = this.infoOf(rec);
      this.emitEvent({ type: 'vm-created', id: info.id, info });
      return info;
    } finally {
      this.creating.delete(lower);
    }
  }

  async create(input: unknown, onProgress?: ProgressFn): Promise<VmInfo> {
    // A preset (windows11) fills in what the request leaves out before anything is checked.
    const req = parseOrThrow(CreateVmRequest, applyPreset(input), 'invalid VM settings');
    // --host without --engine means the engine that reaches hosts; the host must be one this library knows.
    const host = req.host ? this.hosts.get(req.host) : undefined;
    // (the request's engine is the default one unless given: the default means "whatever runs it there").
    if (host && req.engine === CreateVmRequest.shape.engine.parse(undefined)) req.engine = HOST_ENGINE_KIND;
    const warnings = host ? [] : checkResources(req, hostCapacity(), this.committedBy()).map((w) => (w.includes('over-committed') ? `${w} if started now` : w));
    if (!hasEngine(req.engine)) throw new VmdeskError(ErrorCode.invalid, `unknown engine "${req.engine}"`);
    const eng = await engineModule(req.engine);
    if (host && !eng.hosted) throw new VmdeskError(ErrorCode.invalid, `the ${eng.kind} engine runs VMs on this machine; a VM on host "${host.name}" runs on the ${HOST_ENGINE_KIND} engine (leave out --engine)`);
    if (!host && eng.hosted) throw new VmdeskError(ErrorCode.invalid, `the ${eng.kind} engine runs VMs on a libvirt host: give --host NAME (see vmdesk hosts list)`);
    if (host && req.attachDisks.length) throw new VmdeskError(ErrorCode.invalid, `disks from this machine cannot be attached to a VM on host "${host.name}"; create the VM here and move it (vmdesk migrate NAME --to ${host.name})`);
    if (req.iso) await admitImage({ path: req.iso }, { what: `ISO ${req.iso}`, purpose: 'cdrom' });
    await admitDriverDisc(req.virtioDrivers);
    if (req.diskBus && !eng.capabilities.diskBuses.includes(req.diskBus)) throw new VmdeskError(ErrorCode.invalid, `the ${eng.kind} engine has no ${req.diskBus} disk bus (buses: ${eng.capabilities.diskBuses.join(', ')})`);
    if (req.directKernel) {
      await checkReadableFile(req.directKernel.kernel, 'kernel');
      if (req.directKernel.initrd) await checkReadableFile(req.directKernel.initrd, 'initrd');
    }
    const network = withMacs(req.network ?? (eng.capabilities.networkModes.includes('nat') ? [{ mode: 'nat' as const, forwards: [] }] : [{ mode: 'none' as const, forwards: [] }]), this.macsInUse());
    checkForwards(network);
    this.checkMacsFree(network);
    const attached: { path: string; format: Disk['format']; bus?: Disk['bus']; readOnly: boolean }[] = [];
    for (const a of req.attachDisks) {
      const spec = typeof a === 'string' ? { path: a } : a;
      const img = await admitAttached(spec.path, spec.format);
      attached.push({ path: path.resolve(spec.path), format: img.format, bus: spec.bus, readOnly: spec.readOnly ?? false });
    }
    const inUse = this.disksInUse();
    for (const a of attached) {
      const user = inUse.get(a.path);
      if (user) throw new VmdeskError(ErrorCode.busy, `disk "${a.path}" is in use by running VM "${user}"`);
    }
    const draft = (id: string, disks: Disk[]): VmConfig => {
      const now = new Date().toISOString();
      return {
        schemaVersion: VM_SCHEMA_VERSION,
        id,
        name: req.name,
        osType: req.osType,
        engine: req.engine,
        ...(host ? { host: host.name } : {}),
        accel: req.accel,
        firmware: req.firmware,
        cpus: req.cpus,
        memoryMiB: req.memoryMiB,
        disks,
        cdrom: req.iso,
        ...(req.tags?.length ? { tags: [...new Set(req.tags)] } : {}),
        directKernel: req.directKernel,
        network,
        ...(req.limits && Object.keys(req.limits).length ? { limits: req.limits } : {}),
        // New VMs get a memory balloon where the engine has one (older VMs get it when a target is set).
        ...(eng.capabilities.limits?.memoryTarget ? { balloon: true } : {}),
        // Guest integration (issue 12): agent channel, resizable display, clipboard only when asked for.
        ...guestDefaults(req, eng),
        // Windows 11 devices and sound (issue 12, part B): only what was asked for (or the preset gave).
        ...deviceDefaults(req),
        createdAt: now,
        modifiedAt: now,
      };
    };
    // The engine judges the settings before anything is written.
    const judged = VmConfig.parse(draft(randomUUID(), attached.map((a, i) => ({ id: `ext${i}`, path: a.path, format: a.format, owned: false, readOnly: a.readOnly, ...(a.bus ? { bus: a.bus } : {}) }))));
    checkCapabilities(judged, eng);
    checkLimits(judged, eng);
    const info = await this.createVmBundle(req.name, async (staging, id) => {
      const vmDisks: Disk[] = [];
      if (host && eng.hosted) {
        // The disk is a volume on the host, made there along with the guest's definition.
        if (req.diskBytes) vmDisks.push({ id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true, readOnly: false });
        const config = draft(id, vmDisks);
        await eng.hosted.provision({ config, bundleDir: staging, runtimeDir: this.library.runtimeDir(id), host: { name: host.name, uri: host.uri, pool: host.pool } }, { sizes: req.diskBytes ? { disk0: req.diskBytes } : {} }, (p, f) => onProgress?.(p, f));
        return config;
      }
      if (req.diskBytes) {
        await fs.mkdir(path.join(staging, 'disks'), { recursive: true, mode: 0o700 });
        onProgress?.('creating disk', 0);
        const fmt = eng.capabilities.nativeDiskFormat;
        const rel = `disks/disk0.${fmt === 'raw' ? 'img' : fmt}`;
        await eng.disks.create(path.join(staging, rel), req.diskBytes);
        onProgress?.('creating disk', 1);
        vmDisks.push({ id: 'disk0', path: rel, format: fmt, owned: true, readOnly: false, ...(req.diskBus ? { bus: req.diskBus } : {}) });
      }
      attached.forEach((a, i) => vmDisks.push({ id: `ext${i}`, path: a.path, format: a.format, owned: false, readOnly: a.readOnly, ...(a.bus ? { bus: a.bus } : {}) }));
      return draft(id, vmDisks);
    });
    return { ...info, warnings: [...warnings, ...info.warnings] };
  }

  /** Writes vm.json, updates the index and tells every client. */
  async saveConfig(id: string, config: VmConfig): Promise<VmInfo> {
    const r = this.record(id);
    await this.library.saveConfig(id, config);
    const fresh = await this.library.load(id);
    r.config = fresh.config;
    r.broken = fresh.broken;
    const info = this.infoOf(r);
    this.emitEvent({ type: 'vm-updated', id, info });
    return info;
  }

  /** Changes settings; hardware only while the VM is stopped (the running guest would not see it). */
  async update(ref: string, patchInput: unknown): Promise<VmInfo> {
    const patch = parseOrThrow(VmSettingsPatch, patchInput, 'invalid settings');
    const r = this.usableRecord(ref);
    const alive = isAlive(r.state);
    // Limits change live (where the engine can); the network too, as long as only forwards differ.
    const hardware = Object.keys(patch).filter((k) => k !== 'osType' && k !== 'tags' && k !== 'limits' && k !== 'network' && (patch as Record<string, unknown>)[k] !== undefined);
    const netRefusal = alive && patch.network ? liveNetworkChange(r.config.network, patch.network).refusal : undefined;
    if ((hardware.length || netRefusal) && alive) {
      throw new VmdeskError(ErrorCode.state, `cannot change ${[...hardware, ...(netRefusal ? ['network'] : [])].join(', ')} while "${r.config.name}" is ${r.state}: ${stoppedOnlyWhy([...hardware], netRefusal)}; shut it down first`);
    }
    const next: VmConfig = { ...r.config };
    if (patch.osType) next.osType = patch.osType;
    if (patch.tags) {
      const tags = [...new Set(patch.tags)];
      if (tags.length) next.tags = tags;
      else delete next.tags;
    }
    if (patch.engine) {
      if (!hasEngine(patch.engine)) throw new VmdeskError(ErrorCode.invalid, `unknown engine "${patch.engine}"`);
      // Between this machine and a libvirt host a VM moves with its disks: that is vmdesk migrate, not a setting.
      if (!!(await engineModule(patch.engine)).hosted !== !!r.config.host && patch.engine !== r.config.engine) {
        throw new VmdeskError(ErrorCode.invalid, r.config.host ? `"${r.config.name}" lives on host "${r.config.host}"; to run it on this machine move it: vmdesk migrate "${r.config.name}" --to local` : `the ${patch.engine} engine runs VMs on a libvirt host; move "${r.config.name}" there with vmdesk migrate "${r.config.name}" --to HOST`);
      }
      next.engine = patch.engine;
    }
    if (patch.accel) next.accel = patch.accel;
    if (patch.firmware) next.firmware = patch.firmware;
    if (patch.cpus !== undefined) next.cpus = patch.cpus;
    if (patch.memoryMiB !== undefined) next.memoryMiB = patch.memoryMiB;
    applyGuestPatch(next, patch);
    if (patch.virtioDrivers) await admitDriverDisc(patch.virtioDrivers);
    applyDevicePatch(next, patch);
    if (patch.network) {
      // A card keeps its MAC address unless one is given; new cards get new ones.
      next.network = withMacs(patch.network, this.macsInUse(r.id), r.config.network);
      checkForwards(next.network);
      this.checkMacsFree(next.network, r.id);
    }
    if (patch.limits) {
      const limits = mergeLimits(r.config.limits, patch.limits);
      if (limits) next.limits = limits;
      else delete next.limits;
      // A memory target needs the balloon device: a stopped VM made before VMDesk had one gets it now.
      if (limits?.memoryTargetMiB !== undefined && !next.balloon && !alive && (await engineModule(next.engine)).capabilities.limits?.memoryTarget) {
        // A saved VM resumes on the hardware it was saved with: no balloon can be added to it now.
        if (r.state === 'saved') throw new VmdeskError(ErrorCode.state, `a memory target needs a balloon device, which "${r.config.name}" gets only while it is stopped: it is saved now; start it and shut it down, or discard its state (vmdesk discard-state "${r.config.name}")`);
        next.balloon = true;
      }
    }
    if (patch.cdrom !== undefined) {
      if (patch.cdrom) await admitImage({ path: patch.cdrom }, { what: `ISO ${patch.cdrom}`, purpose: 'cdrom' });
      next.cdrom = patch.cdrom ?? undefined;
    }
    if (patch.directKernel !== undefined) {
      if (patch.directKernel) {
        await checkReadableFile(patch.directKernel.kernel, 'kernel');
        if (patch.directKernel.initrd) await checkReadableFile(patch.directKernel.initrd, 'initrd');
      }
      next.directKernel = patch.directKernel ?? undefined;
    }
    const eng = await engineModule(next.engine);
    checkCapabilities(next, eng);
    checkLimits(next, eng);
    const warnings = checkResources(next, hostCapacity(), this.committedBy(r.id)).map((w) => (w.includes('over-committed') && !alive ? `${w} if started now` : w));
    // A running guest takes the change first; vm.json records it once it has.
    if (alive && r.runtime) warnings.push(...(await applyLiveUpdate(this, r.id, r.config, next, eng, r.runtime)));
    const out = await this.saveConfig(r.id, next);
    return { ...out, warnings };
  }

  /** A MAC address given by hand must not be another VM's. */
  private checkMacsFree(network: VmConfig['network'], exceptId?: string): void {
    const taken = this.macsInUse(exceptId);
    for (const n of network) {
      if (!n.mac || !taken.has(n.mac)) continue;
      const owner = [...this.vms.values()].find((o) => o.id !== exceptId && o.config?.network.some((a) => a.mac === n.mac));
      throw new VmdeskError(ErrorCode.exists, `MAC address ${n.mac} belongs to VM "${owner?.config?.name ?? '?'}"; two cards must not share one`);
    }
  }

  async rename(ref: string, newName: string): Promise<VmInfo> {
    const r = this.usableRecord(ref);
    const name = await this.checkNewVmName(newName, r.id);
    return this.saveConfig(r.id, { ...r.config, name });
  }

  /** Deletes a stopped VM; with keepDisks its own disks are moved to <home>/kept-disks first. */
  async delete(ref: string, opts: { keepDisks?: boolean } = {}): Promise<{ keptDisks: string[] }> {
    const r = this.record(ref);
    const name = r.config?.name ?? r.id;
    if (isAlive(r.state)) throw new VmdeskError(ErrorCode.state, `"${name}" is ${r.state}; shut it down before deleting it`);
    const { linkedClonesOf } = await import('./snapshots/clone.js');
    const clones = await linkedClonesOf(this, r.dir);
    if (clones.length) throw new VmdeskError(ErrorCode.busy, `"${name}" holds the base disks of its linked clones (${clones.join(', ')}); delete them first or make them full clones`);
    const kept: string[] = [];
    const eng = r.config ? await engineModule(r.config.engine).catch(() => undefined) : undefined;
    if (r.config?.host && eng?.hosted) {
      if (opts.keepDisks) throw new VmdeskError(ErrorCode.invalid, `the disks of "${name}" are volumes on host "${r.config.host}"; to keep them move the VM here first (vmdesk migrate "${name}" --to local)`);
      // Its definition and volumes on the host go first; an unreachable host leaves the VM as it was.
      await eng.hosted.remove(this.ctx(r as UsableEntry));
    }
    if (opts.keepDisks && r.config) {
      const keepDir = path.join(this.home, 'kept-disks');
      await fs.mkdir(keepDir, { recursive: true, mode: 0o700 });
      for (const d of r.config.disks.filter((x) => x.owned)) {
        // Only a file inside the bundle is the VM's to give away; a path that leads elsewhere is refused.
        const src = await containedPath(r.dir, d.path).catch(() => {
          throw new VmdeskError(ErrorCode.invalid, `disk ${d.id} of "${name}" is marked as the VM's own but lies outside its bundle (${d.path}); nothing was moved`);
        });
        const dest = path.join(keepDir, `${name}-${d.id}-${r.id.slice(0, 8)}.${d.format}`);
        await fs.rename(src, dest);
        kept.push(dest);
      }
    }
    await this.library.removeBundle(r.id);
    await fs.rm(this.library.runtimeDir(r.id), { recursive: true, force: true });
    this.vms.delete(r.id);
    this.emitEvent({ type: 'vm-deleted', id: r.id });
    return { keptDisks: kept };
  }

  // ---- disks ---------------------------------------------------------------------------------------------

  async diskCreate(ref: string, bytes: number): Promise<VmInfo> {
    const r = this.stoppedRecord(ref, 'add a disk');
    if (!Number.isSafeInteger(bytes) || bytes < LIMITS.diskMinBytes) throw new VmdeskError(ErrorCode.invalid, 'disk size must be at least 1 MiB (give a unit: 512M, 8G)');
    if (bytes > LIMITS.diskMaxBytes) throw new VmdeskError(ErrorCode.invalid, `disk size is larger than the limit of ${LIMITS.diskMaxBytes / 1024 ** 4} TiB`);
    if (r.config.disks.length >= LIMITS.disksMax) throw new VmdeskError(ErrorCode.invalid, `a VM has at most ${LIMITS.disksMax} disks`);
    const eng = await engineModule(r.config.engine);
    const id = nextDiskId(r.config.disks, 'disk');
    const fmt = eng.capabilities.nativeDiskFormat;
    const rel = `disks/${id}.${fmt === 'raw' ? 'img' : fmt}`;
    await fs.mkdir(path.join(r.dir, 'disks'), { recursive: true, mode: 0o700 });
    await eng.disks.create(path.join(r.dir, rel), bytes);
    try {
      // On the disk before the VM's record names it.
      await fsyncFile(path.join(r.dir, rel));
      await fsyncDir(path.join(r.dir, 'disks'));
      return await this.saveConfig(r.id, { ...r.config, disks: [...r.config.disks, { id, path: rel, format: fmt, owned: true, readOnly: false }] });
    } catch (e) {
      await fs.rm(path.join(r.dir, rel), { force: true });
      throw e;
    }
  }

  async diskAttach(ref: string, file: string, opts: { format?: Disk['format']; bus?: Disk['bus']; readOnly?: boolean } = {}): Promise<VmInfo> {
    const r = this.stoppedRecord(ref, 'attach a disk');
    const abs = path.resolve(file);
    const { format } = await admitAttached(abs, opts.format);
    if (r.config.disks.some((d) => diskPath(r.dir, d) === abs)) throw new VmdeskError(ErrorCode.exists, `"${abs}" is already attached`);
    const user = this.disksInUse(r.id).get(abs);
    if (user) throw new VmdeskError(ErrorCode.busy, `disk "${abs}" is in use by running VM "${user}"`);
    if (r.config.disks.length >= LIMITS.disksMax) throw new VmdeskError(ErrorCode.invalid, `a VM has at most ${LIMITS.disksMax} disks`);
    const next: VmConfig = { ...r.config, disks: [...r.config.disks, { id: nextDiskId(r.config.disks, 'ext'), path: abs, format, owned: false, readOnly: opts.readOnly ?? false, ...(opts.bus ? { bus: opts.bus } : {}) }] };
    checkCapabilities(next, await engineModule(next.engine));
    return this.saveConfig(r.id, next);
  }

  async diskResize(ref: string, diskId: string, bytes: number): Promise<VmInfo> {
    const r = this.stoppedRecord(ref, 'resize a disk');
    const d = r.config.disks.find((x) => x.id === diskId);
    if (!d) throw new VmdeskError(ErrorCode.notFound, `no disk "${diskId}" (disks: ${r.config.disks.map((x) => x.id).join(', ') || 'none'})`);
    if (bytes > LIMITS.diskMaxBytes) throw new VmdeskError(ErrorCode.invalid, `disk size is larger than the limit of ${LIMITS.diskMaxBytes / 1024 ** 4} TiB`);
    await (await engineModule(r.config.engine)).disks.resize(diskPath(r.dir, d), d.format, bytes);
    return this.saveConfig(r.id, r.config);
  }

  private stoppedRecord(ref: string, what: string): VmRecord & { config: VmConfig } {
    const r = this.usableRecord(ref);
    if (isAlive(r.state)) throw new VmdeskError(ErrorCode.state, `cannot ${what} while "${r.config.name}" is ${r.state}`);
    return r;
  }

  /** Disk files of running VMs (other than exceptId) and who uses them. */
  private disksInUse(exceptId?: string): Map<string, string> {
    const out = new Map<string, string>();
    for (const r of this.vms.values()) {
      if (r.id === exceptId || !r.config || !isAlive(r.state)) continue;
      for (const d of r.config.disks) out.set(diskPath(r.dir, d), r.config.name);
    }
    return out;
  }

  // ---- lifecycle -----------------------------------------------------------------------------------------

  async start(ref: string, opts: { paused?: boolean } = {}): Promise<VmInfo> {
    const r = this.usableRecord(ref);
    if (isAlive(r.state)) throw new VmdeskError(ErrorCode.state, `"${r.config.name}" is already ${r.state}`);
    const eng = await engineModule(r.config.engine);
    checkCapabilities(r.config, eng);
    let cpus = 0;
    let memoryMiB = 0;
    const forwards = new Map(r.config.network.flatMap((n) => n.forwards.map((f) => [`${f.protocol}:${f.hostPort}`, f] as const)));
    for (const o of this.vms.values()) {
      if (o.id === r.id || !o.config || !isAlive(o.state)) continue;
      cpus += o.config.cpus;
      memoryMiB += o.config.memoryMiB;
      // Another VM's forward holds the port: say which VM, not just "in use".
      for (const f of o.config.network.flatMap((n) => n.forwards)) {
        const mine = forwards.get(`${f.protocol}:${f.hostPort}`);
        if (mine) throw new VmdeskError(ErrorCode.busy, `cannot start "${r.config.name}": host port ${mine.hostPort} (forwarded to guest port ${mine.guestPort}) is already forwarded to the running VM "${o.config.name}"`);
      }
    }
    // VMDesk's own GUI server may hold a port this VM forwards: say so rather than "in use".
    const gui = guiServerPorts(runtimeRoot(this.home));
    for (const f of r.config.network.flatMap((n) => n.forwards)) {
      const g = f.protocol === 'tcp' ? gui.find((x) => x.port === f.hostPort) : undefined;
      if (g) throw new VmdeskError(ErrorCode.busy, `cannot start "${r.config.name}": host port ${forwardKey(f)} is VMDesk's own GUI server (pid ${g.pid}); forward another port`);
    }
    checkForwards(r.config.network);
    checkLimits(r.config, eng);
    const hosted = !!(r.config.host && eng.hosted);
    const warnings = hosted ? [] : checkResources(r.config, hostCapacity(), this.committedBy(r.id));
    // Cards without a MAC address (VMs made before VMDesk gave them one) get theirs now, kept from here on.
    if (needsMacs(r.config.network)) await this.saveConfig(r.id, { ...r.config, network: withMacs(r.config.network, this.macsInUse(r.id)) });
    const inUse = this.disksInUse(r.id);
    // A hosted VM's disks are on its host: the engine checks them there.
    for (const d of hosted ? [] : r.config.disks) {
      const p = diskPath(r.dir, d);
      const user = inUse.get(p);
      if (user) throw new VmdeskError(ErrorCode.busy, `disk "${p}" is in use by running VM "${user}"`);
      await checkReadableFile(p, `disk ${d.id}`);
      await eng.disks.checkFree(p, d.format);
    }
    if (r.config.cdrom) await checkReadableFile(r.config.cdrom, 'ISO');
    if (r.config.directKernel) {
      await checkReadableFile(r.config.directKernel.kernel, 'kernel');
      if (r.config.directKernel.initrd) await checkReadableFile(r.config.directKernel.initrd, 'initrd');
    }
    this.library.ensureRuntimeDir(r.id);
    const attemptAt = Date.now();
    r.state = 'starting';
    this.emitState(r);
    let rt: VmRuntime;
    try {
      rt = await eng.start(this.ctx(r), opts);
    } catch (e) {
      // Refused before anything ran (QEMU missing, a bad setting): nothing changes, not even the
      // last exit; the caller has the reason.
      if (e instanceof VmdeskError && REFUSALS.has(e.code)) {
        r.state = this.restingState(r, eng);
        this.emitState(r);
        throw e;
      }
      // A start that failed is no crash: the VM is stopped, and its last exit says why it did not start
      // (kept in logs/last-exit.json, so the next daemon says the same).
      const exit = readLastExit(r.dir);
      const ofThisAttempt = exit && Date.parse(exit.at) >= attemptAt - 1000 ? exit : undefined;
      r.lastExit = {
        at: new Date().toISOString(),
        reason: 'start-failed',
        detail: e instanceof Error ? e.message : String(e),
        exitCode: ofThisAttempt?.exitCode ?? null,
        signal: ofThisAttempt?.signal ?? null,
        logTail: ofThisAttempt?.logTail.length ? ofThisAttempt.logTail : e instanceof VmdeskError ? [...e.details] : [],
      };
      // A saved state that could not be loaded is kept (the error says how to discard it).
      r.state = this.restingState(r, eng);
      await fs
        .mkdir(path.join(r.dir, 'logs'), { recursive: true, mode: 0o700 })
        .then(() => writeFileAtomic(path.join(r.dir, 'logs', 'last-exit.json'), JSON.stringify(r.lastExit, null, 2) + '\n'))
        .catch(() => undefined);
      this.emitState(r);
      throw e;
    }
    // The CPU cap and pinning act on the guest's host process, once there is one; a host that cannot apply
    // them (checked above) would have refused the start.
    const hostKinds = kindsSet(r.config.limits).filter((k) => k === 'cpuCap' || k === 'cpuPinning');
    if (hostKinds.length) {
      const applied = await applyLimits(r.id, r.config, rt, eng, hostKinds, { starting: true }).catch((e: Error) => [`limits not applied: ${e.message}`]);
      warnings.push(...applied);
    }
    r.saved = undefined;
    this.track(r, rt, [...warnings, ...rt.warnings]);
    this.emitState(r);
    return this.infoOf(r);
  }

  /** Stopped or saved: whichever the engine's saved state says (kept in the record for infoOf). */
  private restingState(r: VmRecord, eng: EngineModule): 'saved' | 'stopped' {
    r.saved = r.config ? eng.savedState?.describe(this.ctx(r as UsableEntry)) : undefined;
    return r.saved ? 'saved' : 'stopped';
  }

  /** Save state (vmdesk suspend): memory and devices to the bundle, the guest process ends, the VM is 'saved'. */
  async suspend(ref: string, progress?: ProgressFn): Promise<VmInfo> {
    const r = this.runningRecord(ref);
    const eng = await engineModule(r.config.engine);
    if (!eng.capabilities.saveState || !r.runtime.saveState) throw new VmdeskError(ErrorCode.invalid, `the ${eng.kind} engine cannot save a guest's state to disk; shut "${r.config.name}" down instead`);
    await r.runtime.saveState((phase, fraction) => progress?.(phase, fraction));
    await this.settled(r);
    r.state = this.restingState(r, eng);
    if (r.state !== 'saved') throw new VmdeskError(ErrorCode.engine, `"${r.config.name}" stopped but its saved state is not there`);
    this.emitState(r);
    return this.infoOf(r);
  }

  /** Throws the saved state away; the next start boots afresh. */
  async discardState(ref: string): Promise<VmInfo> {
    const r = this.usableRecord(ref);
    if (r.state !== 'saved') throw new VmdeskError(ErrorCode.state, `"${r.config.name}" has no saved state (it is ${r.state})`);
    const eng = await engineModule(r.config.engine);
    await eng.savedState?.discard(this.ctx(r));
    r.state = this.restingState(r, eng);
    this.emitState(r);
    return this.infoOf(r);
  }

  private runningRecord(ref: string): VmRecord & { config: VmConfig; runtime: VmRuntime } {
    const r = this.usableRecord(ref);
    if (!r.runtime || !isAlive(r.state)) throw new VmdeskError(ErrorCode.state, `"${r.config.name}" is not running`);
    return r as VmRecord & { config: VmConfig; runtime: VmRuntime };
  }

  /** Graceful stop: the guest's power button (ACPI), then forced off after timeoutMs. */
  async stop(ref: string, opts: { timeoutMs?: number } = {}): Promise<VmInfo> {
    const r = this.runningRecord(ref);
    await r.runtime.shutdown(opts.timeoutMs ?? 60_000);
    return this.settled(r);
  }

  async kill(ref: string): Promise<VmInfo> {
    const r = this.runningRecord(ref);
    await r.runtime.kill();
    return this.settled(r);
  }

  /** After an exit: the exited handlers have run once the runtime is gone from the record. */
  private async settled(r: VmRecord): Promise<VmInfo> {
    for (let i = 0; i < 100 && r.runtime && isAlive(r.state); i++) await new Promise((res) => setImmediate(res));
    return this.infoOf(r);
  }

  async pause(ref: string): Promise<VmInfo> {
    const r = this.runningRecord(ref);
    if (r.state === 'paused') throw new VmdeskError(ErrorCode.state, `"${r.config.name}" is already paused`);
    await r.runtime.pause();
    return this.infoOf(r);
  }

  async resume(ref: string): Promise<VmInfo> {
    const r = this.runningRecord(ref);
    if (r.state !== 'paused') throw new VmdeskError(ErrorCode.state, `"${r.config.name}" is not paused`);
    await r.runtime.resume();
    return this.infoOf(r);
  }

  async reset(ref: string): Promise<VmInfo> {
    const r = this.runningRecord(ref);
    await r.runtime.reset();
    return this.infoOf(r);
  }

  /** A session on the guest's serial console: recent output first, then live bytes both ways. */
  openSerial(ref: string): SerialSession {
    const r = this.runningRecord(ref);
    if (!r.hub) throw new VmdeskError(ErrorCode.state, `"${r.config.name}" has no serial console`);
    return r.hub.open();
  }

  /** What the guest printed on its serial console (kept in the bundle across runs). */
  async serialLog(ref: string, maxBytes = 256 * 1024): Promise<Buffer> {
    const r = this.record(ref);
    return fileTail(path.join(r.dir, 'logs', 'serial.log'), maxBytes);
  }

  async vncSocket(ref: string): Promise<string> {
    const r = this.runningRecord(ref);
    if (!r.runtime.vncSocket && r.config.host) {
      // libvirt puts the display's socket on the guest's host: reachable when that host is this machine.
      throw new VmdeskError(ErrorCode.invalid, `the display of "${r.config.name}" is on host "${r.config.host}" and VMDesk does not tunnel it here yet; use its serial console (vmdesk console), or virt-viewer on that host`);
    }
    if (!r.runtime.vncSocket) throw new VmdeskError(ErrorCode.state, `"${r.config.name}" has no graphical display (engine ${r.config.engine})`);
    return r.runtime.vncSocket;
  }

  /** A PNG of the guest's screen, for previews and snapshot thumbnails. */
  async screenshot(ref: string): Promise<Buffer> {
    const r = this.runningRecord(ref);
    if (!r.runtime.screenshot) throw new VmdeskError(ErrorCode.state, `"${r.config.name}" has no graphical display`);
    return r.runtime.screenshot();
  }

  /** What the guest agent of a running VM reports (addresses, host name), or why nothing. */
  async guestAgent(ref: string): Promise<GuestAgentReport> {
    const r = this.usableRecord(ref);
    return guestAgentReport(r.config.name, isAlive(r.state) ? r.runtime : undefined);
  }

  /** The capabilities of a VM's engine, for clients (a snapshot of what the VM can do). */
  async capabilities(ref: string): Promise<EngineModule['capabilities']> {
    return (await engineModule(this.usableRecord(ref).config.engine)).capabilities;
  }
}

/** Settings the engine cannot give the guest, refused by what it says it can do (never by its name). */
function checkCapabilities(config: VmConfig, eng: EngineModule): void {
  const c = eng.capabilities;
  for (const [i, n] of config.network.entries()) {
    if (!c.networkModes.includes(n.mode)) throw new VmdeskError(ErrorCode.invalid, `network adapter ${i} is ${n.mode}, which the ${eng.kind} engine does not offer (it offers: ${c.networkModes.join(', ')})`);
    if (n.model && !c.nicModels.includes(n.model)) throw new VmdeskError(ErrorCode.invalid, `network card ${n.model} is not available on the ${eng.kind} engine (models: ${c.nicModels.join(', ') || 'none'})`);
  }
  for (const d of config.disks) {
    if (!c.diskFormats.includes(d.format)) throw new VmdeskError(ErrorCode.invalid, `disk ${d.id} is ${d.format}; the ${eng.kind} engine opens ${c.diskFormats.join(', ')} (convert it with qemu-img)`);
    if (d.bus && !c.diskBuses.includes(d.bus)) throw new VmdeskError(ErrorCode.invalid, `disk ${d.id} is on a ${d.bus} bus, which the ${eng.kind} engine does not have (buses: ${c.diskBuses.join(', ')})`);
  }
  if (c.directKernelOnly && !config.directKernel) throw new VmdeskError(ErrorCode.invalid, `the ${eng.kind} engine boots a kernel directly: give --kernel (and --initrd)`);
  if (c.directKernelOnly && config.cdrom) throw new VmdeskError(ErrorCode.invalid, `the ${eng.kind} engine has no CD-ROM drive`);
  checkGuestCapabilities(config, eng);
  checkDeviceCapabilities(config, eng);
  eng.validate(config);
}

function readLastExit(dir: string): ExitRecord | undefined {
  try {
    const r = ExitRecord.safeParse(JSON.parse(readFileSync(path.join(dir, 'logs', 'last-exit.json'), 'utf8')));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

export function diskPath(bundleDir: string, d: Disk): string {
  return path.isAbsolute(d.path) ? d.path : path.join(bundleDir, d.path);
}

function nextDiskId(existing: Disk[], prefix: string): string {
  for (let i = 0; ; i++) if (!existing.some((d) => d.id === `${prefix}${i}`)) return `${prefix}${i}`;
}

/** An image the user attaches in place: through the gate, with the format they (or its name) state. */
function admitAttached(file: string, stated?: Disk['format']) {
  return admitImage({ path: file }, { what: `disk image ${file}`, stated: stated ?? formatFromName(file) });
}

/** How to get to a state where `op` is allowed, when that is a step the user takes (empty when it says itself). */
function wayOut(op: VmOperation, state: VmState, name: string): string {
  if (state === 'saved' && allowed(op, 'stopped')) return `: its memory is saved on disk; start it (it resumes where it was) and shut it down, or throw the saved state away (vmdesk discard-state "${name}")`;
  if ((state === 'running' || state === 'paused') && op !== 'start' && allowed(op, 'stopped')) return '; shut it down first';
  return '';
}
