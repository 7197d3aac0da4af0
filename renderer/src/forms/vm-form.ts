// The wizard's and settings dialog's form model: form state ↔ API request, validated with the server's own zod schemas.
import '../zod-config';
import { CreateVmRequest, VmName, VmSettingsPatch, type VmInfo, type HostInfo, type NetAdapter } from '../../../main/api/schema';
import type { RpcParams } from '../../../main/api/rpc';

/** gallery: the wizard's "From the gallery" (its fields are in forms/gallery-form.ts). */
export type MediaKind = 'none' | 'iso' | 'disk' | 'kernel' | 'gallery';

export interface ForwardRow {
  protocol: 'tcp' | 'udp';
  hostPort: number;
  guestPort: number;
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
  /** The form offers NAT or none; a VM set up otherwise (nat-host, internal) keeps its mode. */
  netMode: 'nat' | 'none' | 'nat-host' | 'internal';
  /**
   * The first adapter as it was loaded (settings): its other fields (MAC, card model, internal network name) and
   * the other adapters survive a change of forwards.
   */
  netOriginal?: NetAdapter[];
  forwards: ForwardRow[];
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
    netMode: 'nat',
    forwards: [],
  };
}

/** The wizard's pages and the fields each owns, so "Next" checks only what the page shows. */
export const WIZARD_STEPS = [
  { key: 'name', title: 'Name and operating system', fields: ['name', 'osType'] },
  { key: 'media', title: 'Installation media', fields: ['media', 'iso', 'diskImage', 'kernel', 'initrd', 'cmdline'] },
  { key: 'hardware', title: 'Hardware', fields: ['cpus', 'memoryMiB', 'firmware', 'engine', 'accel'] },
  { key: 'disk', title: 'Virtual hard disk', fields: ['diskGiB'] },
  { key: 'network', title: 'Network', fields: ['netMode', 'forwards'] },
  { key: 'summary', title: 'Summary', fields: [] },
] as const;

export function fieldsOfStep(index: number): readonly string[] {
  return WIZARD_STEPS[index]?.fields ?? [];
}

export function errorsForStep(errors: FieldErrors, index: number): FieldErrors {
  const fields = fieldsOfStep(index);
  return Object.fromEntries(Object.entries(errors).filter(([k]) => fields.some((f) => k === f || k.startsWith(f + '.'))));
}

function networkOf(form: Pick<VmForm, 'netMode' | 'forwards' | 'netOriginal'>): NetAdapter[] {
  const [first, ...rest] = form.netOriginal ?? [];
  const forwards = form.netMode === 'nat' || form.netMode === 'nat-host' ? form.forwards.map((f) => ({ ...f })) : [];
  if (first && first.mode === form.netMode) return [{ ...first, forwards }, ...rest];
  if (form.netMode === 'none') return [{ mode: 'none', forwards: [] }, ...rest];
  return [{ ...(first?.mac ? { mac: first.mac } : {}), ...(first?.model ? { model: first.model } : {}), mode: form.netMode === 'internal' ? 'nat' : form.netMode, forwards }, ...rest];
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
  const gib = Number(form.diskGiB);
  if (typeof form.diskGiB !== 'number' || Number.isNaN(gib)) req.diskBytes = form.diskGiB as unknown as number;
  else if (gib !== 0) req.diskBytes = Math.round(gib * 1024 ** 3); // negative sizes reach the schema and are refused there
  if (form.media === 'iso') req.iso = form.iso.trim();
  if (form.media === 'disk') req.attachDisks = [form.diskImage.trim()];
  if (form.media === 'kernel') req.directKernel = directKernelOf(form);
  return req;
}

/** Maps a schema issue path to the form field that shows it. */
function fieldOf(path: PropertyKey[]): string {
  const p = path.map(String);
  if (p[0] === 'diskBytes') return 'diskGiB';
  if (p[0] === 'attachDisks') return 'diskImage';
  if (p[0] === 'directKernel') return p[1] ?? 'kernel';
  if (p[0] === 'cdrom') return 'iso';
  if (p[0] === 'network') return p[2] === 'forwards' ? ['forwards', ...p.slice(3)].join('.') : 'netMode';
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
  host?: Pick<HostInfo, 'cpus' | 'memoryMiB' | 'freeMemoryMiB'> | null;
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
}

export function validateCreate(form: VmForm, ctx: ValidationContext = {}): Validation {
  const errors: FieldErrors = {};
  const warnings: FieldErrors = {};
  collect(CreateVmRequest.safeParse(toCreateRequest(form)), errors);
  if (form.media === 'iso' && !form.iso.trim()) errors.iso = 'choose an ISO image';
  if (form.media === 'disk' && !form.diskImage.trim()) errors.diskImage = 'choose a disk image';
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
  const net = c.network[0];
  f.netMode = net?.mode ?? 'none';
  f.netOriginal = c.network.map((n) => ({ ...n, forwards: n.forwards.map((x) => ({ ...x })) }));
  f.forwards = (net?.forwards ?? []).map((x) => ({ ...x }));
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
  return patch;
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
