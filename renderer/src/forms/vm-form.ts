// The wizard's and settings dialog's form model: form state ↔ API request, validated with the server's own zod schemas.
import '../zod-config';
import { CreateVmRequest, NetworkName, ShareTag, VmName, VmSettingsPatch, type AudioBackend, type DiskBus, type UsbPassthrough, type NicModel, type ResourceLimitsPatch, type VmInfo, type HostInfo, type NetAdapter } from '../../../main/api/schema';
import { formatCpuList, parseCpuList } from '../../../main/api/values';
import type { RpcParams } from '../../../main/api/rpc';
import { mountCommand } from '../../../main/api/rpc-guest';

/** gallery: the wizard's "From the gallery" (its fields are in forms/gallery-form.ts). */
export type MediaKind = 'none' | 'iso' | 'disk' | 'kernel' | 'gallery';

export interface ForwardRow {
  protocol: 'tcp' | 'udp';
  hostPort: number;
  guestPort: number;
}

export type NetMode = NetAdapter['mode'];

/** One network card as the form edits it (eth0, eth1, … in order). */
export interface AdapterRow {
  mode: NetMode;
  /** The internal network's name (mode internal). */
  network: string;
  model: NicModel;
  /** '' : chosen by VMDesk when saved. */
  mac: string;
  /**
   * Forwards this card had that are not the first nat card's (added with vmdesk forward add --adapter): kept as
   * they are. The first nat/nat-host card's forwards are the form's `forwards`, as --forward gives them.
   */
  otherForwards: ForwardRow[];
  /** Identity for lists that reorder; not sent. */
  key: number;
}

/** Limits as typed: '' means none. Disk bandwidth in MiB/s. */
export interface LimitsForm {
  cpuCapPercent: number | '';
  cpuPinning: string;
  memoryTargetMiB: number | '';
  diskIops: number | '';
  diskMiBPerSec: number | '';
}

/** A shared folder as listed and added in Settings (share.add/remove, not vm.update). */
export interface ShareRow {
  tag: string;
  hostPath: string;
  readOnly: boolean;
  driver?: 'virtiofs' | '9p';
}

export interface VmForm {
  name: string;
  osType: 'linux' | 'windows' | 'bsd' | 'other';
  engine: 'qemu' | 'microvm';
  accel: 'auto' | 'kvm' | 'hvf' | 'tcg';
  firmware: 'bios' | 'uefi';
  cpus: number;
  memoryMiB: number;
  media: MediaKind;
  iso: string;
  diskImage: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  /** Size of a new empty disk in GiB; 0 for none. */
  diskGiB: number;
  /** Network cards, eth0 first; none at all is the same as one card set to "none". */
  adapters: AdapterRow[];
  /** Port forwards of the first nat/nat-host card (as the CLI's --forward). */
  forwards: ForwardRow[];
  limits: LimitsForm;
  /** Guest integration (issue 12). */
  clipboard: boolean;
  guestAgent: boolean;
  /** '' : the engine's choice (new VMs only). */
  display: '' | 'vga' | 'virtio';
  shares: ShareRow[];
  /** Devices (issue 12). */
  tpm: boolean;
  secureBoot: boolean;
  usbTablet: boolean;
  /** '' : no sound card. */
  audio: '' | AudioBackend;
  /** '' : no driver disc. */
  virtioDrivers: string;
  /** The new empty disk's bus (new VMs only). */
  diskBus: DiskBus;
  /** Host USB devices passed through (Settings only: usb.add/remove on save, live while running). */
  usb: UsbPassthrough[];
}

export type FieldErrors = Record<string, string>;

/**
 * Sensible starting hardware per guest OS: Windows 11 wants UEFI, 4 GiB and 64 GiB; a Linux desktop is happy
 * with 2 GiB and 20 GiB. Applied to the fields the user has not touched yet, bounded by the host.
 */
export const OS_PRESETS: Record<VmForm['osType'], { label: string; firmware: VmForm['firmware']; cpus: number; memoryMiB: number; diskGiB: number }> = {
  windows: { label: 'Windows 10 / 11', firmware: 'uefi', cpus: 2, memoryMiB: 4096, diskGiB: 64 },
  linux: { label: 'Linux', firmware: 'bios', cpus: 2, memoryMiB: 2048, diskGiB: 20 },
  bsd: { label: 'BSD', firmware: 'bios', cpus: 1, memoryMiB: 1024, diskGiB: 16 },
  other: { label: 'Other', firmware: 'bios', cpus: 1, memoryMiB: 512, diskGiB: 8 },
};

/** The preset for `os`, bounded by the host (a quarter of its memory at most, its CPUs). */
export function presetFor(os: VmForm['osType'], host?: Pick<HostInfo, 'cpus' | 'memoryMiB'> | null): { firmware: VmForm['firmware']; cpus: number; memoryMiB: number; diskGiB: number } {
  const p = OS_PRESETS[os];
  const memCap = host ? Math.max(256, Math.floor(host.memoryMiB / 2 / 64) * 64) : Infinity;
  return { firmware: p.firmware, cpus: Math.max(1, Math.min(p.cpus, host?.cpus ?? p.cpus)), memoryMiB: Math.min(p.memoryMiB, memCap), diskGiB: p.diskGiB };
}

/**
 * The devices a guest OS wants, applied with its preset to what the user has not changed (`edited` holds form
 * field names): Windows installers see SATA disks and e1000e cards without drivers, Windows 11 also needs a TPM
 * and Secure Boot (the windows11 preset); the rest start from VMDesk's defaults.
 */
export function applyDevicePreset(form: VmForm, edited: ReadonlySet<string> = new Set(), opts: { windows11?: boolean } = {}): void {
  const win = form.osType === 'windows';
  if (!edited.has('tpm')) form.tpm = !!opts.windows11;
  if (!edited.has('secureBoot')) form.secureBoot = !!opts.windows11 && form.firmware === 'uefi';
  if (!edited.has('diskBus')) form.diskBus = win ? 'sata' : 'virtio';
  const first = form.adapters[0];
  if (first && !edited.has('net.0.model')) first.model = win ? 'e1000e' : 'virtio-net';
}

/** Devices and limits for the wizard's summary, in words ("standard" when nothing differs from the defaults). */
export function devicesSummary(form: VmForm): string {
  const out: string[] = [];
  if (form.tpm) out.push('TPM 2.0');
  if (form.secureBoot) out.push('Secure Boot');
  if (form.diskBus !== 'virtio' && form.diskGiB > 0) out.push(`${form.diskBus.toUpperCase()} disk`);
  if (form.audio) out.push(form.audio === 'none' ? 'silent sound card' : `sound card (${form.audio === 'pa' ? 'PulseAudio' : form.audio === 'auto' ? 'automatic' : form.audio === 'alsa' ? 'ALSA' : 'PipeWire'})`);
  if (!form.usbTablet) out.push('no USB tablet');
  if (form.virtioDrivers.trim()) out.push('virtio driver disc');
  if (form.clipboard) out.push('shared clipboard');
  if (!form.guestAgent) out.push('no guest agent');
  if (form.display) out.push(form.display === 'virtio' ? 'virtio-vga' : 'VGA');
  const l = form.limits;
  if (l.cpuCapPercent !== '') out.push(`CPU cap ${l.cpuCapPercent}%`);
  if (l.cpuPinning.trim()) out.push(`CPUs ${l.cpuPinning.trim()}`);
  if (l.memoryTargetMiB !== '') out.push(`memory target ${l.memoryTargetMiB} MiB`);
  if (l.diskIops !== '') out.push(`${l.diskIops} disk IOPS`);
  if (l.diskMiBPerSec !== '') out.push(`disk ${l.diskMiBPerSec} MiB/s`);
  return out.length ? out.join(', ') : 'standard';
}

/** The accelerators this host can have at all: KVM on Linux, Hypervisor.framework on macOS, TCG everywhere. */
export function accelChoices(host: Pick<HostInfo, 'platform' | 'accelerators'> | null): { value: VmForm['accel']; label: string; disabled: boolean; note?: string }[] {
  const out: { value: VmForm['accel']; label: string; disabled: boolean; note?: string }[] = [{ value: 'auto', label: 'Automatic (best available)', disabled: false }];
  const platform = host?.platform ?? 'linux';
  if (platform === 'linux') {
    const kvm = host?.accelerators.kvm;
    out.push({ value: 'kvm', label: kvm && !kvm.available ? 'KVM (not available here)' : 'KVM', disabled: false, note: kvm && !kvm.available ? kvm.reason : undefined });
  }
  if (platform === 'darwin') {
    const hvf = host?.accelerators.hvf;
    out.push({ value: 'hvf', label: hvf && !hvf.available ? 'Hypervisor.framework (not available here)' : 'Hypervisor.framework', disabled: false, note: hvf && !hvf.available ? hvf.reason : undefined });
  }
  out.push({ value: 'tcg', label: 'TCG (software emulation, slow)', disabled: false });
  return out;
}

/**
 * Ports VMDesk's own window is served on (the GUI server): forwarding one of them would fail at start, or worse,
 * take the port from VMDesk after a restart.
 */
export function ownPorts(): number[] {
  if (typeof location === 'undefined') return [];
  const out: number[] = [];
  const port = Number(location.port);
  if (location.protocol.startsWith('http') && port) out.push(port);
  return out;
}

export function emptyForm(): VmForm {
  return {
    name: '',
    osType: 'linux',
    engine: 'qemu',
    accel: 'auto',
    firmware: 'bios',
    cpus: 1,
    memoryMiB: 512,
    media: 'iso',
    iso: '',
    diskImage: '',
    kernel: '',
    initrd: '',
    cmdline: 'console=ttyS0',
    diskGiB: 8,
    adapters: [newAdapter()],
    forwards: [],
    limits: emptyLimits(),
    clipboard: false,
    guestAgent: true,
    display: '',
    shares: [],
    tpm: false,
    secureBoot: false,
    usbTablet: true,
    audio: '',
    virtioDrivers: '',
    diskBus: 'virtio',
    usb: [],
  };
}

export function emptyLimits(): LimitsForm {
  return { cpuCapPercent: '', cpuPinning: '', memoryTargetMiB: '', diskIops: '', diskMiBPerSec: '' };
}

let adapterKeys = 0;
export function newAdapter(over: Partial<AdapterRow> = {}): AdapterRow {
  return { mode: 'nat', network: '', model: 'virtio-net', mac: '', otherForwards: [], ...over, key: ++adapterKeys };
}

/** A MAC address in QEMU's locally administered 52:54:00 range, as the daemon gives new cards. */
export function randomMac(): string {
  const b = new Uint8Array(3);
  globalThis.crypto.getRandomValues(b);
  return ['52', '54', '00', ...[...b].map((x) => x.toString(16).padStart(2, '0'))].join(':');
}

/** The card the form's forwards go to: the first nat or nat-host one; -1 when there is none. */
export function firstNatIndex(adapters: readonly Pick<AdapterRow, 'mode'>[]): number {
  return adapters.findIndex((a) => a.mode === 'nat' || a.mode === 'nat-host');
}

/** The forwards that will be in effect (the port check probes these). */
export function activeForwards(form: Pick<VmForm, 'adapters' | 'forwards'>): ForwardRow[] {
  return firstNatIndex(form.adapters) >= 0 ? form.forwards : [];
}

/** Internal network names other VMs use, for the network name field's suggestions. */
export function internalNetworks(vms: readonly Pick<VmInfo, 'config'>[]): string[] {
  return [...new Set(vms.flatMap((v) => (v.config?.network ?? []).flatMap((n) => (n.mode === 'internal' && n.network ? [n.network] : []))))].sort();
}

export const NET_MODE_LABELS: Record<NetMode, string> = {
  nat: 'NAT',
  'nat-host': 'NAT with host access',
  internal: 'Internal network',
  none: 'Not attached',
};

/** One line for the wizard's summary: "eth0 NAT (tcp 2222→22), eth1 internal lab". */
export function networkSummary(form: Pick<VmForm, 'adapters' | 'forwards'>): string {
  const cards = form.adapters.filter((a) => a.mode !== 'none');
  if (!cards.length) return 'not attached';
  const nat = firstNatIndex(form.adapters);
  return form.adapters
    .map((a, i) => {
      if (a.mode === 'none') return '';
      const fwd = i === nat && form.forwards.length ? ` (${form.forwards.map((f) => `${f.protocol} ${f.hostPort}→${f.guestPort}`).join(', ')})` : '';
      return `eth${i} ${NET_MODE_LABELS[a.mode]}${a.mode === 'internal' ? ` “${a.network}”` : ''}${a.model !== 'virtio-net' ? ` ${a.model}` : ''}${fwd}`;
    })
    .filter(Boolean)
    .join(', ');
}

/** The mount command for a Linux guest, as share.list gives it (driver: virtiofs unless the VM runs with 9p). */
export function shareMountCommand(s: ShareRow): string {
  return mountCommand({ tag: s.tag, driver: s.driver ?? 'virtiofs', readOnly: s.readOnly });
}

/** The wizard's pages and the fields each owns, so "Next" checks only what the page shows. */
export const WIZARD_STEPS = [
  { key: 'name', title: 'Name and operating system', fields: ['name', 'osType'] },
  { key: 'media', title: 'Installation media', fields: ['media', 'iso', 'diskImage', 'kernel', 'initrd', 'cmdline'] },
  { key: 'hardware', title: 'Hardware', fields: ['cpus', 'memoryMiB', 'firmware', 'engine', 'accel', 'limits'] },
  { key: 'disk', title: 'Disk and devices', fields: ['diskGiB', 'diskBus', 'tpm', 'secureBoot', 'usbTablet', 'audio', 'virtioDrivers'] },
  { key: 'network', title: 'Network and integration', fields: ['net', 'forwards', 'clipboard', 'guestAgent', 'display'] },
  { key: 'summary', title: 'Summary', fields: [] },
] as const;

export function fieldsOfStep(index: number): readonly string[] {
  return WIZARD_STEPS[index]?.fields ?? [];
}

export function errorsForStep(errors: FieldErrors, index: number): FieldErrors {
  const fields = fieldsOfStep(index);
  return Object.fromEntries(Object.entries(errors).filter(([k]) => fields.some((f) => k === f || k.startsWith(f + '.'))));
}

/** The adapters as the contract has them: the form's forwards on the first nat card, MACs given or left to VMDesk. */
export function networkOf(form: Pick<VmForm, 'adapters' | 'forwards'>): NetAdapter[] {
  const nat = firstNatIndex(form.adapters);
  const out = form.adapters.map((a, i): NetAdapter => {
    if (a.mode === 'none') return { mode: 'none', forwards: [] };
    const natLike = a.mode === 'nat' || a.mode === 'nat-host';
    const forwards = natLike ? [...(i === nat ? form.forwards : []), ...a.otherForwards].map((f) => ({ protocol: f.protocol, hostPort: f.hostPort, guestPort: f.guestPort })) : [];
    return {
      mode: a.mode,
      ...(a.mode === 'internal' ? { network: a.network.trim() } : {}),
      forwards,
      ...(a.mac.trim() ? { mac: a.mac.trim().toLowerCase() } : {}),
      ...(a.model !== 'virtio-net' ? { model: a.model } : {}),
    };
  });
  return out.length ? out : [{ mode: 'none', forwards: [] }];
}

/** The adapters of a VM as the form edits them. */
export function adaptersFrom(network: readonly NetAdapter[]): { adapters: AdapterRow[]; forwards: ForwardRow[] } {
  const nat = firstNatIndex(network);
  const adapters = network.map((n, i) =>
    newAdapter({ mode: n.mode, network: n.network ?? '', model: n.model ?? 'virtio-net', mac: n.mac ?? '', otherForwards: i === nat ? [] : n.forwards.map((f) => ({ ...f })) }),
  );
  return { adapters, forwards: nat >= 0 ? network[nat]!.forwards.map((f) => ({ ...f })) : [] };
}

const num = (v: number | '' | string): number | undefined => (v === '' || v === undefined || v === null ? undefined : Number(v));

/** Limits as set values (create): what is filled in. The CPU list is parsed here; a bad one is left for validation. */
function limitsValues(l: LimitsForm): ResourceLimitsPatch {
  const out: ResourceLimitsPatch = {};
  const cap = num(l.cpuCapPercent);
  if (cap !== undefined) out.cpuCapPercent = cap;
  if (l.cpuPinning.trim()) {
    try {
      out.cpuPinning = parseCpuList(l.cpuPinning);
    } catch {
      /* not a CPU list: validation names the field */
    }
  }
  const target = num(l.memoryTargetMiB);
  if (target !== undefined) out.memoryTargetMiB = target;
  const iops = num(l.diskIops);
  if (iops !== undefined) out.diskIops = iops;
  const mibs = num(l.diskMiBPerSec);
  if (mibs !== undefined) out.diskBytesPerSec = Number.isFinite(mibs) ? Math.round(mibs * 1024 * 1024) : mibs;
  return out;
}

function limitsFrom(l: NonNullable<VmInfo['config']>['limits']): LimitsForm {
  return {
    cpuCapPercent: l?.cpuCapPercent ?? '',
    cpuPinning: l?.cpuPinning ? formatCpuList(l.cpuPinning) : '',
    memoryTargetMiB: l?.memoryTargetMiB ?? '',
    diskIops: l?.diskIops ?? '',
    diskMiBPerSec: l?.diskBytesPerSec !== undefined ? l.diskBytesPerSec / 1024 / 1024 : '',
  };
}

/** A change of limits (settings): a value sets, null clears, absent keeps; undefined when nothing changed. */
export function limitsPatch(form: LimitsForm, original: LimitsForm): ResourceLimitsPatch | undefined {
  const a = limitsValues(form);
  const b = limitsValues(original);
  const out: Record<string, unknown> = {};
  for (const k of ['cpuCapPercent', 'cpuPinning', 'memoryTargetMiB', 'diskIops', 'diskBytesPerSec'] as const) {
    if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) out[k] = a[k] ?? null;
  }
  return Object.keys(out).length ? (out as ResourceLimitsPatch) : undefined;
}

function directKernelOf(form: VmForm) {
  return { kernel: form.kernel.trim(), ...(form.initrd.trim() ? { initrd: form.initrd.trim() } : {}), cmdline: form.cmdline };
}

export function toCreateRequest(form: VmForm): RpcParams<'vm.create'> {
  const req: RpcParams<'vm.create'> = {
    name: form.name,
    osType: form.osType,
    engine: form.engine,
    accel: form.accel,
    firmware: form.firmware,
    cpus: form.cpus,
    memoryMiB: form.memoryMiB,
    network: networkOf(form),
  };
  const limits = limitsValues(form.limits);
  if (Object.keys(limits).length) req.limits = limits as RpcParams<'vm.create'>['limits'];
  // Only what differs from the defaults, so an engine without a device is not asked for it; a Windows guest's
  // devices in full, so the windows11 preset (fields given win over it) cannot turn back on what was turned off.
  const win = form.osType === 'windows';
  if (form.clipboard) req.clipboard = true;
  if (!form.guestAgent) req.guestAgent = false;
  if (form.display) req.display = form.display;
  if (form.tpm || win) req.tpm = form.tpm;
  if (form.secureBoot || win) req.secureBoot = form.secureBoot;
  if (!form.usbTablet || win) req.usbTablet = form.usbTablet;
  if (form.audio) req.audio = form.audio;
  if (form.virtioDrivers.trim()) req.virtioDrivers = form.virtioDrivers.trim();
  const gib = Number(form.diskGiB);
  if (typeof form.diskGiB !== 'number' || Number.isNaN(gib)) req.diskBytes = form.diskGiB as unknown as number;
  else if (gib !== 0) req.diskBytes = Math.round(gib * 1024 ** 3); // negative sizes reach the schema and are refused there
  if (form.media === 'iso') req.iso = form.iso.trim();
  if (form.media === 'disk') req.attachDisks = [form.diskImage.trim()];
  if (form.media === 'kernel') req.directKernel = directKernelOf(form);
  if ((form.diskBus !== 'virtio' || win) && req.diskBytes) req.diskBus = form.diskBus;
  return req;
}

/** Maps a schema issue path to the form field that shows it. */
function fieldOf(path: PropertyKey[]): string {
  const p = path.map(String);
  if (p[0] === 'diskBytes') return 'diskGiB';
  if (p[0] === 'attachDisks') return 'diskImage';
  if (p[0] === 'directKernel') return p[1] ?? 'kernel';
  if (p[0] === 'cdrom') return 'iso';
  if (p[0] === 'network') {
    if (p[2] === 'forwards') return ['forwards', ...p.slice(3)].join('.');
    if (p[1] === undefined) return 'net';
    return `net.${p[1]}.${p[2] === 'mac' || p[2] === 'network' || p[2] === 'model' ? p[2] : 'mode'}`;
  }
  if (p[0] === 'limits') return `limits.${p[1] === 'diskBytesPerSec' ? 'diskMiBPerSec' : (p[1] ?? 'cpuCapPercent')}`;
  return p[0] ?? 'form';
}

type Issue = { code: string; message: string; path: PropertyKey[]; input?: unknown; minimum?: unknown; maximum?: unknown; origin?: string };

/** zod's own words ("Too small: expected number to be >=0") become plain ones; our schemas' messages stay. */
function friendly(issue: Issue): string {
  if (issue.code === 'invalid_type' && (issue.input === '' || issue.input === undefined || Number.isNaN(issue.input))) return 'enter a number';
  if (issue.code === 'invalid_type') return typeof issue.input === 'string' ? 'enter a number' : 'this value is not valid here';
  if (/^Too (small|big)|^Invalid (input|option)|^Expected /.test(issue.message)) {
    const n = (v: unknown) => (typeof v === 'bigint' ? Number(v) : (v as number));
    if (issue.code === 'too_small') return issue.origin === 'string' ? 'must not be empty' : `must be at least ${n(issue.minimum)}`;
    if (issue.code === 'too_big') return issue.origin === 'string' ? `must be at most ${n(issue.maximum)} characters` : `must be at most ${n(issue.maximum)}`;
    if (issue.code === 'invalid_value') return 'choose one of the listed values';
    return 'this value is not valid here';
  }
  return issue.message;
}

function collect(result: { success: boolean; error?: { issues: Issue[] } }, errors: FieldErrors): void {
  if (result.success || !result.error) return;
  for (const issue of result.error.issues) {
    const f = fieldOf(issue.path);
    errors[f] ??= friendly(issue);
  }
}

export interface ValidationContext {
  host?: (Pick<HostInfo, 'cpus' | 'memoryMiB' | 'freeMemoryMiB'> & Partial<Pick<HostInfo, 'limits'>>) | null;
  /** Names already taken (compared case-insensitively, like the core). */
  existingNames?: string[];
  /** The GUI's own ports (defaults to this page's). */
  ownPorts?: number[];
  /** What host.ports said about each forward ("tcp:2222"), for a warning before the start fails. */
  portStatus?: Record<string, { status: string; message: string }>;
}

export interface Validation {
  errors: FieldErrors;
  warnings: FieldErrors;
}

/** Field rules shared by both forms that the schema alone cannot know: host limits, forwards, the engine's needs. */
function commonRules(form: VmForm, ctx: ValidationContext, errors: FieldErrors, warnings: FieldErrors): void {
  const host = ctx.host;
  if (host && Number.isInteger(form.cpus) && form.cpus > host.cpus) errors.cpus ??= `this host has ${host.cpus} CPUs`;
  if (host && form.memoryMiB > host.memoryMiB) errors.memoryMiB ??= `this host has ${host.memoryMiB} MiB of memory`;
  else if (host && form.memoryMiB > host.freeMemoryMiB) warnings.memoryMiB = `more than the ${host.freeMemoryMiB} MiB free now: the host may swap`;
  const seen = new Set<string>();
  const own = ctx.ownPorts ?? ownPorts();
  form.forwards.forEach((f, i) => {
    const key = `${f.protocol}:${f.hostPort}`;
    if (seen.has(key)) errors[`forwards.${i}.hostPort`] ??= 'this host port is already forwarded';
    seen.add(key);
    if (f.protocol === 'tcp' && own.includes(f.hostPort)) errors[`forwards.${i}.hostPort`] ??= `port ${f.hostPort} is taken by VMDesk itself (this window is served on it); choose another`;
    if (f.hostPort < 1024 && f.hostPort > 0) warnings[`forwards.${i}.hostPort`] = 'ports below 1024 usually need root';
    const probe = ctx.portStatus?.[key];
    if (probe && probe.status !== 'free') warnings[`forwards.${i}.hostPort`] ??= `${probe.message}; the VM will not start while it is`;
  });
  if (form.forwards.length && firstNatIndex(form.adapters) < 0) errors.forwards ??= 'port forwards need a NAT card: set one card to NAT or remove the forwards';
  if (form.adapters.length > 4) errors.net ??= 'a VM has at most 4 network cards';
  const macs = new Map<string, number>();
  form.adapters.forEach((a, i) => {
    if (a.mode === 'internal') {
      const r = NetworkName.safeParse(a.network.trim());
      if (!r.success) errors[`net.${i}.network`] ??= r.error.issues[0]?.message ?? 'invalid network name';
    }
    const mac = a.mac.trim().toLowerCase();
    if (a.mode !== 'none' && mac) {
      if (macs.has(mac)) errors[`net.${i}.mac`] ??= `eth${macs.get(mac)} has this MAC address already; each card needs its own`;
      else macs.set(mac, i);
    }
  });
  const l = form.limits;
  if (l.cpuPinning.trim()) {
    try {
      const cpus = parseCpuList(l.cpuPinning);
      const over = host ? cpus.find((c) => c >= host.cpus) : undefined;
      if (over !== undefined) errors['limits.cpuPinning'] ??= `this host's CPUs are numbered 0-${host!.cpus - 1}`;
    } catch (e) {
      errors['limits.cpuPinning'] = (e as Error).message.replace(/^invalid CPU list/, 'not a CPU list');
    }
  }
  // The daemon refuses a cap or pinning this host cannot apply; say so at the field.
  if (l.cpuCapPercent !== '' && host?.limits && !host.limits.cpuCap.available) errors['limits.cpuCapPercent'] ??= `this host cannot cap CPU time: ${host.limits.cpuCap.reason}`;
  if (l.cpuPinning.trim() && host?.limits && !host.limits.cpuPinning.available) errors['limits.cpuPinning'] ??= `this host cannot pin CPUs: ${host.limits.cpuPinning.reason}`;
  const target = num(l.memoryTargetMiB);
  if (target !== undefined && Number.isFinite(target) && target > form.memoryMiB) errors['limits.memoryTargetMiB'] ??= `the target cannot be more than the VM's memory (${form.memoryMiB} MiB)`;
  if (form.secureBoot && form.firmware !== 'uefi') errors.secureBoot ??= 'Secure Boot needs UEFI firmware: choose UEFI beside the processors and memory';
  if (form.engine === 'microvm') {
    for (const k of ['clipboard', 'tpm', 'secureBoot'] as const) if (form[k]) errors[k] ??= 'the microvm engine has no such device';
  }
}

export function validateCreate(form: VmForm, ctx: ValidationContext = {}): Validation {
  const errors: FieldErrors = {};
  const warnings: FieldErrors = {};
  collect(CreateVmRequest.safeParse(toCreateRequest(form)), errors);
  if (form.media === 'iso' && !form.iso.trim()) errors.iso = 'choose an ISO image';
  if (form.media === 'disk' && !form.diskImage.trim()) errors.diskImage = 'choose a disk image';
  // ~/ paths are expanded (by the daemon, for the daemon's user) before they are sent.
  for (const key of ['iso', 'diskImage'] as const) if (form[key].trim().startsWith('~/') && /absolute/.test(errors[key] ?? '')) delete errors[key];
  if (form.media === 'kernel' && !form.kernel.trim()) errors.kernel = 'choose a kernel image';
  if (form.engine === 'microvm' && form.media !== 'kernel') errors.engine = 'the microvm engine boots a kernel directly: choose "kernel + initrd" as installation media';
  const lower = form.name.toLowerCase();
  if (!errors.name && ctx.existingNames?.some((n) => n.toLowerCase() === lower)) errors.name = `a VM named "${form.name}" already exists`;
  commonRules(form, ctx, errors, warnings);
  return { errors, warnings };
}

// ---- settings ------------------------------------------------------------------------------------------

export function formFromInfo(info: VmInfo): VmForm {
  const c = info.config;
  const f = emptyForm();
  f.name = info.name;
  if (!c) return f;
  f.osType = c.osType;
  f.engine = c.engine as VmForm['engine'];
  f.accel = c.accel;
  f.firmware = c.firmware;
  f.cpus = c.cpus;
  f.memoryMiB = c.memoryMiB;
  f.media = c.directKernel ? 'kernel' : c.cdrom ? 'iso' : 'none';
  f.iso = c.cdrom ?? '';
  f.kernel = c.directKernel?.kernel ?? '';
  f.initrd = c.directKernel?.initrd ?? '';
  f.cmdline = c.directKernel?.cmdline ?? '';
  f.diskGiB = 0;
  const net = adaptersFrom(c.network);
  f.adapters = net.adapters;
  f.forwards = net.forwards;
  f.limits = limitsFrom(c.limits);
  f.clipboard = !!c.clipboard;
  f.guestAgent = !!c.guestAgent;
  f.display = c.display ?? 'vga';
  f.shares = (c.shares ?? []).map((s) => ({ tag: s.tag, hostPath: s.hostPath, readOnly: !!s.readOnly, ...(s.driver ? { driver: s.driver } : {}) }));
  f.tpm = !!c.tpm;
  f.secureBoot = !!c.secureBoot;
  f.usbTablet = c.usbTablet ?? true;
  f.audio = c.audio ?? '';
  f.virtioDrivers = c.virtioDrivers ?? '';
  f.usb = (c.usb ?? []).map((u) => ({ ...u }));
  return f;
}

/** Fields a running VM lets you change; everything else is hardware that QEMU fixed at start. */
export const LIVE_FIELDS = ['name', 'osType'] as const;

/** Only what changed, so saving a running VM's OS type does not trip the core's hardware check. */
export function toPatch(form: VmForm, original: VmForm): RpcParams<'vm.update'>['patch'] {
  const patch: RpcParams<'vm.update'>['patch'] = {};
  if (form.osType !== original.osType) patch.osType = form.osType;
  if (form.engine !== original.engine) patch.engine = form.engine;
  if (form.accel !== original.accel) patch.accel = form.accel;
  if (form.firmware !== original.firmware) patch.firmware = form.firmware;
  if (form.cpus !== original.cpus) patch.cpus = form.cpus;
  if (form.memoryMiB !== original.memoryMiB) patch.memoryMiB = form.memoryMiB;
  const mediaChanged = form.media !== original.media || form.iso !== original.iso || form.kernel !== original.kernel || form.initrd !== original.initrd || form.cmdline !== original.cmdline;
  if (mediaChanged) {
    patch.cdrom = form.media === 'iso' && form.iso.trim() ? form.iso.trim() : null;
    patch.directKernel = form.media === 'kernel' ? directKernelOf(form) : null;
  }
  if (JSON.stringify(networkOf(form)) !== JSON.stringify(networkOf(original))) patch.network = networkOf(form);
  const limits = limitsPatch(form.limits, original.limits);
  if (limits) patch.limits = limits;
  for (const k of ['clipboard', 'guestAgent', 'tpm', 'secureBoot', 'usbTablet'] as const) if (form[k] !== original[k]) patch[k] = form[k];
  if (form.display !== original.display && form.display) patch.display = form.display;
  if (form.audio !== original.audio) patch.audio = form.audio || null;
  if (form.virtioDrivers.trim() !== original.virtioDrivers.trim()) patch.virtioDrivers = form.virtioDrivers.trim() || null;
  return patch;
}

/** What share.remove and share.add calls turn the original shares into the form's (a changed share is removed and added again). */
export function sharesDiff(form: readonly ShareRow[], original: readonly ShareRow[]): { remove: string[]; add: ShareRow[] } {
  const same = (a: ShareRow, b: ShareRow) => a.tag === b.tag && a.hostPath === b.hostPath && a.readOnly === b.readOnly;
  const remove = original.filter((o) => !form.some((f) => same(f, o))).map((o) => o.tag);
  const add = form.filter((f) => !original.some((o) => same(f, o)));
  return { remove, add };
}

/** A share about to be added: the tag (defaults to the folder's name, as share.add does) and path checked. */
export function validateShare(row: Pick<ShareRow, 'tag' | 'hostPath'>, existing: readonly ShareRow[]): FieldErrors {
  const errors: FieldErrors = {};
  const p = row.hostPath.trim();
  if (!p) errors['share.hostPath'] = 'choose a folder on this computer';
  else if (!p.startsWith('/') && p !== '~' && !p.startsWith('~/')) errors['share.hostPath'] = 'give an absolute path (or ~/…)';
  const tag = row.tag.trim() || defaultShareTag(p);
  const r = ShareTag.safeParse(tag);
  // An empty tag is the folder's name, known once ~ is expanded: checked when added.
  if (!r.success && (row.tag.trim() || (p && !p.startsWith('~')))) errors['share.tag'] = row.tag.trim() ? (r.error.issues[0]?.message ?? 'invalid tag') : `the folder’s name “${tag}” cannot be a tag: type one`;
  else if (existing.some((s) => s.tag === tag)) errors['share.tag'] = `a share is already tagged "${tag}"`;
  if (existing.length >= 8) errors['share.hostPath'] ??= 'a VM has at most 8 shared folders';
  return errors;
}

/** How a passed-through USB device is named: vendor:product, or its bus and address. */
export function usbKey(u: Pick<UsbPassthrough, 'vendorId' | 'productId' | 'bus' | 'addr'>): string {
  return u.vendorId !== undefined ? `${u.vendorId}:${u.productId}` : `bus ${u.bus} address ${u.addr}`;
}

/** What usb.remove and usb.add calls turn the original devices into the form's. */
export function usbDiff(form: readonly UsbPassthrough[], original: readonly UsbPassthrough[]): { remove: ({ vendorId: string; productId: string } | { bus: number; addr: number })[]; add: UsbPassthrough[] } {
  const keys = (l: readonly UsbPassthrough[]) => new Set(l.map(usbKey));
  const now = keys(form);
  const before = keys(original);
  return {
    remove: original.filter((u) => !now.has(usbKey(u))).map((u) => (u.vendorId !== undefined ? { vendorId: u.vendorId, productId: u.productId! } : { bus: u.bus!, addr: u.addr! })),
    add: form.filter((u) => !before.has(usbKey(u))),
  };
}

/** share.add's default tag: the folder's own name. */
export function defaultShareTag(hostPath: string): string {
  const parts = hostPath.replace(/\/+$/, '').split('/');
  return parts[parts.length - 1] ?? '';
}

export function validateSettings(form: VmForm, original: VmForm, ctx: ValidationContext = {}): Validation {
  const errors: FieldErrors = {};
  const warnings: FieldErrors = {};
  collect(VmSettingsPatch.safeParse(toPatch(form, original)), errors);
  if (form.media === 'iso' && !form.iso.trim()) errors.iso = 'choose an ISO image';
  if (form.media === 'kernel' && !form.kernel.trim()) errors.kernel = 'choose a kernel image';
  if (form.engine === 'microvm' && form.media !== 'kernel') errors.engine = 'the microvm engine needs direct kernel boot';
  if (form.name !== original.name) {
    const r = VmName.safeParse(form.name);
    if (!r.success) errors.name = r.error.issues[0]?.message ?? 'invalid name';
    else if (ctx.existingNames?.some((n) => n.toLowerCase() === form.name.toLowerCase() && n !== original.name)) errors.name = `a VM named "${form.name}" already exists`;
  }
  commonRules(form, ctx, errors, warnings);
  return { errors, warnings };
}

// Sizes for people; kept in ../format so the VM list and details pane load without zod.
export { formatMiB, formatBytes } from '../format';
