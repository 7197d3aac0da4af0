// The VM model and its validation rules: pure zod schemas shared by core, CLI, server and renderer.
import { z } from 'zod';
import { DISK_BUSES, DISK_FORMATS, NIC_MODELS } from './values.js';
import { hostNameProblem } from './host-uri.js';

export const VM_SCHEMA_VERSION = 1;

/** Hard limits past which a value is an error, whatever the host has. */
export const LIMITS = {
  nameMax: 64,
  cpusMax: 256,
  memoryMinMiB: 16,
  memoryMaxMiB: 4 * 1024 * 1024,
  diskMinBytes: 1024 * 1024,
  diskMaxBytes: 64 * 1024 ** 4,
  cmdlineMax: 2048,
  forwardsMax: 32,
  disksMax: 8,
} as const;

// Names become directory names and appear in QEMU arguments: a conservative character set rules out
// path tricks (../x, a/b), commas (QEMU's option separator) and control characters in one place.
export const VmName = z
  .string()
  .min(1, 'name must not be empty')
  .max(LIMITS.nameMax, `name must be at most ${LIMITS.nameMax} characters`)
  .regex(/^[A-Za-z0-9][A-Za-z0-9 ._+-]*$/, 'name may contain letters, digits, spaces and . _ + - and must start with a letter or digit')
  .refine((s) => s !== '.' && s !== '..' && !s.includes('..'), 'name must not contain ".."')
  .refine((s) => s.trim() === s, 'name must not start or end with a space');

/** A libvirt host's name as added with `vmdesk hosts add` ("local" is the library itself). */
export const HostName = z.string().superRefine((s, ctx) => {
  const why = hostNameProblem(s);
  if (why) ctx.addIssue({ code: 'custom', message: why });
});

/** A host path given by the user: absolute, no control characters (newlines would break logs and argv). */
export const HostPath = z
  .string()
  .min(1, 'path must not be empty')
  .max(4096)
  .refine((p) => p.startsWith('/'), 'path must be absolute')
  .refine((p) => !/[\u0000-\u001f\u007f]/.test(p), 'path must not contain newlines or control characters');

export const OsType = z.enum(['linux', 'windows', 'bsd', 'other']);
/** An engine's kind as listed in main/engines/registry.ts ("qemu", "microvm", or one a test registers). */
export const EngineKind = z.string().regex(/^[a-z][a-z0-9-]{1,31}$/, 'engine must be a short lowercase name such as qemu or microvm');
export const Accel = z.enum(['auto', 'kvm', 'hvf', 'tcg']);
export const Firmware = z.enum(['bios', 'uefi']);
export const DiskFormat = z.enum(DISK_FORMATS);
export type DiskFormat = z.infer<typeof DiskFormat>;
export const DiskBus = z.enum(DISK_BUSES);
export type DiskBus = z.infer<typeof DiskBus>;
export const NicModel = z.enum(NIC_MODELS);
export type NicModel = z.infer<typeof NicModel>;

export const Disk = z
  .object({
    id: z.string().regex(/^[a-z0-9-]{1,40}$/),
    /** Relative to the bundle for owned disks, absolute for attached ones. */
    path: z.string().min(1).refine((p) => !/[\u0000-\u001f\u007f]/.test(p), 'path must not contain control characters'),
    format: DiskFormat,
    /** True when the disk file lives in the bundle and is deleted with the VM. */
    owned: z.boolean(),
    readOnly: z.boolean().default(false),
    /** Absent means virtio. */
    bus: DiskBus.optional(),
    /**
     * Linked clones: the read-only qcow2 base (absolute, made by VMDesk in the source VM's bundle) that this
     * overlay reads through. QEMU is given it explicitly; no other backing file is ever opened.
     */
    base: z.string().min(1).refine((p) => p.startsWith('/') && !/[\u0000-\u001f\u007f]/.test(p), 'base must be an absolute path').optional(),
  })
  // A disk that is the VM's own lives inside its bundle: a relative path without "..". Anything else would let
  // a hand-edited or imported vm.json make VMDesk move or delete a host file.
  .refine((d) => !d.owned || (!d.path.startsWith('/') && !d.path.split('/').includes('..')), { message: 'an owned disk must have a relative path inside the VM bundle', path: ['path'] });
export type Disk = z.infer<typeof Disk>;

export const PortForward = z.object({
  protocol: z.enum(['tcp', 'udp']),
  hostPort: z.number().int().min(1).max(65535),
  guestPort: z.number().int().min(1).max(65535),
});
export type PortForward = z.infer<typeof PortForward>;

/** An internal network's name (internal:NAME): VMs naming the same one share a private layer-2 segment. */
export const NetworkName = z
  .string()
  .min(1, 'an internal network needs a name (internal:NAME)')
  .max(32, 'an internal network name has at most 32 characters')
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'an internal network name may contain letters, digits and . _ - and must start with a letter or digit');

export const NetAdapter = z
  .object({
    /**
     * nat: internet through the host; the host's own services and other VMs are not reachable from the guest.
     * nat-host: as nat, and the host's loopback services are reachable at 10.0.2.2 (VirtualBox's NAT).
     * internal: a private layer-2 segment shared only by the VMs that name the same `network`; no host, no internet.
     * none: no network card.
     */
    mode: z.enum(['nat', 'nat-host', 'internal', 'none']),
    /** The internal network's name (mode internal only). */
    network: NetworkName.optional(),
    forwards: z.array(PortForward).max(LIMITS.forwardsMax).default([]),
    /** Fixed per VM (QEMU's 52:54:00 range), given at creation; clones and imports get new ones. */
    mac: z.string().regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/, 'a MAC address looks like 52:54:00:12:34:56 (lower case)').optional(),
    /** Absent means virtio-net. */
    model: NicModel.optional(),
  })
  .refine((n) => (n.mode === 'internal') === (n.network !== undefined), { message: 'an internal adapter names its network (internal:NAME), and only an internal adapter does', path: ['network'] })
  .refine((n) => n.forwards.length === 0 || n.mode === 'nat' || n.mode === 'nat-host', { message: 'port forwards need a nat or nat-host adapter', path: ['forwards'] })
  .refine((n) => !n.mac || (parseInt(n.mac.slice(0, 2), 16) & 1) === 0, { message: 'a MAC address must not be a multicast address (odd first byte)', path: ['mac'] });

/**
 * Limits on what a VM may take from the host. Which of them an engine can apply, and which while the guest
 * runs, is in its capabilities (`limits`).
 */
export const ResourceLimits = z.object({
  /** CPU time cap in percent of each vCPU (VirtualBox's execution cap): 50 with 2 vCPUs is one host CPU. */
  cpuCapPercent: z.number().int().min(1, 'a CPU cap is 1-100 percent').max(100, 'a CPU cap is 1-100 percent').optional(),
  /** Host CPUs the guest may run on (numbers as the host counts them). */
  cpuPinning: z.array(z.number().int().min(0).max(4095)).min(1).max(LIMITS.cpusMax).optional(),
  /** Balloon target: memory the guest is asked to leave to the host (virtio-balloon). */
  memoryTargetMiB: z.number().int().min(LIMITS.memoryMinMiB, `a memory target is at least ${LIMITS.memoryMinMiB} MiB`).max(LIMITS.memoryMaxMiB).optional(),
  /** Disk I/O of all the VM's disks together (one throttle group): operations and bytes per second. */
  diskIops: z.number().int().min(10, 'a disk IOPS limit is at least 10').max(10_000_000).optional(),
  diskBytesPerSec: z.number().int().min(64 * 1024, 'a disk bandwidth limit is at least 64 KiB/s').max(1024 ** 4).optional(),
});
export type ResourceLimits = z.infer<typeof ResourceLimits>;

/** A change of limits: a value sets, null clears, absent keeps. */
export const ResourceLimitsPatch = z
  .object({
    cpuCapPercent: ResourceLimits.shape.cpuCapPercent.unwrap().nullable().optional(),
    cpuPinning: ResourceLimits.shape.cpuPinning.unwrap().nullable().optional(),
    memoryTargetMiB: ResourceLimits.shape.memoryTargetMiB.unwrap().nullable().optional(),
    diskIops: ResourceLimits.shape.diskIops.unwrap().nullable().optional(),
    diskBytesPerSec: ResourceLimits.shape.diskBytesPerSec.unwrap().nullable().optional(),
  })
  .strict();
export type ResourceLimitsPatch = z.infer<typeof ResourceLimitsPatch>;
export type NetAdapter = z.infer<typeof NetAdapter>;

export const DirectKernel = z.object({
  kernel: HostPath,
  initrd: HostPath.optional(),
  cmdline: z.string().max(LIMITS.cmdlineMax).refine((s) => !/[\u0000-\u001f\u007f]/.test(s), 'command line must not contain newlines or control characters').default(''),
});
export type DirectKernel = z.infer<typeof DirectKernel>;

/**
 * Automatic snapshots while the VM runs (VMware's AutoProtect, Parallels' SmartGuard): one every
 * `everyMinutes`, the last `keep` of them kept. The daemon's scheduler takes them; absent means none.
 */
export const SnapshotSchedule = z.object({
  everyMinutes: z.number().int().min(5, 'at most one scheduled snapshot every 5 minutes').max(7 * 24 * 60, 'at least one scheduled snapshot a week'),
  keep: z.number().int().min(1, 'keep at least 1 scheduled snapshot').max(100, 'keep at most 100 scheduled snapshots'),
});
export type SnapshotSchedule = z.infer<typeof SnapshotSchedule>;

/** A label for grouping VMs in the list ("work", "windows 11"): short, no commas or control characters. */
export const Tag = z
  .string()
  .min(1, 'a tag must not be empty')
  .max(32, 'a tag has at most 32 characters')
  .regex(/^[^\u0000-\u001f\u007f,]+$/, 'a tag must not contain commas or control characters')
  .refine((s) => s.trim() === s, 'a tag must not start or end with a space');
export const Tags = z.array(Tag).max(16, 'a VM has at most 16 tags');

/**
 * A shared folder's tag: the name the guest mounts it by (mount -t virtiofs TAG /mnt). virtiofs allows 36
 * bytes; the character set keeps it out of QEMU's option syntax.
 */
export const ShareTag = z
  .string()
  .min(1, 'a share tag must not be empty')
  .max(36, 'a share tag has at most 36 characters')
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'a share tag may contain letters, digits and . _ - and must start with a letter or digit');
export const ShareDriver = z.enum(['virtiofs', '9p']);
export type ShareDriver = z.infer<typeof ShareDriver>;
/** A host folder the guest mounts (issue 12). Host paths are checked and made canonical by the core when added. */
export const SharedFolder = z.object({
  tag: ShareTag,
  hostPath: HostPath,
  /** Enforced on the host (a read-only bind mount for virtiofsd, readonly=on for 9p), not only in the guest. */
  readOnly: z.boolean().default(false),
  /** Absent: virtiofs where virtiofsd can run, else 9p. */
  driver: ShareDriver.optional(),
});
export type SharedFolder = z.infer<typeof SharedFolder>;
export const SHARES_MAX = 8;
/** The graphical adapter: standard VGA, or virtio-vga, whose guest driver follows the console window's size. */
export const DisplayModel = z.enum(['vga', 'virtio']);
export type DisplayModel = z.infer<typeof DisplayModel>;

/** A USB vendor or product id as lsusb prints it: four hexadecimal digits, lower case. */
export const UsbId = z.string().regex(/^[0-9a-f]{4}$/, 'a USB id is four hexadecimal digits, as lsusb prints them (046d:c52b)');
/**
 * A host USB device passed through to the guest (QEMU's usb-host): by vendor:product, which follows the device
 * to any port and waits for it while it is unplugged, or by bus and address, this one device while it stays
 * plugged in (the address changes when it is plugged in again).
 */
export const UsbPassthrough = z
  .object({
    vendorId: UsbId.optional(),
    productId: UsbId.optional(),
    bus: z.number().int().min(1).max(255).optional(),
    addr: z.number().int().min(1).max(127).optional(),
    /** What the user saw when adding it (USB ids database or the device's own strings): a label only. */
    label: z.string().max(128).refine((s) => !/[\u0000-\u001f\u007f]/.test(s), 'a USB label must not contain control characters').optional(),
  })
  .refine((u) => (u.vendorId === undefined) === (u.productId === undefined) && (u.bus === undefined) === (u.addr === undefined) && (u.vendorId === undefined) !== (u.bus === undefined), 'a USB device is given either by vendor:product or by bus and address');
export type UsbPassthrough = z.infer<typeof UsbPassthrough>;
/** The guest's xHCI controller has 8 ports; the tablet takes one, the rest are kept for passthrough. */
export const USB_DEVICES_MAX = 6;
/** Where a sound card's audio goes on the host: auto picks PipeWire, PulseAudio or ALSA, whichever this host and QEMU have; none: a silent card. */
export const AudioBackend = z.enum(['auto', 'pipewire', 'pa', 'alsa', 'none']);
export type AudioBackend = z.infer<typeof AudioBackend>;
/** Ready-made hardware for a kind of guest: windows11 is UEFI + Secure Boot + TPM 2.0, SATA disk, e1000e card, 4 GiB, 64 GiB. */
export const VmPreset = z.enum(['windows11']);
export type VmPreset = z.infer<typeof VmPreset>;

export const VmConfig = z.object({
  schemaVersion: z.literal(VM_SCHEMA_VERSION),
  id: z.string().uuid(),
  name: VmName,
  osType: OsType.default('linux'),
  engine: EngineKind.default('qemu'),
  /** The libvirt host the VM lives on (a name from hosts.json); absent: this machine's library. */
  host: HostName.optional(),
  accel: Accel.default('auto'),
  firmware: Firmware.default('bios'),
  cpus: z.number().int().min(1, 'at least 1 CPU').max(LIMITS.cpusMax),
  memoryMiB: z.number().int().min(LIMITS.memoryMinMiB, `at least ${LIMITS.memoryMinMiB} MiB of memory`).max(LIMITS.memoryMaxMiB),
  disks: z.array(Disk).max(LIMITS.disksMax).default([]),
  cdrom: HostPath.optional(),
  directKernel: DirectKernel.optional(),
  network: z.array(NetAdapter).max(4).default([{ mode: 'nat', forwards: [] }]),
  limits: ResourceLimits.optional(),
  /** A memory balloon device (virtio-balloon): VMs made before VMDesk had one lack it until a target is set while stopped. */
  balloon: z.boolean().optional(),
  /** Scheduled automatic snapshots while running (optional; restore keeps the current schedule). */
  snapshotSchedule: SnapshotSchedule.optional(),
  /** Labels the VM list groups and filters by (optional: VMs made before tags have none). */
  tags: Tags.optional(),
  /** Host folders shared with the guest (virtiofs, or 9p where virtiofsd cannot run). */
  shares: z.array(SharedFolder).max(SHARES_MAX).optional(),
  /** Clipboard shared with the guest's spice-vdagent (qemu-vdagent): off unless turned on (untrusted guests). */
  clipboard: z.boolean().optional(),
  /** A channel for the QEMU guest agent (guest IPs, host name, fs-freeze around live snapshots). */
  guestAgent: z.boolean().optional(),
  /** Absent means vga (VMs made before VMDesk offered virtio-vga). */
  display: DisplayModel.optional(),
  /** TPM 2.0 through swtpm; its state lives in the bundle's tpm/ folder and goes into snapshots and exports. */
  tpm: z.boolean().optional(),
  /** UEFI Secure Boot with Microsoft's keys enrolled in the VM's own variable store (firmware uefi only). */
  secureBoot: z.boolean().optional(),
  /** A USB tablet (absolute pointer, so the console's cursor follows the mouse); absent means on. */
  usbTablet: z.boolean().optional(),
  /** Host USB devices passed through (hot-plugged while the VM runs). */
  usb: z.array(UsbPassthrough).max(USB_DEVICES_MAX, `at most ${USB_DEVICES_MAX} USB devices`).optional(),
  /** A sound card (Intel HDA with a duplex codec) playing through this host backend; absent: no sound card. */
  audio: AudioBackend.optional(),
  /** A driver disc (virtio-win.iso) in a second, read-only CD drive, for installers that lack virtio drivers. */
  virtioDrivers: HostPath.optional(),
  createdAt: z.string().datetime(),
  modifiedAt: z.string().datetime(),
});
export type VmConfig = z.infer<typeof VmConfig>;

export { parseSize } from './values.js';

export const CreateVmRequest = z.object({
  name: VmName,
  osType: OsType.default('linux'),
  engine: EngineKind.default('qemu'),
  /** Create it on this libvirt host (vmdesk hosts add) rather than in the local library; the engine becomes libvirt. */
  host: HostName.optional(),
  accel: Accel.default('auto'),
  firmware: Firmware.default('bios'),
  cpus: z.number().int().min(1, 'at least 1 CPU').max(LIMITS.cpusMax, `at most ${LIMITS.cpusMax} CPUs`).default(1),
  memoryMiB: z.number().int().min(LIMITS.memoryMinMiB, `at least ${LIMITS.memoryMinMiB} MiB`).max(LIMITS.memoryMaxMiB, `at most ${LIMITS.memoryMaxMiB / 1024 ** 2} TiB of memory`).default(512),
  /** New empty qcow2 disk of this many bytes; 0 or absent for none. */
  diskBytes: z
    .number()
    .int()
    .min(0, 'disk size cannot be negative')
    .max(LIMITS.diskMaxBytes, `disk size is larger than the limit of ${LIMITS.diskMaxBytes / 1024 ** 4} TiB`)
    .refine((n) => n === 0 || n >= LIMITS.diskMinBytes, 'disk size must be at least 1 MiB (give a unit: 512M, 8G)')
    .optional(),
  /**
   * Existing images to attach in place. The format is the one stated, else the one the file's name states
   * (.qcow2, .vhd…), else what VMDesk reads in its header; a contradiction is refused, never guessed.
   */
  attachDisks: z
    .array(z.union([HostPath, z.object({ path: HostPath, format: DiskFormat.optional(), bus: DiskBus.optional(), readOnly: z.boolean().optional() }).strict()]))
    .max(LIMITS.disksMax)
    .default([]),
  iso: HostPath.optional(),
  directKernel: DirectKernel.optional(),
  /** Absent: the engine's default (NAT where it has a network, none where it has not). */
  network: z.array(NetAdapter).max(4).optional(),
  limits: ResourceLimits.optional(),
  tags: Tags.optional(),
  /** Absent: off. */
  clipboard: z.boolean().optional(),
  /** Absent: on where the engine has a guest agent channel. */
  guestAgent: z.boolean().optional(),
  /** Absent: virtio for Linux guests where the engine can resize the display, else vga. */
  display: DisplayModel.optional(),
  /** Hardware for a kind of guest; fields given explicitly win over the preset's. */
  preset: VmPreset.optional(),
  tpm: z.boolean().optional(),
  secureBoot: z.boolean().optional(),
  usbTablet: z.boolean().optional(),
  audio: AudioBackend.optional(),
  virtioDrivers: HostPath.optional(),
  /** The bus of the new empty disk (diskBytes); absent: virtio. */
  diskBus: DiskBus.optional(),
});
export type CreateVmRequest = z.input<typeof CreateVmRequest>;

/** Settings a user may change after creation. Which may change while running is decided by the core. */
export const VmSettingsPatch = z.object({
  osType: OsType.optional(),
  engine: EngineKind.optional(),
  accel: Accel.optional(),
  firmware: Firmware.optional(),
  cpus: z.number().int().min(1, 'at least 1 CPU').max(LIMITS.cpusMax, `at most ${LIMITS.cpusMax} CPUs`).optional(),
  memoryMiB: z
    .number()
    .int()
    .min(LIMITS.memoryMinMiB, `at least ${LIMITS.memoryMinMiB} MiB`)
    .max(LIMITS.memoryMaxMiB, `at most ${LIMITS.memoryMaxMiB / 1024 ** 2} TiB of memory`)
    .optional(),
  cdrom: HostPath.nullable().optional(),
  directKernel: DirectKernel.nullable().optional(),
  network: z.array(NetAdapter).max(4).optional(),
  /** Applied to the running guest where the engine can (see its capabilities), else only while stopped. */
  limits: ResourceLimitsPatch.optional(),
  /** Not hardware: may change while the VM runs. */
  tags: Tags.optional(),
  /** Guest integration devices (issue 12): hardware, changed while the VM is stopped. */
  clipboard: z.boolean().optional(),
  guestAgent: z.boolean().optional(),
  display: DisplayModel.optional(),
  /** Windows 11 devices and the sound card (issue 12): hardware, changed while the VM is stopped. */
  tpm: z.boolean().optional(),
  secureBoot: z.boolean().optional(),
  usbTablet: z.boolean().optional(),
  /** null takes the sound card out. */
  audio: AudioBackend.nullable().optional(),
  /** null takes the driver disc out. */
  virtioDrivers: HostPath.nullable().optional(),
});
export type VmSettingsPatch = z.infer<typeof VmSettingsPatch>;

/** saved: not running, its memory and device state kept on disk; the next start resumes it there. */
export const VmState = z.enum(['stopped', 'starting', 'running', 'paused', 'stopping', 'crashed', 'saved']);
export type VmState = z.infer<typeof VmState>;

export const ExitRecord = z.object({
  at: z.string(),
  /** guest-poweroff | shutdown | killed | crashed | host-signal | start-failed (the guest never ran) | saved (vmdesk suspend) | unknown */
  reason: z.string(),
  detail: z.string().optional(),
  exitCode: z.number().nullable().optional(),
  signal: z.string().nullable().optional(),
  logTail: z.array(z.string()).default([]),
});
export type ExitRecord = z.infer<typeof ExitRecord>;

export const AccelChoice = z.object({
  requested: Accel,
  used: z.enum(['kvm', 'hvf', 'tcg']),
  /** Why this accelerator was chosen, e.g. why KVM was passed over. */
  reason: z.string(),
});
export type AccelChoice = z.infer<typeof AccelChoice>;

/** What list/info report for one VM. A bundle whose vm.json cannot be read appears with `broken`. */
export const VmInfo = z.object({
  id: z.string(),
  name: z.string(),
  bundle: z.string(),
  state: VmState,
  config: VmConfig.nullable(),
  broken: z.string().optional(),
  pid: z.number().optional(),
  accel: AccelChoice.optional(),
  lastExit: ExitRecord.optional(),
  warnings: z.array(z.string()).default([]),
  /** The operation that holds the VM right now (others are refused with EBUSY until it ends). */
  job: z.object({ id: z.string(), op: z.string(), method: z.string(), startedAt: z.string() }).optional(),
  /** What the VM's engine can do, so clients offer only that (console, snapshots, disk formats…). */
  capabilities: z
    .object({
      display: z.boolean(),
      liveSnapshots: z.union([z.literal('full'), z.literal('memory'), z.literal(false)]),
      offlineSnapshots: z.boolean(),
      linkedClones: z.boolean(),
    })
    .optional(),
  /** Adapters (by index) whose link is down in the running guest (vmdesk link); up again at the next start. */
  linkDown: z.array(z.number().int()).optional(),
  /** State saved by vmdesk suspend: when, and its size; the next start resumes from it. */
  savedState: z.object({ at: z.string(), bytes: z.number() }).optional(),
  /** The libvirt host it lives on (vmdesk hosts); absent: the local library. Lists group by it, local first. */
  host: z.string().optional(),
});
export type VmInfo = z.infer<typeof VmInfo>;

/**
 * One sample of what a running VM uses: cumulative counters since its start and rates over the interval
 * since the previous sample. null: not known for this VM (`notes` says why).
 */
export const VmStats = z.object({
  id: z.string(),
  at: z.string(),
  /** Milliseconds since the sample the rates are computed against; null for a first sample. */
  intervalMs: z.number().nullable(),
  /** CPU time of the guest's process over the interval, in percent of one host CPU (200 = two CPUs busy). */
  cpuPercent: z.number().nullable(),
  cpuSeconds: z.number().nullable(),
  memoryRssBytes: z.number().nullable(),
  /** Memory the guest has (the balloon's actual size where the guest's driver reports it). */
  memoryGuestBytes: z.number().nullable(),
  memoryConfiguredBytes: z.number(),
  diskReadBytes: z.number().nullable(),
  diskWriteBytes: z.number().nullable(),
  diskReadOps: z.number().nullable(),
  diskWriteOps: z.number().nullable(),
  /** Bytes the guest received and sent on the adapters whose traffic VMDesk sees (internal networks). */
  netRxBytes: z.number().nullable(),
  netTxBytes: z.number().nullable(),
  rates: z.object({
    diskReadBytesPerSec: z.number().nullable(),
    diskWriteBytesPerSec: z.number().nullable(),
    diskReadOpsPerSec: z.number().nullable(),
    diskWriteOpsPerSec: z.number().nullable(),
    netRxBytesPerSec: z.number().nullable(),
    netTxBytesPerSec: z.number().nullable(),
  }),
  notes: z.array(z.string()),
});
export type VmStats = z.infer<typeof VmStats>;

/** How this host can limit a guest's CPU: the mechanism VMDesk found, or why there is none. */
export const HostLimitSupport = z.object({
  available: z.boolean(),
  mechanism: z.string().optional(),
  reason: z.string(),
});
export type HostLimitSupport = z.infer<typeof HostLimitSupport>;

export const AcceleratorReport = z.object({
  available: z.boolean(),
  class: z.enum(['hardware', 'slow', 'unusable']).optional(),
  reason: z.string(),
  apiVersion: z.number().optional(),
  selfTest: z.object({ ok: z.boolean(), nanos: z.number().optional(), loopsPerSecond: z.number().optional() }).optional(),
});
export type AcceleratorReport = z.infer<typeof AcceleratorReport>;

export const HostInfo = z.object({
  platform: z.string(),
  arch: z.string(),
  cpus: z.number(),
  memoryMiB: z.number(),
  freeMemoryMiB: z.number(),
  qemu: z.object({ found: z.boolean(), path: z.string().optional(), version: z.string().optional(), reason: z.string().optional() }),
  accelerators: z.object({ kvm: AcceleratorReport, hvf: AcceleratorReport, tcg: AcceleratorReport }),
  defaultAccel: AccelChoice,
  /** What running VMs have committed (configured vCPUs, memory: the balloon target where one is set). */
  committed: z.object({ runningVms: z.number(), cpus: z.number(), memoryMiB: z.number() }).optional(),
  /** Whether CPU caps and pinning can be applied on this host, and how. */
  limits: z.object({ cpuCap: HostLimitSupport, cpuPinning: HostLimitSupport }).optional(),
  /** What the engines found worth knowing about this host's helpers (one sentence each: a missing or limited tool). */
  notes: z.array(z.string()).optional(),
});
export type HostInfo = z.infer<typeof HostInfo>;
