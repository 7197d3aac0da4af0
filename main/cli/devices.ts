// `vmdesk suspend`, `vmdesk discard-state`, `vmdesk usb list|add|remove`, and the device options of create/set
// (--tpm, --secure-boot, --preset, --disk-bus, --usb-tablet, --audio, --virtio-drivers). Loads no schema
// library, like the rest of the CLI: the daemon validates, these only shape the request.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { DISK_BUSES } from '../api/values.js';
import type { RpcResult } from '../api/rpc.js';
import type { Rpc } from './rpc.js';

interface Io {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

/** Options of both create and set. */
export const DEVICE_OPTIONS = {
  tpm: { type: 'string' },
  'secure-boot': { type: 'string' },
  'usb-tablet': { type: 'string' },
  audio: { type: 'string' },
  'virtio-drivers': { type: 'string' },
  'no-virtio-drivers': { type: 'boolean' },
} as const;

/** Options of create only. */
export const CREATE_DEVICE_OPTIONS = {
  preset: { type: 'string' },
  'disk-bus': { type: 'string' },
} as const;

const AUDIO = ['auto', 'pipewire', 'pa', 'alsa', 'none'] as const;
const PRESETS = ['windows11'] as const;

function onOff(v: unknown, what: string): boolean | undefined {
  if (v === undefined) return undefined;
  if (v === 'on' || v === 'off') return v === 'on';
  throw new VmdeskError(ErrorCode.invalid, `${what} must be on or off, got "${String(v)}"`);
}

/**
 * The device fields of create (`creating`) or set. --audio off takes the sound card out (set), --no-virtio-drivers
 * the driver disc; relative paths are resolved here, where the user typed them.
 */
export function deviceSettingsFrom(values: Record<string, unknown>, creating: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const tpm = onOff(values.tpm, '--tpm');
  const sb = onOff(values['secure-boot'], '--secure-boot');
  const tablet = onOff(values['usb-tablet'], '--usb-tablet');
  if (tpm !== undefined) out.tpm = tpm;
  if (sb !== undefined) out.secureBoot = sb;
  if (tablet !== undefined) out.usbTablet = tablet;
  const audio = values.audio as string | undefined;
  if (audio !== undefined) {
    if (audio === 'off') {
      if (!creating) out.audio = null;
    } else if ((AUDIO as readonly string[]).includes(audio)) out.audio = audio;
    else throw new VmdeskError(ErrorCode.invalid, `--audio must be one of ${AUDIO.join(', ')} or off, got "${audio}"`);
  }
  const drivers = values['virtio-drivers'] as string | undefined;
  if (drivers !== undefined && values['no-virtio-drivers']) throw new VmdeskError(ErrorCode.invalid, 'give either --virtio-drivers or --no-virtio-drivers, not both');
  if (drivers !== undefined) out.virtioDrivers = path.resolve(drivers);
  if (values['no-virtio-drivers']) {
    if (creating) throw new VmdeskError(ErrorCode.invalid, '--no-virtio-drivers is for vmdesk set');
    out.virtioDrivers = null;
  }
  if (creating) {
    const preset = values.preset as string | undefined;
    if (preset !== undefined) {
      if (!(PRESETS as readonly string[]).includes(preset)) throw new VmdeskError(ErrorCode.invalid, `--preset must be one of ${PRESETS.join(', ')}, got "${preset}"`);
      out.preset = preset;
    }
    const bus = values['disk-bus'] as string | undefined;
    if (bus !== undefined) {
      if (!(DISK_BUSES as readonly string[]).includes(bus)) throw new VmdeskError(ErrorCode.invalid, `--disk-bus must be one of ${DISK_BUSES.join(', ')}, got "${bus}"`);
      out.diskBus = bus;
    }
  } else if (values.preset !== undefined || values['disk-bus'] !== undefined) {
    throw new VmdeskError(ErrorCode.invalid, values.preset !== undefined ? '--preset is for vmdesk create' : '--disk-bus is for vmdesk create; use vmdesk disk attach --bus for other disks');
  }
  return out;
}

function args(argv: string[], options: Record<string, { type: 'string' | 'boolean' }>, count: number, names: string[], optional = 0) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...options, json: { type: 'boolean' } }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new VmdeskError(ErrorCode.invalid, (e as Error).message.split('\n')[0]!.replace(/^TypeError \[\w+\]: /, ''));
  }
  if (parsed.positionals.length < count) throw new VmdeskError(ErrorCode.invalid, `missing ${names.slice(parsed.positionals.length, count).join(' and ')}`);
  if (parsed.positionals.length > count + optional) throw new VmdeskError(ErrorCode.invalid, `unexpected argument "${parsed.positionals[count + optional]}"`);
  return { values: parsed.values as Record<string, string | boolean | undefined>, pos: parsed.positionals };
}

function out(io: Io, json: boolean, value: unknown, text: string): void {
  io.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : text + '\n');
}

function bytes(n: number): string {
  return n >= 1024 ** 3 ? `${(n / 1024 ** 3).toFixed(1)} GiB` : `${Math.max(1, Math.round(n / 1024 ** 2))} MiB`;
}

/** `vmdesk suspend NAME`: the guest's memory and devices to disk, then it stops; start resumes it. */
export async function runSuspendCli(rpc: () => Promise<Rpc>, argv: string[], io: Io): Promise<number> {
  const { values, pos } = args(argv, {}, 1, ['NAME']);
  let last = '';
  const info = await (await rpc()).long('vm.suspend', { id: pos[0]! }, (phase) => {
    if (phase !== last && !values.json) io.stderr.write(`vmdesk: ${phase}\n`);
    last = phase;
  });
  const s = info.savedState;
  out(io, !!values.json, info, `saved the state of "${info.name}"${s ? ` (${bytes(s.bytes)})` : ''}; "vmdesk start ${info.name}" resumes it, "vmdesk discard-state ${info.name}" throws it away`);
  return 0;
}

/** `vmdesk discard-state NAME`: the saved state goes; the next start boots afresh. */
export async function runDiscardStateCli(rpc: () => Promise<Rpc>, argv: string[], io: Io): Promise<number> {
  const { values, pos } = args(argv, {}, 1, ['NAME']);
  const info = await (await rpc()).call('vm.discardState', { id: pos[0]! });
  out(io, !!values.json, info, `discarded the saved state of "${info.name}"; it is ${info.state} and boots afresh at the next start`);
  return 0;
}

const USB_USAGE = `usage: vmdesk usb list [NAME] [--json]
       vmdesk usb add NAME VENDOR:PRODUCT | vmdesk usb add NAME --bus N --addr N
       vmdesk usb remove NAME VENDOR:PRODUCT | vmdesk usb remove NAME --bus N --addr N

  Passes a host USB device through to the guest (QEMU usb-host), plugged in at once while it runs.
  list without NAME shows the host's devices (names from the USB ID database) and whether VMDesk may
  open each; with NAME, the VM's devices. VENDOR:PRODUCT (as lsusb prints, e.g. 046d:c52b) follows the
  device to any port; --bus/--addr is this one device while it stays plugged in.
`;

/** VENDOR:PRODUCT or --bus/--addr into a device (ids lower case, as the contract wants them). */
export function usbDeviceFrom(id: string | undefined, values: Record<string, unknown>): { vendorId: string; productId: string } | { bus: number; addr: number } {
  const bus = values.bus as string | undefined;
  const addr = values.addr as string | undefined;
  if (id !== undefined) {
    if (bus !== undefined || addr !== undefined) throw new VmdeskError(ErrorCode.invalid, 'give either VENDOR:PRODUCT or --bus and --addr, not both');
    const m = /^([0-9a-fA-F]{4}):([0-9a-fA-F]{4})$/.exec(id.trim());
    if (!m) throw new VmdeskError(ErrorCode.invalid, `a USB device is VENDOR:PRODUCT in hexadecimal, as lsusb prints it (e.g. 046d:c52b), got "${id.slice(0, 40)}"`);
    return { vendorId: m[1]!.toLowerCase(), productId: m[2]!.toLowerCase() };
  }
  if (bus === undefined || addr === undefined) throw new VmdeskError(ErrorCode.invalid, 'give the device as VENDOR:PRODUCT, or both --bus and --addr (vmdesk usb list shows them)');
  const num = (v: string, what: string, max: number) => {
    if (!/^\d{1,3}$/.test(v) || Number(v) < 1 || Number(v) > max) throw new VmdeskError(ErrorCode.invalid, `${what} must be a number from 1 to ${max}, got "${v.slice(0, 20)}"`);
    return Number(v);
  };
  return { bus: num(bus, '--bus', 255), addr: num(addr, '--addr', 127) };
}

export function formatHostUsb(l: RpcResult<'usb.host'>): string {
  const lines: string[] = [];
  if (!l.devices.length) lines.push('no USB devices on this host (hubs are not listed)');
  for (const d of l.devices) {
    const name = [d.vendorName ?? d.manufacturer, d.productName ?? d.product].filter(Boolean).join(' ') || '(no name)';
    lines.push(`${d.vendorId}:${d.productId}  bus ${d.bus} addr ${d.addr}  ${name}${d.usable ? '' : '  [VMDesk may not open it]'}`);
    if (d.problem) lines.push(`    ${d.problem}`);
  }
  for (const n of l.notes) lines.push(`note: ${n}`);
  return lines.join('\n');
}

export function formatVmUsb(l: RpcResult<'usb.list'>): string {
  if (!l.devices.length) return `"${l.name}" has no USB devices passed through (vmdesk usb add ${l.name} VENDOR:PRODUCT)`;
  const lines = [`USB devices of "${l.name}" (${l.state}):`];
  for (const d of l.devices) lines.push(`  ${d.key}${d.label ? `  ${d.label}` : ''}${d.problem ? `  (${d.problem})` : ''}`);
  for (const n of l.notes) lines.push(`note: ${n}`);
  return lines.join('\n');
}

export async function runUsbCli(rpc: () => Promise<Rpc>, argv: string[], io: Io): Promise<number> {
  const sub = argv[0];
  const rest = argv.slice(1);
  const sel = { bus: { type: 'string' }, addr: { type: 'string' } } as const;
  switch (sub) {
    case 'list':
    case 'ls': {
      const { values, pos } = args(rest, {}, 0, ['NAME'], 1);
      if (pos[0] === undefined) {
        const l = await (await rpc()).call('usb.host', {});
        out(io, !!values.json, l, formatHostUsb(l));
      } else {
        const l = await (await rpc()).call('usb.list', { id: pos[0] });
        out(io, !!values.json, l, formatVmUsb(l));
      }
      return 0;
    }
    case 'add': {
      const { values, pos } = args(rest, sel, 1, ['NAME', 'VENDOR:PRODUCT'], 1);
      const device = usbDeviceFrom(pos[1], values);
      const info = await (await rpc()).call('usb.add', { id: pos[0]!, device });
      for (const w of info.warnings) io.stderr.write(`vmdesk: warning: ${w}\n`);
      const added = info.config?.usb?.at(-1);
      const key = 'vendorId' in device ? `${device.vendorId}:${device.productId}` : `bus ${device.bus} address ${device.addr}`;
      out(io, !!values.json, info, `passed USB device ${key}${added?.label ? ` (${added.label})` : ''} through to "${info.name}"${info.state === 'running' || info.state === 'paused' ? ' (plugged in now)' : ''}`);
      return 0;
    }
    case 'remove':
    case 'rm': {
      const { values, pos } = args(rest, sel, 1, ['NAME', 'VENDOR:PRODUCT'], 1);
      const device = usbDeviceFrom(pos[1], values);
      const info = await (await rpc()).call('usb.remove', { id: pos[0]!, device });
      const key = 'vendorId' in device ? `${device.vendorId}:${device.productId}` : `bus ${device.bus} address ${device.addr}`;
      out(io, !!values.json, info, `"${info.name}" no longer has USB device ${key}`);
      return 0;
    }
    case undefined:
    case '--help':
    case 'help':
      (sub ? io.stdout : io.stderr).write(USB_USAGE);
      return sub ? 0 : 2;
    default:
      throw new VmdeskError(ErrorCode.invalid, `unknown usb command "${sub}" (vmdesk usb --help)`);
  }
}
