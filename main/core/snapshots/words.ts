// Settings differences in words, for people: "Memory 256 MiB → 384 MiB" rather than memoryMiB: 256 → 384, and
// "Port forward tcp 8080 → 80 added" rather than a JSON array. Pure (no I/O, no zod): the snapshot view, the
// restore plan and `vmdesk snapshot info|compare` all speak through it.
import type { VmConfig } from '../../api/schema.js';

/** One setting that differs, as a person reads it: "<label> <from> → <to>". */
export interface WordChange {
  label: string;
  from: string;
  to: string;
}

export function changeText(c: WordChange): string {
  return `${c.label} ${c.from} → ${c.to}`;
}

const NONE = 'none';

export function mib(n: number): string {
  if (n < 1024) return `${n} MiB`;
  const g = n / 1024;
  return `${Number.isInteger(g) ? g : g.toFixed(g < 10 ? 2 : 1).replace(/0+$/, '')} GiB`;
}

function bytesPerSec(n: number): string {
  const units = ['B/s', 'KiB/s', 'MiB/s', 'GiB/s', 'TiB/s'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}

const OS: Record<string, string> = { linux: 'Linux', windows: 'Windows', bsd: 'BSD', other: 'Other' };
const ACCEL: Record<string, string> = { auto: 'automatic', kvm: 'KVM', hvf: 'HVF', tcg: 'TCG (emulation)' };
const FIRMWARE: Record<string, string> = { bios: 'BIOS', uefi: 'UEFI' };
const NET_MODE: Record<string, string> = { nat: 'NAT', 'nat-host': 'NAT with host access', none: 'not attached' };

function plain(v: unknown): string {
  if (v === undefined || v === null || v === '') return NONE;
  if (typeof v === 'boolean') return v ? 'on' : 'off';
  if (typeof v === 'string' || typeof v === 'number') return String(v);
  return JSON.stringify(v);
}

function quoted(s: string | undefined): string {
  return s ? `"${s}"` : NONE;
}

function push(out: WordChange[], label: string, from: string, to: string): void {
  if (from !== to) out.push({ label, from, to });
}

type Disk = VmConfig['disks'][number];
type Adapter = VmConfig['network'][number];

function diskWords(d: Disk): string {
  return `${d.path} (${d.format}${d.readOnly ? ', read-only' : ''}${d.bus && d.bus !== 'virtio' ? `, ${d.bus}` : ''})`;
}

function disks(out: WordChange[], a: Disk[], b: Disk[]): void {
  const ids = [...new Set([...a.map((d) => d.id), ...b.map((d) => d.id)])];
  for (const id of ids) {
    const x = a.find((d) => d.id === id);
    const y = b.find((d) => d.id === id);
    const label = `Disk ${id}`;
    if (!x && y) push(out, label, 'absent', diskWords(y));
    else if (x && !y) push(out, label, diskWords(x), 'absent');
    else if (x && y) {
      push(out, `${label} file`, x.path, y.path);
      push(out, `${label} format`, x.format, y.format);
      push(out, `${label} bus`, x.bus ?? 'virtio', y.bus ?? 'virtio');
      push(out, `${label} read-only`, x.readOnly ? 'yes' : 'no', y.readOnly ? 'yes' : 'no');
      push(out, `${label} base image`, x.base ?? NONE, y.base ?? NONE);
    }
  }
}

function forwardWords(f: Adapter['forwards'][number]): string {
  return `${f.protocol} host ${f.hostPort} → guest ${f.guestPort}`;
}

function network(out: WordChange[], a: Adapter[], b: Adapter[]): void {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i];
    const y = b[i];
    const label = `Network adapter ${i + 1}`;
    if (!x || !y) {
      push(out, label, x ? NET_MODE[x.mode] ?? x.mode : 'absent', y ? NET_MODE[y.mode] ?? y.mode : 'absent');
      continue;
    }
    push(out, label, NET_MODE[x.mode] ?? x.mode, NET_MODE[y.mode] ?? y.mode);
    push(out, `${label} model`, x.model ?? 'virtio-net', y.model ?? 'virtio-net');
    push(out, `${label} MAC address`, x.mac ?? 'automatic', y.mac ?? 'automatic');
    const fx = x.forwards.map(forwardWords);
    const fy = y.forwards.map(forwardWords);
    for (const f of fx) if (!fy.includes(f)) out.push({ label: `${label} port forward`, from: f, to: 'removed' });
    for (const f of fy) if (!fx.includes(f)) out.push({ label: `${label} port forward`, from: 'absent', to: f });
  }
}

function limits(out: WordChange[], a: VmConfig['limits'], b: VmConfig['limits']): void {
  const x = a ?? {};
  const y = b ?? {};
  const opt = <T>(v: T | undefined, f: (v: T) => string) => (v === undefined ? NONE : f(v));
  push(out, 'CPU cap', opt(x.cpuCapPercent, (v) => `${v} %`), opt(y.cpuCapPercent, (v) => `${v} %`));
  push(out, 'CPU pinning', opt(x.cpuPinning, (v) => v.join(', ')), opt(y.cpuPinning, (v) => v.join(', ')));
  push(out, 'Memory target', opt(x.memoryTargetMiB, mib), opt(y.memoryTargetMiB, mib));
  push(out, 'Disk I/O limit', opt(x.diskIops, (v) => `${v} operations/s`), opt(y.diskIops, (v) => `${v} operations/s`));
  push(out, 'Disk bandwidth limit', opt(x.diskBytesPerSec, bytesPerSec), opt(y.diskBytesPerSec, bytesPerSec));
}

const KNOWN = new Set(['schemaVersion', 'id', 'name', 'createdAt', 'modifiedAt', 'snapshotSchedule', 'osType', 'engine', 'accel', 'firmware', 'cpus', 'memoryMiB', 'disks', 'cdrom', 'directKernel', 'network', 'limits', 'balloon']);

/**
 * What differs between two configurations (`from` → `to`), one line per setting a person would name. Identity
 * (id, name, dates) and the snapshot schedule are left out: a restore keeps them.
 */
export function configChanges(from: VmConfig | null | undefined, to: VmConfig | null | undefined): WordChange[] {
  if (!from || !to) return [];
  const out: WordChange[] = [];
  push(out, 'Operating system', OS[from.osType] ?? from.osType, OS[to.osType] ?? to.osType);
  push(out, 'Engine', from.engine, to.engine);
  push(out, 'Acceleration', ACCEL[from.accel] ?? from.accel, ACCEL[to.accel] ?? to.accel);
  push(out, 'Firmware', FIRMWARE[from.firmware] ?? from.firmware, FIRMWARE[to.firmware] ?? to.firmware);
  push(out, 'Processors', String(from.cpus), String(to.cpus));
  push(out, 'Memory', mib(from.memoryMiB), mib(to.memoryMiB));
  push(out, 'Memory balloon', from.balloon ? 'on' : 'off', to.balloon ? 'on' : 'off');
  disks(out, from.disks, to.disks);
  push(out, 'Optical drive', from.cdrom ?? 'empty', to.cdrom ?? 'empty');
  const kx = from.directKernel;
  const ky = to.directKernel;
  if (!kx || !ky) push(out, 'Direct kernel boot', kx ? `kernel ${kx.kernel}` : 'off', ky ? `kernel ${ky.kernel}` : 'off');
  else {
    push(out, 'Kernel', kx.kernel, ky.kernel);
    push(out, 'Initrd', kx.initrd ?? NONE, ky.initrd ?? NONE);
    push(out, 'Kernel command line', quoted(kx.cmdline), quoted(ky.cmdline));
  }
  network(out, from.network, to.network);
  limits(out, from.limits, to.limits);
  // Fields this module does not know yet (a newer schema): still said, if less nicely.
  const rf = from as unknown as Record<string, unknown>;
  const rt = to as unknown as Record<string, unknown>;
  for (const k of [...new Set([...Object.keys(rf), ...Object.keys(rt)])].sort()) {
    if (KNOWN.has(k) || JSON.stringify(rf[k]) === JSON.stringify(rt[k])) continue;
    out.push({ label: k, from: plain(rf[k]), to: plain(rt[k]) });
  }
  return out;
}
