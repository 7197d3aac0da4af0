// Human-readable text for the CLI's read verbs (the --json forms print the objects as they are).
import type { HostInfo, VmInfo } from '../api/schema.js';
import { formatAdapter, formatLimits } from './resources.js';
import { exitReasonText, stateLabel } from '../api/wording.js';

export function formatList(vms: VmInfo[]): string {
  if (vms.length === 0) return 'no VMs yet: create one with "vmdesk create NAME --iso PATH" or --kernel PATH';
  // With libvirt hosts in the library: a HOST column, this machine's VMs first, then each host's.
  const hosted = vms.some((v) => v.host);
  const ordered = hosted ? [...vms].sort((a, b) => (a.host ?? '').localeCompare(b.host ?? '') || a.name.localeCompare(b.name)) : vms;
  const rows = ordered.map((v) => [v.name, stateLabel(v), v.config ? String(v.config.cpus) : '-', v.config ? `${v.config.memoryMiB} MiB` : '-', v.config?.engine ?? '-', ...(hosted ? [v.host ?? 'local'] : []), v.id.slice(0, 8)]);
  const head = ['NAME', 'STATE', 'CPUS', 'MEMORY', 'ENGINE', ...(hosted ? ['HOST'] : []), 'ID'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(head), ...rows.map(line)].join('\n');
}

export function formatInfo(v: VmInfo): string {
  if (!v.config) return `${v.id}: broken: ${v.broken}\nbundle: ${v.bundle}`;
  const c = v.config;
  const lines = [
    `name:      ${c.name}`,
    `id:        ${c.id}`,
    `state:     ${stateLabel(v)}${v.pid ? ` (pid ${v.pid})` : ''}`,
    `os:        ${c.osType}`,
    `engine:    ${c.engine}, accel ${c.accel}${v.accel ? ` -> ${v.accel.used} (${v.accel.reason})` : ''}`,
    ...(v.host ? [`host:      ${v.host}`] : []),
    `firmware:  ${c.firmware}`,
    `cpus:      ${c.cpus}`,
    `memory:    ${c.memoryMiB} MiB`,
  ];
  if (v.savedState) lines.push(`saved:     state saved at ${v.savedState.at} (${Math.max(1, Math.round(v.savedState.bytes / 1024 ** 2))} MiB); start resumes it, discard-state throws it away`);
  for (const d of c.disks) lines.push(`disk:      ${d.id} ${d.format} ${d.path}${d.bus && d.bus !== 'virtio' ? ` (${d.bus})` : ''}${d.owned ? '' : ' (attached)'}`);
  if (c.cdrom) lines.push(`cdrom:     ${c.cdrom}`);
  // Issue 12 part B: the devices a Windows 11 guest needs, sound, USB.
  const devices = [c.tpm ? 'TPM 2.0' : '', c.secureBoot ? 'Secure Boot' : '', c.usbTablet === false ? 'no USB tablet' : '', c.audio ? `sound (${c.audio})` : ''].filter(Boolean);
  if (devices.length) lines.push(`devices:   ${devices.join(', ')}`);
  if (c.virtioDrivers) lines.push(`drivers:   ${c.virtioDrivers}`);
  for (const u of c.usb ?? []) lines.push(`usb:       ${u.vendorId !== undefined ? `${u.vendorId}:${u.productId}` : `bus ${u.bus} addr ${u.addr}`}${u.label ? ` ${u.label}` : ''}`);
  if (c.directKernel) {
    lines.push(`kernel:    ${c.directKernel.kernel}`);
    if (c.directKernel.initrd) lines.push(`initrd:    ${c.directKernel.initrd}`);
    lines.push(`cmdline:   ${c.directKernel.cmdline}`);
  }
  c.network.forEach((n, i) => lines.push(`network:   ${formatAdapter(n, i, !!v.linkDown?.includes(i))}`));
  const limits = formatLimits(c.limits);
  if (limits) lines.push(`limits:    ${limits}`);
  if (v.lastExit) lines.push(`last exit: ${exitReasonText(v.lastExit.reason)} at ${v.lastExit.at}${v.lastExit.detail ? ` (${v.lastExit.detail})` : ''}`);
  lines.push(`bundle:    ${v.bundle}`);
  return lines.join('\n');
}

export function formatHost(h: HostInfo): string {
  const acc = (name: string, a: HostInfo['accelerators']['kvm']) => `${name.padEnd(4)} ${a.available ? 'available' : 'unavailable'}${a.class ? ` (${a.class})` : ''}: ${a.reason}`;
  return [
    `platform:  ${h.platform} ${h.arch}`,
    `cpus:      ${h.cpus}`,
    `memory:    ${h.memoryMiB} MiB (${h.freeMemoryMiB} MiB free)`,
    `qemu:      ${h.qemu.found ? `${h.qemu.version} at ${h.qemu.path}` : `not found: ${h.qemu.reason}`}`,
    'accelerators:',
    `  ${acc('kvm', h.accelerators.kvm)}`,
    `  ${acc('hvf', h.accelerators.hvf)}`,
    `  ${acc('tcg', h.accelerators.tcg)}`,
    `default:   ${h.defaultAccel.used} (${h.defaultAccel.reason})`,
    ...(h.committed ? [`committed: ${h.committed.runningVms} running VM(s): ${h.committed.cpus} vCPUs, ${h.committed.memoryMiB} MiB of memory`] : []),
    ...(h.limits
      ? [
          `cpu cap:   ${h.limits.cpuCap.available ? `yes, ${h.limits.cpuCap.mechanism}` : `no: ${h.limits.cpuCap.reason}`}`,
          `pinning:   ${h.limits.cpuPinning.available ? `yes, ${h.limits.cpuPinning.mechanism}` : `no: ${h.limits.cpuPinning.reason}`}`,
        ]
      : []),
    ...(h.notes?.length ? ['notes:', ...h.notes.map((n) => `  ${n}`)] : []),
  ].join('\n');
}

/**
 * Terminal-safe text: control characters (ESC sequences that recolour, move the cursor or retitle the
 * terminal; \r that overwrites a line) in names and descriptions someone else chose are shown escaped.
 */
export function terminalSafe(text: string): string {
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** A stream that escapes control characters in everything written to it (all verbs but the raw console). */
export function terminalSafeStream(out: NodeJS.WritableStream): NodeJS.WritableStream {
  return new Proxy(out, {
    get(target, prop, receiver) {
      if (prop === 'write') {
        return (chunk: unknown, ...rest: unknown[]) =>
          (target.write as (c: unknown, ...r: unknown[]) => boolean)(typeof chunk === 'string' ? terminalSafe(chunk) : Buffer.isBuffer(chunk) ? terminalSafe(chunk.toString('utf8')) : chunk, ...rest);
      }
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}
