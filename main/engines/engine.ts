// What an engine is to the core: one module per kind (QEMU, the built-in micro-VMM, a test's fake) listed
// in registry.ts. The core asks capabilities and calls these interfaces; it never branches on an engine's
// name, and nothing here imports the core.
import type { AccelChoice, AcceleratorReport, DiskBus, DiskFormat, ExitRecord, NicModel, PortForward, ResourceLimits, UsbPassthrough, VmConfig, VmState } from '../api/schema.js';

export interface EngineContext {
  config: VmConfig;
  /** Absolute path of the VM bundle (vm.json, disks, logs/). */
  bundleDir: string;
  /** Per-VM runtime directory (0700, short enough for unix socket paths): sockets and runtime records. */
  runtimeDir: string;
  /** The host the guest lives on, for engines with `hosted` (config.host resolved through hosts.json). */
  host?: HostTarget;
}

/** Progress of a long operation, 0..1 when known. */
export type Progress = (phase: string, fraction?: number) => void;

export interface EngineCapabilities {
  /** A graphical console (VNC over a unix socket) and PNG screenshots. */
  display: boolean;
  /**
   * Snapshots of a running guest: 'full' keeps memory, devices and disks together (QEMU's internal
   * snapshots); 'memory' keeps memory and device state only, the disks are not captured; false: none.
   */
  liveSnapshots: 'full' | 'memory' | false;
  /** Snapshots of a stopped VM's disks. */
  offlineSnapshots: boolean;
  /** Disk formats the engine opens in place. */
  diskFormats: readonly DiskFormat[];
  /** The format of disks the engine makes (new disks, clones, imports). */
  nativeDiskFormat: DiskFormat;
  /** Linked clones: overlays reading through a shared read-only base. */
  linkedClones: boolean;
  /** Boots only a kernel given directly (no firmware, no CD-ROM). */
  directKernelOnly: boolean;
  /** The guest sees an ACPI power button (else a graceful stop is Ctrl-Alt-Del). */
  acpi: boolean;
  diskBuses: readonly DiskBus[];
  nicModels: readonly NicModel[];
  /** Network modes the engine offers ('none' always). */
  networkModes: readonly ('nat' | 'nat-host' | 'internal' | 'none')[];
  /**
   * Limits the engine can apply (absent: none). `cpuCap` and `cpuPinning` are applied by the core to the
   * guest's one host process (cgroups, sched_setaffinity); the others by the runtime. `live` lists those a
   * running guest takes without a restart.
   */
  limits?: { cpuCap: boolean; cpuPinning: boolean; memoryTarget: boolean; diskIo: boolean; live: readonly LimitKind[] };
  /** Network changes a running guest takes: forwards added or removed, a link set up or down. */
  liveNetwork?: { forwards: boolean; link: boolean };
  /** The runtime reports usage (VmRuntime.usage). */
  stats?: boolean;
  /** Guest integration (issue 12); absent: none of it. */
  guest?: GuestCapabilities;
  /** Windows 11 and desktop devices (issue 12, part B); absent: none of them. */
  devices?: DeviceCapabilities;
  /** Save state: VmRuntime.saveState and EngineModule.savedState (the next start resumes). */
  saveState?: boolean;
}

/** Devices an engine can give a guest beyond disks and network cards. */
export interface DeviceCapabilities {
  /** TPM 2.0 with its state in the bundle (included in snapshots and exports). */
  tpm: boolean;
  /** UEFI Secure Boot with Microsoft's keys. */
  secureBoot: boolean;
  /** Host USB devices passed through; `hotplug`: also into a running guest. */
  usbPassthrough: boolean;
  usbHotplug: boolean;
  /** A sound card playing through the host's audio. */
  audio: boolean;
  /** A second CD drive for a driver disc. */
  driverDisc: boolean;
}

/** A state saved by VmRuntime.saveState, as the engine finds it in the bundle. */
export interface SavedStateInfo {
  at: string;
  bytes: number;
}

/** The saved state of a VM: the engine owns the files (under the bundle's saved-state/ folder). */
export interface SavedStateProvider {
  /** What is saved, or undefined when nothing (complete) is; cheap, no process started. */
  describe(ctx: EngineContext): SavedStateInfo | undefined;
  /** Deletes the saved state (and what an interrupted save left); the next start boots afresh. */
  discard(ctx: EngineContext): Promise<void>;
}

/** A bundle's folder for a saved state (vmdesk suspend), whatever the engine. */
export const SAVED_STATE_DIR = 'saved-state';

/** What an engine offers to make the guest part of the desktop. */
export interface GuestCapabilities {
  /** Text clipboard both ways through a vdagent channel, reached with the VNC clipboard extension. */
  clipboard: boolean;
  /** A display adapter whose guest driver follows the console's size (virtio-vga). */
  resize: boolean;
  /** Shared folder drivers the engine has, preferred first (empty: no shared folders). */
  shares: readonly ('virtiofs' | '9p')[];
  /** A QEMU guest agent channel (addresses, host name, fs-freeze around live snapshots). */
  agent: boolean;
}

/** One network interface as the guest agent reports it (untrusted: checked and bounded by the engine). */
export interface GuestInterface {
  name: string;
  mac?: string;
  addresses: { address: string; prefix: number; family: 'ipv4' | 'ipv6' }[];
}

/** What the guest agent answered, or why nothing was asked or answered. */
export type GuestAgentAnswer =
  | { ok: true; hostname?: string; interfaces: GuestInterface[]; os?: string }
  | { ok: false; reason: string };

/** A shared folder as a running guest has it: the driver chosen at start. */
export interface ActiveShare {
  tag: string;
  hostPath: string;
  readOnly: boolean;
  driver: 'virtiofs' | '9p';
}

/** The limits of ResourceLimits by kind, as capabilities name them. */
export type LimitKind = 'cpuCap' | 'cpuPinning' | 'memoryTarget' | 'diskIo';

/** What the engine itself knows of a running guest's usage (process CPU and memory come from /proc). */
export interface EngineUsage {
  /** Memory the guest has now (a balloon's actual size); undefined when unknown. */
  memoryGuestBytes?: number;
  disk?: { readBytes: number; writeBytes: number; readOps: number; writeOps: number };
  notes: string[];
}

/** A network adapter whose frames the core switches (internal networks): a unix stream socket speaking QEMU's framing (4-byte big-endian length, then the frame). */
export interface NetPort {
  adapter: number;
  network: string;
  socket: string;
}

export interface StartOptions {
  /** Leave the vCPUs stopped once the guest is up (snapshot restore loads into it, then resumes). */
  paused?: boolean;
}

/** The guest's serial console as one byte stream; the core fans it out to clients. */
export interface SerialPort {
  /** False when the guest is not reading and input is queued: wait for onceDrain before writing more. */
  write(data: Buffer): boolean;
  onceDrain(fn: () => void): void;
  /** Subscribes to output; returns the unsubscribe function. */
  onData(fn: (chunk: Buffer) => void): () => void;
  /** The log file the engine keeps (appended across runs): replay for clients that attach late. */
  readonly logFile: string;
  /** Where this run's output begins in logFile (earlier runs' output is not replayed). */
  readonly logStart: number;
}

/**
 * A running guest as the daemon holds it: QEMU or a micro-VM process, a child of the daemon (or adopted
 * from a previous daemon). No Node process sits in between.
 */
export interface VmRuntime {
  readonly pid: number;
  readonly accel: AccelChoice;
  readonly startedAt: string;
  /** running | paused | stopping (until exited settles); tracked from the engine's own events. */
  readonly state: VmState;
  /** Found running by this daemon rather than started by it (no exit status: classified from events). */
  readonly adopted: boolean;
  /** What the user should know about how it runs (e.g. NAT without host isolation). */
  readonly warnings: readonly string[];
  onState(fn: (state: VmState) => void): () => void;
  /** Settles once, when the guest is gone, with the record also written to the bundle's logs/last-exit.json. */
  readonly exited: Promise<ExitRecord>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  reset(): Promise<void>;
  /** Graceful power-off (ACPI or Ctrl-Alt-Del), forced after timeoutMs. */
  shutdown(timeoutMs: number): Promise<ExitRecord>;
  kill(): Promise<ExitRecord>;
  readonly serial: SerialPort;
  /** The VNC unix socket, when capabilities.display. */
  readonly vncSocket?: string;
  /** A PNG of the screen, when capabilities.display. */
  screenshot?(): Promise<Buffer>;
  /**
   * Puts a disc image (raw, read-only) in the running guest's CD drive, or empties the drive (null). Absent
   * where the engine cannot; EINVAL when this guest started without a CD drive.
   */
  changeMedium?(file: string | null): Promise<void>;
  /** Stops watching (the daemon is going away); the guest keeps running and can be adopted again. */
  detach(): void;
  /** Internal-network adapters the core connects to its switches (capabilities.networkModes has 'internal'). */
  readonly netPorts?: readonly NetPort[];
  /** Usage counters (capabilities.stats). */
  usage?(): Promise<EngineUsage>;
  /**
   * Replaces the port forwards of a nat/nat-host adapter while the guest runs (liveNetwork.forwards); resolves
   * with warnings about the forwards now in force (what the network backend cannot do with them), if any.
   */
  setForwards?(adapter: number, forwards: PortForward[]): Promise<string[] | void>;
  /** Sets a network card's link up or down (liveNetwork.link). */
  setLink?(adapter: number, up: boolean): Promise<void>;
  /** Adapters whose link is down now. */
  linksDown?(): number[];
  /** Applies the engine's own limits of these kinds (memory target, disk I/O) to the running guest (limits.live). */
  applyLimits?(limits: ResourceLimits, kinds: readonly LimitKind[]): Promise<void>;
  /** Asks the guest agent for the host name and addresses (capabilities.guest.agent, config.guestAgent). */
  guestAgent?(): Promise<GuestAgentAnswer>;
  /** Shared folders as this run has them (the driver each got at start). */
  activeShares?(): ActiveShare[];
  /**
   * Saves memory and device state into the bundle and ends the guest (capabilities.saveState); resolves with
   * the exit record (reason 'saved'). On failure the guest runs on as it was.
   */
  saveState?(progress: Progress): Promise<ExitRecord>;
  /** Plugs a host USB device into the running guest, or takes it out (capabilities.devices.usbHotplug). */
  usbAttach?(device: UsbPassthrough): Promise<void>;
  usbDetach?(device: UsbPassthrough): Promise<void>;
}

/** A file that carries a VM's snapshots: a writable disk, or the UEFI variable store. */
export interface SnapshotTarget {
  /** Disk id, or "uefi-vars". */
  id: string;
  file: string;
  format: DiskFormat;
}

/** One snapshot as the engine names it: VMDesk's tag, and a state file for 'memory' snapshots. */
export interface SnapshotRef {
  id: string;
  tag: string;
  /** Absolute path of the state file ('memory' snapshots). */
  stateFile: string;
}

/** What the engine's storage holds for one tag: per target id, the saved RAM size and the date. */
export type StoredSnapshots = Map<string, Map<string, { vmStateBytes: number; dateSec: number }>>;

/**
 * How an engine keeps snapshots. The core's snapshot modules own the tree, names, policy and
 * reconciliation; this owns the bytes.
 */
export interface SnapshotProvider {
  /** The files that would hold snapshots, and the disks that cannot (with the fix). */
  targets(ctx: EngineContext): { targets: SnapshotTarget[]; unsupported: { diskId: string; format: string; hint: string }[] };
  /** Saves the running guest; resolves with the saved RAM size and the targets that hold it. */
  saveLive(rt: VmRuntime, ctx: EngineContext, snap: SnapshotRef, progress: Progress): Promise<{ vmStateBytes: number; targets: string[] }>;
  /** Replaces the running (or paused) guest's state with the snapshot's; the guest ends paused. */
  loadLive(rt: VmRuntime, ctx: EngineContext, snap: SnapshotRef, progress: Progress): Promise<void>;
  /** Removes a snapshot while the guest runs. */
  deleteLive(rt: VmRuntime, ctx: EngineContext, snap: SnapshotRef): Promise<void>;
  /** Stopped VM: snapshot every target (all or nothing). */
  saveOffline(ctx: EngineContext, snap: SnapshotRef, progress: Progress): Promise<{ targets: string[] }>;
  /** Stopped VM: revert every target to the snapshot. */
  applyOffline(ctx: EngineContext, snap: SnapshotRef, progress: Progress): Promise<void>;
  deleteOffline(ctx: EngineContext, snap: SnapshotRef): Promise<void>;
  /** What the storage holds, read without disturbing a running guest when `live`. */
  stored(ctx: EngineContext, live: boolean): Promise<StoredSnapshots>;
  /**
   * Optional: a cheap token that changes whenever what `stored` reads may have changed (file identities, sizes,
   * change times), or null when that cannot be told now (a file changed too recently to trust its times). Taken
   * before `stored`, it lets the core reuse a reconciled listing (core/snapshots/listing-cache.ts).
   */
  stamp?(ctx: EngineContext): Promise<string | null>;
  /** Work the engine itself may still be doing, or left behind by a daemon that died (job names). */
  busy(rt: VmRuntime): Promise<string[]>;
  /** Clears what a dead daemon left in the engine (concluded jobs). */
  recover(rt: VmRuntime): Promise<void>;
}

/** Disk files of the engine's formats. */
export interface DiskProvider {
  /** A new empty disk of the native format; fails rather than overwrite. */
  create(file: string, bytes: number): Promise<void>;
  /** Grows a disk (shrinking is refused). */
  resize(file: string, format: DiskFormat, bytes: number): Promise<void>;
  /** Virtual and allocated size of one of the VM's own disks. */
  info(file: string, format: DiskFormat): Promise<{ virtualSize: number; actualSize: number }>;
  /** EBUSY when another process (a running guest) holds the file. */
  checkFree(file: string, format: DiskFormat): Promise<void>;
}

export interface EngineModule {
  readonly kind: string;
  /** One line for `vmdesk host` and the GUI's engine picker. */
  readonly description: string;
  readonly capabilities: EngineCapabilities;
  /** Checks a configuration against what the engine can run (EINVAL with the reason); no I/O. */
  validate(config: VmConfig): void;
  /** Host checks and the accelerator choice, without side effects (EHOST when the host lacks something). */
  check(ctx: EngineContext): Promise<{ accel: AccelChoice; warnings: string[] }>;
  /** Launches the guest as a child of the calling process that outlives it; resolves once it runs. */
  start(ctx: EngineContext, opts?: StartOptions): Promise<VmRuntime>;
  /** Takes over a guest left running by a previous daemon, from its runtime record; null when none. */
  adopt(ctx: EngineContext): Promise<VmRuntime | null>;
  /** The exit of a guest that ended while no daemon watched it (from its runtime record), once. */
  reapOrphan?(ctx: EngineContext): Promise<ExitRecord | undefined>;
  readonly snapshots: SnapshotProvider;
  readonly disks: DiskProvider;
  /** A state saved by VmRuntime.saveState (capabilities.saveState); start resumes from it. */
  readonly savedState?: SavedStateProvider;
  /** Guests that live on another host (libvirt): their disks and definition are there, not in the bundle. */
  readonly hosted?: HostedEngine;
  /** What the engine finds on this host, for `vmdesk host` and the GUI (probes only, no side effects). */
  hostReport?(): Promise<EngineHostReport>;
}

/** An engine's view of this host; the core merges the views of all engines into HostInfo. */
export interface EngineHostReport {
  /** The QEMU it runs, where it runs QEMU. */
  qemu?: { found: boolean; path?: string; version?: string; reason?: string };
  /** Each accelerator as this engine can use it (two engines' views of one accelerator are merged). */
  accelerators?: Partial<Record<'kvm' | 'hvf' | 'tcg', AcceleratorReport>>;
  /** What "auto" picks for its guests. */
  defaultAccel?: AccelChoice;
  /** What is worth knowing about its helpers on this host (missing, or limited), one sentence each. */
  notes?: string[];
}

/** A host added with `vmdesk hosts add`, as an engine reaches it. */
export interface HostTarget {
  name: string;
  uri: string;
  /** The storage pool on that host holding VMDesk's volumes (disks, boot files). */
  pool: string;
}

/** A guest defined on a host, as the host lists it. */
export interface HostGuest {
  name: string;
  uuid: string;
  state: string;
}

/**
 * What an engine whose guests live on a host adds to EngineModule. The VM's own disks ("owned", with a
 * relative path naming them) are volumes on the host, not files in the bundle: the core never opens them and
 * hands all work on them to these methods.
 */
export interface HostedEngine {
  /** Reaches the host within a bounded time: its hypervisor's version, or EHOST/ETIMEDOUT saying why not. */
  probe(host: HostTarget): Promise<{ version: string; warnings: string[] }>;
  /** Every guest defined on the host. */
  guests(host: HostTarget): Promise<HostGuest[]>;
  /**
   * Makes what a new VM needs on its host: empty owned disks of these sizes (`sizes` by disk id), owned disks
   * filled from local image files (`sources`, already through the image gate), and the guest's definition.
   * On failure it removes what it made.
   */
  provision(ctx: EngineContext, opts: { sizes?: Record<string, number>; sources?: Record<string, { file: string; format: DiskFormat }> }, progress: Progress): Promise<void>;
  /** Removes the guest's definition, its snapshots' metadata and its owned disks from its host. */
  remove(ctx: EngineContext): Promise<void>;
  /** Copies an owned disk from the host into a local file (qcow2), with progress. */
  fetchDisk(ctx: EngineContext, diskId: string, file: string, progress: Progress): Promise<void>;
  /**
   * Moves the guest to another host of this engine with its disks: live while it runs (when asked), else
   * copied while stopped. Resolves once `to` holds it and `from` does not.
   */
  migrate(from: EngineContext, to: EngineContext, opts: { live: boolean }, progress: Progress): Promise<void>;
}
