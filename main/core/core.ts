// The VMDesk core: the VM library plus lifecycle, resources and events, shared by the CLI, server and app.
import { EventEmitter } from 'node:events';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import {
  CreateVmRequest,
  ExitRecord,
  HostInfo,
  VmConfig,
  VmName,
  VmSettingsPatch,
  VM_SCHEMA_VERSION,
  LIMITS,
  type Disk,
  type VmInfo,
  type VmState,
} from '../api/schema.js';
import type { VmEvent } from '../api/events.js';
import { VmdeskError, ErrorCode } from '../api/errors.js';
import type { Engine, EngineContext, VmHandle } from '../engines/engine.js';
import { VmLibrary, brokenError, type BundleEntry } from './library.js';
import { checkReadableFile, checkResources, hostCapacity, parseOrThrow } from './validate.js';
import { defaultHome } from '../platform/paths.js';
import * as disks from '../engines/qemu/disks.js';
import { admitImage, formatFromName } from './images/gate.js';
import { containedPath } from '../platform/contain.js';

export interface CoreOptions {
  home?: string;
  /** Engines by kind; defaults to QEMU and the micro-VMM. Tests may pass their own instances. */
  engines?: Partial<Record<'qemu' | 'microvm', Engine>>;
  /** Poll interval for state changes made by other processes (CLI while the app runs); 0 disables. */
  watchMs?: number;
}

export type ProgressFn = (phase: string, fraction?: number) => void;

const RUNNING_STATES: VmState[] = ['starting', 'running', 'paused', 'stopping'];

export class Core extends EventEmitter<{ event: [VmEvent] }> {
  readonly home: string;
  readonly library: VmLibrary;
  private engines: Partial<Record<'qemu' | 'microvm', Engine>>;
  private handles = new Map<string, VmHandle>();
  private lastStates = new Map<string, VmState>();
  private poller: NodeJS.Timeout | undefined;
  private readonly watchMs: number;

  constructor(opts: CoreOptions = {}) {
    super();
    this.home = path.resolve(opts.home ?? defaultHome());
    this.library = new VmLibrary(this.home);
    this.engines = opts.engines ?? {};
    this.watchMs = opts.watchMs ?? 0;
  }

  /** Prepares the library and reattaches to VMs that kept running while no VMDesk process watched them. */
  async boot(): Promise<void> {
    await this.library.init();
    if (this.watchMs > 0) {
      // A long-lived core (app, server) squares snapshot metadata with the disks once at start-up, so a
      // crash in the middle of a snapshot is reported or adopted before anyone looks.
      const { SnapshotManager } = await import('./snapshots/manager.js');
      const snaps = new SnapshotManager(this);
      await snaps.reconcileAll().catch(() => []);
      // Linked bases left by a clone that crashed, and bases recorded in each clone's disks (older bundles).
      const { sweepOrphanLinkedBases } = await import('./snapshots/clone.js');
      await sweepOrphanLinkedBases(this, snaps).catch(() => []);
      for (const info of await this.list()) this.lastStates.set(info.id, info.state);
      this.poller = setInterval(() => void this.pollStates(), this.watchMs);
      this.poller.unref();
    }
  }

  /** Drops connections to guests and leaves them running; `vmdesk` and the app can reattach later. */
  async shutdown(): Promise<void> {
    if (this.poller) clearInterval(this.poller);
    for (const h of this.handles.values()) h.close();
    this.handles.clear();
  }

  private emitEvent(ev: VmEvent): void {
    this.emit('event', ev);
  }

  // ---- engines ---------------------------------------------------------------------------------------

  async engine(kind: 'qemu' | 'microvm'): Promise<Engine> {
    let e = this.engines[kind];
    if (!e) {
      if (kind === 'qemu') {
        const { QemuEngine } = await import('../engines/qemu/engine.js');
        await installKvmSelfTest();
        e = new QemuEngine();
      } else {
        const { MicrovmEngine } = await import('../engines/microvm/engine.js');
        e = new MicrovmEngine();
      }
      this.engines[kind] = e;
    }
    return e!;
  }

  private ctx(entry: BundleEntry & { config: VmConfig }): EngineContext {
    return { config: entry.config, bundleDir: entry.dir, runtimeDir: this.library.runtimeDir(entry.id) };
  }

  /** A live handle to a running VM, or undefined when it is not running. */
  private async handleFor(entry: BundleEntry & { config: VmConfig }): Promise<VmHandle | undefined> {
    const cached = this.handles.get(entry.id);
    if (cached) {
      try {
        await cached.state();
        return cached;
      } catch (e) {
        // A slow answer is not a dead VM: closing here would cut off replies still in flight.
        if ((e as VmdeskError).code === ErrorCode.timeout) return cached;
        cached.close();
        this.handles.delete(entry.id);
      }
    }
    // No runtime dir means no supervisor ever ran for this VM under this home: skip the engine's probe,
    // which keeps listing hundreds of stopped VMs cheap.
    if (!existsSync(this.library.runtimeDir(entry.id))) return undefined;
    const engine = await this.engine(entry.config.engine);
    const h = await engine.attach(this.ctx(entry)).catch(() => null);
    if (!h) return undefined;
    this.track(entry.id, h);
    return h;
  }

  private track(id: string, h: VmHandle): void {
    this.handles.set(id, h);
    h.onEvent(() => void this.refresh(id));
    // The handle closes itself when the supervisor leaves; closing it here would cut off replies in flight.
    h.exited().then(
      () => {
        if (this.handles.get(id) === h) this.handles.delete(id);
        void this.refresh(id);
      },
      () => {},
    );
  }

  // ---- reading ---------------------------------------------------------------------------------------

  async list(): Promise<VmInfo[]> {
    const entries = await this.library.list();
    const infos = await Promise.all(entries.map((e) => this.infoOf(e)));
    return infos.sort((a, b) => a.name.localeCompare(b.name));
  }

  async get(ref: string): Promise<VmInfo> {
    return this.infoOf(await this.resolve(ref));
  }

  /** Finds a VM by exact name, id, or unique id prefix (at least 6 characters). */
  async resolve(ref: string): Promise<BundleEntry> {
    if (!ref) throw new VmdeskError(ErrorCode.invalid, 'a VM name or id is required');
    const entries = await this.library.list();
    const exact = entries.filter((e) => e.config?.name === ref || e.id === ref);
    if (exact.length === 1) return exact[0]!;
    if (ref.length >= 6) {
      const byPrefix = entries.filter((e) => e.id.startsWith(ref));
      if (byPrefix.length === 1) return byPrefix[0]!;
    }
    throw new VmdeskError(ErrorCode.notFound, `no VM named "${ref}"`);
  }

  private async resolveUsable(ref: string): Promise<BundleEntry & { config: VmConfig }> {
    const e = await this.resolve(ref);
    if (!e.config) throw brokenError(e);
    return e as BundleEntry & { config: VmConfig };
  }

  private async readLastExit(dir: string): Promise<ExitRecord | undefined> {
    try {
      const r = ExitRecord.safeParse(JSON.parse(await fs.readFile(path.join(dir, 'logs', 'last-exit.json'), 'utf8')));
      return r.success ? r.data : undefined;
    } catch {
      return undefined;
    }
  }

  private async infoOf(entry: BundleEntry): Promise<VmInfo> {
    if (!entry.config) {
      return { id: entry.id, name: entry.id, bundle: entry.dir, state: 'stopped', config: null, broken: entry.broken, warnings: [] };
    }
    const usable = entry as BundleEntry & { config: VmConfig };
    const lastExit = await this.readLastExit(entry.dir);
    const h = await this.handleFor(usable);
    let state: VmState = 'stopped';
    if (h) {
      state = await h.state().catch(() => 'stopped' as VmState);
    } else if (lastExit?.reason === 'crashed') {
      state = 'crashed';
    }
    const info: VmInfo = { id: entry.id, name: entry.config.name, bundle: entry.dir, state, config: entry.config, lastExit, warnings: [] };
    if (h && state !== 'stopped') {
      info.pid = h.pid;
      info.accel = h.accel;
    }
    return info;
  }

  private async refresh(id: string): Promise<void> {
    try {
      const info = await this.infoOf(await this.library.load(id));
      if (this.lastStates.get(id) !== info.state) {
        this.lastStates.set(id, info.state);
        this.emitEvent({ type: 'vm-state', id, state: info.state, info });
      }
    } catch {
      /* the VM was deleted meanwhile */
    }
  }

  private async pollStates(): Promise<void> {
    const infos = await this.list().catch(() => [] as VmInfo[]);
    const seen = new Set<string>();
    for (const info of infos) {
      seen.add(info.id);
      const prev = this.lastStates.get(info.id);
      if (prev === undefined) {
        this.lastStates.set(info.id, info.state);
        this.emitEvent({ type: 'vm-created', id: info.id, info });
      } else if (prev !== info.state) {
        this.lastStates.set(info.id, info.state);
        this.emitEvent({ type: 'vm-state', id: info.id, state: info.state, info });
      }
    }
    for (const id of [...this.lastStates.keys()]) {
      if (!seen.has(id)) {
        this.lastStates.delete(id);
        this.emitEvent({ type: 'vm-deleted', id });
      }
    }
  }

  private async runningUsage(exceptId?: string): Promise<{ cpus: number; memoryMiB: number; disks: Map<string, string> }> {
    let cpus = 0;
    let memoryMiB = 0;
    const diskUsers = new Map<string, string>();
    for (const info of await this.list()) {
      if (info.id === exceptId || !info.config || !RUNNING_STATES.includes(info.state)) continue;
      cpus += info.config.cpus;
      memoryMiB += info.config.memoryMiB;
      for (const d of info.config.disks) diskUsers.set(diskPath(info.bundle, d), info.name);
    }
    return { cpus, memoryMiB, disks: diskUsers };
  }

  // ---- host ------------------------------------------------------------------------------------------

  async host(): Promise<HostInfo> {
    const { hostInfo } = await import('./host.js');
    return hostInfo();
  }

  // ---- create / update / rename / delete -------------------------------------------------------------

  async create(input: unknown, onProgress?: ProgressFn): Promise<VmInfo> {
    const req = parseOrThrow(CreateVmRequest, input, 'invalid VM settings');
    const warnings = checkResources(req, hostCapacity());
    if (req.engine === 'microvm' && !req.directKernel) {
      throw new VmdeskError(ErrorCode.invalid, 'the microvm engine boots a kernel directly: give --kernel (and --initrd)');
    }
    if (req.iso) await admitImage({ path: req.iso }, { what: `ISO ${req.iso}`, purpose: 'cdrom' });
    if (req.directKernel) {
      await checkReadableFile(req.directKernel.kernel, 'kernel');
      if (req.directKernel.initrd) await checkReadableFile(req.directKernel.initrd, 'initrd');
    }
    checkForwards(req.network);
    const attached: { path: string; format: Disk['format']; bus?: Disk['bus']; readOnly: boolean }[] = [];
    for (const a of req.attachDisks) {
      const spec = typeof a === 'string' ? { path: a } : a;
      const img = await admitAttached(spec.path, spec.format);
      attached.push({ path: path.resolve(spec.path), format: img.format, bus: spec.bus, readOnly: spec.readOnly ?? false });
    }
    const usage = await this.runningUsage();
    for (const a of attached) {
      const user = usage.disks.get(path.resolve(a.path));
      if (user) throw new VmdeskError(ErrorCode.busy, `disk "${a.path}" is in use by running VM "${user}"`);
    }

    const entry = await this.library.withLibraryLock(async () => {
      await this.assertNameFree(req.name);
      return this.library.createBundle(async (staging, id) => {
        const now = new Date().toISOString();
        const vmDisks: Disk[] = [];
        if (req.diskBytes) {
          await fs.mkdir(path.join(staging, 'disks'), { recursive: true });
          onProgress?.('creating disk', 0);
          await disks.createQcow2(path.join(staging, 'disks', 'disk0.qcow2'), req.diskBytes);
          onProgress?.('creating disk', 1);
          vmDisks.push({ id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true, readOnly: false });
        }
        attached.forEach((a, i) => vmDisks.push({ id: `ext${i}`, path: a.path, format: a.format, owned: false, readOnly: a.readOnly, ...(a.bus ? { bus: a.bus } : {}) }));
        return {
          schemaVersion: VM_SCHEMA_VERSION,
          id,
          name: req.name,
          osType: req.osType,
          engine: req.engine,
          accel: req.accel,
          firmware: req.firmware,
          cpus: req.cpus,
          memoryMiB: req.memoryMiB,
          disks: vmDisks,
          cdrom: req.iso,
          directKernel: req.directKernel,
          network: req.network,
          createdAt: now,
          modifiedAt: now,
        };
      });
    });
    const info = await this.infoOf(entry);
    info.warnings = warnings;
    this.lastStates.set(info.id, info.state);
    this.emitEvent({ type: 'vm-created', id: info.id, info });
    return info;
  }

  private async assertNameFree(name: string, exceptId?: string): Promise<void> {
    const taken = (await this.library.list()).some((e) => e.id !== exceptId && e.config?.name.toLowerCase() === name.toLowerCase());
    if (taken) throw new VmdeskError(ErrorCode.exists, `a VM named "${name}" already exists`);
  }

  /** Changes settings; hardware settings only while the VM is stopped (the running QEMU would not see them). */
  async update(ref: string, patchInput: unknown): Promise<VmInfo> {
    const patch = parseOrThrow(VmSettingsPatch, patchInput, 'invalid settings');
    const entry = await this.resolveUsable(ref);
    return this.library.withVmLock(entry.id, entry.config.name, async () => {
      const fresh = await this.resolveUsable(entry.id);
      const info = await this.infoOf(fresh);
      const hardware = Object.keys(patch).filter((k) => k !== 'osType' && (patch as Record<string, unknown>)[k] !== undefined);
      if (hardware.length && info.state !== 'stopped' && info.state !== 'crashed') {
        throw new VmdeskError(ErrorCode.state, `cannot change ${hardware.join(', ')} while "${fresh.config.name}" is ${info.state}; shut it down first`);
      }
      const next: VmConfig = { ...fresh.config };
      if (patch.osType) next.osType = patch.osType;
      if (patch.engine) next.engine = patch.engine;
      if (patch.accel) next.accel = patch.accel;
      if (patch.firmware) next.firmware = patch.firmware;
      if (patch.cpus !== undefined) next.cpus = patch.cpus;
      if (patch.memoryMiB !== undefined) next.memoryMiB = patch.memoryMiB;
      if (patch.network) {
        checkForwards(patch.network);
        next.network = patch.network;
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
      if (next.engine === 'microvm' && !next.directKernel) throw new VmdeskError(ErrorCode.invalid, 'the microvm engine needs a kernel (direct kernel boot)');
      const warnings = checkResources(next, hostCapacity());
      await this.library.saveConfig(fresh.id, next);
      const out = await this.get(fresh.id);
      out.warnings = warnings;
      this.emitEvent({ type: 'vm-updated', id: out.id, info: out });
      return out;
    });
  }

  async rename(ref: string, newName: string): Promise<VmInfo> {
    const name = parseOrThrow(VmName, newName, 'invalid name');
    const entry = await this.resolveUsable(ref);
    return this.library.withLibraryLock(() =>
      this.library.withVmLock(entry.id, entry.config.name, async () => {
        await this.assertNameFree(name, entry.id);
        const fresh = await this.resolveUsable(entry.id);
        await this.library.saveConfig(entry.id, { ...fresh.config, name });
        const out = await this.get(entry.id);
        this.emitEvent({ type: 'vm-updated', id: out.id, info: out });
        return out;
      }),
    );
  }

  /** Deletes a stopped VM; with keepDisks its own disks are moved to <home>/kept-disks first. */
  async delete(ref: string, opts: { keepDisks?: boolean } = {}): Promise<{ keptDisks: string[] }> {
    const entry = await this.resolve(ref);
    const name = entry.config?.name ?? entry.id;
    return this.library.withLibraryLock(() =>
      this.library.withVmLock(entry.id, name, async () => {
        if (entry.config) {
          const info = await this.infoOf(entry);
          if (RUNNING_STATES.includes(info.state)) throw new VmdeskError(ErrorCode.state, `"${name}" is ${info.state}; shut it down before deleting it`);
        }
        const { linkedClonesOf } = await import('./snapshots/clone.js');
        const clones = await linkedClonesOf(this, entry.dir);
        if (clones.length) {
          throw new VmdeskError(ErrorCode.busy, `"${name}" holds the base disks of its linked clones (${clones.join(', ')}); delete them first or make them full clones`);
        }
        const kept: string[] = [];
        if (opts.keepDisks && entry.config) {
          const keepDir = path.join(this.home, 'kept-disks');
          await fs.mkdir(keepDir, { recursive: true });
          for (const d of entry.config.disks.filter((x) => x.owned)) {
            // Only a file inside the bundle is the VM's to give away; a path that leads elsewhere is refused.
            const src = await containedPath(entry.dir, d.path).catch(() => {
              throw new VmdeskError(ErrorCode.invalid, `disk ${d.id} of "${name}" is marked as the VM's own but lies outside its bundle (${d.path}); nothing was moved`);
            });
            const dest = path.join(keepDir, `${name}-${d.id}-${entry.id.slice(0, 8)}.${d.format}`);
            await fs.rename(src, dest);
            kept.push(dest);
          }
        }
        // The lock file lives in the bundle: removeBundle takes it along.
        await this.library.removeBundle(entry.id);
        await fs.rm(this.library.runtimeDir(entry.id), { recursive: true, force: true });
        this.lastStates.delete(entry.id);
        this.emitEvent({ type: 'vm-deleted', id: entry.id });
        return { keptDisks: kept };
      }),
    );
  }

  // ---- disks -----------------------------------------------------------------------------------------

  async diskCreate(ref: string, bytes: number): Promise<VmInfo> {
    return this.mutateStopped(ref, 'add a disk', async (entry, config) => {
      if (!Number.isSafeInteger(bytes) || bytes < LIMITS.diskMinBytes) throw new VmdeskError(ErrorCode.invalid, 'disk size must be at least 1 MiB (give a unit: 512M, 8G)');
      if (bytes > LIMITS.diskMaxBytes) throw new VmdeskError(ErrorCode.invalid, `disk size is larger than the limit of ${LIMITS.diskMaxBytes / 1024 ** 4} TiB`);
      if (config.disks.length >= LIMITS.disksMax) throw new VmdeskError(ErrorCode.invalid, `a VM has at most ${LIMITS.disksMax} disks`);
      const id = nextDiskId(config.disks, 'disk');
      await fs.mkdir(path.join(entry.dir, 'disks'), { recursive: true });
      const rel = `disks/${id}.qcow2`;
      await disks.createQcow2(path.join(entry.dir, rel), bytes);
      return { ...config, disks: [...config.disks, { id, path: rel, format: 'qcow2', owned: true, readOnly: false }] };
    });
  }

  async diskAttach(ref: string, file: string, opts: { format?: Disk['format']; bus?: Disk['bus']; readOnly?: boolean } = {}): Promise<VmInfo> {
    const abs = path.resolve(file);
    const { format } = await admitAttached(abs, opts.format);
    return this.mutateStopped(ref, 'attach a disk', async (entry, config) => {
      if (config.disks.some((d) => diskPath(entry.dir, d) === abs)) throw new VmdeskError(ErrorCode.exists, `"${abs}" is already attached`);
      const user = (await this.runningUsage(entry.id)).disks.get(abs);
      if (user) throw new VmdeskError(ErrorCode.busy, `disk "${abs}" is in use by running VM "${user}"`);
      const id = nextDiskId(config.disks, 'ext');
      if (config.disks.length >= LIMITS.disksMax) throw new VmdeskError(ErrorCode.invalid, `a VM has at most ${LIMITS.disksMax} disks`);
      return { ...config, disks: [...config.disks, { id, path: abs, format, owned: false, readOnly: opts.readOnly ?? false, ...(opts.bus ? { bus: opts.bus } : {}) }] };
    });
  }

  async diskResize(ref: string, diskId: string, bytes: number): Promise<VmInfo> {
    return this.mutateStopped(ref, 'resize a disk', async (entry, config) => {
      const d = config.disks.find((x) => x.id === diskId);
      if (!d) throw new VmdeskError(ErrorCode.notFound, `no disk "${diskId}" (disks: ${config.disks.map((x) => x.id).join(', ') || 'none'})`);
      await disks.resize(diskPath(entry.dir, d), d.format, bytes);
      return config;
    });
  }

  private async mutateStopped(ref: string, what: string, fn: (entry: BundleEntry & { config: VmConfig }, config: VmConfig) => Promise<VmConfig>): Promise<VmInfo> {
    const entry = await this.resolveUsable(ref);
    return this.library.withVmLock(entry.id, entry.config.name, async () => {
      const fresh = await this.resolveUsable(entry.id);
      const info = await this.infoOf(fresh);
      if (RUNNING_STATES.includes(info.state)) throw new VmdeskError(ErrorCode.state, `cannot ${what} while "${fresh.config.name}" is ${info.state}`);
      const next = await fn(fresh, fresh.config);
      await this.library.saveConfig(fresh.id, next);
      const out = await this.get(fresh.id);
      this.emitEvent({ type: 'vm-updated', id: out.id, info: out });
      return out;
    });
  }

  // ---- lifecycle -------------------------------------------------------------------------------------

  async start(ref: string, opts: { paused?: boolean } = {}): Promise<VmInfo> {
    const entry = await this.resolveUsable(ref);
    const info = await this.library.withVmLock(entry.id, entry.config.name, async () => {
      const fresh = await this.resolveUsable(entry.id);
      const cur = await this.infoOf(fresh);
      if (RUNNING_STATES.includes(cur.state)) throw new VmdeskError(ErrorCode.state, `"${fresh.config.name}" is already ${cur.state}`);
      const usage = await this.runningUsage(fresh.id);
      const warnings = checkResources(fresh.config, hostCapacity(), usage);
      for (const d of fresh.config.disks) {
        const p = diskPath(fresh.dir, d);
        const user = usage.disks.get(p);
        if (user) throw new VmdeskError(ErrorCode.busy, `disk "${p}" is in use by running VM "${user}"`);
        await checkReadableFile(p, `disk ${d.id}`);
        await disks.checkInUse(p, d.format);
      }
      if (fresh.config.cdrom) await checkReadableFile(fresh.config.cdrom, 'ISO');
      if (fresh.config.directKernel) {
        await checkReadableFile(fresh.config.directKernel.kernel, 'kernel');
        if (fresh.config.directKernel.initrd) await checkReadableFile(fresh.config.directKernel.initrd, 'initrd');
      }
      const engine = await this.engine(fresh.config.engine);
      this.library.ensureRuntimeDir(fresh.id);
      const { handle, accel, warnings: engineWarnings } = await engine.start(this.ctx(fresh), opts);
      this.track(fresh.id, handle);
      const out = await this.infoOf(fresh);
      out.accel = accel;
      out.warnings = [...warnings, ...(engineWarnings ?? [])];
      if (accel.requested !== accel.used || accel.used === 'tcg') out.warnings.push(`accelerator: ${accel.used} (${accel.reason})`);
      return out;
    });
    this.lastStates.set(info.id, info.state);
    this.emitEvent({ type: 'vm-state', id: info.id, state: info.state, info });
    return info;
  }

  private async runningHandle(ref: string): Promise<{ entry: BundleEntry & { config: VmConfig }; handle: VmHandle }> {
    const entry = await this.resolveUsable(ref);
    const handle = await this.handleFor(entry);
    if (!handle) throw new VmdeskError(ErrorCode.state, `"${entry.config.name}" is not running`);
    return { entry, handle };
  }

  /** Graceful stop: ACPI power button, then force off after timeoutMs. */
  async stop(ref: string, opts: { timeoutMs?: number } = {}): Promise<VmInfo> {
    const { entry, handle } = await this.runningHandle(ref);
    await handle.shutdown(opts.timeoutMs ?? 60_000);
    return this.afterExit(entry.id);
  }

  async kill(ref: string): Promise<VmInfo> {
    const { entry, handle } = await this.runningHandle(ref);
    await handle.kill();
    return this.afterExit(entry.id);
  }

  private async afterExit(id: string): Promise<VmInfo> {
    const h = this.handles.get(id);
    if (h) {
      h.close();
      this.handles.delete(id);
    }
    await this.refresh(id);
    return this.get(id);
  }

  async pause(ref: string): Promise<VmInfo> {
    const { entry, handle } = await this.runningHandle(ref);
    if ((await handle.state()) === 'paused') throw new VmdeskError(ErrorCode.state, `"${entry.config.name}" is already paused`);
    await handle.pause();
    await this.refresh(entry.id);
    return this.get(entry.id);
  }

  async resume(ref: string): Promise<VmInfo> {
    const { entry, handle } = await this.runningHandle(ref);
    if ((await handle.state()) !== 'paused') throw new VmdeskError(ErrorCode.state, `"${entry.config.name}" is not paused`);
    await handle.resume();
    await this.refresh(entry.id);
    return this.get(entry.id);
  }

  async reset(ref: string): Promise<VmInfo> {
    const { entry, handle } = await this.runningHandle(ref);
    await handle.reset();
    return this.get(entry.id);
  }

  async openSerial(ref: string): Promise<Duplex> {
    const { handle } = await this.runningHandle(ref);
    return handle.openSerial();
  }

  /** What the guest already printed on its serial console (kept in the bundle across app restarts). */
  async serialLog(ref: string, maxBytes = 256 * 1024): Promise<Buffer> {
    const entry = await this.resolve(ref);
    const file = path.join(entry.dir, 'logs', 'serial.log');
    try {
      const fh = await fs.open(file, 'r');
      try {
        const { size } = await fh.stat();
        const len = Math.min(size, maxBytes);
        const buf = Buffer.alloc(len);
        await fh.read(buf, 0, len, size - len);
        return buf;
      } finally {
        await fh.close();
      }
    } catch {
      return Buffer.alloc(0);
    }
  }

  async vncSocket(ref: string): Promise<string> {
    const { entry, handle } = await this.runningHandle(ref);
    if (!handle.vncSocket) throw new VmdeskError(ErrorCode.state, `"${entry.config.name}" has no graphical display (engine ${entry.config.engine})`);
    return handle.vncSocket;
  }

  /** A PNG of the guest's screen (QMP screendump), for previews and snapshot thumbnails. */
  async screenshot(ref: string): Promise<Buffer> {
    const { entry, handle } = await this.runningHandle(ref);
    if (entry.config.engine !== 'qemu') throw new VmdeskError(ErrorCode.state, `"${entry.config.name}" has no graphical display`);
    const file = path.join(this.library.ensureRuntimeDir(entry.id), `screen-${process.pid}-${Date.now()}.png`);
    await handle.command('screendump', { filename: file, format: 'png' }, 10_000);
    try {
      return await fs.readFile(file);
    } finally {
      await fs.rm(file, { force: true });
    }
  }

  /** Raw engine command for features built on the core (snapshots). */
  async command(ref: string, execute: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<unknown> {
    const { handle } = await this.runningHandle(ref);
    return handle.command(execute, args, timeoutMs);
  }
}

/**
 * Accel "auto" asks the native self-test (a tiny guest timed on /dev/kvm) whether KVM is really
 * hardware-backed, where the addon is built; without it the QEMU engine's own checks decide alone.
 */
async function installKvmSelfTest(): Promise<void> {
  try {
    const native = await import('../engines/microvm/native.js');
    if (!native.nativeAvailable()) return;
    const { setKvmProbe } = await import('../engines/qemu/accel.js');
    setKvmProbe(() => native.kvmReport());
  } catch {
    /* the addon is optional */
  }
}

export function diskPath(bundleDir: string, d: Disk): string {
  return path.isAbsolute(d.path) ? d.path : path.join(bundleDir, d.path);
}

function nextDiskId(existing: Disk[], prefix: string): string {
  for (let i = 0; ; i++) if (!existing.some((d) => d.id === `${prefix}${i}`)) return `${prefix}${i}`;
}

function checkForwards(network: { mode: string; forwards: { protocol: string; hostPort: number }[] }[]): void {
  const seen = new Set<string>();
  for (const n of network) {
    if (n.mode === 'none' && n.forwards.length) throw new VmdeskError(ErrorCode.invalid, 'port forwards need a NAT network adapter');
    for (const f of n.forwards) {
      const key = `${f.protocol}:${f.hostPort}`;
      if (seen.has(key)) throw new VmdeskError(ErrorCode.invalid, `host port ${f.protocol}:${f.hostPort} is forwarded twice`);
      seen.add(key);
    }
  }
}

/** An image the user attaches in place: through the gate, with the format they (or its name) state. */
function admitAttached(file: string, stated?: Disk['format']) {
  return admitImage({ path: file }, { what: `disk image ${file}`, stated: stated ?? formatFromName(file) });
}
